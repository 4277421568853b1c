"""Step results into the database, as HephaestusOban's ``StepResults.insert`` plus the advance
job that applies them, under the instance's shared lock; one job at a time or batched."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from bridge.workflows.model.engine import StepResult
from bridge.workflows.model.instance import Instance
from bridge.workflows.run.core import (
    UNSTARTED_ADVANCE,
    RunnerCore,
    found_instance,
    locked,
    log,
    step_active,
)
from bridge.workflows.run.jobs import (
    ADVANCE_WORKER,
    job_arg,
    job_meta,
    job_tags,
)
from bridge.workflows.store.batch import (
    AConn,
    NewResult,
    begin_and_load_activities,
    record_and_commit,
    rollback_open,
)
from bridge.workflows.store.instances import (
    awaiting_steps,
    insert_result,
    insert_result_and_job,
    load_activity,
    load_instance,
    results_for,
)


class Recording(RunnerCore):
    """Writing a step's result and the advance that applies it, for one job or a batch: shared by
    step jobs, resumes and the delegation lifeline."""

    def _record_one(
        self, job: Job, result: StepResult, *, resume: bool, companions: Any = None
    ) -> bool:
        """Insert a step result and queue the advance that applies it, in one transaction.

        ``companions`` (an Elixir-run step's ``companion_jobs``) gives jobs that must exist
        exactly when this result does: the delegated job of ``bridge.workflows.delegation.elixir``.
        """
        instance_id = job_arg(job, "instance_id")
        with self._connection() as conn, locked(conn, instance_id, shared=True):
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
            version = job_arg(job, "workflow_version")
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
                    UNSTARTED_ADVANCE,
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
        ids = [job_arg(job, "instance_id") for job, _ in items]
        chosen: list[tuple[int, NewResult]] = []
        loaded = await begin_and_load_activities(conn, self.prefix, ids, self.workflows)
        try:
            seen: set[tuple[str, str]] = set()
            for k, ((job, result), instance_id) in enumerate(zip(items, ids, strict=True)):
                try:
                    instance = found_instance(loaded.get(instance_id), instance_id)
                    workflow = self._workflow(instance.workflow)
                    version = job_arg(job, "workflow_version")
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


def _takes_result(instance: Instance, step: str) -> bool:
    """Whether a recorder may write a result for the step (the one-job and the batch path)."""
    if step_active(instance, step):
        return True
    log.info("%s: %s is no longer active; result dropped", instance.id, step)
    return False
