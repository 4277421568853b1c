"""Inserting a unique job so that a concurrent Elixir insert of the same job cannot also run.

Oban's own unique inserts check for a duplicate and insert inside one transaction that holds an
advisory lock only Elixir can compute. A Python insert therefore cannot block an Elixir one;
instead it makes sure that, of any duplicates inserted at the same moment, exactly one runs:

1. In one transaction, under an advisory lock of our own (Python inserters of the same identity
   queue up on it): look for a duplicate with Oban's query; if there is one, that is the answer
   (``conflict``, after ``replace``). Otherwise insert our row as ``suspended`` — no node runs
   it, yet every Oban unique check whose states include ``suspended`` (the default
   ``successful`` group does) already sees it — with ``meta.bridge_pending`` naming the state it
   will get.
2. After commit, wait for every transaction that was open at that moment and holds an advisory
   lock or a write lock on ``oban_jobs`` (an Elixir unique insert holds both from its check to
   its commit): any duplicate inserted without seeing our row is now committed and visible.
   They are found in ``pg_locks`` and waited for by virtual transaction id, which needs no
   privilege over the other sessions (the Elixir app may use another database role).
3. In a second transaction, look again, our row excluded: if another committed duplicate
   exists, cancel ours and return that one (``conflict``); if only ``suspended`` rows of other
   bridge inserters exist, the lowest id wins. Otherwise release ours to its state, drop the
   pending mark and send the insert notification.

The row's ``inserted_at`` and an unscheduled job's ``scheduled_at`` come from the database's
clock, as Oban leaves them to the columns' defaults; the uniqueness period is counted back from
the inserting host's clock, as Oban's ``since_period`` does. Rows are read on the caller's
connection with JSON decoded as Jason does (an Elixir-written duplicate may nest thousands of
levels deep or hold integers of any length).

A node that dies between steps 1 and 3 leaves a pending row; the stager finishes step 3 for
pending rows older than a minute, so nothing is lost. ``docs/uniqueness.md`` states the
guarantees.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.db import quote_ident, read_json_as_jason
from bridge.jobs import queries
from bridge.jobs.client.insert_rows import (
    atomic,
    atomic_async,
    insert_notifications,
    insert_params,
)
from bridge.jobs.client.job import Job, UndecodableJobError, UndecodableRowError
from bridge.jobs.client.unique import UniqueOptions, conflict_query, lock_key, replace_update
from bridge.wire.timefmt import utc_now

PENDING = "bridge_pending"
WAIT_LIMIT = 5.0  # seconds; a transaction open longer than this is not waited for

# Transactions are found and waited for through pg_locks alone, by their virtual transaction
# id: every transaction holds the lock on its own id until after its commit is visible. Unlike
# pg_stat_activity (whose xact_start an ordinary role cannot read for another role's sessions),
# pg_locks shows every session to every role, so the Elixir app and the Python workers may log
# in as different roles.
OPEN_WRITERS = """
SELECT DISTINCT l.virtualtransaction FROM pg_locks l
WHERE l.granted AND l.pid IS DISTINCT FROM pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (l.locktype = 'advisory'
       OR (l.relation = to_regclass(%(table)s) AND l.mode = 'RowExclusiveLock'))
"""

STILL_OPEN = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'virtualxid' AND virtualxid = ANY(%(vxids)s::text[])
"""

LOCK_OWN = "SELECT id FROM {prefix}.oban_jobs WHERE id = %(id)s FOR UPDATE"

RELEASE = """
UPDATE {prefix}.oban_jobs
SET state = (meta->>'bridge_pending')::{prefix}.oban_job_state, meta = meta - 'bridge_pending'
WHERE id = %(id)s AND state = 'suspended' AND meta ? 'bridge_pending'
RETURNING *, state::text AS state
"""

YIELD = """
UPDATE {prefix}.oban_jobs
SET state = 'cancelled', cancelled_at = %(now)s, meta = meta - 'bridge_pending'
WHERE id = %(id)s AND state = 'suspended'
"""

