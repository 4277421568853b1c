"""drain_queue: a queue's jobs run in the test's process through a node's claim and ack, the
rows left exactly as a node leaves them, the outcomes counted under Oban's keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, insert, worker
from bridge.jobs.client.registry import Registry
from bridge.testing import drain_queue, drain_queue_async
from tests.jobs.support import job_row, running_node, wait_for_state
from tests.testing.workers import REGISTRY, Outcomes, async_raise

Conn = psycopg.Connection[Any]
ZERO = {"success": 0, "failure": 0, "discard": 0, "cancelled": 0, "snoozed": 0}

# The columns that differ between two runs of the same job by nature.
RUN_COLUMNS = {
    "id",
    "inserted_at",
    "scheduled_at",
    "attempted_at",
    "completed_at",
    "discarded_at",
    "cancelled_at",
    "attempted_by",
    "queue",
}


def put(conn: Conn, prefix: str, args: dict[str, Any], **opts: Any) -> Job:
    return insert(conn, Outcomes.new(args, **opts), prefix=prefix)


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in RUN_COLUMNS}
    out["errors"] = [{k: v for k, v in entry.items() if k != "at"} for entry in row["errors"]]
    return out


ACTIONS = ["ok", "raise", "snooze", "cancel", "discard", "error"]


async def test_rows_are_the_rows_a_node_writes(database_url: str, oban_prefix: str) -> None:
    """Each outcome's row after a drain equals, column for column (bar ids, clocks and who
    claimed it), the row a real node writes for the same job."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        drained = [
            put(conn, oban_prefix, {"do": a}, queue="drained", meta={"m": 1}) for a in ACTIONS
        ]
        served = [put(conn, oban_prefix, {"do": a}, queue="served", meta={"m": 1}) for a in ACTIONS]
    counts = await drain_queue_async(database_url, "drained", prefix=oban_prefix, registry=REGISTRY)
    assert counts == {"success": 1, "failure": 2, "discard": 1, "cancelled": 1, "snoozed": 1}
    async with running_node(database_url, oban_prefix, {"served": 6}, REGISTRY):
        for job in served:
            assert job.id is not None
            await wait_for_state(
                database_url,
                oban_prefix,
                job.id,
                {"completed", "retryable", "scheduled", "cancelled", "discarded"},
            )
    for ours, theirs in zip(drained, served, strict=True):
        assert ours.id is not None and theirs.id is not None
        mine = job_row(database_url, oban_prefix, ours.id)
        node = job_row(database_url, oban_prefix, theirs.id)
        assert comparable(mine) == comparable(node), ours.args
        assert mine["attempted_by"][0] == node["attempted_by"][0]  # the host's name, as a node
        assert (mine["scheduled_at"] is None) == (node["scheduled_at"] is None)


