"""Python enqueues, Elixir runs: args arrive as sent, failures are Oban's, Python reads them back.

Jobs for `Fixture.Echo` are inserted with ``bridge.insert`` / ``insert_all`` (the worker named by
its module string only). The fixture's queue is started first and has no stager, so a job can
only run because the insert's `oban_insert` NOTIFY woke it, as it wakes an Oban producer. Echo
returns what it was given and records it as external term format (Oban Pro's recorded shape),
which is decoded here with erlang-py: what the BEAM saw, value and kind, must be what Python
sent. Mirrors Oban.Queue.Producer (insert wake-up), Oban.Queue.Executor and the Basic engine's
acks, and Oban.retry_job/2.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from bridge import Job, insert, insert_all
from bridge.jobs.client.admin import get_job, retry_jobs
from bridge.jobs.client.enqueue import COPY_THRESHOLD
from bridge.wire.timefmt import parse_utc
from interop_tests.fixture import ElixirFixture, wait_until
from interop_tests.support import (
    ECHO,
    ERROR_AT,
    NAIVE_TIMESTAMP,
    STACK_FRAME,
    UUID4,
    decode_recorded,
    split_any_error,
    value_differences,
)

Conn = psycopg.Connection[Any]
EX = "ex"

PAYLOADS: dict[str, Any] = {
    "unicode": {
        "latin": "héllo wörld",
        "cjk": "日本語のテキスト",
        "emoji": "🦀🐍 ✓",
        "escapes": 'quote " backslash \\ newline \n tab \t bell \u0007',
        "keys": {"ключ": "значение", "🔑": "é"},
    },
    "nested": {"a": {"b": {"c": [1, {"d": [None, {}, []]}, "x"]}}, "list": [[[]]]},
    "integers": {
        "u64_max": 2**64 - 1,
        "beyond_u64": 2**64,
        "huge": 2**200 + 12345,
        "negative_huge": -(2**100),
        "i64_min": -(2**63),
        "small": [0, 1, -1, 255, 256],
    },
    "floats": {
        "half": 0.5,
        "pi": 3.141592653589793,
        "negative": -2.5,
        "one": 1.0,
        "zero": 0.0,
        "tiny": 1e-7,
        "third": 1 / 3,
    },
    "null": {"nothing": None, "in_list": [None, None], "deep": {"n": None}},
    "booleans": {"t": True, "f": False, "mixed": [True, 0, False, 1]},
    "empty": {},
}


def settled(fx: ElixirFixture, ids: list[int], states: set[str]) -> dict[int, Any] | None:
    rows = {row["id"]: row for row in fx.jobs(ids)}
    return rows if all(rows[i]["state"] in states for i in ids) else None


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_args_from_python_reach_the_beam_unchanged(
    fx: ElixirFixture, conn: Conn, schema: str, name: str
) -> None:
    payload = PAYLOADS[name]
    fx.call("start_queue", queue=EX, limit=5)  # idle, dispatched once: only NOTIFY can wake it
    assert fx.call("check_queue", queue=EX)["queue"]["running"] == []
    job = Job.new(ECHO, {"return": payload, "record": True}, queue=EX)
    try:
        inserted = insert(conn, job, prefix=schema)
    except Exception as exc:
        pytest.fail(f"bridge.insert refused args an Elixir app can insert: {exc!r} ({payload})")
    [row] = wait_until(
        lambda: settled(fx, [inserted.id or 0], {"completed"}),
        what="the fixture to run the job Python inserted",
    ).values()

    assert row["worker"] == ECHO and row["attempt"] == 1 and row["errors"] == []
    assert row["attempted_by"][0] == "vm" and UUID4.match(row["attempted_by"][1])
    assert row["meta"]["recorded"] is True, row["meta"]
    seen = decode_recorded(row["meta"]["return"])
    diffs = value_differences(payload, seen, "the BEAM's args")
    diffs += value_differences(payload, row["args"]["return"], "the row's args")
    assert not diffs, "\n".join(diffs)


def test_bulk_inserts_from_python_wake_and_feed_the_fixture(
    fx: ElixirFixture, conn: Conn, schema: str
) -> None:
    """Both insert_all paths (one INSERT, and COPY from COPY_THRESHOLD jobs on) notify once."""
    fx.call("listen", channels=["insert"])
    fx.call("start_queue", queue=EX, limit=10)
    small = insert_all(conn, [Job.new(ECHO, {"n": n}, queue=EX) for n in range(3)], prefix=schema)
    count = COPY_THRESHOLD + 6
    large = insert_all(
        conn, [Job.new(ECHO, {"n": n}, queue=EX) for n in range(count)], prefix=schema
    )
    ids = [job.id for job in [*small, *large] if job.id is not None]
    assert len(ids) == count + 3
    rows = wait_until(lambda: settled(fx, ids, {"completed"}), what="every bulk job to run")
    assert [rows[i]["args"]["n"] for i in ids] == [*range(3), *range(count)]
    assert {rows[i]["attempted_by"][0] for i in ids} == {"vm"}
    heard = fx.heard("insert", at_least=2)
    assert [(h["payload"], h["decoded"], h["error"]) for h in heard] == [
        ('{"queue":"ex"}', {"queue": "ex"}, None)
    ] * 2


def test_elixir_failures_retried_and_discarded_read_in_python(
    fx: ElixirFixture, database_url: str, schema: str, conn: Conn
) -> None:
    fx.connect(database_url, schema, node="vm", stage_interval_ms=100)
    fx.call("start_queue", queue=EX, limit=5)
    specs = {
        "fail": Job.new(ECHO, {"fail": True, "backoff": 0}, queue=EX, max_attempts=3),
        "error": Job.new(ECHO, {"error": {"atom": "boom"}, "backoff": 0}, queue=EX, max_attempts=2),
        "retryable": Job.new(ECHO, {"raise": "kaput"}, queue=EX, max_attempts=2),
    }
    ids = {name: insert(conn, job, prefix=schema).id or 0 for name, job in specs.items()}
    wanted = {ids["fail"]: "discarded", ids["error"]: "discarded", ids["retryable"]: "retryable"}
    wait_until(
        lambda: all(fx.jobs([i])[0]["state"] == s for i, s in wanted.items()),
        what="the fixture to retry and discard",
    )

    # Python reads what Elixir wrote: a Job with naive UTC datetimes, entries it can parse.
    fail = get_job(conn, schema, ids["fail"])
    assert fail is not None
    assert (fail.state, fail.attempt, fail.max_attempts) == ("discarded", 3, 3)
    assert fail.discarded_at is not None and fail.discarded_at.tzinfo is None
    assert fail.attempted_by is not None and fail.attempted_by[0] == "vm"
    assert [e["attempt"] for e in fail.errors] == [1, 2, 3]
    for n, entry in enumerate(fail.errors, start=1):
        assert ERROR_AT.match(entry["at"]), entry
        # (the fixture stamps discarded_at a few µs before `at`; genuine Oban the other way)
        assert abs((parse_utc(entry["at"]) - fail.discarded_at).total_seconds()) < 5
        message, frames = split_any_error(entry["error"])
        assert message == f"** (RuntimeError) echo failure on attempt {n}"
        assert frames and all(STACK_FRAME.match(f) for f in frames), entry["error"]

    error = get_job(conn, schema, ids["error"])
    assert error is not None and error.state == "discarded"
    assert [e["error"] for e in error.errors] == [
        "** (Oban.PerformError) Fixture.Echo failed with {:error, :boom}"
    ] * 2

    retryable = get_job(conn, schema, ids["retryable"])
    assert retryable is not None and retryable.attempted_at is not None
    assert retryable.scheduled_at is not None
    delay = (retryable.scheduled_at - retryable.attempted_at).total_seconds()
    assert 17 <= delay <= 17 * 1.1 + 1, delay  # Oban.Worker.backoff/1, attempt 1

    # A retry from Python (Oban.retry_job semantics) makes the fixture run it once more.
    assert retry_jobs(conn, schema, [ids["fail"]]) == [ids["fail"]]
    row = wait_until(
        lambda: (
            (r := fx.jobs([ids["fail"]])[0])["state"] == "discarded" and r["attempt"] == 4 and r
        ),
        what="the retried job to fail a fourth time",
    )
    assert row["max_attempts"] == 4  # GREATEST(max_attempts, attempt + 1)
    assert [e["attempt"] for e in row["errors"]] == [1, 2, 3, 4]
    assert row["completed_at"] is None and NAIVE_TIMESTAMP.match(row["discarded_at"])
