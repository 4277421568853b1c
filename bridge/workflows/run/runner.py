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
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import sql

from bridge.db import DEFAULT_PREFIX, LazyPool
from bridge.jobs.client.enqueue import insert_all, insert_one_unless
from bridge.jobs.client.insert_rows import atomic
from bridge.jobs.client.job import Job
from bridge.jobs.client.outcome import Cancel, Discard, Error
from bridge.wire import notify
from bridge.workflows.model.builtins import WAIT, wait_delay_ms
from bridge.workflows.model.definition import (
    ASYNC_EVENT,
    Workflow,
    WorkflowError,
    lookup,
    registry,
)
from bridge.workflows.model.engine import (
    StepResult,
    advance,
    apply_step_results,
    check_outcome,
    fail_workflow,
    new_instance,
    prepare_step,
    step_result,
)
from bridge.workflows.model.instance import Instance
from bridge.workflows.model.serializer import to_row
from bridge.workflows.store.batch import (
    AConn,
    NewResult,
    begin_and_load_activities,
    begin_and_take_pending,
    load_for_steps,
    record_and_commit,
    results_of,
    rollback_open,
    save_and_commit,
)
from bridge.workflows.store.coalesce import AsyncCoalescer
from bridge.workflows.store.instances import (
    HAS_RESULT,
    Conn,
    InstanceNotFoundError,
    StoredResult,
    awaiting_steps,
    begin_locked,
    insert_instance,
    insert_result,
    insert_result_and_job,
    load_activity,
    load_and_take_pending,
    load_instance,
    load_instance_and_flag,
    lock_instance,
    results_for,
    save_instance,
    save_instance_and_job,
    take_pending,
)

log = logging.getLogger("bridge.workflows")

P = ParamSpec("P")
T = TypeVar("T")

ADVANCE_WORKER = "HephaestusOban.AdvanceWorker"
EXECUTE_STEP_WORKER = "HephaestusOban.ExecuteStepWorker"
RESUME_WORKER = "HephaestusOban.ResumeWorker"
WORKERS = (ADVANCE_WORKER, EXECUTE_STEP_WORKER, RESUME_WORKER)
ADVANCE_MAX_ATTEMPTS = 20
RESUME_MAX_ATTEMPTS = 3
DEFAULT_QUEUE = "bridge_workflows"
DEFAULT_CONFIG_KEY = "bridge"
PENDING_STATES = ("available", "scheduled", "executing", "retryable")
FINISHED = ("completed", "failed")
BATCH_APPLICATION_NAME = "bridge-workflow-batches"


class RunnerError(WorkflowError):
    """Base class of the runner's errors."""


class ResumeError(RunnerError):
    """A resume that cannot apply: the instance is not waiting on a step, or the event is not
    one that step declares."""


class JobArgsError(RunnerError):
    """A workflow job whose args lack a field or name something this runner does not run."""


# -- job rows (pure) ---------------------------------------------------------------------------