# Rows whose inserter died between the two transactions: released as they were meant to be.
RELEASE_STALE = """
UPDATE {prefix}.oban_jobs
SET state = (meta->>'bridge_pending')::{prefix}.oban_job_state, meta = meta - 'bridge_pending'
WHERE state = 'suspended' AND meta ? 'bridge_pending' AND inserted_at < %(before)s
RETURNING queue, state::text AS state
"""


def _pending_copy(job: Job) -> Job:
    return replace(job, state="suspended", meta={**job.meta, PENDING: job.state})


def _table(prefix: str) -> str:
    return f"{quote_ident(prefix)}.oban_jobs"


def _existing(row: dict[str, Any]) -> Job:
    """A duplicate read back as text (``queries.JOB_AS_TEXT``): decoded as Jason would, and a
    value no Python object can hold (an infinite ``scheduled_at``, a year past 9999) is an
    :class:`UndecodableJobError` naming that job, not the driver's ``DataError``."""
    try:
        return Job.from_text_row(row)
    except UndecodableRowError as exc:
        raise UndecodableJobError(exc) from None


def _pick_winner(rows: list[dict[str, Any]], own_id: int) -> Job | None:
    """Committed duplicates beat pending ones; among pending ones the lowest id wins."""
    jobs = [_existing(row) for row in rows]
    settled = [j for j in jobs if j.state != "suspended" or PENDING not in j.meta]
    if settled:
        return settled[0]
    lower = [j for j in jobs if j.id is not None and j.id < own_id]
    return lower[0] if lower else None


def _conflict(row: dict[str, Any] | Job) -> Job:
    job = row if isinstance(row, Job) else _existing(row)
    job.conflict = True
    return job


# sync ----------------------------------------------------------------------------------------


def insert_unique(
    conn: psycopg.Connection[Any], job: Job, options: UniqueOptions, prefix: str
) -> Job:
    own_tx = conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with atomic(conn), conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(prefix, options, job),))
        now = utc_now()
        found = _sync_find(cur, prefix, options, job, now)
        if found is not None:
            return found
        to_insert = _pending_copy(job) if own_tx else job
        cur.execute(queries.render(queries.INSERT_JOBS, prefix), insert_params([to_insert]))
        row = cur.fetchone()
        assert row is not None
        if not own_tx:
            for note in insert_notifications(prefix, [row]):
                cur.execute(queries.NOTIFY, note)
            return Job.from_row(row)
    _sync_wait_for_writers(conn, prefix)
    return settle(conn, prefix, options, Job.from_row(row))


def _sync_find(
    cur: psycopg.Cursor[dict[str, Any]],
    prefix: str,
    options: UniqueOptions,
    job: Job,
    now: datetime,
) -> Job | None:
    cur.execute(*conflict_query(prefix, options, job, now))
    existing = cur.fetchone()
    if existing is None:
        return None
    update = replace_update(prefix, options, existing["state"], job)
    if update is not None:
        cur.execute(update[0], {**update[1], "id": existing["id"]})
        existing = cur.fetchone() or existing
    return _conflict(existing)


def _sync_wait_for_writers(conn: psycopg.Connection[Any], prefix: str) -> None:
    with conn.cursor() as cur:
        open_now = cur.execute(OPEN_WRITERS, {"table": _table(prefix)}).fetchall()
        if not open_now:
            return
        params = {"vxids": [r[0] for r in open_now]}
        deadline = time.monotonic() + WAIT_LIMIT
        while time.monotonic() < deadline:
            (count,) = cur.execute(STILL_OPEN, params).fetchone() or (0,)
            if count == 0:
                return
            time.sleep(0.002)


