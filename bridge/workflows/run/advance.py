"""The AdvanceWorker's body: one job at a time under the instance's exclusive lock, or concurrent
advances in one transaction (:mod:`bridge.workflows.store.batch`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from bridge.jobs.client.outcome import Cancel
from bridge.workflows.model.builtins import WAIT, wait_delay_ms
from bridge.workflows.model.definition import (
    ASYNC_EVENT,
    Workflow,
)
from bridge.workflows.model.engine import (
    advance,
    apply_step_results,
)
from bridge.workflows.model.instance import Instance
from bridge.workflows.run.core import (
    FINISHED,
    RunnerCore,
    found_instance,
    locked,
    log,
)
from bridge.workflows.run.jobs import (
    EXECUTE_STEP_WORKER,
    execute_step_job,
    job_arg,
)
from bridge.workflows.store.batch import (
    AConn,
    begin_and_take_pending,
    results_of,
    results_or_raise,
    rollback_open,
    save_and_commit,
)
from bridge.workflows.store.coalesce import AsyncCoalescer
from bridge.workflows.store.instances import (
    Conn,
    InstanceNotFoundError,
    StoredResult,
    awaiting_steps,
    load_and_take_pending,
    results_for,
    save_instance,
    save_instance_and_job,
)

# Read with the instance row (load_instance_and_flag): has a step job of it been discarded?
_DISCARDED_STEP = """
EXISTS (SELECT 1 FROM {prefix}.oban_jobs
        WHERE state = 'discarded' AND worker = %(worker)s
          AND args @> jsonb_build_object('instance_id', i.id::text))
"""


class AdvanceJobs(RunnerCore):
    """``HephaestusOban.AdvanceWorker``: apply pending results, advance, persist, queue the newly
    active steps (and Wait timers)."""

    _async_advances: AsyncCoalescer[Job, Any, AConn]

    def perform_advance(self, job: Job) -> Any:
        """AdvanceWorker: apply pending results, advance, persist, queue newly active steps."""
        return self._advance_one(job)

    async def run_advance(self, job: Job) -> Any:
        """:meth:`perform_advance` as a coroutine: the job waits on the loop, not in a thread,
        while its batch runs."""
        job_arg(job, "instance_id")
        if self.coalesce:
            return await self._async_advances.submit(job)
        return await self._in_thread(self._advance_one, job)

    def _advance_one(self, job: Job) -> Any:
        instance_id = job_arg(job, "instance_id")
        with self._connection() as conn, locked(conn, instance_id):
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
        ids = [job_arg(job, "instance_id") for job in jobs]
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
                instance = found_instance(found.instance, instance_id)
                outcomes[instance_id] = None
                if instance.status in FINISHED:
                    continue
                updated, more = self._next(
                    instance, found.pending, partial(results_or_raise, every, instance_id)
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


class _OneByOne(Exception):
    """A batch of advances that must run one job at a time (a failure path)."""


def _woken(instance: Instance, pending: Sequence[StoredResult]) -> bool:
    """Whether an advance must look for steps still awaiting a resume: the instance waited, or
    an async step's ``__async__`` result is among those applied."""
    return instance.status == "waiting" or any(r.event == ASYNC_EVENT for r in pending)
