"""Insert jobs for any worker, Python or Elixir, exactly as ``Oban.insert`` would.

Inserts run on the caller's connection and inside the caller's transaction when there is one,
so a job commits or rolls back with the caller's own rows; the ``oban_insert`` notification is
sent in the same transaction, so PostgreSQL delivers it only on commit and an idle Elixir queue
wakes exactly when the job becomes visible. The rows come back with their JSON read as Jason
reads it (:func:`bridge.db.read_json_as_jason` on the cursor, leaving the caller's connection as
it is): an args value with an integer of 5,000 digits is stored and read back whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from contextvars import ContextVar
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from bridge.db import DEFAULT_PREFIX, quote_ident, read_json_as_jason
from bridge.jobs import queries
from bridge.jobs.client.insert_rows import (
    atomic,
    atomic_async,
    copy_data,
    insert_notifications,
    insert_one_params,
    insert_params,
    owns_transaction,
    shallow_copies,
)
from bridge.jobs.client.job import Job
from bridge.jobs.client.unique_insert import insert_unique, insert_unique_async
from bridge.wire import notify

# Above this many jobs, insert_all uses COPY with pre-allocated ids (about 3x the rows/s of one
# INSERT ... SELECT FROM unnest here: 63,000 vs 23,000 jobs/s in batches of 1,000).
COPY_THRESHOLD = 64

# A test's testing mode (bridge.testing.mode("inline")): while set, insert/insert_all and their
# async twins hand their jobs to it (``insert_all(conn, jobs, prefix)`` and
# ``insert_all_async``) instead of writing them. A ContextVar, so only the code inside that test
# context is intercepted, never a node's own tasks; None everywhere else.
INTERCEPTOR: ContextVar[Any] = ContextVar("bridge_insert_interceptor", default=None)


def insert_all(
    conn: psycopg.Connection[Any], jobs: Sequence[Job], *, prefix: str = DEFAULT_PREFIX
) -> list[Job]:
    """Insert many jobs in one statement on ``conn`` (in its transaction if one is open).

    Like Oban's OSS ``insert_all``, this does not check uniqueness.
    """
    interceptor = INTERCEPTOR.get()
    if interceptor is not None:
        return list(interceptor.insert_all(conn, jobs, prefix))
    if not jobs:
        return []
    if len(jobs) >= COPY_THRESHOLD:
        return _copy_all(conn, jobs, prefix)
    if len(jobs) == 1:
        with atomic(conn), conn.cursor(row_factory=dict_row) as cur:
            read_json_as_jason(cur)
            cur.execute(
                queries.render_insert_job(prefix),
                insert_one_params(prefix, jobs[0]),
            )
            return [Job.from_row(row) for row in cur.fetchall()]
    params = insert_params(jobs)
    with atomic(conn), conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        cur.execute(queries.render(queries.INSERT_JOBS, prefix), params)
        rows = cur.fetchall()
        for note in insert_notifications(prefix, rows):
            cur.execute(queries.NOTIFY, note)
    return [Job.from_row(row) for row in rows]


async def insert_all_async(
    conn: psycopg.AsyncConnection[Any], jobs: Sequence[Job], *, prefix: str = DEFAULT_PREFIX
) -> list[Job]:
    """The async twin of :func:`insert_all`."""
    interceptor = INTERCEPTOR.get()
    if interceptor is not None:
        return list(await interceptor.insert_all_async(conn, jobs, prefix))
    if not jobs:
        return []
    if len(jobs) >= COPY_THRESHOLD:
        return await _copy_all_async(conn, jobs, prefix)
    if len(jobs) == 1:
        async with atomic_async(conn), conn.cursor(row_factory=dict_row) as cur:
            read_json_as_jason(cur)
            await cur.execute(
                queries.render_insert_job(prefix),
                insert_one_params(prefix, jobs[0]),
            )
            return [Job.from_row(row) for row in await cur.fetchall()]
    params = insert_params(jobs)
    async with atomic_async(conn), conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        await cur.execute(queries.render(queries.INSERT_JOBS, prefix), params)
        rows = await cur.fetchall()
        for note in insert_notifications(prefix, rows):
            await cur.execute(queries.NOTIFY, note)
    return [Job.from_row(row) for row in rows]


def insert_one_unless(
    conn: psycopg.Connection[Any],
    job: Job,
    unless: str,
    params: Mapping[str, Any],
    *,
    prefix: str = DEFAULT_PREFIX,
) -> Job | None:
    """Insert one job, with its notification, unless ``unless`` finds a row, in one statement.

    ``unless`` is the body of a ``NOT EXISTS (...)``, a template with ``{prefix}`` and named
    parameters from ``params`` (not the job's own names). The row is the one insert_all
    writes; None when the guard held it back. Like insert_all, no uniqueness check: the guard
    sees only committed rows (and the caller's own), so callers serialise on a lock of theirs.
    """
    values = insert_one_params(prefix, job)
    clash = set(values) & set(params)
    if clash:
        raise ValueError(f"guard parameters clash with the job's: {sorted(clash)}")
    query = queries.render_insert_job(prefix, f"NOT EXISTS ({unless})")
    with atomic(conn), conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        cur.execute(query, {**values, **params})
        row = cur.fetchone()
    return None if row is None else Job.from_row(row)


def _id_params(prefix: str, jobs: Sequence[Job]) -> dict[str, Any]:
    """NEXT_JOB_IDS's parameters: how many ids, and the batch's notifications (one per queue
    with available jobs, as the INSERT path sends). The table name goes in as a value
    (pg_get_serial_sequence parses it), never as SQL text."""
    notes = insert_notifications(prefix, (vars(job) for job in jobs))
    return {
        "table": f"{quote_ident(prefix)}.oban_jobs",
        "n": len(jobs),
        "channel": notify.channel(prefix, "insert"),
        "payloads": [note["payload"] for note in notes],
    }


def _validate(jobs: Sequence[Job]) -> None:
    """Each job checked before any SQL, so a bad one takes no ids and leaves the caller's
    transaction usable."""
    for job in jobs:
        job.validate()


def _copy_all(conn: psycopg.Connection[Any], jobs: Sequence[Job], prefix: str) -> list[Job]:
    _validate(jobs)
    own = owns_transaction(conn)
    with conn.cursor() as cur:
        try:
            # One round trip for BEGIN and the ids; the copies are made meanwhile.
            with conn.pipeline():
                if own:
                    cur.execute("BEGIN")
                cur.execute(queries.render(queries.NEXT_JOB_IDS, prefix), _id_params(prefix, jobs))
                fresh = shallow_copies(jobs)
                taken = cur.fetchone()
            assert taken is not None  # an aggregate's one row
            with cur.copy(queries.render(queries.COPY_JOBS, prefix)) as copy:
                for data in copy_data(fresh, sorted(taken[0]), taken[1]):
                    copy.write(data)
            if own:
                cur.execute("COMMIT")
        except BaseException:
            if own and not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                with suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise
    return fresh


async def _copy_all_async(
    conn: psycopg.AsyncConnection[Any], jobs: Sequence[Job], prefix: str
) -> list[Job]:
    _validate(jobs)
    own = owns_transaction(conn)
    async with conn.cursor() as cur:
        try:
            async with conn.pipeline():
                if own:
                    await cur.execute("BEGIN")
                await cur.execute(
                    queries.render(queries.NEXT_JOB_IDS, prefix), _id_params(prefix, jobs)
                )
                fresh = shallow_copies(jobs)
                taken = await cur.fetchone()
            assert taken is not None  # an aggregate's one row
            async with cur.copy(queries.render(queries.COPY_JOBS, prefix)) as copy:
                for data in copy_data(fresh, sorted(taken[0]), taken[1]):
                    await copy.write(data)
            if own:
                await cur.execute("COMMIT")
        except BaseException:
            if own and not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                with suppress(psycopg.Error):
                    await conn.execute("ROLLBACK")
            raise
    return fresh


def insert(conn: psycopg.Connection[Any], job: Job, *, prefix: str = DEFAULT_PREFIX) -> Job:
    """Insert one job; with unique options, return the existing job marked ``conflict``."""
    interceptor = INTERCEPTOR.get()
    if interceptor is not None:
        jobs: list[Job] = list(interceptor.insert_all(conn, [job], prefix))
        return jobs[0]
    if job.unique is not None:
        return insert_unique(conn, job, job.unique, prefix)
    return insert_all(conn, [job], prefix=prefix)[0]


async def insert_async(
    conn: psycopg.AsyncConnection[Any], job: Job, *, prefix: str = DEFAULT_PREFIX
) -> Job:
    interceptor = INTERCEPTOR.get()
    if interceptor is not None:
        jobs: list[Job] = list(await interceptor.insert_all_async(conn, [job], prefix))
        return jobs[0]
    if job.unique is not None:
        return await insert_unique_async(conn, job, job.unique, prefix)
    return (await insert_all_async(conn, [job], prefix=prefix))[0]
