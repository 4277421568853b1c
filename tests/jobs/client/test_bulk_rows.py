"""The bulk path (COPY with its own text encoding) writes the rows the one-job INSERT writes,
for the values that need escaping or a fallback, and its quick validation never lets through
what the full check refuses."""

from __future__ import annotations

import asyncio
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, JobValidationError, insert, insert_all, insert_all_async
from bridge.jobs.client.enqueue import COPY_THRESHOLD
from bridge.jobs.client.job import _plainly_valid, check_json_value
from bridge.wire import jsonfmt

Conn = psycopg.Connection[tuple[object, ...]]


def job_json(url: str, prefix: str, job_id: int) -> dict[str, Any]:
    """The row as row_to_json prints it, read as Jason reads it (integers of any length)."""
    with psycopg.connect(url, autocommit=True) as conn:
        query = sql.SQL("SELECT row_to_json(j)::text FROM {}.oban_jobs j WHERE id = %s")
        row = conn.execute(query.format(sql.Identifier(prefix)), (job_id,)).fetchone()
    assert row is not None, f"job {job_id} not found"
    value: dict[str, Any] = jsonfmt.loads(str(row[0]))
    return value


AWKWARD_TEXT = 'tab\there, line\nbreak\r, back\\slash, "quote", {brace}, comma, NULL, \\N, é日本😀'


def _nested(levels: int) -> Any:
    value: Any = {"leaf": "x\\y"}
    for _ in range(levels):
        value = [value]
    return value


AWKWARD_JOBS: list[dict[str, Any]] = [
    {"worker": "Elixir.My\tWorker\\x\n", "args": {"s": AWKWARD_TEXT}},
    {"worker": "W", "queue": 'q,{}"\\ \t', "args": {"k\\e\ty": [AWKWARD_TEXT, None, True]}},
    {
        "worker": "W",
        "tags": [" A ", "b,c", "{x}", "null", 'q"uote', "back\\slash", "é日本", "tab\there"],
        "args": {"big": 2**70, "neg": -(2**100), "f": 1.25, "z": -0.5},
        "meta": {"m": {"deep": [[[{"a": "\\u0000 as text"}]]]}, "u": "\u2028\u2029\x7f"},
    },
    {"worker": "W", "args": {"digits": 7**6000}, "priority": 9, "max_attempts": 2**31 - 1},
    {
        "worker": "W",
        "scheduled_at": datetime(
            2031, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=5, minutes=30))
        ),
    },
    {"worker": "W", "scheduled_at": datetime(44, 3, 15, 12, 0, 0, 500000)},
    {"worker": "W", "scheduled_at": datetime(9999, 12, 31, 23, 59, 59, 999999)},
    {"worker": "W", "args": {"nested": _nested(40)}},  # past the quick pass's depth
]


def _job(spec: dict[str, Any]) -> Job:
    """A Job built directly, as a caller may (an aware scheduled_at included), with Job.new's
    tag normalisation so both paths see the same values."""
    job = Job.new(**{k: v for k, v in spec.items() if k != "scheduled_at"})
    job.scheduled_at = spec.get("scheduled_at")
    job.state = "available" if job.scheduled_at is None else "scheduled"
    return job


@pytest.mark.parametrize("spec", AWKWARD_JOBS, ids=range(len(AWKWARD_JOBS)))
def test_copy_writes_the_insert_paths_row(
    conn: Conn, oban_prefix: str, database_url: str, spec: dict[str, Any]
) -> None:
    """Column by column (as row_to_json shows them), the COPY path's row equals the one-job
    INSERT's, and what insert_all returns is what the table holds."""
    single = insert(conn, _job(spec), prefix=oban_prefix)
    batch = [_job(spec) for _ in range(COPY_THRESHOLD)]
    before = [vars(job).copy() for job in batch]
    many = insert_all(conn, batch, prefix=oban_prefix)
    assert [vars(job) for job in batch] == before  # the caller's jobs untouched
    ours = job_json(database_url, oban_prefix, single.id or 0)
    volatile = {"id", "inserted_at"} | ({"scheduled_at"} if "scheduled_at" not in spec else set())
    for job in (many[0], many[-1]):
        theirs = job_json(database_url, oban_prefix, job.id or 0)
        assert {k: v for k, v in theirs.items() if k not in volatile} == {
            k: v for k, v in ours.items() if k not in volatile
        }
        assert job.to_dict() == theirs
        assert (job.args, job.meta) == (single.args, single.meta)


