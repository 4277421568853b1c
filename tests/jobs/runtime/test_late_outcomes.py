"""An outcome applies only to the attempt that produced it.

Node A claims a job and is held mid-job (as a node frozen with SIGSTOP past its rescue would be);
the job is rescued as the lifeline rescues it (back to ``available``, attempt and attempted_by
untouched) and node B claims it again. A's outcome, arriving late, must leave B's attempt alone,
and B's own outcome must land. Both nodes are real nodes on real PostgreSQL in this process; a
gate per attempt decides when each body returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, Registry, insert_all, worker
from bridge.jobs import queries
from bridge.jobs.node import Node
from bridge.jobs.plugins import lifeline
from bridge.jobs.runtime.acker import drop_reason
from bridge.jobs.runtime.executor import Ack
from bridge.wire.timefmt import utc_now
from tests.jobs.support import job_row, running_node, wait_for_state

Conn = psycopg.Connection[tuple[object, ...]]
QUEUE = "late"


class Gates:
    """One gate per (job id, attempt): the body waits on it and returns (or raises) once opened."""

    def __init__(self) -> None:
        self.gates: dict[tuple[int, int], asyncio.Event] = {}
        self.fail: set[tuple[int, int]] = set()

    def gate(self, key: tuple[int, int]) -> asyncio.Event:
        return self.gates.setdefault(key, asyncio.Event())

    async def started(self, key: tuple[int, int], timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while key not in self.gates:
            assert loop.time() < deadline, f"attempt {key} never started"
            await asyncio.sleep(0.02)


@pytest.fixture
def gates() -> Iterator[Gates]:
    yield Gates()


@pytest.fixture
def registry(gates: Gates) -> Registry:
    registry = Registry()

    @worker(name="t.Gated", queue=QUEUE, registry=registry)
    async def gated(job: Job) -> None:
        assert job.id is not None
        key = (job.id, job.attempt)
        await gates.gate(key).wait()
        if key in gates.fail:
            raise RuntimeError(f"late failure of attempt {job.attempt}")

    return registry


def insert_job(conn: Conn, prefix: str) -> int:
    [job] = insert_all(conn, [Job.new("t.Gated", {}, queue=QUEUE, max_attempts=5)], prefix=prefix)
    assert job.id is not None
    return job.id


def rescue(conn: Conn, prefix: str) -> list[int]:
    """The lifeline's own statement, with a cut that makes every executing job overdue."""
    rows = conn.execute(
        queries.render(lifeline.RESCUE, prefix), {"cut": utc_now() + timedelta(seconds=60)}
    ).fetchall()
    return [int(row[0]) for row in rows]  # type: ignore[call-overload]


def claimed_by(node: Node) -> list[str]:
    return [node.config.node, node.producers[QUEUE].uuid]


