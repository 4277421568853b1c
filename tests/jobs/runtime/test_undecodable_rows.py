"""Rows and notifications Python's default decoders cannot read, on a real node and real
PostgreSQL: one row never decides another's fate.

A claim commits before its rows are decoded, so a row that fails to decode must not take the
rest of its batch with it. What Jason reads (deep nesting, long integers) runs; what no Python
value can hold (an infinite or five-digit-year timestamp, a number beyond a double) ends that
row alone, discarded with an entry naming the column, and the log names the job.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import re
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, Registry, insert_all, worker
from tests.jobs.support import job_row, running_node, wait_for_state

Conn = psycopg.Connection[tuple[object, ...]]
AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
KIND = "** (bridge.jobs.client.job.UndecodableRowError)"
OUTSIDE = "outside the years 1 to 9999 a Python datetime can hold"
# Beyond a double: PostgreSQL keeps it as a numeric, Jason and Python both refuse it as a float.
HUGE_FLOAT = "1" + "0" * 400 + ".5"
HUGE_FLOAT_SHOWN = (
    "the number 100000000000…000000.5 (403 characters) is beyond the range of a double"
)
LONG_INT = "9" * 5_000

SEEN: dict[int, dict[str, Any]] = {}


def depth_of(value: Any) -> int:
    levels = 0
    while isinstance(value, list):
        levels += 1
        value = value[0] if value else None
    return levels


def make_registry() -> Registry:
    registry = Registry()

    @worker(name="u.Echo", queue="u", registry=registry)
    def echo(job: Job) -> None:
        seen: dict[str, Any] = {"keys": sorted(job.args)}
        if "deep" in job.args:
            seen["depth"] = depth_of(job.args["deep"])
        if "n" in job.args:
            seen["n_is_the_long_int"] = job.args["n"] == 10**5_000 - 1
        assert job.id is not None
        SEEN[job.id] = seen

    return registry


REGISTRY = make_registry()


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def insert_raw(conn: Conn, prefix: str, args: str, **columns: str) -> int:
    """One available job of queue ``u`` with ``args`` as jsonb text and other columns set from
    text as PostgreSQL reads it, the way an Elixir app or a hand-written row could hold them."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_jobs (state, queue, worker, args) "
            "VALUES ('available', 'u', 'u.Echo', %s::jsonb) RETURNING id"
        ).format(sql.Identifier(prefix)),
        (args,),
    ).fetchone()
    assert row is not None
    job_id = int(str(row[0]))
    for column, text in columns.items():
        cast = "jsonb[]" if column == "errors" else "timestamp"
        conn.execute(
            sql.SQL("UPDATE {}.oban_jobs SET {} = %s::{} WHERE id = %s").format(
                sql.Identifier(prefix), sql.Identifier(column), sql.SQL(cast)
            ),
            (text, job_id),
        )
    return job_id


