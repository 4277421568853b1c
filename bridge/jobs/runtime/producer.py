"""One producer per queue: claim as many jobs as there are free slots, run them, store their
outcomes.

A job holds its slot until its outcome is stored, as in Oban, so the table never shows more
``executing`` rows in a queue than its limit. Storing the outcomes that finished and claiming
jobs for their slots is one round trip and one transaction (:meth:`Acker.write`); outcomes that
finish while it is in flight go in the next one, sent as soon as it returns.

It wakes on the queue's ``oban_insert`` notification, when a job finishes, on a signal, and on a
poll timer as the fallback for lost notifications (Oban polls at 1 s too). Pause, resume, scale
and pkill follow Oban's producer (``lib/oban/queue/producer.ex``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from bridge.jobs.client.job import Job, UndecodableRowError
from bridge.jobs.runtime import telemetry
from bridge.jobs.runtime.acker import Acker, Claim
from bridge.jobs.runtime.executor import Ack, JobExecutor
from bridge.wire import errors as wire_errors
from bridge.wire.timefmt import utc_now

log = logging.getLogger("bridge.producer")

# Oban's producer refreshes its meta's updated_at every refresh_interval (60 s by default,
# Oban.Engines.Basic.refresh/2); check() reports it.
REFRESH_SECONDS = 60.0

# Outcomes stored per round trip at most (a queue with a larger limit stores the rest next).
MAX_BATCH = 1000
# After the grace, how long a stopping producer keeps trying to store the outcomes it holds.
# With the database gone for good, a stop must still end (a deploy's SIGTERM, a supervisor's
# restart): what is not stored by then stays `executing` for the lifeline, as after a kill.
FINAL_STORE_SECONDS = 5.0


def undecodable_ack(error: UndecodableRowError) -> Ack:
    """The outcome of a claimed row holding a value Python cannot (``Job.from_text_row``):
    discarded at once, since no retry could decode it, with an Oban-shaped entry naming the
    column and why. Shared with ``bridge.testing.drain``, which ends such rows the same way."""
    job = error.job
    now = utc_now()
    text = f"** ({wire_errors.exception_kind(error)}) {error}"
    return Ack(
        job.id or 0,
        "discarded",
        discarded_at=now,
        error=wire_errors.entry(job.attempt, now, text),
        attempt=job.attempt,
        attempted_by=job.attempted_by,
        worker=job.worker,
        kind="discard",
    )


class Producer:
    def __init__(
        self,
        *,
        queue: str,
        limit: int,
        node: str,
        prefix: str,
        pool: AsyncConnectionPool[Any],
        executor: JobExecutor,
        acker: Acker,
        poll_interval: float = 1.0,
        paused: bool = False,
        on_ack: Any = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"queue {queue!r}: limit must be >= 1, got {limit}")
        self.queue = queue
        self.limit = limit
        self.node = node
        self.uuid = str(uuid.uuid4())
        self.prefix = prefix
        self.pool = pool
        self.executor = executor
        self.acker = acker
        self.poll_interval = poll_interval
        self.paused = paused
        self.on_ack = on_ack
        self.running: dict[int, tuple[Job, asyncio.Task[Ack]]] = {}
        # Sync bodies whose outcome is written (timed out, killed) but whose thread has not
        # returned: each keeps its slot until it does (see free_slots).
        self.lingering: dict[asyncio.Future[Any], Job] = {}
        # Outcomes decided but not yet stored: their jobs are still `executing` in the table, so
        # their slots stay taken until the write that stores them (which may claim into them).
        self.outcomes: list[Ack] = []
        self._killed: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False  # no more claims
        self._claims_over = asyncio.Event()  # set by the loop once no claim can be in flight
        self._final = False  # running jobs are done or abandoned: store what is left and end
        self.claimed = 0
        self.started_at = utc_now()
        self.updated_at = self.started_at  # touched on changes and every REFRESH_SECONDS
        self.shutdown_started_at: datetime | None = None
        self._refreshed = time.monotonic()

    # control -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"bridge-producer-{self.queue}")

    def wake(self) -> None:
        self._wake.set()

    def pause(self) -> None:
        self.paused = True
        self.updated_at = utc_now()

    def resume(self) -> None:
        self.paused = False
        self.updated_at = utc_now()
        self.wake()

    def scale(self, limit: int) -> None:
        if limit >= 1:
            self.limit = limit
            self.updated_at = utc_now()
            self.wake()

    def pkill(self, job_id: int) -> bool:
        entry = self.running.get(job_id)
        if entry is None:
            return False
        self._killed.add(job_id)
        entry[1].cancel()
        return True

    def check(self) -> dict[str, Any]:
        """The queue's state in the shape of ``Oban.check_queue/1``."""
        return {
            "queue": self.queue,
            "limit": self.limit,
            "paused": self.paused,
            "node": self.node,
            "uuid": self.uuid,
            "running": sorted(self.running),
        }

    async def stop(self, grace: float) -> None:
        """Stop claiming; give running jobs ``grace`` seconds; store every outcome decided; leave
        the jobs still running as ``executing`` for the lifeline to rescue.

        Bounded whatever the database does: a claim stuck waiting for a connection eats into
        the grace rather than adding to it, and outcomes not stored ``FINAL_STORE_SECONDS``
        after the grace are given up on (said in one line)."""
        self._stopping = True
        self.paused = True  # as Oban.Engines.Basic.shutdown/2 marks the meta
        self.shutdown_started_at = utc_now()
        self._wake.set()
        if self._task is None:
            return
        grace_ends = time.monotonic() + grace
        with contextlib.suppress(TimeoutError):
            # a claim in flight has started its jobs by the time this is set
            await asyncio.wait_for(self._claims_over.wait(), grace)
        tasks = [task for _, task in self.running.values()]
        if tasks:
            left = max(0.0, grace_ends - time.monotonic())
            _, pending = await asyncio.wait(tasks, timeout=left)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
                log.warning(
                    "queue %s: %d jobs still running after %.1fs grace; they stay executing "
                    "for the lifeline to rescue",
                    self.queue,
                    len(pending),
                    grace,
                )
        self._final = True
        self._wake.set()
        budget = max(0.0, grace_ends - time.monotonic()) + FINAL_STORE_SECONDS
        try:
            await asyncio.wait_for(asyncio.shield(self._task), budget)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            log.warning(
                "queue %s: stopped without storing %d job outcomes: the database did not take "
                "them within %.1fs; those jobs stay executing for the lifeline to rescue",
                self.queue,
                len(self.outcomes),
                budget,
            )

    # loop ----------------------------------------------------------------------------------

    async def _loop(self) -> None:
        retry_delay = 0.05
        while True:
            self._wake.clear()  # whatever happens from here on wakes the wait below
            if self._stopping:
                self._claims_over.set()
            batch = self.outcomes[:MAX_BATCH]
            demand = self._demand(len(batch))
            if batch or demand > 0:
                claim = Claim(self.queue, demand, [self.node, self.uuid]) if demand > 0 else None
                try:
                    rows = await self.acker.write(batch, claim)
                except Exception as exc:
                    log.warning(
                        "queue %s: could not store %d job outcomes%s (%s: %s); retrying in %.2fs",
                        self.queue,
                        len(batch),
                        f" and claim up to {demand} jobs" if demand > 0 else "",
                        type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "",
                        retry_delay,
                    )
                    await asyncio.sleep(retry_delay)
                    retry_delay = min(retry_delay * 2, 2.0)
                    continue
                retry_delay = 0.05
                del self.outcomes[: len(batch)]
                self.claimed += len(rows)
                for job in self._decode(rows):
                    self._start_job(job)
                if self.outcomes or (demand > 0 and len(rows) == demand):
                    continue  # more to store, or more may be waiting: at once, no sleep
            elif self._final:
                return
            if time.monotonic() - self._refreshed >= REFRESH_SECONDS:
                self._refreshed = time.monotonic()
                self.updated_at = utc_now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def _demand(self, storing: int) -> int:
        """Jobs to claim in the write that stores the first ``storing`` outcomes: the limit less
        the jobs running, the sync bodies running on after their outcome, and the outcomes that
        stay unstored after this write (their rows are still `executing`)."""
        if self.paused or self._stopping:
            return 0
        unstored = len(self.outcomes) - storing
        return max(0, self.limit - len(self.running) - len(self.lingering) - unstored)

    def _decode(self, rows: list[dict[str, Any]]) -> list[Job]:
        jobs = []
        for row in rows:
            try:
                jobs.append(Job.from_text_row(row))
            except UndecodableRowError as exc:
                self._end_undecodable(exc)
        return jobs

    def _end_undecodable(self, error: UndecodableRowError) -> None:
        """End a claimed row holding a value Python cannot (see ``Job.from_text_row``):
        discarded at once, since no retry could decode it, with an entry naming the column and
        why, stored like any outcome and handed to the ack listeners."""
        job = error.job
        ack = undecodable_ack(error)
        log.warning(
            "queue %s: job %s (%s) discarded: its row cannot be decoded: %s",
            self.queue,
            job.id,
            job.worker,
            error,
        )
        if telemetry.has_handlers():
            telemetry.emit("job:start", {"system_time": time.time_ns()}, telemetry.job_details(job))
        self.outcomes.append(ack)
        if self.on_ack is not None:
            self.on_ack(job, ack)

    def _start_job(self, job: Job) -> None:
        assert job.id is not None
        if telemetry.has_handlers():
            telemetry.emit("job:start", {"system_time": time.time_ns()}, telemetry.job_details(job))
        task = asyncio.create_task(self._execute(job), name=f"bridge-job-{job.id}")
        self.running[job.id] = (job, task)

    async def _execute(self, job: Job) -> Ack:
        assert job.id is not None
        try:
            try:
                ack = await self.executor.run(job)
            except asyncio.CancelledError:
                if job.id not in self._killed:
                    raise
                ack = self.executor.killed_ack(job)
            self.outcomes.append(ack)
            if self.on_ack is not None:
                self.on_ack(job, ack)
            return ack
        finally:
            body = self.executor.lingering_body(job)
            if body is not None:
                self._hold_slot(job, body)
            # The same id may have been claimed again here (rescued while it ran): only this
            # run's own entry is removed.
            entry = self.running.get(job.id)
            if entry is not None and entry[1] is asyncio.current_task():
                del self.running[job.id]
                self._killed.discard(job.id)
            self._wake.set()

    # slots ---------------------------------------------------------------------------------

    def free_slots(self) -> int:
        """Slots free now: the limit less the jobs running, the sync bodies still running after
        their outcome (a thread cannot be stopped; a slot is released only when its thread is,
        so the node never claims a job it cannot start at once), and the outcomes not yet
        stored (their rows are still `executing`)."""
        return self.limit - len(self.running) - len(self.lingering) - len(self.outcomes)

    @property
    def idle(self) -> bool:
        """Nothing running and every outcome stored."""
        return not self.running and not self.outcomes

    def _hold_slot(self, job: Job, body: asyncio.Future[Any]) -> None:
        """Keep ``job``'s slot until its sync body returns; its outcome is already decided."""
        self.lingering[body] = job
        since = time.monotonic()
        log.warning(
            "queue %s: job %s (%s) ended (timed out or killed) while its sync code runs on in "
            "its thread; its slot stays taken until that code returns",
            self.queue,
            job.id,
            job.worker,
        )

        def release(_: asyncio.Future[Any]) -> None:
            self.lingering.pop(body, None)
            if not body.cancelled():
                body.exception()  # what it raised after its job ended is ignored, by design
            log.info(
                "queue %s: the sync code of job %s (%s) returned %.1fs after the job ended; "
                "its slot is free",
                self.queue,
                job.id,
                job.worker,
                time.monotonic() - since,
            )
            self._wake.set()

        body.add_done_callback(release)
