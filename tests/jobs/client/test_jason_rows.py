"""Rows the client reads back on a caller's own psycopg connection: JSON as Jason reads it
(nesting of 2,000 levels, integers of 5,000 digits), a value no Python object holds as a typed
error naming the job, and unique inserts stamped with the database's clock.

On the old code psycopg decoded with ``json.loads``: RecursionError and ValueError from the
unique conflict path, ``admin.list_jobs``/``get_job`` and the insert's own RETURNING row; a
``timestamp`` of ``infinity`` was psycopg's DataError; a unique insert stamped the host's clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, insert, insert_async
from bridge.jobs.client import admin
from bridge.jobs.client.admin import JobFilter, UndecodableJobError
from bridge.wire import jsonfmt

Conn = psycopg.Connection[tuple[object, ...]]

DEEP = 2_000
LONG = 10**5_000


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def odd_row(conn: Conn, prefix: str, extra: str = "") -> int:
    """A row as an Elixir app may write it: args nested 2,000 levels, a 5,000-digit meta."""
    query = sql.SQL(
        "INSERT INTO {}.oban_jobs (worker, queue, args, meta{}) VALUES ('W', 'q',"
        " jsonb_build_object('d', %s::jsonb), jsonb_build_object('n', %s::numeric){})"
        " RETURNING id"
    ).format(
        sql.Identifier(prefix),
        sql.SQL(", scheduled_at, state" if extra else ""),
        sql.SQL(", 'infinity', 'scheduled'" if extra else ""),
    )
    row = conn.execute(query, (nested(DEEP), "1" + "0" * 5_000)).fetchone()
    assert row is not None
    return int(str(row[0]))


def assert_odd(job: Job) -> None:
    assert jsonfmt.dumps(job.args) == '{"d":' + nested(DEEP) + "}"
    assert job.meta == {"n": LONG}


def test_an_insert_reads_back_integers_of_any_length(conn: Conn, oban_prefix: str) -> None:
    job = insert(conn, Job.new("W", {"n": LONG, "m": [-LONG]}), prefix=oban_prefix)
    assert job.args == {"n": LONG, "m": [-LONG]}
    assert admin.get_job(conn, oban_prefix, job.id or 0) == job


def test_list_and_get_read_what_jason_reads(conn: Conn, oban_prefix: str) -> None:
    job_id = odd_row(conn, oban_prefix)
    (listed,) = admin.list_jobs(conn, oban_prefix, JobFilter())
    assert listed.id == job_id
    assert_odd(listed)
    got = admin.get_job(conn, oban_prefix, job_id)
    assert got is not None
    assert_odd(got)
    assert admin.get_job(conn, oban_prefix, 2**70) is None


def test_a_value_no_python_object_holds_is_a_typed_error_naming_the_job(
    conn: Conn, oban_prefix: str
) -> None:
    fine = odd_row(conn, oban_prefix)
    infinite = odd_row(conn, oban_prefix, extra="infinity")
    with pytest.raises(UndecodableJobError) as caught:
        admin.get_job(conn, oban_prefix, infinite)
    assert str(caught.value) == (
        f"job {infinite}: scheduled_at is infinity, outside the years 1 to 9999 a Python"
        " datetime can hold"
    )
    assert caught.value.job.id == infinite
    assert_odd(caught.value.job)  # what did decode is there
    with pytest.raises(UndecodableJobError, match=f"^job {infinite}: "):
        admin.list_jobs(conn, oban_prefix, JobFilter())
    assert [job.id for job in admin.list_jobs(conn, oban_prefix, JobFilter(states=("available",)))]
    assert admin.get_job(conn, oban_prefix, fine) is not None


UNIQUE = {"fields": ["worker", "queue"], "period": "infinity"}


def test_a_unique_conflict_with_an_elixir_row_reads_it_as_jason(
    conn: Conn, oban_prefix: str
) -> None:
    existing = odd_row(conn, oban_prefix)
    job = insert(conn, Job.new("W", {"x": 1}, queue="q", unique=UNIQUE), prefix=oban_prefix)
    assert job.conflict and job.id == existing
    assert_odd(job)
    with conn.transaction():  # the single-transaction path
        job = insert(conn, Job.new("W", {"x": 2}, queue="q", unique=UNIQUE), prefix=oban_prefix)
    assert job.conflict and job.id == existing
    assert_odd(job)


def test_a_unique_conflict_on_an_async_connection(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    existing = odd_row(conn, oban_prefix)

    async def run() -> Job:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
            unique_job = Job.new("W", {"x": 1}, queue="q", unique=UNIQUE)
            return await insert_async(aconn, unique_job, prefix=oban_prefix)

    job = asyncio.run(run())
    assert job.conflict and job.id == existing
    assert_odd(job)


def database_now(conn: Conn) -> Any:
    row = conn.execute("SELECT timezone('UTC', now())").fetchone()
    assert row is not None
    return row[0]


def test_a_unique_insert_stamps_the_databases_clock(conn: Conn, oban_prefix: str) -> None:
    """As Oban's unique insert leaves inserted_at and scheduled_at to the columns' defaults:
    10 ms into the transaction, whatever the session's time zone, the row carries its start."""
    with conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'Asia/Kathmandu'")
        now = database_now(conn)
        conn.execute("SELECT pg_sleep(0.01)")
        job = insert(conn, Job.new("W", {"u": 1}, unique=UNIQUE), prefix=oban_prefix)
        query = sql.SQL("SELECT inserted_at, scheduled_at FROM {}.oban_jobs WHERE id = %s")
        stored = conn.execute(query.format(sql.Identifier(oban_prefix)), (job.id,)).fetchone()
    assert not job.conflict
    assert (job.inserted_at, job.scheduled_at) == (now, now)
    assert stored == (now, now)