async def test_unsafe_drain_writes_the_node_s_error_entry(
    database_url: str, oban_prefix: str
) -> None:
    """with_safety=False raises the worker's exception, and the entry it stored first is the
    node's, frame for frame (the capture adds no frame), for sync and async workers."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        jobs = [
            (
                insert(conn, spec.new({"do": "raise"}, queue="drained"), prefix=oban_prefix),
                insert(conn, spec.new({"do": "raise"}, queue="served"), prefix=oban_prefix),
            )
            for spec in (Outcomes.spec, async_raise.spec)
        ]
    for queue_error in (ValueError, KeyError):
        with pytest.raises(queue_error):
            await drain_queue_async(
                database_url,
                "drained",
                prefix=oban_prefix,
                registry=REGISTRY,
                with_safety=False,
                with_limit=1,
            )
    async with running_node(database_url, oban_prefix, {"served": 2}, REGISTRY):
        for _, served in jobs:
            assert served.id is not None
            await wait_for_state(database_url, oban_prefix, served.id, {"retryable"})
    for drained, served in jobs:
        assert drained.id is not None and served.id is not None
        mine = job_row(database_url, oban_prefix, drained.id)["errors"]
        node = job_row(database_url, oban_prefix, served.id)["errors"]
        assert [e["error"] for e in mine] == [e["error"] for e in node]


def test_scheduled_recursion_and_exhaustion(conn: Conn, oban_prefix: str) -> None:
    put(conn, oban_prefix, {"do": "raise"})
    put(conn, oban_prefix, {"do": "ok"}, schedule_in=3600)
    first = drain_queue(conn, "outcomes", prefix=oban_prefix, registry=REGISTRY)
    assert first == {**ZERO, "failure": 1}  # the scheduled job waits for its time
    again = drain_queue(conn, "outcomes", prefix=oban_prefix, registry=REGISTRY)
    assert again == ZERO  # the failed one is retryable, not available
    every = drain_queue(
        conn,
        "outcomes",
        prefix=oban_prefix,
        registry=REGISTRY,
        with_scheduled=True,
        with_recursion=True,
    )
    # attempts 2 and 3 of the failing job (the last discarded), and the scheduled one
    assert every == {**ZERO, "success": 1, "failure": 1, "discard": 1}


def test_with_scheduled_up_to_a_moment(conn: Conn, oban_prefix: str) -> None:
    soon = put(conn, oban_prefix, {}, schedule_in=60)
    put(conn, oban_prefix, {}, schedule_in=7200)
    counts = drain_queue(
        conn,
        "outcomes",
        prefix=oban_prefix,
        registry=REGISTRY,
        with_scheduled=datetime.now(UTC) + timedelta(minutes=5),
    )
    assert counts == {**ZERO, "success": 1}
    assert soon.id is not None
    assert job_row_state(conn, oban_prefix, soon.id) == "completed"


def test_with_limit_claims_that_many_a_pass(conn: Conn, oban_prefix: str) -> None:
    for _ in range(5):
        put(conn, oban_prefix, {})
    assert drain_queue(conn, "outcomes", prefix=oban_prefix, registry=REGISTRY, with_limit=2) == {
        **ZERO,
        "success": 2,
    }
    assert drain_queue(
        conn, "outcomes", prefix=oban_prefix, registry=REGISTRY, with_limit=2, with_recursion=True
    ) == {**ZERO, "success": 3}


def test_without_safety_the_exception_is_raised_after_the_row_is_written(
    conn: Conn, oban_prefix: str
) -> None:
    job = put(conn, oban_prefix, {"do": "raise"})
    with pytest.raises(ValueError, match="asked to fail on attempt 1"):
        drain_queue(conn, "outcomes", prefix=oban_prefix, registry=REGISTRY, with_safety=False)
    assert job.id is not None
    assert job_row_state(conn, oban_prefix, job.id) == "retryable"


def test_jobs_that_enqueue_jobs_need_recursion(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    registry = Registry()

    @worker(name="tests.testing.Chain", queue="chain", registry=registry)
    def chain(job: Job) -> None:
        if job.args["left"] > 0:
            with psycopg.connect(database_url, autocommit=True) as own:
                insert(own, chain.new({"left": job.args["left"] - 1}), prefix=oban_prefix)

    insert(conn, chain.new({"left": 3}), prefix=oban_prefix)
    assert drain_queue(conn, "chain", prefix=oban_prefix, registry=registry) == {
        **ZERO,
        "success": 1,
    }
    assert drain_queue(
        conn, "chain", prefix=oban_prefix, registry=registry, with_recursion=True
    ) == {**ZERO, "success": 3}


def test_an_unknown_worker_fails_as_on_a_node(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    job = insert(conn, Job.new("Elixir.Only", {}, queue="outcomes"), prefix=oban_prefix)
    assert drain_queue(conn, "outcomes", prefix=oban_prefix, registry=REGISTRY) == {
        **ZERO,
        "failure": 1,
    }
    assert job.id is not None
    entry = job_row(database_url, oban_prefix, job.id)["errors"][0]
    assert "Elixir.Only" in entry["error"]


def test_a_row_python_cannot_decode_is_discarded_as_a_node_discards_it(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    """An available row with an infinite inserted_at: the drain ends it as the producer does
    (``producer.undecodable_ack``), discarded at once with the entry naming the column, and the
    other job of the pass runs."""
    fine = put(conn, oban_prefix, {"outcome": "ok"})
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_jobs (state, queue, worker, args, inserted_at) VALUES "
            "('available', 'outcomes', 'tests.testing.workers.Outcomes', '{{}}', 'infinity') "
            "RETURNING id"
        ).format(sql.Identifier(oban_prefix))
    ).fetchone()
    assert row is not None
    bad = int(str(row[0]))
    counts = drain_queue(conn, "outcomes", prefix=oban_prefix, registry=REGISTRY)
    assert counts == {**ZERO, "success": 1, "discard": 1}
    ended = conn.execute(
        sql.SQL("SELECT state::text, errors[1]->>'error' FROM {}.oban_jobs WHERE id = %s").format(
            sql.Identifier(oban_prefix)
        ),
        (bad,),
    ).fetchone()
    assert ended is not None and ended[0] == "discarded"
    assert str(ended[1]).startswith("** (bridge.jobs.client.job.UndecodableRowError) inserted_at")
    assert job_row(database_url, oban_prefix, fine.id or 0)["state"] == "completed"


def test_sync_drain_refuses_a_running_loop(conn: Conn, oban_prefix: str) -> None:
    async def inside() -> None:
        drain_queue(conn, "outcomes", prefix=oban_prefix)

    with pytest.raises(RuntimeError, match="use drain_queue_async there"):
        asyncio.run(inside())


def job_row_state(conn: Conn, prefix: str, job_id: int) -> str:
    row = conn.execute(
        sql.SQL("SELECT state::text FROM {}.oban_jobs WHERE id = %s").format(
            sql.Identifier(prefix)
        ),
        (job_id,),
    ).fetchone()
    assert row is not None
    return str(row[0])
