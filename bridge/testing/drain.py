"""Draining a queue in the test's own process, through a node's claim and ack.

As ``Oban.Testing.drain_queue/1`` (Oban.Queue.Drainer, 2.23.1): with ``with_scheduled`` the
queue's ``scheduled`` and ``retryable`` jobs are made ``available`` first (all of them, or
those due by the datetime given); up to ``with_limit`` available jobs are claimed, run one at a
time and each outcome stored; with ``with_recursion`` that repeats while a pass ran something
(jobs that enqueue jobs, retries made due by ``with_scheduled``). It returns the outcomes
counted under Oban's keys: ``success``, ``failure``, ``discard`` (exhausted failures too),
``cancelled``, ``snoozed``. With ``with_safety=False`` a worker's exception is raised after its
outcome is stored, as Oban's drain does.

The claim is the producer's ``FETCH_JOBS`` and the write its ``ACK_JOBS``, and the executor
decides each outcome, so every row ends as a node leaves it (``attempted_by`` is this drain's
node name and a producer uuid of its own).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.db import DEFAULT_PREFIX
from bridge.jobs import queries
from bridge.jobs.client.job import Job, UndecodableRowError
from bridge.jobs.client.registry import Registry, default_registry
from bridge.jobs.runtime.acker import ack_params
from bridge.jobs.runtime.executor import Ack, JobExecutor
from bridge.jobs.runtime.producer import undecodable_ack
from bridge.testing.perform import naive_utc
from bridge.testing.running import (
    RESULT_KEYS,
    RESULT_OF_KIND,
    CapturingRegistry,
    ContextThreads,
)
from bridge.wire.timefmt import utc_now

# Oban's drainer claims "everything" as a limit of 100,000,000.
UNLIMITED = 100_000_000

STAGE = """
UPDATE {prefix}.oban_jobs SET state = 'available'
WHERE state IN ('scheduled', 'retryable') AND queue = %(queue)s
  AND (%(before)s::timestamp IS NULL OR scheduled_at <= %(before)s::timestamp)
