"""Faults with real processes and a real database: nothing is lost, the node keeps running."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import psycopg
from psycopg import sql

from bridge import Job, insert_all
from bridge.jobs.client.registry import default_registry
from bridge.jobs.plugins.lifeline import Lifeline
from bridge.jobs.plugins.stager import Stager
from tests.jobs import fault_workers
from tests.jobs.support import job_row, running_node, wait_for_state
from tests.support.worker import spawn_worker

Conn = psycopg.Connection[tuple[object, ...]]


def start_worker(database_url: str, prefix: str, *extra: str) -> subprocess.Popen[bytes]:
    return spawn_worker(
        database_url,
        prefix,
        "--queues",
        "faults:2",
        "--workers",
        "tests.jobs.fault_workers",
        "--node",
        "doomed",
        "--poll-interval",
        "0.2",
        *extra,
    )


async def test_sigkill_mid_job_is_rescued_and_finished_elsewhere(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    [job] = insert_all(
        conn,
        [Job.new("faults.Sleep", {"seconds": 0.3}, queue="faults", max_attempts=3)],
        prefix=oban_prefix,
    )
    assert job.id is not None
    proc = start_worker(database_url, oban_prefix)
    try:
        row = await wait_for_state(database_url, oban_prefix, job.id, {"executing"}, timeout=30)
        assert row["attempted_by"][0] == "doomed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    await asyncio.sleep(0.5)  # the job would have finished by now had the node lived
    assert job_row(database_url, oban_prefix, job.id)["state"] == "executing"
    assert fault_workers.sleep.spec.name in default_registry
    # Another node with a lifeline (rescue after 1 s, longer than the job) rescues it and runs
    # it to completion.
    plugins = [Stager(interval=0.1), Lifeline(rescue_after=1.0, interval=0.1)]
    async with running_node(
        database_url, oban_prefix, {"faults": 2}, default_registry, node="survivor", plugins=plugins
    ):
        row = await wait_for_state(database_url, oban_prefix, job.id, {"completed"}, timeout=20)
    assert row["attempt"] == 2 and row["attempted_by"][0] == "survivor"
    assert row["errors"] == []  # Lifeline rescues without an error entry (golden lifeline/)


async def test_lifeline_discards_exhausted_jobs_like_oban(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    """The golden lifeline scenario: executing rows of a dead node, two hours old."""
    ident = sql.Identifier(oban_prefix)
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_jobs (state, queue, worker, attempt, max_attempts, attempted_at, "
            "attempted_by) VALUES "
            "('executing', 'elsewhere', 'W', 1, 3, now() at time zone 'utc' - interval '2 hours', "
            "  ARRAY['dead', 'c0ffee']),"
            "('executing', 'elsewhere', 'W', 3, 3, now() at time zone 'utc' - interval '2 hours', "
            "  ARRAY['dead', 'c0ffee'])"
        ).format(ident)
    )
    rows = conn.execute(sql.SQL("SELECT id FROM {}.oban_jobs ORDER BY id").format(ident)).fetchall()
    plugins = [Lifeline(rescue_after=60, interval=0.1)]
    async with running_node(
        database_url, oban_prefix, {"faults": 1}, default_registry, plugins=plugins
    ):
        rescued = await wait_for_state(database_url, oban_prefix, int(rows[0][0]), {"available"})  # type: ignore[call-overload]
        discarded = await wait_for_state(database_url, oban_prefix, int(rows[1][0]), {"discarded"})  # type: ignore[call-overload]
    assert rescued["attempt"] == 1 and rescued["attempted_by"] == ["dead", "c0ffee"]
    assert rescued["errors"] == [] and discarded["errors"] == []
    assert discarded["discarded_at"] is not None


async def test_database_connections_killed_mid_run(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    async with running_node(database_url, oban_prefix, {"faults": 2}, default_registry) as node:
        [first] = insert_all(
            conn, [Job.new("faults.Quick", {}, queue="faults")], prefix=oban_prefix
        )
        await wait_for_state(database_url, oban_prefix, first.id or 0, {"completed"})
        # Kill every backend of the test database except ours: the node's pool and listener.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await asyncio.sleep(0.5)
        jobs = insert_all(
            conn,
            [Job.new("faults.Quick", {"i": i}, queue="faults") for i in range(20)],
            prefix=oban_prefix,
        )
        for job in jobs:
            await wait_for_state(database_url, oban_prefix, job.id or 0, {"completed"}, timeout=30)
        await asyncio.wait_for(node.notifier.connected.wait(), 15)


async def test_undecodable_notifications_are_dropped(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    channel = f"{oban_prefix}.oban_insert"
    async with running_node(database_url, oban_prefix, {"faults": 2}, default_registry) as node:
        for garbage in ("H4sIgarbage", "Z:!!!", "not json", "[1,2]"):
            conn.execute("SELECT pg_notify(%s, %s)", (channel, garbage))
        [job] = insert_all(conn, [Job.new("faults.Quick", {}, queue="faults")], prefix=oban_prefix)
        await wait_for_state(database_url, oban_prefix, job.id or 0, {"completed"})
        assert node.notifier.decode_failures == 4


async def test_sigterm_drains_running_jobs(conn: Conn, oban_prefix: str, database_url: str) -> None:
    [job] = insert_all(
        conn, [Job.new("faults.Sleep", {"seconds": 0.5}, queue="faults")], prefix=oban_prefix
    )
    proc = start_worker(database_url, oban_prefix, "--grace", "10")
    try:
        await wait_for_state(database_url, oban_prefix, job.id or 0, {"executing"}, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # The job finished within the grace period and its outcome was written before exit.
    assert job_row(database_url, oban_prefix, job.id or 0)["state"] == "completed"


async def test_worker_module_that_fails_to_import_stops_start_up(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    """A module the operator named that does not import stops the node before it claims a job
    (it used to run on, burning every job of the missing workers with 'unknown worker')."""
    jobs = insert_all(
        conn,
        [
            Job.new("broken.Never", {}, queue="faults", max_attempts=2),
            Job.new("faults.Quick", {}, queue="faults"),
        ],
        prefix=oban_prefix,
    )
    proc = start_worker(database_url, oban_prefix, "--workers", "tests.jobs.broken_workers")
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err.decode()
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith(
        "Error: cannot import worker module 'tests.jobs.broken_workers': ImportError: No module "
        "named 'a_missing_dependency' (raised at "
    )
    assert last.endswith("broken_workers.py:11)")  # relative to the test's working directory
    for job in jobs:  # nothing started: no attempt, no error
        row = job_row(database_url, oban_prefix, job.id or 0)
        assert (row["state"], row["attempt"], row["errors"]) == ("available", 0, [])
