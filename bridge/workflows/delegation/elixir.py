"""Elixir-run steps in Python workflows: the owner side of ``ObanBridge.StepWorker``.

``elixir_step(name="Elixir.MyApp.Steps.Charge", ...)`` is a step of a Python workflow whose
body runs in an Elixir app. When the Python runner executes it, the step records ``__async__``
and, in the same transaction, inserts a job for the shipped Elixir worker carrying the protocol
args (:func:`delegation_protocol.job_args`). The Elixir worker runs the step module named in
``step_ref`` (only if the app's allow-list has it) and completes the step with a step-result row
and the Python runner's own advance job, or applies the failure policy.

The job is inserted only together with a *new* ``__async__`` row, and the Python runner executes
a step once per activation, so one activation gives exactly one Elixir job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.jobs.client.job import Job
from bridge.workflows.delegation.protocol import job_args
from bridge.workflows.model.definition import (
    InvalidOptionError,
    RetryConfig,
    Step,
    StepAsync,
    Workflow,
    check_atom_name,
    check_module_name,
)
from bridge.workflows.model.instance import Context, Instance

DEFAULT_ELIXIR_WORKER = "ObanBridge.StepWorker"
DEFAULT_ELIXIR_QUEUE = "default"
DEFAULT_ELIXIR_ATTEMPTS = 5

ContextSelection = Literal["all", "none"] | Mapping[str, Iterable[str]]


@dataclass(frozen=True)
class ElixirStepRun:
    """The body of an Elixir-run step on the Python side: it only says "async", and tells the
    runner which job to insert with that ``__async__`` result (``companion_jobs``)."""

    worker: str
    queue: str
    max_attempts: int
    context_keys: frozenset[str]
    failure_event: str | None
    context: ContextSelection

    def __call__(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> StepAsync:
        return StepAsync()

    def companion_jobs(
        self,
        workflow: Workflow,
        instance: Instance,
        step_ref: str,
        *,
        queue: str,
        config_key: str,
        meta: Mapping[str, Any],
        tags: list[str],
    ) -> list[Job]:
        step_def = workflow.step(step_ref)
        args = job_args(
            instance_id=instance.id,
            step_ref=step_ref,
            workflow=workflow.name,
            workflow_version=instance.workflow_version,
            config_key=config_key,
            advance_queue=queue,
            context_key=step_def.context_key,
            events=step_def.events,
            context_keys=self.context_keys,
            failure_event=self.failure_event,
            context=select_context(instance.context, self.context),
            config=instance.step_configs.get(step_ref),
        )
        return [
            Job.new(
                self.worker,
                args,
                queue=self.queue,
                max_attempts=self.max_attempts,
                meta=dict(meta),
                tags=list(tags),
            )
        ]


def select_context(context: Context, selection: ContextSelection) -> Context:
    """What the remote step is sent: everything, nothing, or named initial/step keys."""
    if selection == "all":
        return context
    if selection == "none":
        return Context()
    if not isinstance(selection, Mapping):
        raise InvalidOptionError(f"context must be 'all', 'none' or a mapping: {selection!r}")
    initial = set(selection.get("initial", ()))
    steps = set(selection.get("steps", ()))
    return Context(
        {k: v for k, v in context.initial.items() if k in initial},
        {k: v for k, v in context.steps.items() if k in steps},
    )


def elixir_step(
    *,
    name: str,
    events: Iterable[str],
    context_keys: Iterable[str] = (),
    worker: str = DEFAULT_ELIXIR_WORKER,
    queue: str = DEFAULT_ELIXIR_QUEUE,
    max_attempts: int = DEFAULT_ELIXIR_ATTEMPTS,
    failure_event: str | None = None,
    step_key: str | None = None,
    context: ContextSelection = "all",
    retry: RetryConfig | None = None,
) -> Step:
    """A Python workflow step run by the Elixir module ``name`` (through ``worker``).

    ``context_keys`` lists every map key the Elixir step may return in its context updates (at
    any depth); ``failure_event`` (one of ``events``) is what the step completes with when the
    Elixir step fails for good — without it, the Python instance is failed. ``max_attempts`` is
    the Elixir job's; ``retry`` is the Python ExecuteStep job's (it only inserts that job).
    """
    check_module_name(name, "elixir step name")
    event_list = tuple(events)
    if failure_event is not None and failure_event not in event_list:
        raise InvalidOptionError(f"{name}: failure_event {failure_event!r} is not in {event_list}")
    keys = frozenset(check_atom_name(k, f"{name}: context key") for k in context_keys)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidOptionError(f"{name}: max_attempts must be a positive integer")
    if not worker or not queue:
        raise InvalidOptionError(f"{name}: worker and queue must be non-empty")
    select_context(Context(), context)  # validate the selection now
    run = ElixirStepRun(worker, queue, max_attempts, keys, failure_event, context)
    return Step(name=name, events=event_list, run=run, step_key=step_key, retry=retry)
