"""Testing modes: inline runs a Python @worker at the insert and writes no row; other workers'
jobs, and every job in manual mode, are written as ever; outside a mode nothing changes."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from bridge import Job, insert, insert_all, insert_all_async, insert_async, worker
from bridge.jobs.client.registry import Registry
from bridge.testing import all_enqueued, mode
from tests.testing.workers import REGISTRY, Outcomes

Conn = psycopg.Connection[Any]


def count(conn: Conn, prefix: str) -> int:
    return len(all_enqueued(conn, prefix=prefix, state=["available", "scheduled", "completed"]))


def test_inline_runs_the_worker_and_writes_nothing(conn: Conn, oban_prefix: str) -> None:
    with mode("inline", registry=REGISTRY) as recorded:
        done = insert(conn, Outcomes.new({"n": 1}), prefix=oban_prefix)
        snoozed = insert(conn, Outcomes.new({"do": "snooze"}), prefix=oban_prefix)
        cancelled = insert(conn, Outcomes.new({"do": "cancel"}), prefix=oban_prefix)
    assert (done.state, done.id, done.attempt, done.attempted_by) == (
        "completed",
        None,
        1,
        ["inline"],
    )
    assert done.completed_at is not None
    assert snoozed.state == "scheduled"
    assert cancelled.state == "cancelled" and cancelled.errors[0]["error"].endswith(
        '{:cancel, "not wanted"}'
    )
    assert [o.result for o in recorded.outcomes] == ["success", "snoozed", "cancelled"]
    assert recorded.jobs == [done, snoozed, cancelled]
    assert count(conn, oban_prefix) == 0


def test_inline_raises_the_worker_s_exception(conn: Conn, oban_prefix: str) -> None:
    with mode("inline", registry=REGISTRY), pytest.raises(ValueError, match="asked to fail"):
        insert(conn, Outcomes.new({"do": "raise"}), prefix=oban_prefix)
    assert count(conn, oban_prefix) == 0


def test_inline_writes_jobs_for_other_workers(conn: Conn, oban_prefix: str) -> None:
    with mode("inline", registry=REGISTRY) as recorded:
        jobs = insert_all(
            conn,
            [Job.new("BadgeForge.PrintCenter", {"b": 1}), Outcomes.new({"n": 2})],
            prefix=oban_prefix,
        )
    assert [j.state for j in jobs] == ["available", "completed"]
    assert jobs[0].id is not None and jobs[1].id is None
    assert recorded.jobs == jobs
    assert [j.worker for j in all_enqueued(conn, prefix=oban_prefix)] == ["BadgeForge.PrintCenter"]


def test_an_inline_worker_s_own_inserts_run_inline(conn: Conn, oban_prefix: str) -> None:
    registry = Registry()
    seen: list[int] = []

    @worker(name="tests.testing.Countdown", registry=registry)
    def countdown(job: Job) -> None:  # a sync body, on a thread: it sees the mode
        seen.append(job.args["n"])
        if job.args["n"] > 0:
            insert(conn, countdown.new({"n": job.args["n"] - 1}), prefix=oban_prefix)

    with mode("inline", registry=registry):
        insert(conn, countdown.new({"n": 2}), prefix=oban_prefix)
    assert seen == [2, 1, 0]
    assert count(conn, oban_prefix) == 0


def test_manual_writes_and_records(conn: Conn, oban_prefix: str) -> None:
    with mode("inline", registry=REGISTRY), mode("manual") as recorded:
        job = insert(conn, Outcomes.new({"n": 3}), prefix=oban_prefix)
    assert job.state == "available" and job.id is not None
    assert recorded.jobs == [job]
    assert count(conn, oban_prefix) == 1


def test_outside_a_mode_inserts_are_untouched(conn: Conn, oban_prefix: str) -> None:
    with mode("inline", registry=REGISTRY):
        pass
    job = insert(conn, Outcomes.new({"n": 4}), prefix=oban_prefix)
    assert job.state == "available" and job.id is not None


def test_an_unknown_mode_is_refused() -> None:
    with (
        pytest.raises(ValueError, match="testing mode must be one of inline, manual"),
        mode("disabled"),
    ):
        pass


async def test_async_inserts(database_url: str, oban_prefix: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
        with mode("inline", registry=REGISTRY) as recorded:
            one = await insert_async(aconn, Outcomes.new({"n": 5}), prefix=oban_prefix)
            many = await insert_all_async(
                aconn, [Outcomes.new({"n": 6}), Job.new("Elixir.Thing", {})], prefix=oban_prefix
            )
            # a sync insert from code on the loop runs the job on a loop of its own thread
            with psycopg.connect(database_url, autocommit=True) as conn:
                sync = insert(conn, Outcomes.new({"n": 7}), prefix=oban_prefix)
    assert [one.state, *(j.state for j in many), sync.state] == [
        "completed",
        "completed",
        "available",
        "completed",
    ]
    assert len(recorded.outcomes) == 3