async def test_async_copy_writes_the_same_rows(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    specs = [AWKWARD_JOBS[i % len(AWKWARD_JOBS)] for i in range(COPY_THRESHOLD)]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
        many = await insert_all_async(aconn, [_job(s) for s in specs], prefix=oban_prefix)
    sync = insert_all(conn, [_job(s) for s in specs], prefix=oban_prefix)
    for a, b in zip(many, sync, strict=True):
        ra, rb = (job_json(database_url, oban_prefix, j.id or 0) for j in (a, b))
        volatile = {"id", "inserted_at"} | ({"scheduled_at"} if a.state == "available" else set())
        assert {k: v for k, v in ra.items() if k not in volatile} == {
            k: v for k, v in rb.items() if k not in volatile
        }
        assert a.to_dict() == ra


def test_copy_ignores_the_sessions_client_encoding(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    """The COPY data is UTF-8 and says so, whatever the session's client_encoding."""
    conn.execute("SET client_encoding TO 'LATIN1'")
    many = insert_all(
        conn,
        [Job.new("W", {"s": "é"}, tags=["ß"]) for _ in range(COPY_THRESHOLD)],
        prefix=oban_prefix,
    )
    conn.execute("RESET client_encoding")
    row = job_json(database_url, oban_prefix, many[0].id or 0)
    assert (row["args"], row["tags"]) == ({"s": "é"}, ["ß"])


def test_all_scheduled_batch_sends_no_notification(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    channel = f"{oban_prefix}.oban_insert"
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        later = datetime.now(UTC) + timedelta(hours=1)
        insert_all(
            conn,
            [Job.new("W", scheduled_at=later) for _ in range(COPY_THRESHOLD)],
            prefix=oban_prefix,
        )
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
        with conn.transaction():
            insert_all(
                conn, [Job.new("W", queue="n") for _ in range(COPY_THRESHOLD)], prefix=oban_prefix
            )
            assert list(listener.notifies(timeout=0.3, stop_after=1)) == []  # not before COMMIT
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=0.5, stop_after=1)]
    assert got == [(channel, '{"queue":"n"}')]


class _Str(str):
    pass


class _Dict(dict):  # type: ignore[type-arg]
    pass


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    atoms: list[Any] = [
        "x", "é", "\x00", "\ud800", "a\x00b", _Str("s"), 1, -(2**80), True, None, 1.5,
        math.nan, math.inf, b"bytes", datetime(2020, 1, 1), {1, 2},
    ]  # fmt: skip
    roll = rng.random()
    if depth > 40 or roll < 0.5:
        return rng.choice(atoms)
    if roll < 0.7:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if roll < 0.8:
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    keys: list[Any] = ["k", "é", "\x00", "\udc00", 1, None, _Str("k")]
    kind = _Dict if rng.random() < 0.1 else dict
    return kind({rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(3))})


def test_quick_validation_never_accepts_what_the_full_check_refuses() -> None:
    """Seeded random values, valid and not: the quick pass says "valid" only for values the
    full walk accepts, and a job's validation raises exactly what the full walk raises."""
    rng = random.Random(18)
    quick = 0
    for _ in range(20_000):
        value = {"v": _random_value(rng)}
        try:
            check_json_value(value, "args")
            expected = None
        except JobValidationError as exc:
            expected = str(exc)
        if _plainly_valid(value, 0):
            quick += 1
            assert expected is None, value
        job = Job("W")
        job.args = value
        try:
            job.validate()
            got = None
        except JobValidationError as exc:
            got = str(exc)
        assert got == expected
    assert quick > 1_000  # the quick pass did take the plain values


