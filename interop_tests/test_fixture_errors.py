"""Error entries written by the fixture read like Oban 2.23's (golden/error-entries, timeout,
cancel-job), worker names aside.

Mirrors: Oban.Queue.Executor's classification of returns, raises, throws and exits, the
TimeoutError of `timeout/1`, Oban.Job.format_attempt/1, and Basic's discard/cancel acks; the
pkill of Oban.cancel_job/2 on an executing job and the producer's `{:cancel, :shutdown}`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from interop_tests.fixture import ElixirFixture, wait_until
from interop_tests.support import assert_row_like, golden_lines

# Args that make Fixture.Echo reach each golden mode's outcome.
MODES: dict[str, dict[str, Any]] = {
    "error_atom": {"error": {"atom": "atom_reason"}},
    "error_map": {"error": {"a": 1}},
    "error_struct": {"error_exception": "x"},
    "error_string": {"error": "plain string reason"},
    "raise_multiline": {"raise": "first line\nsecond line\n  third line indented"},
    "raise_argument": {"raise_argument": "bad argument here"},
    "discard_reason": {"discard": "reason"},
    "cancel_reason": {"cancel": "cancel reason"},
    "throw": {"throw": {"atom": "thrown_value"}},
    "exit": {"exit": {"atom": "exit_reason"}},
    "badmatch": {"badmatch": 1},
}


def test_error_entries_match_golden(fx: ElixirFixture) -> None:
    golden = golden_lines("error-entries/s6_oban_jobs.jsonl")
    assert [row["args"]["mode"] for row in golden] == list(MODES)
    specs = [
        {"worker": "Fixture.Echo", "queue": "golden", "max_attempts": 1, "args": {"mode": m, **a}}
        for m, a in MODES.items()
    ]
    ids = [row["id"] for row in fx.enqueue(specs)]

    counts = fx.call("drain_queue", queue="golden")
    assert (counts["discard"], counts["cancelled"]) == (10, 1)

    names = {"Realstack.ErrorWorker": "Fixture.Echo"}
    for ours, theirs in zip(fx.jobs(ids), golden, strict=True):
        assert_row_like(ours, theirs, names, other_args=True)


def test_timeout_entries_match_golden(fx: ElixirFixture) -> None:
    golden = golden_lines("timeout/s5_oban_jobs.jsonl")[0]
    args = {"case": "timeout", "sleep": 500, "timeout": 50, "backoff": 1}
    job = fx.enqueue(
        [{"worker": "Fixture.Echo", "queue": "golden", "max_attempts": 2, "args": args}]
    )[0]

    # Oban.drain_queue(with_scheduled: true, with_recursion: true): the retry runs at once.
    counts = fx.call("drain_queue", queue="golden", with_scheduled=True, with_recursion=True)
    assert (counts["failure"], counts["discard"]) == (1, 1)

    row = fx.jobs([job["id"]])[0]
    assert_row_like(row, golden, {"Realstack.TimeoutWorker": "Fixture.Echo"}, other_args=True)


def test_cancel_job_matches_golden(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    golden = golden_lines("cancel-job/s9_oban_jobs.jsonl")
    golden_signal = next(
        line["payload"]
        for line in golden_lines("cancel-job/s9_notify.jsonl")
        if line.get("channel") == "public.oban_signal"
    )
    echo = {"worker": "Fixture.Echo", "queue": "golden"}
    scheduled, executing = fx.enqueue(
        [
            {**echo, "args": {"ms": 5000, "case": "scheduled", "sleep": 5000}, "schedule_in": 3600},
            {**echo, "args": {"ms": 5000, "case": "executing", "sleep": 5000}},
        ]
    )
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"{schema}.oban_signal")))
    fx.call("start_queue", queue="golden", limit=2)
    wait_until(
        lambda: fx.call("check_queue", queue="golden")["queue"]["running"] == [executing["id"]],
        what="the sleeping job to execute",
    )

    assert fx.call("cancel_job", job_id=scheduled["id"])["payloads"] == []
    sent = fx.call("cancel_job", job_id=executing["id"])["payloads"]
    assert sent == [golden_signal.replace(str(golden[1]["id"]), str(executing["id"]))]
    heard = next(conn.notifies(timeout=5, stop_after=1))
    assert heard.payload == sent[0]

    rows = wait_until(
        lambda: (r := fx.jobs([scheduled["id"], executing["id"]]))[1]["errors"] and r,
        what="the pkilled job's error entry",
    )
    names = {"Realstack.SleepWorker": "Fixture.Echo"}
    for ours, theirs in zip(rows, golden, strict=True):
        assert_row_like(ours, theirs, names, other_args=True)
