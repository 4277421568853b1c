"""Values a job cannot be stored with exactly as given are refused with JobValidationError,
naming the field and the path to the value, at Job.new and at every insert path (one row, an
INSERT of several, COPY) before any SQL runs: nothing is written, no id is taken, and the
caller's transaction stays usable."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, JobValidationError, insert, insert_all, insert_all_async
from bridge.jobs.client.enqueue import COPY_THRESHOLD
from bridge.jobs.client.job import MAX_JSON_DEPTH
from bridge.wire import jsonfmt

Conn = psycopg.Connection[tuple[object, ...]]

NUL = "holds a NUL character (\\u0000), which PostgreSQL cannot store in text or jsonb"
NOT_JSON = "which is not a JSON value (use dict, list, str, int, float, bool or None)"


def nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` deep, the outermost one included."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


DEEP_PATH = "args" + '["a"]' * MAX_JSON_DEPTH  # the first object past the bound
DEEP_MESSAGE = (
    f"{DEEP_PATH[:60]}…{DEEP_PATH[-60:]} is nested deeper than {MAX_JSON_DEPTH} levels, "
    "more than PostgreSQL's jsonb accepts at every max_stack_depth setting"
)

# (Job.new keyword arguments, the exact message)
CASES: list[tuple[dict[str, Any], str]] = [
    (
        {"args": {"a": [0, 1, 2, float("nan")]}},
        'args["a"][3] is nan, which JSON cannot represent; use null or a string',
    ),
    (
        {"args": {"a": float("inf")}},
        'args["a"] is inf, which JSON cannot represent; use null or a string',
    ),
    (
        {"meta": {"m": {"x": float("-inf")}}},
        'meta["m"]["x"] is -inf, which JSON cannot represent; use null or a string',
    ),
    ({"args": {"a": "x\x00y"}}, f'args["a"] {NUL}'),
    ({"args": {"a": [{"k\x00": 1}]}}, f'args["a"][0]["k\\u0000"]: the key {NUL}'),
    (
        {"args": {"a": "\ud800"}},
        'args["a"] holds a surrogate (\\ud800), which is not a Unicode character and cannot be '
        "encoded as UTF-8",
    ),
    (
        {"meta": {"\udfff": 1}},
        'meta["\\udfff"]: the key holds a surrogate (\\udfff), which is not a Unicode character '
        "and cannot be encoded as UTF-8",
    ),
    ({"args": {"b": b"raw"}}, f'args["b"] is of type bytes, {NOT_JSON}'),
    ({"args": {"s": [[{1, 2}]]}}, f'args["s"][0][0] is of type set, {NOT_JSON}'),
    ({"args": {"o": object()}}, f'args["o"] is of type object, {NOT_JSON}'),
    (
        {"args": {"n": {1: "x"}}},
        'args["n"] has a key of type int (1): JSON object keys are strings',
    ),
    ({"args": nested(MAX_JSON_DEPTH + 1)}, DEEP_MESSAGE),
    ({"tags": ["ok", "b\x00d"]}, f"tags[1] {NUL}"),
    ({"priority": True}, "priority must be 0..9, got True"),
    ({"max_attempts": True}, "max_attempts must be > 0, got True"),
    (
        {"max_attempts": 2**31},
        "max_attempts must be at most 2147483647 (PostgreSQL's integer), got 2147483648",
    ),
]
IDS = [
    "nan",
    "inf",
    "-inf",
    "nul",
    "nul-key",
    "surrogate",
    "surrogate-key",
    "bytes",
    "set",
    "object",
    "int-key",
    "too-deep",
    "nul-tag",
    "priority-bool",
    "max_attempts-bool",
    "max_attempts-int4",
]


def bad_job(kwargs: dict[str, Any]) -> Job:
    """The job as a caller can build it without Job.new (so the insert path must refuse it)."""
    return replace(Job.new("W", {"fine": 1}, queue="v"), **kwargs)


def count(conn: Conn, prefix: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}.oban_jobs").format(sql.Identifier(prefix))
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(str(row[0]))


def next_id(conn: Conn, prefix: str) -> int:
    row = conn.execute(
        "SELECT last_value FROM pg_sequences WHERE schemaname = %s AND sequencename = %s",
        (prefix, "oban_jobs_id_seq"),
    ).fetchone()
    assert row is not None
    return int(str(row[0] or 0))


@pytest.mark.parametrize(("kwargs", "message"), CASES, ids=IDS)
def test_job_new_refuses(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(JobValidationError) as caught:
        Job.new("W", **kwargs)
    assert str(caught.value) == message


@pytest.mark.parametrize(("kwargs", "message"), CASES, ids=IDS)
def test_every_insert_path_refuses_before_sql(
    conn: Conn, oban_prefix: str, kwargs: dict[str, Any], message: str
) -> None:
    good = Job.new("W", {"fine": 1}, queue="v")
    batches = {
        "insert": None,
        "single statement": [good, bad_job(kwargs)],
        "copy": [*[good] * (COPY_THRESHOLD - 1), bad_job(kwargs)],
    }
    ids_before = next_id(conn, oban_prefix)
    with conn.transaction():  # the caller's transaction survives each refusal
        for path, batch in batches.items():
            with pytest.raises(JobValidationError) as caught:
                if batch is None:
                    insert(conn, bad_job(kwargs), prefix=oban_prefix)
                else:
                    insert_all(conn, batch, prefix=oban_prefix)
            assert str(caught.value) == message, path
        assert count(conn, oban_prefix) == 0
        insert(conn, good, prefix=oban_prefix)
    assert count(conn, oban_prefix) == 1
    assert next_id(conn, oban_prefix) == ids_before + 1  # the refused COPY took no ids


@pytest.mark.parametrize(("kwargs", "message"), CASES[:3], ids=IDS[:3])
async def test_async_insert_all_refuses(
    database_url: str, oban_prefix: str, kwargs: dict[str, Any], message: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
        for n in (1, COPY_THRESHOLD):
            batch = [*[Job.new("W")] * (n - 1), bad_job(kwargs)]
            with pytest.raises(JobValidationError, match=re.escape(message)):
                await insert_all_async(aconn, batch, prefix=oban_prefix)


def test_values_that_are_stored_as_given_pass(conn: Conn, oban_prefix: str) -> None:
    """The edges of what is refused: these insert, and read back exactly as given."""
    args: dict[str, Any] = {
        "deep": nested(MAX_JSON_DEPTH - 1),
        "big": 10**40,
        "small": -(2**70),
        "float": -0.25,
        "text": 'é \U0001f600 \t\n\\ "',
        "flags": [True, False, None],
        "tuple": (1, "x"),
    }
    for n in (1, 2, COPY_THRESHOLD):
        jobs = insert_all(
            conn,
            [Job.new("W", args, priority=9, max_attempts=2**31 - 1)] * n,
            prefix=oban_prefix,
        )
        query = sql.SQL("SELECT args::text FROM {}.oban_jobs WHERE id = %s").format(
            sql.Identifier(oban_prefix)
        )
        row = conn.execute(query, (jobs[-1].id,)).fetchone()
        assert row is not None
        assert jsonfmt.loads(str(row[0])) == {**args, "tuple": [1, "x"]}