def test_quick_validation_leaves_deep_values_to_the_full_check() -> None:
    deep: Any = 1
    for _ in range(600):
        deep = [deep]
    assert not _plainly_valid({"d": deep}, 0)
    with pytest.raises(JobValidationError, match="nested deeper than 512"):
        Job.new("W", {"d": deep})


def test_quick_job_check_agrees_with_the_full_check() -> None:
    """Seeded random jobs, fields valid and not (subclasses, bools for ints, out of range,
    NUL, surrogates): the quick pass says "valid" only where the full check passes, and
    validate raises exactly the full check's error."""

    class _Int(int):
        pass

    choices: dict[str, list[Any]] = {
        "worker": ["W", "", "W" * 128, "W" * 127, _Str("W"), "a\x00", "\udc00", 1, "é"],
        "queue": ["q", "", "Q" * 128, _Str("q"), "q\x00", None],
        "max_attempts": [1, 0, -1, 2**31 - 1, 2**31, True, _Int(3), 1.0, "3"],
        "priority": [0, 9, 10, -1, False, _Int(2), None],
        "scheduled_at": [None, datetime(2030, 1, 1), datetime.now(UTC), "2030-01-01", 0],
        "tags": [[], ["a"], ["a", 1], ("a",), ["a\x00"], [_Str("t")], "a", ["\ud800"]],
        "args": [{}, {"i": 1}, [], _Dict(), {"f": math.nan}, {1: 2}, {"k": _Str("v")}],
        "meta": [{}, {"m": [1, 2.5, None]}, None, {"x": {"y": "\x00"}}],
    }
    rng = random.Random(1818)
    quick = 0
    for _ in range(20_000):
        job = Job("W")
        for name, values in choices.items():
            setattr(job, name, values[0] if rng.random() < 0.8 else rng.choice(values))
        try:
            job._check()
            expected = None
        except JobValidationError as exc:
            expected = str(exc)
        if job._plainly_valid():
            quick += 1
            assert expected is None, vars(job)
        try:
            job.validate()
            got = None
        except JobValidationError as exc:
            got = str(exc)
        assert got == expected
    assert quick > 100


@pytest.mark.parametrize("use_async", [False, True])
def test_a_failed_copy_rolls_back_its_own_transaction(
    conn: Conn, oban_prefix: str, database_url: str, use_async: bool
) -> None:
    """The bulk path's own transaction (BEGIN sent with the ids): when the COPY fails (ids that
    collide with rows already there), nothing is written, no notification is delivered and
    the autocommit connection is idle and usable again."""
    table = sql.Identifier(oban_prefix, "oban_jobs")
    channel = f"{oban_prefix}.oban_insert"
    insert_all(conn, [Job.new("W") for _ in range(COPY_THRESHOLD)], prefix=oban_prefix)
    restart = sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), 1)")
    conn.execute(restart.format(sql.Literal(f'"{oban_prefix}".oban_jobs')))
    jobs = [Job.new("W", queue="failed") for _ in range(COPY_THRESHOLD)]
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        if use_async:

            async def attempt() -> None:
                async with await psycopg.AsyncConnection.connect(
                    database_url, autocommit=True
                ) as aconn:
                    with pytest.raises(psycopg.errors.UniqueViolation):
                        await insert_all_async(aconn, jobs, prefix=oban_prefix)
                    assert aconn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                    await aconn.execute("SELECT 1")

            asyncio.run(attempt())
        else:
            with pytest.raises(psycopg.errors.UniqueViolation):
                insert_all(conn, jobs, prefix=oban_prefix)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
    count = sql.SQL("SELECT count(*) FROM {} WHERE queue = 'failed'").format(table)
    assert conn.execute(count).fetchone() == (0,)
    conn.execute(
        sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), max(id)) FROM {}").format(
            sql.Literal(f'"{oban_prefix}".oban_jobs'), table
        )
    )
    assert len(insert_all(conn, jobs, prefix=oban_prefix)) == COPY_THRESHOLD
