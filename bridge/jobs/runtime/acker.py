"""Storing job outcomes, in the same round trip as the claim that refills their slots.

A job keeps its queue's slot until its outcome is stored, as in Oban (a reader of ``oban_jobs``
never sees more ``executing`` rows in a queue than its limit). So that freeing and refilling a
slot costs one round trip, not two in a row, each producer hands :meth:`Acker.write` everything
that finished since its last write together with how many jobs to claim in their place: the
outcomes' UPDATE and the claim go out pipelined, before one Sync, and PostgreSQL runs them as one
implicit transaction (a commit costs 1-2.5 ms of fsync here, so one commit for both halves the
commits of a drain). Outcomes that finish while a write is in flight go in the next one, sent as
soon as it returns (group commit with no timer). If the database is unreachable the outcomes are
kept and retried and nothing is claimed; if the process dies first, the jobs are still
``executing`` and the lifeline rescues them (at-least-once, as with Oban).

An outcome applies only to the attempt that produced it (``ACK_JOBS``): one that arrives after its
job was rescued, claimed again or finished elsewhere is dropped, and logged at INFO with the job
and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bridge.jobs import queries
from bridge.jobs.runtime.executor import Ack
from bridge.wire import jsonfmt
from bridge.wire.timefmt import utc_now

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


@dataclass(frozen=True)
class Claim:
    """What a producer claims in the write that stores its outcomes: ``FETCH_JOBS``'s params."""

    queue: str
    demand: int
    attempted_by: list[str]


class Acker:
    """Writes outcomes (and the claim sent with them) for every producer of a node; counts."""

    def __init__(self, pool: AsyncConnectionPool[Any], prefix: str, *, async_commit: bool = False):
        self.pool = pool
        self.prefix = prefix
        self.async_commit = async_commit
        self.written = 0  # outcomes processed: applied or dropped
        self.dropped = 0  # outcomes left alone because their attempt was over (ACK_JOBS)
        self.writes = 0  # round trips made

    async def write(self, acks: list[Ack], claim: Claim | None = None) -> list[dict[str, Any]]:
        """Store ``acks`` and claim ``claim.demand`` jobs in one round trip and one transaction;
        the claimed rows, as ``FETCH_JOBS`` returns them. Raises (nothing stored, nothing
        claimed) if the database fails."""
        if claim is not None and claim.demand < 1:
            claim = None
        if not acks and claim is None:
            return []
        async with self.pool.connection() as conn:
            # Pipelined: the statements go out together before one Sync, which makes them one
            # implicit transaction (an error in either rolls back both).
            async with conn.pipeline():
                if self.async_commit:
                    await conn.execute("SELECT set_config('synchronous_commit', 'off', true)")
                acked = None
                if acks:
                    acked = await conn.execute(
                        queries.render(queries.ACK_JOBS, self.prefix), ack_params(acks)
                    )
                claimed = None
                if claim is not None:
                    claimed = conn.cursor(row_factory=dict_row)
                    await claimed.execute(
                        queries.render(queries.FETCH_JOBS, self.prefix),
                        {
                            "queue": claim.queue,
                            "demand": claim.demand,
                            "now": utc_now(),
                            "attempted_by": claim.attempted_by,
                        },
                    )
            applied = await acked.fetchall() if acked is not None else []
            rows = await claimed.fetchall() if claimed is not None else []
        self.writes += 1
        self.written += len(acks)
        if len(applied) < len(acks):
            done = {(job_id, attempt) for job_id, attempt in applied}
            dropped = [ack for ack in acks if (ack.id, ack.attempt) not in done]
            self.dropped += len(dropped)
            await self._log_dropped(dropped)
        return rows

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