async def test_late_success_leaves_the_rerun_alone_and_the_rerun_lands(
    conn: Conn,
    oban_prefix: str,
    database_url: str,
    gates: Gates,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.acker")
    async with running_node(database_url, oban_prefix, {QUEUE: 1}, registry, node="a") as a:
        job_id = insert_job(conn, oban_prefix)
        await gates.started((job_id, 1))
        assert job_row(database_url, oban_prefix, job_id)["attempted_by"] == claimed_by(a)
        assert rescue(conn, oban_prefix) == [job_id]
        async with running_node(database_url, oban_prefix, {QUEUE: 1}, registry, node="b") as b:
            await gates.started((job_id, 2))
            rerun = job_row(database_url, oban_prefix, job_id)
            assert (rerun["state"], rerun["attempt"]) == ("executing", 2)
            assert rerun["attempted_by"] == claimed_by(b)

            gates.gate((job_id, 1)).set()  # A thaws: its attempt 1 completes, late
            await a.drain()
            assert a.acker.dropped == 1
            assert job_row(database_url, oban_prefix, job_id) == rerun  # B's attempt untouched
            a_by, b_by = "/".join(claimed_by(a)), "/".join(claimed_by(b))
            assert (
                f"job {job_id} (t.Gated): outcome completed of attempt 1 by {a_by} dropped: "
                f"the job was claimed again: attempt 2 by {b_by} is executing"
            ) in caplog.messages

            gates.gate((job_id, 2)).set()
            done = await wait_for_state(database_url, oban_prefix, job_id, {"completed"})
            await b.drain()
            assert b.acker.dropped == 0
    assert (done["attempt"], done["attempted_by"], done["errors"]) == (2, claimed_by(b), [])
    assert done["completed_at"] is not None


async def test_late_failure_does_not_schedule_a_third_run(
    conn: Conn,
    oban_prefix: str,
    database_url: str,
    gates: Gates,
    registry: Registry,
) -> None:
    async with running_node(database_url, oban_prefix, {QUEUE: 1}, registry, node="a") as a:
        job_id = insert_job(conn, oban_prefix)
        gates.fail.add((job_id, 1))
        await gates.started((job_id, 1))
        assert rescue(conn, oban_prefix) == [job_id]
        async with running_node(database_url, oban_prefix, {QUEUE: 1}, registry, node="b") as b:
            await gates.started((job_id, 2))
            rerun = job_row(database_url, oban_prefix, job_id)

            gates.gate((job_id, 1)).set()  # A's attempt 1 raises, late
            await a.drain()
            assert a.acker.dropped == 1
            # Not retryable with a backoff (which the stager would make available for a third
            # run): B's attempt is as it was.
            assert job_row(database_url, oban_prefix, job_id) == rerun

            gates.gate((job_id, 2)).set()
            done = await wait_for_state(database_url, oban_prefix, job_id, {"completed"})
            await b.drain()
    assert (done["attempt"], done["attempted_by"], done["errors"]) == (2, claimed_by(b), [])
    assert set(gates.gates) == {(job_id, 1), (job_id, 2)}  # no third attempt ever started


async def test_a_kill_stamps_only_the_attempt_it_killed(
    conn: Conn,
    oban_prefix: str,
    database_url: str,
    gates: Gates,
    registry: Registry,
) -> None:
    """Oban.cancel_job on B's attempt: the row is marked cancelled, then pkill goes to every
    node. A, still running the rescued attempt 1 of the same job, kills it too; only B's kill
    may stamp the row again with the shutdown entry (the exception ACK_JOBS keeps)."""
    async with running_node(database_url, oban_prefix, {QUEUE: 1}, registry, node="a") as a:
        job_id = insert_job(conn, oban_prefix)
        await gates.started((job_id, 1))
        assert rescue(conn, oban_prefix) == [job_id]
        async with running_node(database_url, oban_prefix, {QUEUE: 1}, registry, node="b") as b:
            await gates.started((job_id, 2))
            conn.execute(
                sql.SQL(
                    "UPDATE {}.oban_jobs SET state = 'cancelled', cancelled_at = now() "
                    "WHERE id = %s"
                ).format(sql.Identifier(oban_prefix)),
                (job_id,),
            )
            conn.execute(
                "SELECT pg_notify(%s, %s)",
                (f"{oban_prefix}.oban_signal", f'{{"action":"pkill","job_id":{job_id}}}'),
            )
            await wait_for(lambda: not a.producers[QUEUE].running and a.acker.written == 1)
            await wait_for(lambda: not b.producers[QUEUE].running and b.acker.written == 1)
            await a.drain()
            await b.drain()
            assert (a.acker.dropped, b.acker.dropped) == (1, 0)
    row = job_row(database_url, oban_prefix, job_id)
    assert (row["state"], row["attempt"], row["attempted_by"]) == ("cancelled", 2, claimed_by(b))
    assert [(e["attempt"], e["error"]) for e in row["errors"]] == [
        (2, "** (Oban.PerformError) t.Gated failed with {:cancel, :shutdown}")
    ]


async def wait_for(condition: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_drop_reasons_name_what_happened_to_the_attempt() -> None:
    ack = Ack(7, "completed", attempt=1, attempted_by=["a", "u1"])
    assert drop_reason(ack, None) == "the job no longer exists"
    assert drop_reason(ack, ("available", 1, ["a", "u1"])) == (
        "the job was rescued (available again)"
    )
    assert drop_reason(ack, ("executing", 2, ["b", "u2"])) == (
        "the job was claimed again: attempt 2 by b/u2 is executing"
    )
    assert drop_reason(ack, ("discarded", 1, ["a", "u1"])) == (
        "this attempt already ended: the job is discarded"
    )