def job_meta(
    workflow: Workflow,
    instance_id: str,
    *,
    step_ref: str | None = None,
    runtime_metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``JobMetadata.build``: workflow metadata < runtime metadata < the system keys."""
    meta: dict[str, Any] = {**workflow.metadata, **(runtime_metadata or {})}
    meta.update(
        heph_workflow=workflow.short_name,
        instance_id=instance_id,
        workflow_version=workflow.version,
    )
    if step_ref is not None:
        meta["step"] = workflow.step(step_ref).short_name
    return meta


def job_tags(workflow: Workflow) -> list[str]:
    return list(dict.fromkeys([workflow.short_name, *workflow.tags]))


def advance_job(
    workflow: Workflow,
    instance: Instance,
    *,
    queue: str,
    config_key: str,
    step_ref: str | None = None,
) -> Job:
    args = {
        "instance_id": instance.id,
        "config_key": config_key,
        "workflow": workflow.name,
        "workflow_version": instance.workflow_version,
    }
    return Job.new(
        ADVANCE_WORKER,
        args,
        queue=queue,
        max_attempts=ADVANCE_MAX_ATTEMPTS,
        meta=job_meta(workflow, instance.id, step_ref=step_ref),
        tags=job_tags(workflow),
    )


def execute_step_job(
    workflow: Workflow, instance: Instance, step_ref: str, *, queue: str, config_key: str
) -> Job:
    args = {
        "instance_id": instance.id,
        "config_key": config_key,
        "step_ref": step_ref,
        "workflow": workflow.name,
        "workflow_version": instance.workflow_version,
    }
    meta = job_meta(
        workflow, instance.id, step_ref=step_ref, runtime_metadata=instance.runtime_metadata
    )
    return Job.new(
        EXECUTE_STEP_WORKER,
        args,
        queue=queue,
        max_attempts=workflow.retry_for(step_ref).max_attempts,
        meta=meta,
        tags=job_tags(workflow),
    )


def resume_job(
    workflow: Workflow,
    instance: Instance,
    step_ref: str,
    event: str,
    *,
    queue: str,
    config_key: str,
    schedule_in: timedelta | None = None,
) -> Job:
    args = {
        "instance_id": instance.id,
        "step_ref": step_ref,
        "event": event,
        "config_key": config_key,
        "workflow": workflow.name,
        "workflow_version": instance.workflow_version,
    }
    return Job.new(
        RESUME_WORKER,
        args,
        queue=queue,
        max_attempts=RESUME_MAX_ATTEMPTS,
        meta=job_meta(workflow, instance.id, step_ref=step_ref),
        tags=job_tags(workflow),
        schedule_in=schedule_in,
    )


def _arg(job: Job, key: str) -> Any:
    value = job.args.get(key)
    if key == "workflow_version":
        if value is None:
            return 1
        if isinstance(value, bool) or not isinstance(value, int):
            raise JobArgsError(f"job {job.id}: workflow_version must be an integer: {value!r}")
        return value
    if not isinstance(value, str) or not value:
        raise JobArgsError(f"job {job.id}: args.{key} must be a non-empty string: {value!r}")
    return value


# -- SQL on oban_jobs ----------------------------------------------------------------------------

# The guard of an advance insert (insert_one_unless): an advance of the instance not started.
_UNSTARTED_ADVANCE = """
SELECT 1 FROM {prefix}.oban_jobs
WHERE state IN ('available', 'scheduled') AND worker = %(guard_worker)s
  AND args @> jsonb_build_object('instance_id', %(guard_instance_id)s::text)
"""

# Read with the instance row (load_instance_and_flag): has a step job of it been discarded?
_DISCARDED_STEP = """
EXISTS (SELECT 1 FROM {prefix}.oban_jobs
        WHERE state = 'discarded' AND worker = %(worker)s
          AND args @> jsonb_build_object('instance_id', i.id::text))
"""

_CANCEL_PENDING = """
UPDATE {prefix}.oban_jobs AS j SET state = 'cancelled', cancelled_at = timezone('UTC', now())
FROM (SELECT id, state FROM {prefix}.oban_jobs
      WHERE args @> jsonb_build_object('instance_id', %(instance_id)s::text)
        AND worker = ANY(%(workers)s) AND state::text = ANY(%(states)s)
        AND id <> %(own)s
      FOR UPDATE) AS x
WHERE j.id = x.id
RETURNING j.id, x.state::text
"""


def _q(template: str, prefix: str) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


@contextmanager
def _locked(conn: Conn, instance_id: str, *, shared: bool = False) -> Iterator[None]:
    """``conn.transaction()`` with the instance lock taken in its BEGIN's round trip
    (:func:`begin_locked`): committed at the end, rolled back on an exception."""
    begin_locked(conn, instance_id, shared=shared)
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


# -- the runner ----------------------------------------------------------------------------------


class WorkflowRunner:
    """Starts, resumes and cancels Python-owned workflow instances and runs their jobs.

    ``start``/``resume``/``cancel`` work on the caller's connection and join its transaction.
    The job bodies that :func:`bridge.workflows.run.workers.register` registers (``run_*``) are
    coroutines on the node's loop; their database work is batched with that of concurrent jobs
    (:mod:`bridge.workflows.store.coalesce`, ``coalesce=False`` to send it job by job). The
    ``perform_*`` methods are the same bodies for one job, synchronous, on a small pool of the
    runner's own opened on first use, as are the rarer paths (failures, resumes).
    """

    def __init__(
        self,
        url: str,
        workflows: Iterable[Workflow],
        *,
        prefix: str = DEFAULT_PREFIX,
        queue: str = DEFAULT_QUEUE,
        config_key: str = DEFAULT_CONFIG_KEY,
        pool_size: int = 10,
        coalesce: bool = True,
        step_threads: int = 100,
    ) -> None:
        if not isinstance(config_key, str) or not config_key:
            raise RunnerError(f"config_key must be a non-empty string, got {config_key!r}")
        self.url = url
        self.workflows = registry(*workflows)
        self.prefix = prefix
        self.queue = queue
        self.config_key = config_key
        self.pool_size = pool_size
        self._pool = LazyPool(url, pool_size)
        # Concurrent job bodies (run_*) share transactions (bridge.workflows.store.coalesce); off,
        # each job sends its own, as HephaestusOban does. The rows are the same either way.
        self.coalesce = coalesce
        self._async_prechecks: AsyncCoalescer[tuple[str, str], tuple[Instance, bool], AConn] = (
            self._coalescer(self._precheck_batch, "bridge-precheck")
        )
        self._async_recorders: AsyncCoalescer[tuple[Job, StepResult], bool, AConn] = (
            self._coalescer(self._record_batch, "bridge-record")
        )
        self._async_advances: AsyncCoalescer[Job, Any, AConn] = self._coalescer(
            self._advance_batch, "bridge-advance"
        )
        self.step_threads = step_threads
        self._threads: ThreadPoolExecutor | None = None

    # connections

    def _connection(self) -> AbstractContextManager[Conn]:
        return self._pool.connection()

    def _coalescer(self, batch: Any, name: str) -> Any:
        """A coalescer whose drain works on a connection of its own (:meth:`_aopen`)."""
        return AsyncCoalescer(batch, open=self._aopen, close=_aclose, usable=_usable, name=name)

    async def _aopen(self) -> AConn:
        """A batch drain's own connection (autocommit: every batch sends its own BEGIN), named
        so that ``pg_stat_activity`` tells it apart."""
        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name=BATCH_APPLICATION_NAME
        )

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False)
            self._threads = None
        self._pool.close()

    def _workflow(self, name: object) -> Workflow:
        return lookup(self.workflows, name)

    # public API on the caller's connection

    def start(
        self,
        conn: Conn,
        workflow: Workflow,
        initial_context: Mapping[str, Any],
        *,
        id: str,
    ) -> str:
        """Insert the pending instance and its first AdvanceWorker job, in one transaction."""
        if self.workflows.get(workflow.name) is not workflow:
            raise RunnerError(f"{workflow.name} is not registered with this runner")
        instance = new_instance(workflow, initial_context, id=id)
        job = advance_job(workflow, instance, queue=self.queue, config_key=self.config_key)
        with atomic(conn):
            insert_instance(conn, self.prefix, to_row(instance))
            insert_all(conn, [job], prefix=self.prefix)
        return instance.id

    def resume(
        self, conn: Conn, instance_id: str, event: str, *, step_ref: str | None = None
    ) -> Job:
        """Queue a ResumeWorker for the step the instance waits on (``current_step``)."""
        instance = load_instance(conn, self.prefix, instance_id, self.workflows)
        workflow = self._workflow(instance.workflow)
        step = step_ref or instance.current_step
        if instance.status != "waiting" or step is None:
            raise ResumeError(f"{instance_id} is {instance.status}, not waiting on a step")
        if event not in workflow.step(step).events:
            raise ResumeError(f"{step} does not declare the event {event!r}")
        job = resume_job(
            workflow, instance, step, event, queue=self.queue, config_key=self.config_key
        )
        with atomic(conn):
            return insert_all(conn, [job], prefix=self.prefix)[0]

    def schedule_resume(self, conn: Conn, instance_id: str, step_ref: str, delay_ms: int) -> Job:
        """A durable timer: a ResumeWorker with event ``timeout`` scheduled ``delay_ms`` ahead.

        The row is ``Runner.schedule_resume/3``'s (same args, meta and tags as a resume); the
        job is the timer, so cancelling it (``bridge jobs cancel``) cancels the timer. Unlike
        upstream, a step that does not declare ``timeout`` is refused here rather than left to
        fail in the advance.
        """
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or delay_ms <= 0:
            raise ResumeError(f"delay_ms must be a positive integer, got {delay_ms!r}")
        instance = load_instance(conn, self.prefix, instance_id, self.workflows)
        workflow = self._workflow(instance.workflow)
        if "timeout" not in workflow.step(step_ref).events:
            raise ResumeError(f"{step_ref} does not declare the event 'timeout'")
        job = self._timer_job(workflow, instance, step_ref, delay_ms)
        with atomic(conn):
            return insert_all(conn, [job], prefix=self.prefix)[0]

    def _timer_job(self, workflow: Workflow, instance: Instance, step_ref: str, delay: int) -> Job:
        return resume_job(
            workflow,
            instance,
            step_ref,
            "timeout",
            queue=self.queue,
            config_key=self.config_key,
            schedule_in=timedelta(milliseconds=delay),
        )

    def _wait_timers(
        self, workflow: Workflow, instance: Instance, pending: list[StoredResult]
    ) -> list[Job]:
        """Timers for built-in Wait steps whose ``__async__`` result this advance applies.

        Hephaestus leaves scheduling the ``timeout`` resume to the runner (``Wait.delay_ms/1``);
        HephaestusOban 0.5.0 never does it, so a Wait there waits for ever unless the app calls
        ``schedule_resume``. Here the advance that applies the result inserts the timer in the
        same transaction: one timer per wait, never lost, never doubled.
        """
        return [
            self._timer_job(
                workflow, instance, r.step_ref, wait_delay_ms(instance.step_configs.get(r.step_ref))
            )
            for r in pending
            if r.event == ASYNC_EVENT
            and r.step_ref == WAIT.name
            and r.step_ref in instance.active_steps
        ]

    def cancel(self, conn: Conn, instance_id: str) -> list[int]:
        """Fail the instance and cancel its pending jobs; returns the cancelled job ids."""
        with atomic(conn):
            return self._fail(conn, instance_id, own_job=0)

    # internals shared by the jobs

    def _fail(self, conn: Conn, instance_id: str, *, own_job: int) -> list[int]:
        lock_instance(conn, instance_id)
        instance = load_instance(conn, self.prefix, instance_id, self.workflows, for_update=True)
        take_pending(conn, self.prefix, instance_id)
        if instance.status not in FINISHED:
            save_instance(conn, self.prefix, fail_workflow(instance))
        return self._cancel_jobs(conn, instance_id, own_job)

    def _cancel_jobs(self, conn: Conn, instance_id: str, own_job: int) -> list[int]:
        params = {
            "instance_id": instance_id,
            "workers": list(WORKERS),
            "states": list(PENDING_STATES),
            "own": own_job,
        }
        rows = conn.execute(_q(_CANCEL_PENDING, self.prefix), params).fetchall()
        channel = notify.channel(self.prefix, "signal")
        for job_id, old_state in rows:
            if old_state == "executing":
                payload = notify.encode({"action": "pkill", "job_id": job_id})
                conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        return sorted(row[0] for row in rows)

    def _enqueue_advance(
        self, conn: Conn, workflow: Workflow, instance: Instance, step_ref: str
    ) -> None:
        """Queue an advance unless one that has not started yet exists (caller holds the lock).

        An unstarted advance reads results only after taking the lock we hold (shared: an
        advance takes it exclusively), so it will see ours; an executing one may already have
        read them, so it does not count. Another recorder's advance, not committed yet, is not
        seen, so both may queue one: the second advance finds nothing pending.
        """
        job = self._advance_job(workflow, instance, step_ref)
        guard = {"guard_worker": ADVANCE_WORKER, "guard_instance_id": instance.id}
        insert_one_unless(conn, job, _UNSTARTED_ADVANCE, guard, prefix=self.prefix)

    def _advance_job(self, workflow: Workflow, instance: Instance, step_ref: str) -> Job:
        return advance_job(
            workflow, instance, queue=self.queue, config_key=self.config_key, step_ref=step_ref
        )

    def _record_one(
        self, job: Job, result: StepResult, *, resume: bool, companions: Any = None
    ) -> bool:
        """Insert a step result and queue the advance that applies it, in one transaction.

        ``companions`` (an Elixir-run step's ``companion_jobs``) gives jobs that must exist
        exactly when this result does: the delegated job of ``bridge.workflows.delegation.elixir``.
        """
        instance_id = _arg(job, "instance_id")
        with self._connection() as conn, _locked(conn, instance_id, shared=True):
            # Only the status and the active steps, unless a companion needs the whole instance.
            load = load_instance if companions is not None else load_activity
            instance = load(conn, self.prefix, instance_id, self.workflows)
            workflow = self._workflow(instance.workflow)
            step = result.step_ref
            if not _takes_result(instance, step):
                return False
            if resume and step not in awaiting_steps(
                results_for(conn, self.prefix, instance_id, pending=False)
            ):
                log.info("%s: %s is not waiting for a resume; dropped", instance_id, step)
                return False
            version = _arg(job, "workflow_version")
            if companions is None:  # the result and its advance in one statement
                advance = self._advance_job(workflow, instance, step)
                guard = {"guard_worker": ADVANCE_WORKER, "guard_instance_id": instance.id}
                return insert_result_and_job(
                    conn,
                    self.prefix,
                    instance_id,
                    result,
                    version,
                    advance,
                    _UNSTARTED_ADVANCE,
                    guard,
                )
            if not insert_result(conn, self.prefix, instance_id, result, version):
                return False
            if companions is not None:
                extra = companions(
                    workflow,
                    instance,
                    step,
                    queue=self.queue,
                    config_key=self.config_key,
                    meta=job_meta(workflow, instance_id, step_ref=step),
                    tags=job_tags(workflow),
                )
                insert_all(conn, extra, prefix=self.prefix)
            self._enqueue_advance(conn, workflow, instance, step)
            return True

    async def _record_batch(
        self, conn: AConn, items: Sequence[tuple[Job, StepResult]]
    ) -> list[bool | Exception]:
        """Record the results of concurrent step jobs in one transaction (:meth:`_record_one`)."""
        try:
            return await self._record_many(conn, items)
        except Exception as exc:
            log.info("batch of %d results failed (%s); recording one by one", len(items), exc)
        one = partial(self._record_one, resume=False)
        return [await self._outcome_in_thread(one, job, result) for job, result in items]

    async def _record_many(
        self, conn: AConn, items: Sequence[tuple[Job, StepResult]]
    ) -> list[bool | Exception]:
        """What :meth:`_record_one` does for each item, with each statement sent once for all.

        Every instance's lock is held shared for the whole transaction, so what each recorder
        may conclude is what it concludes alone. Within the batch an instance gets at most one
        advance, for its first written result: a sequential run would have queued it then and
        found it unstarted for the rest.
        """
        outcomes: list[bool | Exception] = [False] * len(items)
        ids = [_arg(job, "instance_id") for job, _ in items]
        chosen: list[tuple[int, NewResult]] = []
        loaded = await begin_and_load_activities(conn, self.prefix, ids, self.workflows)
        try:
            seen: set[tuple[str, str]] = set()
            for k, ((job, result), instance_id) in enumerate(zip(items, ids, strict=True)):
                try:
                    instance = _found(loaded.get(instance_id), instance_id)
                    workflow = self._workflow(instance.workflow)
                    version = _arg(job, "workflow_version")
                except Exception as exc:
                    outcomes[k] = exc
                    continue
                step = result.step_ref
                if not _takes_result(instance, step):
                    continue
                if (instance_id, step) in seen:  # a duplicate: the index would refuse it
                    continue
                seen.add((instance_id, step))
                advance = self._advance_job(workflow, instance, step)
                chosen.append((k, NewResult(instance_id, result, version, advance)))
            written = await record_and_commit(
                conn, self.prefix, [new for _, new in chosen], ADVANCE_WORKER, self.queue
            )
        except BaseException:
            await rollback_open(conn)
            raise
        for k, new in chosen:
            outcomes[k] = (new.instance_id, new.result.step_ref) in written
        return outcomes

    # job bodies

    def perform_advance(self, job: Job) -> Any:
        """AdvanceWorker: apply pending results, advance, persist, queue newly active steps."""
        return self._advance_one(job)

    def _advance_one(self, job: Job) -> Any:
        instance_id = _arg(job, "instance_id")
        with self._connection() as conn, _locked(conn, instance_id):
            try:
                # The pending results are read and marked in the same statement: every path
                # below drops or applies exactly these (a failing one drops them, as _fail
                # would), and the lock keeps recorders out.
                instance, discarded, pending = load_and_take_pending(
                    conn,
                    self.prefix,
                    instance_id,
                    self.workflows,
                    _DISCARDED_STEP,
                    {"worker": EXECUTE_STEP_WORKER},
                )
            except InstanceNotFoundError as exc:
                return Cancel(str(exc))
            updated, jobs = self._advanced(conn, job, instance, discarded, pending)
            if updated is not None and len(jobs) == 1:  # both rows in one statement
                save_instance_and_job(conn, self.prefix, updated, jobs[0])
                return None
            if updated is not None:
                save_instance(conn, self.prefix, updated)
            insert_all(conn, jobs, prefix=self.prefix)
        return None

    def _advanced(
        self,
        conn: Conn,
        job: Job,
        instance: Instance,
        discarded: bool,
        pending: list[StoredResult],
    ) -> tuple[Instance | None, list[Job]]:
        """The advance of one locked instance: the state to save (``None``: unchanged) and the
        jobs to insert. A failure (a discarded step job) is written here, on ``conn``."""
        self._workflow(instance.workflow)
        if instance.status in FINISHED:
            return None, []
        if discarded:
            self._fail(conn, instance.id, own_job=job.id or 0)
            return None, []
        return self._next(
            instance, pending, lambda: results_for(conn, self.prefix, instance.id, pending=False)
        )

    def _next(
        self,
        instance: Instance,
        pending: list[StoredResult],
        every: Callable[[], list[StoredResult]],
    ) -> tuple[Instance | None, list[Job]]:
        """Apply ``pending`` to a running instance and advance it (``every``: all its results,
        read only when an async step may still be waiting); pure but for ``every``."""
        workflow = self._workflow(instance.workflow)
        updated = self._apply(workflow, instance, pending, every)
        fresh = sorted(updated.active_steps - instance.active_steps)
        jobs = [
            execute_step_job(workflow, updated, step, queue=self.queue, config_key=self.config_key)
            for step in fresh
        ]
        jobs.extend(self._wait_timers(workflow, instance, pending))
        return (updated if updated != instance else None), jobs

    async def _advance_batch(self, conn: AConn, jobs: Sequence[Job]) -> list[Any]:
        """Run concurrent advance jobs in one transaction (:meth:`perform_advance`)."""
        try:
            return await self._advance_many(conn, jobs)
        except Exception as exc:
            if not isinstance(exc, _OneByOne):
                log.info("batch of %d advances failed (%s); one by one", len(jobs), exc)
        return [await self._outcome_in_thread(self._advance_one, job) for job in jobs]

    async def _advance_many(self, conn: AConn, jobs: Sequence[Job]) -> list[Any]:
        """What :meth:`_advance_one` does for each job, with each statement sent once for all.

        Every instance's lock is held exclusively for the whole transaction, taken in key
        order. A second job for an instance already advanced in the batch finds nothing
        pending, as it would after the first committed. An unreadable row, a discarded step job
        (the failure path) or a failing statement roll the whole batch back for the caller to
        run one job at a time.
        """
        ids = [_arg(job, "instance_id") for job in jobs]
        outcomes: dict[str, Any] = {}
        taken = await begin_and_take_pending(
            conn, self.prefix, ids, self.workflows, _DISCARDED_STEP, {"worker": EXECUTE_STEP_WORKER}
        )
        try:
            for read in taken.values():
                if isinstance(read.instance, Exception) or read.flag:
                    raise _OneByOne()
            woken = [
                instance_id
                for instance_id, read in taken.items()
                if _woken(read.instance, read.pending)  # type: ignore[arg-type]
            ]
            every = await results_of(conn, self.prefix, woken) if woken else {}
            saves: list[Instance] = []
            new_jobs: list[Job] = []
            for instance_id in ids:
                if instance_id in outcomes:
                    continue
                found = taken.get(instance_id)
                if found is None:
                    missing = f"no workflow instance with id {instance_id!r}"
                    outcomes[instance_id] = Cancel(str(InstanceNotFoundError(missing)))
                    continue
                instance = _found(found.instance, instance_id)
                outcomes[instance_id] = None
                if instance.status in FINISHED:
                    continue
                updated, more = self._next(
                    instance, found.pending, partial(every.__getitem__, instance_id)
                )
                if updated is not None:
                    saves.append(updated)
                new_jobs.extend(more)
            await save_and_commit(conn, self.prefix, saves, new_jobs)
        except BaseException:
            await rollback_open(conn)
            raise
        return [outcomes[instance_id] for instance_id in ids]

    def _apply(
        self,
        workflow: Workflow,
        instance: Instance,
        pending: list[StoredResult],
        every: Callable[[], list[StoredResult]],
    ) -> Instance:
        acc = instance
        for result in pending:
            if result.step_ref in acc.active_steps:
                acc = apply_step_results(workflow, acc, [result.to_step_result()])
            else:
                log.info("%s: result for inactive %s ignored", instance.id, result.step_ref)
        acc = advance(workflow, acc)
        if acc.status == "running" and acc.active_steps and _woken(instance, pending):
            waiting = awaiting_steps(every()) & acc.active_steps
            if waiting:
                current = acc.current_step if acc.current_step in waiting else min(waiting)
                acc = replace(acc, status="waiting", current_step=current)
        return acc

    def perform_execute_step(self, job: Job) -> Any:
        """ExecuteStepWorker: run an active step once and record its result."""
        instance_id = _arg(job, "instance_id")
        step = _arg(job, "step_ref")
        instance, ran = self._precheck_one(instance_id, step)
        if not _runnable(instance, step, ran):
            return None
        result = self._execute_body(job, instance, step)
        if isinstance(result, Error):
            return result
        self._record_one(job, result, resume=False, companions=self._companions(instance, step))
        return None

    def _companions(self, instance: Instance, step: str) -> Any:
        return getattr(self._workflow(instance.workflow).step(step).run, "companion_jobs", None)

    def _execute_body(self, job: Job, instance: Instance, step: str) -> StepResult | Error:
        """Run the step's body; on the job's last attempt a failure fails the workflow first."""
        workflow = self._workflow(instance.workflow)
        try:
            outcome = self._run_body(workflow, instance, step)
        except Exception:
            self._fail_if_exhausted(job, instance.id)
            raise
        result = step_result(step, outcome)
        if result is None:
            self._fail_if_exhausted(job, instance.id)
            return Error(getattr(outcome, "reason", outcome))
        return result

    def _precheck_one(self, instance_id: str, step: str) -> tuple[Instance, bool]:
        """The step job's first read: the instance and whether the step has a result."""
        with self._connection() as conn:
            return load_instance_and_flag(
                conn, self.prefix, instance_id, self.workflows, HAS_RESULT, {"step_ref": step}
            )

    async def _precheck_batch(
        self, conn: AConn, items: Sequence[tuple[str, str]]
    ) -> list[tuple[Instance, bool] | Exception]:
        """:meth:`_precheck_one` for concurrent step jobs in one statement, each instance read
        once however many of its steps ask (a fan-out's siblings); if the statement fails (a
        connection the server closed), each job reads on its own."""
        try:
            return await self._precheck_many(conn, items)
        except Exception as exc:
            log.info("batch of %d pre-checks failed (%s); one by one", len(items), exc)
        return [await self._outcome_in_thread(self._precheck_one, *item) for item in items]

    async def _precheck_many(
        self, conn: AConn, items: Sequence[tuple[str, str]]
    ) -> list[tuple[Instance, bool] | Exception]:
        checks = await load_for_steps(
            conn,
            self.prefix,
            [instance_id for instance_id, _ in items],
            [step for _, step in items],
            self.workflows,
        )
        answer: list[tuple[Instance, bool] | Exception] = []
        for instance_id, step in items:
            check = checks.get(instance_id)
            try:
                instance = _found(None if check is None else check.instance, instance_id)
            except Exception as exc:
                answer.append(exc)
                continue
            assert check is not None
            answer.append((instance, step in check.ran))
        return answer

    def _run_body(self, workflow: Workflow, instance: Instance, step: str) -> Any:
        call = prepare_step(workflow, instance, step)
        assert call.step.run is not None
        if call.step.name == WAIT.name:
            wait_delay_ms(call.config)  # a bad config fails the step, not the later advance
        value: Any = call.step.run(call.instance, call.config, call.context)
        if inspect.isawaitable(value):
            value = asyncio.run(_await(value))
        return check_outcome(call.step, value)

    def _fail_if_exhausted(self, job: Job, instance_id: str) -> None:
        """On the last attempt the job is about to be discarded: fail the workflow now."""
        if job.attempt < job.max_attempts:
            return
        with self._connection() as conn, conn.transaction():
            cancelled = self._fail(conn, instance_id, own_job=job.id or 0)
        log.warning(
            "%s failed: step job %s exhausted its attempts; cancelled jobs %s",
            instance_id,
            job.id,
            cancelled,
        )

    def perform_resume(self, job: Job) -> Any:
        """ResumeWorker: record the resume event (empty context updates) and queue an advance."""
        result = StepResult(_arg(job, "step_ref"), _arg(job, "event"), {}, {})
        self._record_one(job, result, resume=True)
        return None

    def check_job(self, job: Job) -> Discard | None:
        """A job this runner must not run (another runner's config key, malformed args)."""
        if job.args.get("config_key") != self.config_key:
            return Discard(f"config_key {job.args.get('config_key')!r} is not {self.config_key!r}")
        return None

    # job bodies on a node's event loop: what bridge.workflows.run.workers registers

    async def run_advance(self, job: Job) -> Any:
        """:meth:`perform_advance` as a coroutine: the job waits on the loop, not in a thread,
        while its batch runs."""
        _arg(job, "instance_id")
        if self.coalesce:
            return await self._async_advances.submit(job)
        return await self._in_thread(self._advance_one, job)

    async def run_execute_step(self, job: Job) -> Any:
        """:meth:`perform_execute_step` as a coroutine: only the step's own body takes a
        thread (of the runner's, ``step_threads`` at most)."""
        instance_id = _arg(job, "instance_id")
        step = _arg(job, "step_ref")
        if self.coalesce:
            instance, ran = await self._async_prechecks.submit((instance_id, step))
        else:
            instance, ran = await self._in_thread(self._precheck_one, instance_id, step)
        if not _runnable(instance, step, ran):
            return None
        result = await self._in_thread(self._execute_body, job, instance, step)
        if isinstance(result, Error):
            return result
        companions = self._companions(instance, step)
        if self.coalesce and companions is None:
            await self._async_recorders.submit((job, result))
        else:
            record = partial(self._record_one, resume=False, companions=companions)
            await self._in_thread(record, job, result)
        return None

    async def run_resume(self, job: Job) -> Any:
        """:meth:`perform_resume` as a coroutine (in a thread: resumes are rare)."""
        return await self._in_thread(self.perform_resume, job)

    async def _outcome_in_thread(
        self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T | Exception:
        """:meth:`_in_thread`, with an exception returned as the outcome (a batch's answer)."""
        try:
            return await self._in_thread(call, *args, **kwargs)
        except Exception as exc:
            return exc

    async def _in_thread(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                self.step_threads, thread_name_prefix="bridge-workflow"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, partial(call, *args, **kwargs))


async def _await(value: Any) -> Any:
    return await value


async def _aclose(conn: AConn) -> None:
    await conn.close()


def _usable(conn: AConn) -> bool:
    return not (conn.closed or conn.broken)


class _OneByOne(Exception):
    """A batch of advances that must run one job at a time (a failure path)."""


def _woken(instance: Instance, pending: Sequence[StoredResult]) -> bool:
    """Whether an advance must look for steps still awaiting a resume: the instance waited, or
    an async step's ``__async__`` result is among those applied."""
    return instance.status == "waiting" or any(r.event == ASYNC_EVENT for r in pending)


def _active(instance: Instance, step: str) -> bool:
    return step in instance.active_steps and instance.status not in FINISHED


def _runnable(instance: Instance, step: str, ran: bool) -> bool:
    """Whether a step job should run its body: the step is active in an unfinished instance
    and has no result for this activation yet (processed or not: ``has_result``)."""
    return _active(instance, step) and not ran


def _takes_result(instance: Instance, step: str) -> bool:
    """Whether a recorder may write a result for the step (the one-job and the batch path)."""
    if _active(instance, step):
        return True
    log.info("%s: %s is no longer active; result dropped", instance.id, step)
    return False


def _found(loaded: Instance | Exception | None, instance_id: str) -> Instance:
    """An instance a batch read for one of its items, or the error that item's own read gave."""
    if loaded is None:
        raise InstanceNotFoundError(f"no workflow instance with id {instance_id!r}")
    if isinstance(loaded, Exception):
        raise loaded
    return loaded
