"""Signals: the fixture sends Oban's payloads and obeys them as an Oban node would.

Mirrors: Oban.pause_queue/resume_queue/pause_all_queues/resume_all_queues/scale_queue/
start_queue/stop_queue (payloads, `ident` scoping), Oban.Queue.Producer's signal handling
(pause, resume, scale, pkill), Oban.Midwife (start, stop) and Oban.Notifier's `in_scope?`.
Expected states come from golden/signals-and-unique (check_queue after each call).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from interop_tests.fixture import ElixirFixture, wait_until
from interop_tests.support import golden_lines

S10_SIGNALS = [
    line["payload"]
    for line in golden_lines("signals-and-unique/s10_notify.jsonl")
    if line.get("channel") == "public.oban_signal"
]
S10_CALLS = [n for n in golden_lines("signals-and-unique/s10_notes.jsonl") if "call" in n]
CHECK = re.compile(r'%\{limit: (\d+), node: "([^"]*)", paused: (true|false)\}')


def listen(conn: psycopg.Connection[Any], channel: str) -> None:
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


def test_sent_signals_equal_golden_payloads(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    first_capture = [
        line["payload"]
        for line in golden_lines("elixir-notifications.jsonl")
        if line["channel"] == "public.oban_signal"
    ]
    calls: list[dict[str, Any]] = [
        # golden/elixir-notifications.jsonl: untargeted pause, scale, resume, pause
        {"action": "pause", "queue": "elixir"},
        {"action": "scale", "queue": "elixir", "limit": 7},
        {"action": "resume", "queue": "elixir"},
        {"action": "pause", "queue": "badges"},
        # golden/signals-and-unique: targeted, untargeted, all queues, start/stop
        {"action": "pause", "queue": "golden", "node": "vm"},
        {"action": "resume", "queue": "golden", "node": "vm"},
        {"action": "pause", "queue": "golden", "node": "pynode-1"},
        {"action": "scale", "queue": "golden", "limit": 4, "node": "vm"},
        {"action": "scale", "queue": "golden", "limit": 3},
        {"action": "pause_all"},
        {"action": "resume_all"},
        {"action": "start", "queue": "extra", "limit": 2},
        {"action": "stop", "queue": "extra"},
    ]
    expected = first_capture + S10_SIGNALS
    assert len(expected) == len(calls)

    listen(conn, f"{schema}.oban_signal")
    sent = [payload for call in calls for payload in fx.call("signal", **call)["payloads"]]
    heard = list(conn.notifies(timeout=5, stop_after=len(calls)))

    assert sent == expected
    assert [n.payload for n in heard] == expected
    assert {n.channel for n in heard} == {f"{schema}.oban_signal"}


def test_signals_from_outside_are_obeyed_like_oban(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    """Replay the genuine node's signals verbatim; the fixture ends each step in the state the
    genuine node reported (including ignoring a pause meant for another node)."""
    assert len(S10_SIGNALS) == len(S10_CALLS)
    fx.call("start_queue", queue="golden", limit=2)
    channel = f"{schema}.oban_signal"

    for payload, note in zip(S10_SIGNALS, S10_CALLS, strict=True):
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        assert [h["payload"] for h in fx.heard("signal")] == [payload]
        running = fx.call("running_queues")["queues"]
        queue = fx.call("check_queue", queue="golden")["queue"]
        match = CHECK.fullmatch(note["check_golden"])
        assert match is not None, note
        limit, node, paused = match.groups()
        assert (queue["limit"], queue["node"], queue["paused"]) == (
            int(limit),
            node,
            paused == "true",
        ), note["call"]
        assert ("extra" in running) == (note["call"] == "start_queue extra limit 2")

    assert fx.call("running_queues")["queues"] == ["golden"]  # "extra" came and went


def test_pkill_from_outside_cancels_the_running_job(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    job = fx.enqueue([{"worker": "Fixture.Echo", "queue": "golden", "args": {"sleep": 5000}}])[0]
    fx.call("start_queue", queue="golden", limit=1)
    wait_until(
        lambda: fx.call("check_queue", queue="golden")["queue"]["running"] == [job["id"]],
        what="the job to run",
    )
    payload = f'{{"action":"pkill","job_id":{job["id"]}}}'
    conn.execute("SELECT pg_notify(%s, %s)", (f"{schema}.oban_signal", payload))

    row = wait_until(lambda: (r := fx.jobs([job["id"]])[0])["errors"] and r, what="the ack")
    assert row["state"] == "cancelled"
    assert row["cancelled_at"] is not None
    assert [e["error"] for e in row["errors"]] == [
        "** (Oban.PerformError) Fixture.Echo failed with {:cancel, :shutdown}"
    ]
