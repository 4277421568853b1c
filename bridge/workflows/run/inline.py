"""An inline advance: the step job applies its own result (one job per step instead of two).

HephaestusOban's ExecuteStepWorker records its result and queues an AdvanceWorker, which then
takes the instance's exclusive lock, applies every pending result and queues the next steps.
For a Python-owned instance the step job may do that second transaction's work itself, in the
transaction that writes the result: the exclusive lock, the instance ``FOR UPDATE`` with the
"a step job was discarded" flag, every pending result taken, the result written (processed, as
the advance would leave it), the engine's advance, the instance saved and the next steps' jobs
queued, one ``COMMIT``. The instance and step-result rows are the ones the two jobs leave, and
each transition is as atomic as an advance's; only the AdvanceWorker job is missing
(``WorkflowServing(inline_advance=False)`` writes HephaestusOban's jobs).

What the recorder refuses, this refuses too: a result for a step that is not active (or in a
finished instance), or for a step that already has an unprocessed result (the partial unique
index would have refused the row). A discarded step job of the instance (the failure path) is
handled as the advance handles it: the result is written, then the instance is failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from bridge.workflows.model.engine import StepResult
from bridge.workflows.model.instance import Instance
from bridge.workflows.run.advance import _DISCARDED_STEP, AdvanceJobs, _OneByOne, _woken
from bridge.workflows.run.core import found_instance, locked, log, step_active
from bridge.workflows.run.jobs import EXECUTE_STEP_WORKER, job_arg
from bridge.workflows.store.batch import (
    AConn,
    AppliedResult,
    ResultsOf,
    Unchanged,
    apply_if_unchanged,
    begin_and_take_free,
    results_of,
    results_or_raise,
    rollback_open,
    save_and_commit,
)
from bridge.workflows.store.coalesce import AsyncCoalescer
from bridge.workflows.store.instances import (
    StoredResult,
    insert_result,
    load_and_take_pending,
    save_instance,
    save_instance_and_job,
)

_FLAG_PARAMS = {"worker": EXECUTE_STEP_WORKER}
# Instances this runner advanced inline, remembered at most (then forgotten all at once: that
# costs only attempts of the one-round-trip path that find the row changed).
_REMEMBERED = 100_000


@dataclass(frozen=True)
class Seen:
    """What a step job's batched pre-check read: the instance, its row version (``xmin``), and
    how many inline advances this runner had made when the pre-check was asked for."""

    instance: Instance
    xmin: str
    since: int


# A step job's inline advance: its job, its result, and its pre-check's read when batched.
Item = tuple[Job, StepResult, "Seen | None"]


class InlineAdvance(AdvanceJobs):
    """Record a step's result and advance its instance in one transaction (module docstring)."""

    _async_inline: AsyncCoalescer[Item, bool, AConn]
    # How many inline advances this runner made, and the count at each instance's last one:
    # an instance advanced here after its step job's pre-check has certainly changed since.
    _inline_applies: int = 0
    _inline_applied_at: dict[str, int]

    def _note_applied(self, instance_ids: Sequence[str]) -> None:
        """Remember that these instances were just advanced inline by this runner."""
        if not instance_ids:
            return
        memory = self._inline_applied_at
        if len(memory) > _REMEMBERED:
            memory.clear()
        self._inline_applies += 1
        for instance_id in instance_ids:
            memory[instance_id] = self._inline_applies

    def _maybe_unchanged(self, instance_id: str, seen: Seen | None) -> bool:
        """Whether the one-round-trip path is worth trying: the pre-check's read is known and
        this runner has not advanced the instance since (a fan-out's siblings, usually). Only a
        guess: :func:`apply_if_unchanged` checks the row version itself."""
        if seen is None:
            return False
        return self._inline_applied_at.get(instance_id, -1) <= seen.since

    def _apply_one(self, job: Job, result: StepResult) -> bool:
        """One step job's inline advance, on a connection of the runner's pool; answers whether
        the result was written."""
        instance_id = job_arg(job, "instance_id")
        version = job_arg(job, "workflow_version")
        with self._connection() as conn, locked(conn, instance_id):
            instance, discarded, pending = load_and_take_pending(
                conn, self.prefix, instance_id, self.workflows, _DISCARDED_STEP, _FLAG_PARAMS
            )
            if not _accepts(instance, result.step_ref, pending):
                return False
            insert_result(conn, self.prefix, instance_id, result, version, processed=True)
            applied = [*pending, _stored(result)]
            updated, jobs = self._advanced(conn, job, instance, discarded, applied)
            if updated is not None and len(jobs) == 1:  # both rows in one statement
                save_instance_and_job(conn, self.prefix, updated, jobs[0])
            else:
                if updated is not None:
                    save_instance(conn, self.prefix, updated)
                insert_all(conn, jobs, prefix=self.prefix)
        self._note_applied([instance_id])
        return True

    async def _apply_batch(self, conn: AConn, items: Sequence[Item]) -> list[bool | Exception]:
        """Inline advances of concurrent step jobs: those of instances unchanged since their
        pre-check in one round trip (:meth:`_apply_unchanged`), the others in one transaction
        that reads each instance first; a failure path (a discarded step job, an unreadable
        row) or an error runs the latter one at a time."""
        outcomes: dict[int, bool | Exception] = {}
        if any(self._maybe_unchanged(job_arg(job, "instance_id"), seen) for job, _, seen in items):
            try:
                outcomes.update(await self._apply_unchanged(conn, items))
            except Exception as exc:
                log.info("%d inline advances in one round trip failed (%s)", len(items), exc)
        rest = [k for k in range(len(items)) if k not in outcomes]
        if rest:
            read = await self._apply_read(conn, [items[k] for k in rest])
            outcomes.update(zip(rest, read, strict=True))
        return [outcomes[k] for k in range(len(items))]

    async def _apply_read(self, conn: AConn, items: Sequence[Item]) -> list[bool | Exception]:
        try:
            return await self._apply_many(conn, items)
        except Exception as exc:
            if not isinstance(exc, _OneByOne):
                log.info("batch of %d inline advances failed (%s); one by one", len(items), exc)
        return [await self._outcome_in_thread(self._apply_one, job, res) for job, res, _ in items]

    async def _apply_unchanged(self, conn: AConn, items: Sequence[Item]) -> dict[int, bool]:
        """The outcomes of the items whose instance had not changed since their pre-check,
        written in one round trip (:func:`apply_if_unchanged`); the other items are left out.

        Each such instance's advance is computed from the pre-check's read as the read path
        computes it from its own (no pending result, the step job flag false: the statement
        writes only if both still hold and the row is the version read), over the batch's
        results for it in arrival order. An instance whose items disagree on the version
        read, that must read all its results (a waiting one) or that any item cannot use is
        left to the read path whole.
        """
        groups: dict[str, list[int]] = {}
        for k, (job, _, _) in enumerate(items):
            groups.setdefault(job_arg(job, "instance_id"), []).append(k)
        writes: list[Unchanged] = []
        writes_of: dict[str, Instance] = {}  # the instance each write was computed from
        decided: dict[str, dict[int, bool]] = {}
        for instance_id, ks in groups.items():
            seens = [items[k][2] for k in ks]
            first = seens[0]
            if first is None or not self._maybe_unchanged(instance_id, first):
                continue
            if any(s is None or s.xmin != first.xmin for s in seens):
                continue
            try:
                write, outcome = self._unchanged_write(instance_id, first, [items[k] for k in ks])
            except Exception:
                continue  # the read path reports it for its own job
            if write is None:
                continue
            writes.append(write)
            writes_of[instance_id] = first.instance
            decided[instance_id] = dict(zip(ks, outcome, strict=True))
        if not writes:
            return {}
        written = await apply_if_unchanged(conn, self.prefix, writes, _DISCARDED_STEP, _FLAG_PARAMS)
        self._note_applied(sorted(written))
        answer: dict[int, bool] = {}
        for instance_id in written:
            answer.update(decided[instance_id])
            for k, accepted in decided[instance_id].items():
                step = items[k][1].step_ref
                if not accepted and not step_active(writes_of[instance_id], step):
                    log.info("%s: %s is no longer active; result dropped", instance_id, step)
        return answer

    def _unchanged_write(
        self, instance_id: str, seen: Seen, items: Sequence[Item]
    ) -> tuple[Unchanged | None, list[bool]]:
        """What the read path would write for the instance if it read ``seen``: the write
        (``None``: the read path must do it) and whether each item's result is written."""
        instance = seen.instance
        mine: list[StoredResult] = []
        accepted: list[bool] = []
        versions: list[tuple[StepResult, int]] = []
        for job, result, _ in items:
            ok = _accepts(instance, result.step_ref, mine, quiet=True)
            accepted.append(ok)
            if ok:
                mine.append(_stored(result))
                versions.append((result, job_arg(job, "workflow_version")))
        if not mine:
            return Unchanged(instance_id, seen.xmin, None, [], []), accepted
        if _woken(instance, mine):
            return None, accepted
        updated, jobs = self._next(instance, mine, _never)
        applied = [AppliedResult(instance_id, r, version) for r, version in versions]
        return Unchanged(instance_id, seen.xmin, updated, jobs, applied), accepted

    async def _apply_many(self, conn: AConn, items: Sequence[Item]) -> list[bool | Exception]:
        """What :meth:`_apply_one` does for each item, with each statement sent once for all.

        Every instance's lock is held exclusively for the whole transaction; each instance is
        advanced once, over its pending results then the batch's results for it in arrival
        order, as one advance after those recordings would. A second result for one step (a
        duplicate delivery) is refused as the unique index refuses it. The locks are only
        tried: the jobs of an instance whose lock another transaction holds run one at a time
        after the batch commits, waiting for it there, so that one held lock does not keep
        every other step job of the batch executing (and past a lifeline's rescue age).
        """
        ids = [job_arg(job, "instance_id") for job, _, _ in items]
        taken, busy = await begin_and_take_free(
            conn, self.prefix, ids, self.workflows, _DISCARDED_STEP, _FLAG_PARAMS
        )
        deferred = [k for k, instance_id in enumerate(ids) if instance_id in busy]
        try:
            for read in taken.values():
                if isinstance(read.instance, Exception) or read.flag:
                    raise _OneByOne()
            outcomes: list[bool | Exception] = [False] * len(items)
            fresh: dict[str, list[tuple[int, StepResult, int]]] = {}
            for k, ((job, result, _), instance_id) in enumerate(zip(items, ids, strict=True)):
                if instance_id in busy:
                    continue
                found = taken.get(instance_id)
                try:
                    version = job_arg(job, "workflow_version")
                    instance = found_instance(
                        None if found is None else found.instance, instance_id
                    )
                except Exception as exc:
                    outcomes[k] = exc
                    continue
                assert found is not None
                earlier = [*found.pending, *(_stored(r) for _, r, _ in fresh.get(instance_id, []))]
                if _accepts(instance, result.step_ref, earlier):
                    fresh.setdefault(instance_id, []).append((k, result, version))
            woken = [
                instance_id
                for instance_id, new in fresh.items()
                if _woken(
                    taken[instance_id].instance,  # type: ignore[arg-type]
                    [*taken[instance_id].pending, *(_stored(r) for _, r, _ in new)],
                )
            ]
            every = await results_of(conn, self.prefix, woken) if woken else {}
            saves: list[Instance] = []
            new_jobs: list[Job] = []
            applied: list[AppliedResult] = []
            for instance_id, new in fresh.items():
                read = taken[instance_id]
                current = found_instance(read.instance, instance_id)
                mine = [_stored(r) for _, r, _ in new]
                updated, more = self._next(
                    current,
                    [*read.pending, *mine],
                    partial(_with_mine, every, instance_id, mine),
                )
                if updated is not None:
                    saves.append(updated)
                new_jobs.extend(more)
                for k, result, version in new:
                    applied.append(AppliedResult(instance_id, result, version))
                    outcomes[k] = True
            await save_and_commit(conn, self.prefix, saves, new_jobs, applied)
        except BaseException:
            await rollback_open(conn)
            raise
        self._note_applied(list(fresh))
        for k in deferred:
            outcomes[k] = await self._outcome_in_thread(self._apply_one, *items[k][:2])
        return outcomes


