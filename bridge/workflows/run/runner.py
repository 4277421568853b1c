"""Run Python-owned workflows the way HephaestusOban runs Elixir ones, row for row.

The three job kinds, their args, meta, tags and max_attempts, the step-result rows and the
instance rows are HephaestusOban 0.5.0's, so Oban tools show a Python workflow like an
Elixir one. The jobs go to a queue of their own (``bridge_workflows`` by default): Elixir
nodes serve ``hephaestus`` and could not run Python steps.

Where HephaestusOban is wrong (``spec/CONTRACT.md``, "Observed on the genuine stack") this
runner is not, without changing any row shape:

- A step job that exhausts its attempts fails the workflow at once and cancels the instance's
  other pending jobs: the step job does it itself on its last failing attempt. An advance that
  finds a discarded step job (e.g. one a lifeline discarded) does the same, as upstream.
- Only *newly* activated steps get a step job, and a step runs only while it is active and has
  no result yet: an async step executes once per wait, and no step is queued twice.
- An advance job is deduplicated only against advance jobs that have not started, checked
  under the instance's lock, which every advance also takes before reading results: a result
  is never left unprocessed (upstream also counts an *executing* advance that has already read
  its results, and loses the new one). Recorders take that lock *shared* and advances (and
  failures, cancels) exclusively, so sibling steps record at once: a recorder can only see an
  unstarted advance that will read its result after it commits, or it queues one. Two
  recorders may both queue one; the later advance then finds nothing pending and writes nothing.
- A result for a step that is not active (a duplicate resume, a stale row) is marked processed
  without being applied, so no step completes twice and no target activates twice.
- An instance with an async step still awaiting its resume is shown ``waiting`` with that step
  as ``current_step`` even when a sibling's result arrived after it (upstream flips it back to
  ``running`` and loses track of which step to resume).

One difference is chosen, and can be turned off: by default (``inline_advance=True``) a step
job applies its own result in the transaction that writes it, as the AdvanceWorker would
(:mod:`.inline`), so a step costs one job instead of two. The instance and step-result rows are
the same; the AdvanceWorker jobs a step's result would have queued are not written (the one
``start`` queues, and those of resumes, repairs and Elixir-run steps, are). With
``inline_advance=False`` every job row is HephaestusOban's. Elixir-owned instances are never
run here.

The job rows are :mod:`.jobs`; this module re-exports them with the runner, its public face.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.insert_rows import atomic
from bridge.workflows.model.definition import Workflow
from bridge.workflows.model.engine import new_instance
from bridge.workflows.model.serializer import UndeclaredKeyError, to_row, undeclared_keys
from bridge.workflows.run.advance import AdvanceJobs
from bridge.workflows.run.core import (
    BATCH_APPLICATION_NAME,
    FINISHED,
    PENDING_STATES,
)
from bridge.workflows.run.execute_step import ExecuteStepJobs
from bridge.workflows.run.jobs import (
    ADVANCE_MAX_ATTEMPTS,
    ADVANCE_WORKER,
    DEFAULT_CONFIG_KEY,
    DEFAULT_QUEUE,
    EXECUTE_STEP_WORKER,
    RESUME_MAX_ATTEMPTS,
    RESUME_WORKER,
    WORKERS,
    JobArgsError,
    ResumeError,
    RunnerError,
    advance_job,
    execute_step_job,
    job_arg,
    job_meta,
    job_tags,
    resume_job,
)
from bridge.workflows.run.resume import ResumeJobs
from bridge.workflows.store.instances import (
    Conn,
    insert_instance,
)

__all__ = [
    "ADVANCE_MAX_ATTEMPTS",
    "ADVANCE_WORKER",
    "BATCH_APPLICATION_NAME",
    "DEFAULT_CONFIG_KEY",
    "DEFAULT_QUEUE",
    "EXECUTE_STEP_WORKER",
    "FINISHED",
    "PENDING_STATES",
    "RESUME_MAX_ATTEMPTS",
    "RESUME_WORKER",
    "WORKERS",
    "JobArgsError",
    "ResumeError",
    "RunnerError",
    "WorkflowRunner",
    "advance_job",
    "execute_step_job",
    "job_arg",
    "job_meta",
    "job_tags",
    "resume_job",
]


class WorkflowRunner(ExecuteStepJobs, AdvanceJobs, ResumeJobs):
    """Starts, resumes and cancels Python-owned workflow instances and runs their jobs.

    ``start``/``resume``/``cancel`` work on the caller's connection and join its transaction.
    The job bodies that :func:`bridge.workflows.run.workers.register` registers (``run_*``) are
    coroutines on the node's loop; their database work is batched with that of concurrent jobs
    (:mod:`bridge.workflows.store.coalesce`, ``coalesce=False`` to send it job by job). The
    ``perform_*`` methods are the same bodies for one job, synchronous, on a small pool of the
    runner's own opened on first use, as are the rarer paths (failures, resumes).

    Each job kind's body is a module of its own: :mod:`.advance`, :mod:`.execute_step`,
    :mod:`.resume` (results: :mod:`.recording`; a step job applying its own result:
    :mod:`.inline`, on unless ``inline_advance=False``; shared paths: :mod:`.core`).
    """

    def _open_drains(self) -> None:
        # One drain per kind, each on its own connection (RunnerCore._aopen).
        self._async_prechecks = self._coalescer(self._precheck_batch, "bridge-precheck")
        self._async_recorders = self._coalescer(self._record_batch, "bridge-record")
        self._async_advances = self._coalescer(self._advance_batch, "bridge-advance")
        self._async_inline = self._coalescer(self._apply_batch, "bridge-inline")
        self._inline_applied_at = {}

    def start(
        self,
        conn: Conn,
        workflow: Workflow,
        initial_context: Mapping[str, Any],
        *,
        id: str,
    ) -> str:
        """Insert the pending instance and its first AdvanceWorker job, in one transaction.

        An initial context holding a key the workflow's Elixir declaration does not pin raises
        :class:`UndeclaredKeyError` before anything is written: every Elixir node listing
        instances would crash on the row."""
        if self.workflows.get(workflow.name) is not workflow:
            raise RunnerError(f"{workflow.name} is not registered with this runner")
        instance = new_instance(workflow, initial_context, id=id)
        problems = undeclared_keys(workflow, instance.context.initial, "state.context.initial")
        if problems:
            raise UndeclaredKeyError(workflow.name, "the initial context", problems)
        job = advance_job(workflow, instance, queue=self.queue, config_key=self.config_key)
        with atomic(conn):
            insert_instance(conn, self.prefix, to_row(instance))
            insert_all(conn, [job], prefix=self.prefix)
        return instance.id
