"""The fixture writes jobs the way Oban 2.23's Basic engine does (golden/elixir-jobs.json).

Mirrors: Oban.insert/2 and Oban.insert_all/2 (rows and the `oban_insert` NOTIFY), the unique
check of Oban.Engines.Basic.insert_unique, and a queue's fetch/execute/ack cycle
(Producer + Executor + Basic's complete/error/discard/cancel/snooze).
"""

from __future__ import annotations

import base64
from typing import Any

import psycopg
import pytest
from psycopg import sql

from interop_tests.fixture import CommandFailed, ElixirFixture, wait_until
from interop_tests.support import assert_row_like, golden_json, golden_lines

NAMES = {"RealStack.Echo": "Fixture.Echo"}
GOLDEN = {row["id"]: row for row in golden_json("elixir-jobs.json")}
ECHO = {"worker": "Fixture.Echo", "queue": "elixir"}

# The golden scenario's plain jobs, keyed by the id each got in the genuine run.
SCENARIO: dict[int, dict[str, Any]] = {
    18: {**ECHO, "args": {"ok": 1, "nested": {"a": [1, 2.5, None, "é"]}}},
    19: {**ECHO, "args": {"error": "bad thing"}, "max_attempts": 1},
    20: {**ECHO, "args": {"cancel": "not needed"}},
    21: {**ECHO, "args": {"snooze": 1}},
    22: {**ECHO, "args": {"fail": True}, "max_attempts": 3},
    23: {
        **ECHO,
        "args": {"scheduled": True},
        "schedule_in": 3600,
        "tags": ["t1"],
        "priority": 2,
        "meta": {"m": 1},
    },
    24: {
        "worker": "badge_forge.generator.GenerateBadge",
        "queue": "badges",
        "args": {"id": "b-1", "name": "Alasdair Fraser"},
    },
    25: {**ECHO, "args": {"u": 1}, "unique": {"period": 60}},
}


def listen(conn: psycopg.Connection[Any], channel: str) -> None:
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


def test_inserted_rows_have_the_golden_shape(fx: ElixirFixture) -> None:
    rows = dict(zip(SCENARIO, fx.enqueue(list(SCENARIO.values())), strict=True))
    # Jobs nothing ran on: their inserted rows are final, so they compare whole.
    assert_row_like(rows[23], GOLDEN[23], NAMES)
    assert_row_like(rows[24], GOLDEN[24], NAMES)
    for golden_id, row in rows.items():
        assert row["state"] == ("scheduled" if golden_id == 23 else "available")
        assert set(row) == set(GOLDEN[golden_id])


