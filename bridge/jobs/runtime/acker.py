"""Group commit of job outcomes.

Only a job's final row matters to the Elixir side, so the outcomes of many jobs can be written by
one UPDATE in one transaction: a commit costs 1-2.5 ms of fsync here, which caps one-row
transactions near 400 jobs/s per connection, while a batch of 100 costs about the same. An
outcome waits at most ``max_delay`` for company. If the database is unreachable the batch is
kept and retried; if the process dies first, the job is still ``executing`` and the lifeline
rescues it (at-least-once, as with Oban).

An outcome applies only to the attempt that produced it (``ACK_JOBS``): one that arrives after its
job was rescued, claimed again or finished elsewhere is dropped, and logged at INFO with the job
and why.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool

from bridge.jobs import queries
from bridge.jobs.runtime.executor import Ack
from bridge.jobs.runtime.tasks import cancel_and_wait
from bridge.wire import jsonfmt

log = logging.getLogger("bridge.acker")

ACK_FIELDS = (
    "id",
    "attempt",
    "attempted_by",
    "state",
    "completed_at",
    "discarded_at",
    "cancelled_at",
    "scheduled_at",
    "max_attempts_inc",
    "error",
    "meta",
)


def ack_params(acks: list[Ack]) -> dict[str, list[Any]]:
    """Column arrays for ACK_JOBS; pure."""
    params: dict[str, list[Any]] = {name: [] for name in ACK_FIELDS}
    for ack in acks:
        for name in ACK_FIELDS:
            value = getattr(ack, name)
            if name in ("error", "meta", "attempted_by") and value is not None:
                value = jsonfmt.dumps(value)
            params[name].append(value)
    return params


def drop_reason(ack: Ack, row: tuple[str, int, list[str] | None] | None) -> str:
    """Why ACK_JOBS left an outcome alone, from the job's row read afterwards; pure."""
    if row is None:
        return "the job no longer exists"
    state, attempt, attempted_by = row
    if attempt != ack.attempt or attempted_by != ack.attempted_by:
        claimer = "/".join(attempted_by) if attempted_by else "nobody"
        return f"the job was claimed again: attempt {attempt} by {claimer} is {state}"
    if state == "available":
        return "the job was rescued (available again)"
    if state != "executing":
        return f"this attempt already ended: the job is {state}"
    return "the row changed while the outcome was being written"


class Acker:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        prefix: str,
        *,
        max_batch: int = 1000,
        max_delay: float = 0.002,
        async_commit: bool = False,
    ) -> None:
        self.pool = pool
        self.prefix = prefix
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.async_commit = async_commit
        self._pending: list[Ack] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.written = 0  # outcomes processed: applied or dropped
        self.dropped = 0  # outcomes left alone because their attempt was over (ACK_JOBS)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bridge-acker")

    def push(self, ack: Ack) -> None:
        self._pending.append(ack)
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything pushed so far is written."""
        await self._idle.wait()

    async def stop(self) -> None:
        await self.flush()
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        retry_delay = 0.05
        while True:
            await self._wake.wait()
            if len(self._pending) < self.max_batch and self.max_delay > 0:
                await asyncio.sleep(self.max_delay)
            batch = self._pending[: self.max_batch]
            try:
                await self._write(batch)
            except Exception as exc:
                log.warning(
                    "could not write %d job outcomes (%s: %s); retrying in %.2fs",
                    len(batch),
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                    retry_delay,
                )
                await asyncio.sleep(retry_delay)
                retry_delay = min(retry_delay * 2, 2.0)
                continue
            retry_delay = 0.05
            del self._pending[: len(batch)]
            self.written += len(batch)
            if not self._pending:
                self._wake.clear()
                self._idle.set()

    async def _write(self, batch: list[Ack]) -> None:
        query = queries.render(queries.ACK_JOBS, self.prefix)
        async with self.pool.connection() as conn:
            if not self.async_commit:
                # One UPDATE is atomic on its own: no BEGIN/COMMIT round trips around it.
                cursor = await conn.execute(query, ack_params(batch))
                applied = await cursor.fetchall()
            else:
                async with conn.transaction():
                    await conn.execute("SET LOCAL synchronous_commit = off")
                    cursor = await conn.execute(query, ack_params(batch))
                    applied = await cursor.fetchall()
        if len(applied) < len(batch):
            done = {(job_id, attempt) for job_id, attempt in applied}
            dropped = [ack for ack in batch if (ack.id, ack.attempt) not in done]
            self.dropped += len(dropped)
            await self._log_dropped(dropped)

    async def _log_dropped(self, dropped: list[Ack]) -> None:
        """One INFO line per outcome left alone, naming the job and why. The batch is written
        by now: a failure here costs the reasons, never a second write."""
        rows: dict[int, tuple[str, int, list[str] | None]] = {}
        try:
            query = queries.render(queries.ACK_DROPPED_ROWS, self.prefix)
            async with self.pool.connection() as conn:
                cursor = await conn.execute(query, {"ids": [ack.id for ack in dropped]})
                found = await cursor.fetchall()
            rows = {job_id: (state, attempt, by) for job_id, state, attempt, by in found}
            known = True
        except Exception as exc:
            log.warning("could not read the rows of dropped outcomes: %s", exc)
            known = False
        for ack in dropped:
            reason = drop_reason(ack, rows.get(ack.id)) if known else "reason unknown"
            log.info(
                "job %s (%s): outcome %s of attempt %s by %s dropped: %s",
                ack.id,
                ack.worker or "?",
                ack.state,
                ack.attempt,
                "/".join(ack.attempted_by or []) or "?",
                reason,
            )
