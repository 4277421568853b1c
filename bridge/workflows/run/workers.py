"""The three HephaestusOban workers, registered under their Elixir names for one runner.

The names are the strings Oban rows carry (``HephaestusOban.AdvanceWorker``, ...), so Oban
tools group Python workflow jobs with Elixir ones; they run on the runner's own queue. A job
whose args this runner cannot use is discarded with a reason instead of being retried: no
retry could make its args valid.

The bodies are coroutines on the node's event loop (``WorkflowRunner.run_*``): a job waits
there while the runner's batch threads write for many jobs at once, and only a step's own body
takes a thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bridge.jobs.client.job import Job
from bridge.jobs.client.outcome import Discard
from bridge.jobs.client.registry import Registry, WorkerSpec
from bridge.workflows.model.definition import UnknownStepError, UnknownWorkflowError
from bridge.workflows.run.runner import (
    ADVANCE_MAX_ATTEMPTS,
    ADVANCE_WORKER,
    EXECUTE_STEP_WORKER,
    RESUME_MAX_ATTEMPTS,
    RESUME_WORKER,
    JobArgsError,
    WorkflowRunner,
)

# ExecuteStep jobs carry their own max_attempts (the step's retry config); this is only the
# default for a job built from the spec.
EXECUTE_STEP_DEFAULT_ATTEMPTS = 5


def _guarded(
    runner: WorkflowRunner, body: Callable[[Job], Awaitable[Any]]
) -> Callable[[Job], Awaitable[Any]]:
    async def perform(job: Job) -> Any:
        refused = runner.check_job(job)
        if refused is not None:
            return refused
        try:
            return await body(job)
        except (JobArgsError, UnknownWorkflowError, UnknownStepError) as exc:
            return Discard(str(exc))

    return perform


def register(registry: Registry, runner: WorkflowRunner) -> list[WorkerSpec]:
    """Register AdvanceWorker, ExecuteStepWorker and ResumeWorker for ``runner``."""
    table = (
        (ADVANCE_WORKER, runner.run_advance, ADVANCE_MAX_ATTEMPTS),
        (EXECUTE_STEP_WORKER, runner.run_execute_step, EXECUTE_STEP_DEFAULT_ATTEMPTS),
        (RESUME_WORKER, runner.run_resume, RESUME_MAX_ATTEMPTS),
    )
    return [
        registry.register(
            WorkerSpec(
                name=name,
                perform=_guarded(runner, body),
                is_async=True,
                queue=runner.queue,
                max_attempts=attempts,
                target=runner,
            )
        )
        for name, body, attempts in table
    ]