def test_executed_rows_match_the_golden_rows(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    fx.connect(database_url, schema, node="vm", stage_interval_ms=100)
    ids = {
        golden_id: row["id"]
        for golden_id, row in zip(SCENARIO, fx.enqueue(list(SCENARIO.values())), strict=True)
    }
    again = fx.call("enqueue", jobs=[SCENARIO[25]])
    assert again["conflicts"] == [True]
    assert again["jobs"][0]["id"] == ids[25]

    fx.call("start_queue", queue="elixir", limit=10)

    def settled() -> dict[int, dict[str, Any]] | None:
        rows = {row["id"]: row for row in fx.jobs(list(ids.values()))}
        by_golden = {golden_id: rows[job_id] for golden_id, job_id in ids.items()}
        done = all(by_golden[g]["state"] == GOLDEN[g]["state"] for g in ids)
        return by_golden if done else None

    final = wait_until(settled, timeout=15, what="every job in its golden final state")
    for golden_id, row in final.items():
        assert_row_like(row, GOLDEN[golden_id], NAMES)
    retry_delay = _seconds_between(final[22]["attempted_at"], final[22]["scheduled_at"])
    assert 15 + 2 <= retry_delay <= (15 + 2) * 1.1 + 1  # Oban.Worker.backoff/1 for attempt 1 of 3


def _seconds_between(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def test_insert_notifies_like_oban(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    golden_payloads = {
        line["payload"]
        for line in golden_lines("elixir-notifications.jsonl")
        if line["channel"] == "public.oban_insert"
    }
    listen(conn, f"{schema}.oban_insert")

    # A scheduled insert sends nothing: the first notification is the later available insert's.
    fx.enqueue([SCENARIO[23], SCENARIO[24]])
    first = next(conn.notifies(timeout=5, stop_after=1))
    assert first.channel == f"{schema}.oban_insert"
    assert first.payload == '{"queue":"badges"}'
    assert first.payload in golden_payloads

    fx.enqueue([SCENARIO[18], SCENARIO[24], SCENARIO[18]], bulk=True)
    payloads = [n.payload for n in conn.notifies(timeout=5, stop_after=2)]
    assert sorted(payloads) == ['{"queue":"badges"}', '{"queue":"elixir"}']
    assert set(payloads) <= golden_payloads


def test_bulk_insert_rows_and_no_uniqueness(fx: ElixirFixture) -> None:
    job = {**ECHO, "args": {"u": 2}, "unique": {"period": 60}}
    first = fx.enqueue([job])[0]
    rows = fx.enqueue([job, SCENARIO[24]], bulk=True)
    assert rows[0]["id"] != first["id"]  # Oban.insert_all ignores uniqueness (OSS)
    assert_row_like(rows[1], GOLDEN[24], NAMES)


def test_unique_options_follow_the_basic_engine(fx: ElixirFixture) -> None:
    """The unique sequence of golden/signals-and-unique (s10_notes): same conflicts, same ids."""
    notes = [n for n in golden_lines("signals-and-unique/s10_notes.jsonl") if "unique" in n]
    worker = {"worker": "Fixture.Echo", "queue": "golden"}
    keyed = {"keys": ["a"]}
    scheduled_forever = {"period": "infinity", "states": ["scheduled"]}
    calls: list[tuple[dict[str, Any], bool]] = [
        ({**worker, "args": {"a": 1, "b": 1, "ms": 1}, "schedule_in": 600, "unique": keyed}, False),
        ({**worker, "args": {"a": 1, "b": 2, "ms": 1}, "schedule_in": 600, "unique": keyed}, False),
        ({**worker, "args": {"a": 2, "b": 2, "ms": 1}, "schedule_in": 600, "unique": keyed}, False),
        (
            {
                **worker,
                "args": {"x": 1, "ms": 1},
                "meta": {"m": 1},
                "schedule_in": 1200,
                "unique": scheduled_forever,
            },
            False,
        ),
        (
            {
                **worker,
                "args": {"x": 1, "ms": 1},
                "meta": {"m": 2},
                "schedule_in": 1200,
                "unique": scheduled_forever,
            },
            False,
        ),
        (
            {
                **worker,
                "args": {"x": 1, "ms": 1},
                "schedule_in": 3600,
                "unique": scheduled_forever,
                "replace": {"scheduled": ["scheduled_at"]},
            },
            False,
        ),
        (
            {
                **worker,
                "args": {"other": True, "ms": 1},
                "schedule_in": 600,
                "unique": {"fields": ["worker"]},
            },
            False,
        ),
        ({**worker, "args": {"a": 1, "b": 1, "ms": 1}, "schedule_in": 600, "unique": keyed}, True),
    ]
    results = []
    for spec, bulk in calls:
        reply = fx.call("enqueue", jobs=[spec], bulk=bulk)
        results.append((reply["jobs"][0], reply["conflicts"][0]))

    golden_ids = [n.get("id", (n.get("ids") or [None])[0]) for n in notes]
    golden_conflicts = [n.get("conflict", (n.get("conflicts") or [None])[0]) for n in notes]
    first_id = results[0][0]["id"]
    assert [row["id"] - first_id + 1 for row, _ in results] == golden_ids
    assert [conflict for _, conflict in results] == golden_conflicts

    before = results[3][0]["scheduled_at"]
    after = fx.jobs([results[3][0]["id"]])[0]["scheduled_at"]
    assert results[5][0]["scheduled_at"] == after != before  # replace moved the existing job


def test_recorded_return_value(fx: ElixirFixture) -> None:
    """Not OSS Oban: the shape Oban Pro's recorded workers leave in meta (ETF, base64, unpadded)."""
    jobs = fx.enqueue(
        [
            {**ECHO, "args": {"return": {"count": 42}, "record": True}},
            {**ECHO, "args": {"return": "ab" * 100, "record": "compressed"}},
        ]
    )
    assert fx.call("drain_queue", queue="elixir")["success"] == 2
    plain, compressed = (row["meta"] for row in fx.jobs([job["id"] for job in jobs]))
    assert plain["recorded"] is True
    assert not plain["return"].endswith("=")
    padded = plain["return"] + "=" * (-len(plain["return"]) % 4)
    assert base64.b64decode(padded) == b"\x83t\x00\x00\x00\x01m\x00\x00\x00\x05counta*"
    padded = compressed["return"] + "=" * (-len(compressed["return"]) % 4)
    assert base64.b64decode(padded)[:2] == b"\x83P"


def test_stop_queue_waits_then_leaves_an_overrunning_job_executing(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    """Oban's shutdown: pause, let jobs finish within the grace period, then kill the rest
    without acking them (they stay `executing` until Lifeline rescues them)."""
    fx.connect(database_url, schema, node="vm", shutdown_grace_ms=300)
    quick = fx.enqueue([{**ECHO, "args": {"sleep": 50}}, {**ECHO, "args": {}}])
    fx.call("start_queue", queue="elixir", limit=5)
    fx.call("wait_idle", queues=["elixir"], timeout_ms=5000)
    assert {row["state"] for row in fx.jobs([job["id"] for job in quick])} == {"completed"}

    slow = fx.enqueue([{**ECHO, "args": {"sleep": 10_000}}])[0]
    wait_until(
        lambda: fx.call("check_queue", queue="elixir")["queue"]["running"] == [slow["id"]],
        what="the slow job to run",
    )
    fx.call("stop_queue", queue="elixir")
    assert fx.call("running_queues")["queues"] == []
    row = fx.jobs([slow["id"]])[0]
    assert (row["state"], row["errors"], row["completed_at"]) == ("executing", [], None)


def test_invalid_enqueue_options_are_rejected(fx: ElixirFixture) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({**ECHO, "args": {}, "colour": "red"}, "unknown option"),
        ({**ECHO, "args": {}, "priority": 10}, "priority"),
        ({**ECHO, "args": {}, "max_attempts": 0}, "max_attempts"),
        ({**ECHO, "args": {}, "unique": {"states": ["nope"]}}, "unique states"),
        ({"queue": "elixir", "args": {}}, "worker is required"),
    ]
    for spec, message in cases:
        with pytest.raises(CommandFailed, match=message) as failed:
            fx.enqueue([spec])
        assert failed.value.type == "Fixture.Job.Invalid"
    assert fx.jobs() == []