"""

Source = psycopg.Connection[Any] | str
AsyncSource = psycopg.AsyncConnection[Any] | str

# The three statements a drain sends, whatever runs them: stage(queue, before), claim(queue,
# demand, attempted_by) -> rows, ack(acks).
Stage = Callable[[str, datetime | None], Awaitable[None]]
Claim = Callable[[str, int, list[str]], Awaitable[list[dict[str, Any]]]]
Store = Callable[[list[Ack]], Awaitable[None]]


def _stage_params(queue: str, with_scheduled: bool | datetime) -> tuple[str, datetime | None]:
    before = naive_utc(with_scheduled) if isinstance(with_scheduled, datetime) else None
    return queue, before


def _claim_params(queue: str, demand: int, attempted_by: list[str]) -> dict[str, Any]:
    return {"queue": queue, "demand": demand, "now": utc_now(), "attempted_by": attempted_by}


async def _drain(
    stage: Stage,
    claim: Claim,
    store: Store,
    queue: str,
    *,
    with_scheduled: bool | datetime,
    with_recursion: bool,
    with_safety: bool,
    with_limit: int,
    registry: Registry,
    node: str,
) -> dict[str, int]:
    capturing = CapturingRegistry(registry)
    threads = ContextThreads(capturing)
    try:
        return await _drain_passes(
            stage,
            claim,
            store,
            queue,
            JobExecutor(capturing, threads),
            capturing,
            with_scheduled=with_scheduled,
            with_recursion=with_recursion,
            with_safety=with_safety,
            with_limit=with_limit,
            node=node,
        )
    finally:
        threads.shutdown(wait=False)


async def _drain_passes(
    stage: Stage,
    claim: Claim,
    store: Store,
    queue: str,
    executor: JobExecutor,
    capturing: CapturingRegistry,
    *,
    with_scheduled: bool | datetime,
    with_recursion: bool,
    with_safety: bool,
    with_limit: int,
    node: str,
) -> dict[str, int]:
    counts = dict.fromkeys(RESULT_KEYS, 0)
    attempted_by = [node, str(uuid.uuid4())]
    while True:
        if with_scheduled:
            await stage(*_stage_params(queue, with_scheduled))
        ran = 0
        for row in await claim(queue, with_limit, attempted_by):
            ran += 1
            try:
                job = Job.from_text_row(row)
            except UndecodableRowError as exc:
                await store([undecodable_ack(exc)])
                counts["discard"] += 1
                continue
            ack = await executor.run(job)
            await store([ack])
            result = RESULT_OF_KIND.get(ack.kind, "failure")
            counts[result] = counts.get(result, 0) + 1
            raised = capturing.take()
            if raised is not None and not with_safety:
                raise raised
        if not with_recursion or ran == 0:
            return counts


def _statements(prefix: str) -> tuple[sql.Composed, sql.Composed, sql.Composed]:
    return (
        queries.render(STAGE, prefix),
        queries.render(queries.FETCH_JOBS, prefix),
        queries.render(queries.ACK_JOBS, prefix),
    )


async def drain_queue_async(
    source: AsyncSource,
    queue: str = "default",
    *,
    prefix: str = DEFAULT_PREFIX,
    with_scheduled: bool | datetime = False,
    with_recursion: bool = False,
    with_safety: bool = True,
    with_limit: int = UNLIMITED,
    registry: Registry | None = None,
    node: str | None = None,
) -> dict[str, int]:
    """Drain ``queue`` on the running event loop; see the module's docstring."""
    if isinstance(source, str):
        async with await psycopg.AsyncConnection.connect(source, autocommit=True) as conn:
            return await drain_queue_async(
                conn,
                queue,
                prefix=prefix,
                with_scheduled=with_scheduled,
                with_recursion=with_recursion,
                with_safety=with_safety,
                with_limit=with_limit,
                registry=registry,
                node=node,
            )
    conn = source
    stage_sql, claim_sql, ack_sql = _statements(prefix)

    async def stage(queue: str, before: datetime | None) -> None:
        await conn.execute(stage_sql, {"queue": queue, "before": before})

    async def claim(queue: str, demand: int, attempted_by: list[str]) -> list[dict[str, Any]]:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(claim_sql, _claim_params(queue, demand, attempted_by))
        return await cursor.fetchall()

    async def store(acks: list[Ack]) -> None:
        await conn.execute(ack_sql, ack_params(acks))

    return await _drain(
        stage,
        claim,
        store,
        queue,
        with_scheduled=with_scheduled,
        with_recursion=with_recursion,
        with_safety=with_safety,
        with_limit=with_limit,
        registry=registry or default_registry,
        node=node or socket.gethostname(),
    )


def drain_queue(
    source: Source,
    queue: str = "default",
    *,
    prefix: str = DEFAULT_PREFIX,
    with_scheduled: bool | datetime = False,
    with_recursion: bool = False,
    with_safety: bool = True,
    with_limit: int = UNLIMITED,
    registry: Registry | None = None,
    node: str | None = None,
) -> dict[str, int]:
    """Drain ``queue`` from a test without an event loop (one is run for the drain's jobs);
    see the module's docstring."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "drain_queue was called inside a running event loop: use drain_queue_async there"
        )
    if isinstance(source, str):
        with psycopg.connect(source, autocommit=True) as conn:
            return drain_queue(
                conn,
                queue,
                prefix=prefix,
                with_scheduled=with_scheduled,
                with_recursion=with_recursion,
                with_safety=with_safety,
                with_limit=with_limit,
                registry=registry,
                node=node,
            )
    conn = source
    stage_sql, claim_sql, ack_sql = _statements(prefix)

    # The statements run on the caller's (sync) connection; only the jobs need the loop.
    async def stage(queue: str, before: datetime | None) -> None:
        conn.execute(stage_sql, {"queue": queue, "before": before})

    async def claim(queue: str, demand: int, attempted_by: list[str]) -> list[dict[str, Any]]:
        cursor = conn.cursor(row_factory=dict_row)
        return cursor.execute(claim_sql, _claim_params(queue, demand, attempted_by)).fetchall()

    async def store(acks: list[Ack]) -> None:
        conn.execute(ack_sql, ack_params(acks))

    return asyncio.run(
        _drain(
            stage,
            claim,
            store,
            queue,
            with_scheduled=with_scheduled,
            with_recursion=with_recursion,
            with_safety=with_safety,
            with_limit=with_limit,
            registry=registry or default_registry,
            node=node or socket.gethostname(),
        )
    )