def test_an_own_transaction_unique_insert_stamps_the_databases_clock(
    conn: Conn, oban_prefix: str
) -> None:
    """On an idle autocommit connection the insert runs its own transactions: the row's
    timestamps lie between two readings of the database's clock around it."""
    before = database_now(conn)
    job = insert(conn, Job.new("W", {"u": 2}, unique=UNIQUE), prefix=oban_prefix)
    after = database_now(conn)
    assert job.inserted_at is not None
    assert before <= job.inserted_at <= after and job.scheduled_at == job.inserted_at


def test_a_unique_conflict_with_a_row_no_python_object_holds_names_that_job(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    """An Elixir-written duplicate with an infinite scheduled_at: Postgrex refuses it too, so
    the insert cannot answer with that job; it says which job instead of psycopg's DataError
    (which named nothing), on the autocommit, the caller's-transaction and the async path."""
    infinite = odd_row(conn, oban_prefix, extra="infinity")
    expected = f"^job {infinite}: scheduled_at is infinity, outside the years 1 to 9999"
    with pytest.raises(UndecodableJobError, match=expected) as caught:
        insert(conn, Job.new("W", {"x": 1}, queue="q", unique=UNIQUE), prefix=oban_prefix)
    assert caught.value.job.id == infinite
    with pytest.raises(UndecodableJobError, match=expected), conn.transaction():
        insert(conn, Job.new("W", {"x": 2}, queue="q", unique=UNIQUE), prefix=oban_prefix)

    async def run() -> Job:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
            unique_job = Job.new("W", {"x": 3}, queue="q", unique=UNIQUE)
            return await insert_async(aconn, unique_job, prefix=oban_prefix)

    with pytest.raises(UndecodableJobError, match=expected):
        asyncio.run(run())
    query = sql.SQL("SELECT count(*) FROM {}.oban_jobs").format(sql.Identifier(oban_prefix))
    assert conn.execute(query).fetchone() == (1,)  # nothing inserted beside it