def settle(conn: psycopg.Connection[Any], prefix: str, options: UniqueOptions, own: Job) -> Job:
    """Step 3: yield to a duplicate or release our pending row (also used for stale rows)."""
    assert own.id is not None
    clean = replace(own, meta={k: v for k, v in own.meta.items() if k != PENDING})
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        cur.execute(queries.render(LOCK_OWN, prefix), {"id": own.id})
        query, params = conflict_query(
            prefix, options, clean, utc_now(), exclude_id=own.id, limit=50
        )
        cur.execute(query, params)
        winner = _pick_winner(cur.fetchall(), own.id)
        if winner is not None:
            cur.execute(queries.render(YIELD, prefix), {"id": own.id, "now": utc_now()})
            return _conflict(winner)
        cur.execute(queries.render(RELEASE, prefix), {"id": own.id})
        row = cur.fetchone()
        if row is None:  # settled meanwhile by a stager
            cur.execute(
                sql.SQL("SELECT *, state::text AS state FROM {}.oban_jobs WHERE id = %s").format(
                    sql.Identifier(prefix)
                ),
                (own.id,),
            )
            row = cur.fetchone()
            assert row is not None
        for note in insert_notifications(prefix, [row]):
            cur.execute(queries.NOTIFY, note)
        return Job.from_row(row)


# async ---------------------------------------------------------------------------------------


async def insert_unique_async(
    conn: psycopg.AsyncConnection[Any], job: Job, options: UniqueOptions, prefix: str
) -> Job:
    own_tx = conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    async with atomic_async(conn), conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        await cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(prefix, options, job),))
        now = utc_now()
        await cur.execute(*conflict_query(prefix, options, job, now))
        existing = await cur.fetchone()
        if existing is not None:
            update = replace_update(prefix, options, existing["state"], job)
            if update is not None:
                await cur.execute(update[0], {**update[1], "id": existing["id"]})
                existing = await cur.fetchone() or existing
            return _conflict(existing)
        to_insert = _pending_copy(job) if own_tx else job
        await cur.execute(queries.render(queries.INSERT_JOBS, prefix), insert_params([to_insert]))
        row = await cur.fetchone()
        assert row is not None
        if not own_tx:
            for note in insert_notifications(prefix, [row]):
                await cur.execute(queries.NOTIFY, note)
            return Job.from_row(row)
    async with conn.cursor() as cur:
        await cur.execute(OPEN_WRITERS, {"table": _table(prefix)})
        open_now = await cur.fetchall()
        if open_now:
            params = {"vxids": [r[0] for r in open_now]}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT_LIMIT
            while loop.time() < deadline:
                await cur.execute(STILL_OPEN, params)
                (count,) = await cur.fetchone() or (0,)
                if count == 0:
                    break
                await asyncio.sleep(0.002)
    return await settle_async(conn, prefix, options, Job.from_row(row))


async def settle_async(
    conn: psycopg.AsyncConnection[Any], prefix: str, options: UniqueOptions, own: Job
) -> Job:
    assert own.id is not None
    clean = replace(own, meta={k: v for k, v in own.meta.items() if k != PENDING})
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        await cur.execute(queries.render(LOCK_OWN, prefix), {"id": own.id})
        query, params = conflict_query(
            prefix, options, clean, utc_now(), exclude_id=own.id, limit=50
        )
        await cur.execute(query, params)
        winner = _pick_winner(await cur.fetchall(), own.id)
        if winner is not None:
            await cur.execute(queries.render(YIELD, prefix), {"id": own.id, "now": utc_now()})
            return _conflict(winner)
        await cur.execute(queries.render(RELEASE, prefix), {"id": own.id})
        row = await cur.fetchone()
        if row is None:
            await cur.execute(
                sql.SQL("SELECT *, state::text AS state FROM {}.oban_jobs WHERE id = %s").format(
                    sql.Identifier(prefix)
                ),
                (own.id,),
            )
            row = await cur.fetchone()
            assert row is not None
        for note in insert_notifications(prefix, [row]):
            await cur.execute(queries.NOTIFY, note)
        return Job.from_row(row)
