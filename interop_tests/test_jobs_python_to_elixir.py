"""Python enqueues, Elixir runs: args arrive as sent, failures are Oban's, Python reads them back.

Jobs for `Fixture.Echo` are inserted with ``bridge.insert`` / ``insert_all`` (the worker named by
its module string only). Echo returns what it was given and records it as external term format
(Oban Pro's recorded shape), which is decoded here with erlang-py: what the BEAM saw, value and
kind, must be what Python sent. Mirrors Oban.Queue.Producer (insert wake-up), Oban.Queue.Executor
and the Basic engine's acks, and Oban.retry_job/2.

The args and failure tests run on the plugin's fixtures, as a user's test would: the jobs run on
``bridge_elixir_app`` (elixir_fixture/ in its app mode, queue `echo`, a stager every second as
Oban's default) in ``bridge_db``; the module's stdin-driven VM only reads the rows back as the
BEAM decodes them (``reader``). The wake-up test stays on the stdin VM: it needs a queue started
without a stager, so a job can only run because the insert's `oban_insert` NOTIFY woke it, and
the VM's ``listen`` to see exactly the notifications the BEAM heard (an app's stager notifies
`insert` every second too).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bridge import Job, insert, insert_all
from bridge.jobs.client.admin import get_job, retry_jobs
from bridge.jobs.client.enqueue import COPY_THRESHOLD
from bridge.testing import ElixirApp
from bridge.testing.database import BridgeDatabase
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
EX = "ex"  # the stdin VM's queue, started by the wake-up test itself
ECHO_QUEUE = "echo"  # served by the app ([tool.bridge.testing] elixir_env FIXTURE_QUEUES)

pytestmark = pytest.mark.usefixtures("compiled_fixture")

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


@pytest.fixture
def reader(elixir: ElixirFixture, bridge_db: BridgeDatabase) -> Iterator[ElixirFixture]:
    """The module's VM on the test database, only to read rows as the BEAM decodes them: it
    starts no queue and no stager, so every job runs on the app."""
    elixir.connect(bridge_db.url, bridge_db.prefix, node="reader")
    yield elixir
    elixir.call("disconnect")


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_args_from_python_reach_the_beam_unchanged(
    bridge_elixir_app: ElixirApp, bridge_db: BridgeDatabase, reader: ElixirFixture, name: str
) -> None:
    payload = PAYLOADS[name]
    job = Job.new(ECHO, {"return": payload, "record": True}, queue=ECHO_QUEUE)
    with bridge_db.connect() as conn:
        try:
            inserted = insert(conn, job, prefix=bridge_db.prefix)
        except Exception as exc:
            pytest.fail(f"bridge.insert refused args an Elixir app can insert: {exc!r} ({payload})")
    bridge_db.wait_for_job(inserted)  # completed (fails at once on another final state)
    [row] = reader.jobs([inserted.id or 0])

    assert row["worker"] == ECHO and row["attempt"] == 1 and row["errors"] == []
    assert row["attempted_by"][0] == bridge_elixir_app.node == "fixture_app"
    assert UUID4.match(row["attempted_by"][1])
    assert row["meta"]["recorded"] is True, row["meta"]
    seen = decode_recorded(row["meta"]["return"])
    diffs = value_differences(payload, seen, "the BEAM's args")
    diffs += value_differences(payload, row["args"]["return"], "the row's args")
    assert not diffs, "\n".join(diffs)


def test_inserts_from_python_wake_and_feed_the_fixture(
    fx: ElixirFixture, conn: Conn, schema: str
) -> None:
    """insert and both insert_all paths (one INSERT, and COPY from COPY_THRESHOLD jobs on)
    notify once each, and that NOTIFY alone wakes a queue: the VM has no stager, and its queue,
    idle and dispatched once at start, runs nothing until it hears one."""
    fx.call("listen", channels=["insert"])
    fx.call("start_queue", queue=EX, limit=10)
    assert fx.call("check_queue", queue=EX)["queue"]["running"] == []
    one = insert(conn, Job.new(ECHO, {"n": -1}, queue=EX), prefix=schema)
    wait_until(lambda: settled(fx, [one.id or 0], {"completed"}), what="the single insert to run")
    small = insert_all(conn, [Job.new(ECHO, {"n": n}, queue=EX) for n in range(3)], prefix=schema)
    count = COPY_THRESHOLD + 6
    large = insert_all(
        conn, [Job.new(ECHO, {"n": n}, queue=EX) for n in range(count)], prefix=schema
    )
    ids = [job.id for job in [one, *small, *large] if job.id is not None]
    assert len(ids) == count + 4
    rows = wait_until(lambda: settled(fx, ids, {"completed"}), what="every bulk job to run")
    assert [rows[i]["args"]["n"] for i in ids] == [-1, *range(3), *range(count)]
    assert {rows[i]["attempted_by"][0] for i in ids} == {"vm"}
    heard = fx.heard("insert", at_least=3)
    assert [(h["payload"], h["decoded"], h["error"]) for h in heard] == [
        ('{"queue":"ex"}', {"queue": "ex"}, None)
    ] * 3


def test_elixir_failures_retried_and_discarded_read_in_python(
    bridge_elixir_app: ElixirApp, bridge_db: BridgeDatabase, reader: ElixirFixture
) -> None:
    """The app's stager (every second, Oban's default) makes the retries available again."""
    schema = bridge_db.prefix
    node = bridge_elixir_app.node
    specs = {
        "fail": Job.new(ECHO, {"fail": True, "backoff": 0}, queue=ECHO_QUEUE, max_attempts=3),
        "error": Job.new(
            ECHO, {"error": {"atom": "boom"}, "backoff": 0}, queue=ECHO_QUEUE, max_attempts=2
        ),
        "retryable": Job.new(ECHO, {"raise": "kaput"}, queue=ECHO_QUEUE, max_attempts=2),
    }
    with bridge_db.connect() as conn:
        ids = {name: insert(conn, job, prefix=schema).id or 0 for name, job in specs.items()}
        wanted = {"fail": "discarded", "error": "discarded", "retryable": "retryable"}
        for name, state in wanted.items():
            bridge_db.wait_for_job(ids[name], state=state)

        # Python reads what Elixir wrote: a Job with naive UTC datetimes, entries it can parse.
        fail = get_job(conn, schema, ids["fail"])
        assert fail is not None
        assert (fail.state, fail.attempt, fail.max_attempts) == ("discarded", 3, 3)
        assert fail.discarded_at is not None and fail.discarded_at.tzinfo is None
        assert fail.attempted_by is not None and fail.attempted_by[0] == node == "fixture_app"
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

        # A retry from Python (Oban.retry_job semantics) makes the app run it once more.
        assert retry_jobs(conn, schema, [ids["fail"]]) == [ids["fail"]]
    row = wait_until(
        lambda: (
            (r := reader.jobs([ids["fail"]])[0])["state"] == "discarded" and r["attempt"] == 4 and r
        ),
        what="the retried job to fail a fourth time",
    )
    assert row["max_attempts"] == 4  # GREATEST(max_attempts, attempt + 1)
    assert [e["attempt"] for e in row["errors"]] == [1, 2, 3, 4]
    assert row["attempted_by"][0] == node
    assert row["completed_at"] is None and NAIVE_TIMESTAMP.match(row["discarded_at"])