def read(url: str, prefix: str, job_id: int) -> dict[str, Any]:
    """The columns these tests look at, read as text: ``SELECT *`` would fail in psycopg on
    exactly the rows under test."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(
            sql.SQL(
                "SELECT state::text, attempt, discarded_at IS NOT NULL, errors::text[] "
                "FROM {}.oban_jobs WHERE id = %s"
            ).format(sql.Identifier(prefix)),
            (job_id,),
        ).fetchone()
    assert row is not None, f"job {job_id} not found"
    state, attempt, discarded, errors = row
    assert isinstance(errors, list)
    return {
        "state": state,
        "attempt": attempt,
        "discarded": discarded,
        "errors": [json.loads(entry) for entry in errors],
    }


async def wait_for(url: str, prefix: str, job_id: int, state: str) -> dict[str, Any]:
    for _ in range(300):
        row = read(url, prefix, job_id)
        if row["state"] == state:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} is {row['state']}, wanted {state}")


def states(conn: Conn, prefix: str) -> dict[str, int]:
    rows = conn.execute(
        sql.SQL("SELECT state::text, count(*) FROM {}.oban_jobs GROUP BY 1").format(
            sql.Identifier(prefix)
        )
    ).fetchall()
    return {str(state): int(str(count)) for state, count in rows}


async def test_an_undecodable_row_ends_alone_and_its_batch_runs(
    conn: Conn, oban_prefix: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ordinary = [insert_raw(conn, oban_prefix, f'{{"i": {i}}}') for i in range(6)]
    poisoned = {
        insert_raw(conn, oban_prefix, "{}", scheduled_at="infinity"): (
            f"{KIND} scheduled_at is infinity, {OUTSIDE}"
        ),
        insert_raw(conn, oban_prefix, '{"i": 6}', inserted_at="10000-01-01 00:00:00"): (
            f"{KIND} inserted_at is 10000-01-01T00:00:00, {OUTSIDE}"
        ),
        insert_raw(conn, oban_prefix, "{}", completed_at="0044-03-15 00:00:00 BC"): (
            f"{KIND} completed_at is 0044-03-15T00:00:00 BC, {OUTSIDE}"
        ),
        insert_raw(conn, oban_prefix, f'{{"x": {HUGE_FLOAT}}}'): (
            f"{KIND} args cannot be decoded: {HUGE_FLOAT_SHOWN}"
        ),
        insert_raw(conn, oban_prefix, "{}", errors=f'{{"{{\\"n\\": {HUGE_FLOAT}}}"}}'): (
            f"{KIND} errors[0] cannot be decoded: {HUGE_FLOAT_SHOWN}"
        ),
    }
    caplog.set_level(logging.WARNING, logger="bridge.producer")
    # One claim takes every row: the poisoned ones share their batch with the ordinary ones.
    async with running_node(database_url, oban_prefix, {"u": 20}, REGISTRY):
        for job_id in ordinary:
            await wait_for(database_url, oban_prefix, job_id, "completed")
        ended = {
            job_id: await wait_for(database_url, oban_prefix, job_id, "discarded")
            for job_id in poisoned
        }
    assert states(conn, oban_prefix) == {"completed": 6, "discarded": 5}
    assert all(SEEN[job_id]["keys"] == ["i"] for job_id in ordinary)
    for job_id, text in poisoned.items():
        row = ended[job_id]
        assert row["attempt"] == 1 and row["discarded"]
        entry = row["errors"][-1]
        assert sorted(entry) == ["at", "attempt", "error"]
        assert entry["attempt"] == 1 and AT.fullmatch(entry["at"])
        assert entry["error"] == text
        assert job_id not in SEEN
        [line] = [r.getMessage() for r in caplog.records if f"job {job_id} " in r.getMessage()]
        assert line == (
            f"queue u: job {job_id} (u.Echo) discarded: its row cannot be decoded: "
            + text.removeprefix(KIND + " ")
        )
    assert not [r for r in caplog.records if "fetch failed" in r.getMessage()]


async def test_deep_and_long_integer_args_run_and_the_worker_sees_them(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    deep = insert_raw(conn, oban_prefix, f'{{"deep": {nested(2_000)}}}')
    long_int = insert_raw(conn, oban_prefix, f'{{"n": {LONG_INT}}}')
    both = insert_raw(conn, oban_prefix, f'{{"deep": {nested(2_000)}, "n": {LONG_INT}}}')
    [plain] = insert_all(conn, [Job.new("u.Echo", {"i": 1}, queue="u")], prefix=oban_prefix)
    async with running_node(database_url, oban_prefix, {"u": 10}, REGISTRY):
        for job_id in (deep, long_int, both, plain.id or 0):
            row = await wait_for(database_url, oban_prefix, job_id, "completed")
            assert row["attempt"] == 1 and row["errors"] == []
    assert SEEN[deep] == {"keys": ["deep"], "depth": 2_000}
    assert SEEN[long_int] == {"keys": ["n"], "n_is_the_long_int": True}
    assert SEEN[both] == {"keys": ["deep", "n"], "depth": 2_000, "n_is_the_long_int": True}
    assert job_row(database_url, oban_prefix, plain.id or 0)["state"] == "completed"


async def test_a_deeply_nested_notification_keeps_the_listen_connection(
    conn: Conn, oban_prefix: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The payload is dropped with a log line; the notification right behind it still wakes
    the queue (polling is 30 s away, and no plugin announces anything)."""
    caplog.set_level(logging.INFO, logger="bridge.notifier")
    text = '{"queue": "u", "x": ' + nested(5_000) + "}"
    deep = base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()  # Oban's legacy form
    assert len(deep) < 8_000  # PostgreSQL's limit on a payload
    async with running_node(
        database_url, oban_prefix, {"u": 2}, REGISTRY, poll_interval=30.0, plugins=[]
    ) as node:
        await asyncio.sleep(0.5)  # the producer's first claim (of nothing) is behind it
        conn.execute("SELECT pg_notify(%s, %s)", (f"{oban_prefix}.oban_insert", deep))
        [job] = insert_all(conn, [Job.new("u.Echo", {"i": 2}, queue="u")], prefix=oban_prefix)
        await wait_for_state(database_url, oban_prefix, job.id or 0, {"completed"}, timeout=5)
        assert node.notifier.connected.is_set()
        assert node.notifier.decode_failures == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "bridge.notifier"]
    assert not [m for m in messages if "lost" in m], messages
    [dropped] = [m for m in messages if m.startswith("dropped an undecodable insert notification")]
    assert "JSON nested 5001 levels deep (read up to 100)" in dropped
