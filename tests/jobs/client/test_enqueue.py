"""Enqueueing: rows and notifications exactly as Oban's insert writes them."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bridge import Job, JobValidationError, insert, insert_all, insert_all_async, insert_async
from bridge.wire.timefmt import utc_now
from tests.jobs.support import job_json

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"
Conn = psycopg.Connection[tuple[object, ...]]


def golden_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads((GOLDEN / "elixir-jobs.json").read_text())
    return rows


def listen(url: str, channel: str) -> psycopg.Connection[tuple[object, ...]]:
    listener = psycopg.connect(url, autocommit=True)
    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    return listener


def notifications(listener: psycopg.Connection[tuple[object, ...]]) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in listener.notifies(timeout=0.5, stop_after=20)]


def test_inserted_row_has_the_shape_oban_writes(conn: Conn, oban_prefix: str, database_url: str):
    job = insert(
        conn,
        Job.new("BadgeForge.PrintCenter", {"badge": 7, "n": [1, 2.5, None, "é"]}, queue="printing"),
        prefix=oban_prefix,
    )
    assert job.id is not None and job.state == "available"
    ours = job_json(database_url, oban_prefix, job.id)
    golden = next(r for r in golden_rows() if r["worker"] == "badge_forge.generator.GenerateBadge")
    assert set(ours) == set(golden)
    for key, value in golden.items():
        assert type(ours[key]) is type(value), key
    assert ours["errors"] == [] and ours["tags"] == [] and ours["meta"] == {}
    assert ours["attempt"] == 0 and ours["max_attempts"] == 20 and ours["priority"] == 0
    assert ours["attempted_by"] is None and ours["attempted_at"] is None
    # Oban sets inserted_at and scheduled_at to the same microsecond for an immediate job.
    assert ours["inserted_at"] == ours["scheduled_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,6}", str(ours["inserted_at"]))
    assert ours["args"] == {"badge": 7, "n": [1, 2.5, None, "é"]}


def test_insert_notifies_oban_insert_with_the_golden_payload(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    channel = f"{oban_prefix}.oban_insert"
    listener = listen(database_url, channel)
    try:
        insert(conn, Job.new("W", {}, queue="badges"), prefix=oban_prefix)
        insert(conn, Job.new("W", {}, queue="later", schedule_in=3600), prefix=oban_prefix)
        got = notifications(listener)
    finally:
        listener.close()
    # Byte-identical to what Oban 2.23 sent for an insert into "badges" (golden capture);
    # a scheduled job wakes nobody, as in Oban.
    assert got == [(channel, '{"queue":"badges"}')]


def test_one_job_notification_is_sent_at_commit_once_per_queue(
    oban_prefix: str, database_url: str
) -> None:
    """The one-job statement carries its pg_notify: nothing before COMMIT, nothing after a
    rollback, and one message for several inserts into a queue in one transaction."""
    channel = f"{oban_prefix}.oban_insert"
    listener = listen(database_url, channel)
    try:
        with psycopg.connect(database_url) as own:
            insert(own, Job.new("W", {}, queue="gone"), prefix=oban_prefix)
            own.rollback()
            insert(own, Job.new("W", {"n": 1}, queue="badges"), prefix=oban_prefix)
            insert(own, Job.new("W", {"n": 2}, queue="badges"), prefix=oban_prefix)
            assert notifications(listener) == []
            own.commit()
        got = notifications(listener)
    finally:
        listener.close()
    assert got == [(channel, '{"queue":"badges"}')]


def test_insert_one_unless_writes_the_same_row_or_nothing(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    """The guarded one-job insert: while its guard finds a row, no job and no notification;
    otherwise the row insert_all writes."""
    from bridge.jobs.client.enqueue import insert_one_unless

    guard = "SELECT 1 FROM {prefix}.oban_jobs WHERE queue = %(guard_queue)s"
    channel = f"{oban_prefix}.oban_insert"
    listener = listen(database_url, channel)
    try:
        first = insert_one_unless(
            conn,
            Job.new("W", {"a": 1}, queue="q", tags=["T"]),
            guard,
            {"guard_queue": "q"},
            prefix=oban_prefix,
        )
        assert first is not None
        assert notifications(listener) == [(channel, '{"queue":"q"}')]
        held = insert_one_unless(
            conn,
            Job.new("W", {"a": 2}, queue="q"),
            guard,
            {"guard_queue": "q"},
            prefix=oban_prefix,
        )
        assert held is None
        assert notifications(listener) == []
    finally:
        listener.close()
    (plain,) = insert_all(conn, [Job.new("W", {"a": 1}, queue="q", tags=["T"])], prefix=oban_prefix)
    count = sql.SQL("SELECT count(*) FROM {}.oban_jobs").format(sql.Identifier(oban_prefix))
    assert conn.execute(count).fetchone() == (2,)
    ours, theirs = (job_json(database_url, oban_prefix, j.id or 0) for j in (first, plain))
    volatile = {"id", "inserted_at", "scheduled_at"}
    assert {k: v for k, v in ours.items() if k not in volatile} == {
        k: v for k, v in theirs.items() if k not in volatile
    }
    assert first.to_dict() == ours
    with pytest.raises(ValueError, match="clash"):
        insert_one_unless(conn, Job.new("W", {}), guard, {"queue": "q"}, prefix=oban_prefix)


def test_scheduled_job_row(conn: Conn, oban_prefix: str, database_url: str) -> None:
    before = utc_now()
    job = insert(
        conn,
        Job.new(
            "W",
            {"x": 1},
            queue="q",
            schedule_in=3600,
            tags=[" A ", "b", "a"],
            priority=2,
            meta={"m": 1},
        ),
        prefix=oban_prefix,
    )
    assert job.state == "scheduled"
    assert job.tags == ["a", "b"]  # trimmed, downcased, de-duplicated as Oban does
    assert job.scheduled_at is not None and job.inserted_at is not None
    assert job.scheduled_at - before >= timedelta(seconds=3599)
    golden = next(r for r in golden_rows() if r["state"] == "scheduled" and r["worker"] != "W")
    ours = job_json(database_url, oban_prefix, job.id or 0)
    assert set(ours) == set(golden)


def database_now(conn: Conn) -> object:
    row = conn.execute("SELECT timezone('UTC', now())").fetchone()
    assert row is not None
    return row[0]


def test_inserted_at_is_the_databases_clock_on_every_path(conn: Conn, oban_prefix: str) -> None:
    """As Oban leaves inserted_at (and an unscheduled job's scheduled_at) to the columns'
    default, every insert path stamps the transaction's ``timezone('UTC', now())``, whatever
    the host's clock and the session's time zone say: 10 ms after the transaction began, the
    rows still carry its start."""
    from bridge.jobs.client.enqueue import COPY_THRESHOLD, insert_one_unless

    later = utc_now() + timedelta(days=2)
    with conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'Asia/Kathmandu'")
        now = database_now(conn)
        conn.execute("SELECT pg_sleep(0.01)")
        inserted = [
            insert(conn, Job.new("W"), prefix=oban_prefix),
            *insert_all(conn, [Job.new("W")] * 2, prefix=oban_prefix),
            *insert_all(conn, [Job.new("W")] * COPY_THRESHOLD, prefix=oban_prefix),
            insert_one_unless(conn, Job.new("W"), "SELECT WHERE false", {}, prefix=oban_prefix),
            insert(conn, Job.new("W", scheduled_at=later), prefix=oban_prefix),
        ]
        query = sql.SQL("SELECT id, inserted_at, scheduled_at FROM {}.oban_jobs").format(
            sql.Identifier(oban_prefix)
        )
        rows = {row[0]: row[1:] for row in conn.execute(query)}
    assert len(rows) == 3 + COPY_THRESHOLD + 2
    for job in inserted[:-1]:
        assert job is not None and job.id is not None
        assert (job.inserted_at, job.scheduled_at) == (now, now)
        assert rows[job.id] == (now, now)
    scheduled = inserted[-1]
    assert scheduled is not None and scheduled.id is not None
    assert rows[scheduled.id] == (now, later)


async def test_async_inserts_use_the_databases_clock(oban_prefix: str, database_url: str) -> None:
    from bridge.jobs.client.enqueue import COPY_THRESHOLD

    async with await psycopg.AsyncConnection.connect(database_url) as aconn:
        cur = await aconn.execute("SELECT timezone('UTC', now()), pg_sleep(0.01)")
        row = await cur.fetchone()
        assert row is not None
        jobs = [
            await insert_async(aconn, Job.new("W"), prefix=oban_prefix),
            *await insert_all_async(aconn, [Job.new("W")] * 2, prefix=oban_prefix),
            *await insert_all_async(aconn, [Job.new("W")] * COPY_THRESHOLD, prefix=oban_prefix),
        ]
        await aconn.commit()
    assert {(job.inserted_at, job.scheduled_at) for job in jobs} == {(row[0], row[0])}


def test_insert_all_keeps_order_and_notifies_each_queue_once(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    channel = f"{oban_prefix}.oban_insert"
    listener = listen(database_url, channel)
    try:
        jobs = [Job.new("W", {"i": i}, queue=("a" if i % 2 else "b")) for i in range(500)]
        inserted = insert_all(conn, jobs, prefix=oban_prefix)
        got = notifications(listener)
    finally:
        listener.close()
    assert [j.args["i"] for j in inserted] == list(range(500))
    assert [j.id for j in inserted] == sorted(j.id for j in inserted)  # type: ignore[type-var]
    assert sorted(got) == [(channel, '{"queue":"a"}'), (channel, '{"queue":"b"}')]


def test_insert_joins_the_callers_transaction(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    count = sql.SQL("SELECT count(*) FROM {}.oban_jobs").format(sql.Identifier(oban_prefix))
    with psycopg.connect(database_url) as own:
        insert(own, Job.new("W", {}), prefix=oban_prefix)
        own.rollback()
        assert conn.execute(count).fetchone() == (0,)
        insert(own, Job.new("W", {}), prefix=oban_prefix)
        assert conn.execute(count).fetchone() == (0,)  # not visible before the caller commits
        own.commit()
    assert conn.execute(count).fetchone() == (1,)


async def test_async_insert_in_callers_transaction(oban_prefix: str, database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as aconn:
        async with aconn.transaction():
            job = await insert_async(aconn, Job.new("W", {"a": 1}), prefix=oban_prefix)
            many = await insert_all_async(
                aconn, [Job.new("W", {}) for _ in range(3)], prefix=oban_prefix
            )
        assert job.id is not None and len(many) == 3
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"worker": ""}, "worker must be 1..127"),
        ({"worker": "W" * 128}, "worker must be 1..127"),
        ({"worker": "W", "queue": ""}, "queue must be 1..127"),
        ({"worker": "W", "max_attempts": 0}, "max_attempts must be > 0"),
        ({"worker": "W", "priority": 10}, "priority must be 0..9"),
        ({"worker": "W", "args": [1, 2]}, "args must be a JSON object, got list"),
        ({"worker": "W", "meta": "x"}, "meta must be a JSON object, got str"),
    ],
)
def test_invalid_jobs_are_rejected_before_sql(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(JobValidationError, match=re.escape(message)):
        Job.new(**kwargs)  # type: ignore[arg-type]


def test_copy_path_writes_the_same_rows_as_the_insert_path(conn: Conn, database_url: str) -> None:
    """Bulk inserts use COPY; the rows must not differ from single inserts (odd prefix too)."""
    from bridge import schema
    from bridge.jobs.client.enqueue import COPY_THRESHOLD

    odd = 'we\'ird "p"'
    schema.install(conn, odd)
    try:

        def make(n: int) -> list[Job]:
            return [
                Job.new(
                    "W",
                    {"i": 1, "u": "é"},
                    queue="q",
                    tags=["T"],
                    meta={"m": [1]},
                    priority=3,
                    max_attempts=4,
                )
                for _ in range(n)
            ]

        one = insert_all(conn, make(1), prefix=odd)  # the single-row statement
        few = insert_all(conn, make(2), prefix=odd)
        many = insert_all(conn, make(COPY_THRESHOLD), prefix=odd)
        assert len(many) == COPY_THRESHOLD and all(j.id for j in many)
        rows = {j.id: job_json(database_url, odd, j.id or 0) for j in [*one, *few, *many]}
        assert one[0].to_dict() == rows[one[0].id]
        volatile = {"id", "inserted_at", "scheduled_at"}
        shapes = {
            json.dumps({k: v for k, v in r.items() if k not in volatile}, sort_keys=True)
            for r in rows.values()
        }
        assert len(shapes) == 1
        # What insert_all returned is what the table holds.
        for job in many[:3]:
            row = rows[job.id]
            assert (row["args"], row["tags"], row["meta"]) == (job.args, job.tags, job.meta)
            assert row["inserted_at"] == row["scheduled_at"]
    finally:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(odd)))