def _accepts(
    instance: Instance, step: str, pending: Sequence[StoredResult], *, quiet: bool = False
) -> bool:
    """Whether the step's result may be written: the recorder's check (the step is active in
    an unfinished instance) and the unique index's (no unprocessed result for the step)."""
    if not step_active(instance, step):
        if not quiet:
            log.info("%s: %s is no longer active; result dropped", instance.id, step)
        return False
    return all(p.step_ref != step for p in pending)


def _never() -> list[StoredResult]:
    """``every`` for an advance that must not read all results (:meth:`_unchanged_write`
    leaves a waking advance to the read path)."""
    raise AssertionError("an inline advance of an unchanged instance read all its results")


def _stored(result: StepResult) -> StoredResult:
    """A result about to be written, as the advance reads one (id and clock unused there)."""
    return StoredResult(
        id="",
        step_ref=result.step_ref,
        event=result.event,
        context_updates=result.context_updates,
        metadata_updates=result.metadata_updates or {},
        processed=True,
        inserted_at=datetime.now(UTC),
    )


def _with_mine(every: ResultsOf, instance_id: str, mine: list[StoredResult]) -> list[StoredResult]:
    """All of an instance's results as an advance after the recordings would read them: the
    stored ones (read in this transaction) and the ones this batch is writing."""
    return [*results_or_raise(every, instance_id), *mine]
