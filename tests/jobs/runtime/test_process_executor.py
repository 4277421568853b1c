"""``@worker(..., executor="process")``: sync bodies in child processes of the node's pool,
through a real node on the real database.

The same jobs leave the same rows (column by column, error entries byte for byte but for
``at``) under a thread and under a child. What only a child can do is checked by what the body
leaves behind: a body that overruns its timeout or is killed by ``pkill`` writes
``<id>.after`` if it ever gets past its sleep, and under a thread it does (shown by the thread
twin of the same test); under a child the process is gone and the file never appears. A child
that dies on its own fails its job with Oban's crash entry and the job's next attempt runs in
a new child; a SIGTERM'd node drains its running bodies.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, Registry, insert_all, worker
from bridge.jobs.client.registry import WorkerRegistrationError
from tests.jobs.runtime import process_workers
from tests.jobs.support import job_row, running_node, wait_for_state

Conn = psycopg.Connection[tuple[object, ...]]
FINAL = {"completed", "retryable", "cancelled", "discarded", "scheduled"}


def insert(conn: Conn, prefix: str, worker: str, args: dict[str, Any], **opts: Any) -> int:
    [job] = insert_all(conn, [Job.new(worker, args, **opts)], prefix=prefix)
    assert job.id is not None
    return job.id


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """What must be identical between the twins: everything but ids, times and the node."""
    return {
        "worker": row["worker"],
        "queue": row["queue"],
        "args": row["args"],
        "state": row["state"],
        "attempt": row["attempt"],
        "max_attempts": row["max_attempts"],
        "meta": row["meta"],
        "tags": row["tags"],
        "errors": [{k: v for k, v in e.items() if k != "at"} for e in row["errors"]],
        "finished": {
            key: row[key] is not None for key in ("completed_at", "cancelled_at", "discarded_at")
        },
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def until(condition: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met in time"
        await asyncio.sleep(0.05)


async def wait_file(path: Path, timeout: float = 30.0) -> str:
    await until(lambda: path.exists() and path.read_text() != "", timeout, f"{path} written")
    return path.read_text()


def registry_for(executor: str) -> Registry:
    return process_workers.PROCESSES if executor == "process" else process_workers.THREADS


# -- the same rows ----------------------------------------------------------------------------

TWIN_JOBS: list[tuple[str, dict[str, Any]]] = [
    ("t.Ok", {"xs": [1, 2, 3]}),
    ("t.Raises", {"n": 7}),
    ("t.ClassRaises", {}),
    ("t.Cancels", {}),
    ("t.Discards", {}),
    ("t.Errors", {}),
    ("t.Snoozes", {}),
    ("t.TooBig", {}),
    ("t.Unpicklable", {}),
    ("t.TimesOut", {}),
]


async def test_a_process_worker_leaves_the_rows_its_thread_twin_leaves(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    from bridge import schema

    thread_prefix = f"{oban_prefix}_t"
    schema.install(conn, thread_prefix)
    try:
        found: dict[str, list[dict[str, Any]]] = {}
        for executor, prefix in (("thread", thread_prefix), ("process", oban_prefix)):
            ids = [insert(conn, prefix, name, args, queue="twin") for name, args in TWIN_JOBS]
            registry = registry_for(executor)
            async with running_node(database_url, prefix, {"twin": 10}, registry) as node:
                found[executor] = [
                    await wait_for_state(database_url, prefix, job_id, FINAL, timeout=60)
                    for job_id in ids
                ]
                if executor == "process":
                    assert node.processes.started >= 1
        threads = [comparable(row) for row in found["thread"]]
        processes = [comparable(row) for row in found["process"]]
        for thread_row, process_row in zip(threads, processes, strict=True):
            assert process_row == thread_row
        by_worker = {row["worker"]: row for row in threads}
        assert by_worker["t.Ok"]["state"] == "completed" and "recorded" in by_worker["t.Ok"]["meta"]
        raised = by_worker["t.Raises"]["errors"][0]["error"]
        # The body's own frame, and none of the runtime's (which differ between executors).
        assert raised.startswith("** (ValueError) bad input 7\n    (tests) tests/jobs/runtime/")
        assert "process_workers.raises" in raised and "executor" not in raised
        assert by_worker["t.TimesOut"]["errors"][0]["error"] == (
            "** (Oban.TimeoutError) t.TimesOut timed out after 300ms"
        )
        assert by_worker["t.Snoozes"]["state"] == "scheduled"
        assert by_worker["t.TooBig"]["state"] == "retryable"
        assert by_worker["t.Unpicklable"]["state"] == "completed"
    finally:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(thread_prefix))
        )


# -- timeouts and pkill stop the body ------------------------------------------------------------


@pytest.mark.parametrize("executor", ["process", "thread"])
async def test_a_timeout_kills_the_body(
    executor: str, conn: Conn, oban_prefix: str, database_url: str, tmp_path: Path
) -> None:
    """Past its 0.5 s timeout the job is discarded with Oban's timeout entry either way; under
    a child the body is killed there, under a thread it runs on and writes its marker."""
    job_id = insert(
        conn,
        oban_prefix,
        "t.Overruns",
        {"dir": str(tmp_path), "seconds": 2.0},
        queue="faults",
        max_attempts=1,
    )
    registry = registry_for(executor)
    async with running_node(database_url, oban_prefix, {"faults": 2}, registry) as node:
        pid = int(await wait_file(tmp_path / f"{job_id}.pid"))
        row = await wait_for_state(database_url, oban_prefix, job_id, {"discarded"})
        assert [e["error"] for e in row["errors"]] == [
            "** (Oban.TimeoutError) t.Overruns timed out after 500ms"
        ]
        if executor == "process":
            assert pid != os.getpid()
            await until(lambda: not alive(pid), what="the child killed")
            # The body would have written its marker 2 s after it started: give it that long.
            await asyncio.sleep(2.5)
            assert not (tmp_path / f"{job_id}.after").exists()
            # A new child takes the next job.
            later = insert(conn, oban_prefix, "t.Pid", {"dir": str(tmp_path)}, queue="faults")
            await wait_for_state(database_url, oban_prefix, later, {"completed"})
            assert int((tmp_path / f"{later}.pid").read_text()) not in (pid, os.getpid())
            assert node.processes.started == 2
        else:
            await wait_file(tmp_path / f"{job_id}.after")  # a thread cannot be stopped


@pytest.mark.parametrize("executor", ["process", "thread"])
async def test_pkill_kills_the_body(
    executor: str, conn: Conn, oban_prefix: str, database_url: str, tmp_path: Path
) -> None:
    """``bridge jobs cancel`` (cancel + pkill): cancelled with ``{:cancel, :shutdown}``; under a
    child the body stops there, under a thread it runs on."""
    from bridge.jobs.client import admin

    job_id = insert(
        conn, oban_prefix, "t.Sleeps", {"dir": str(tmp_path), "seconds": 2.0}, queue="faults"
    )
    registry = registry_for(executor)
    async with running_node(database_url, oban_prefix, {"faults": 2}, registry):
        pid = int(await wait_file(tmp_path / f"{job_id}.pid"))
        assert admin.cancel_jobs(conn, oban_prefix, [job_id]) == [job_id]
        await until(lambda: bool(job_row(database_url, oban_prefix, job_id)["errors"]))
        row = job_row(database_url, oban_prefix, job_id)
        assert row["state"] == "cancelled"
        assert [e["error"] for e in row["errors"]] == [
            "** (Oban.PerformError) t.Sleeps failed with {:cancel, :shutdown}"
        ]
        if executor == "process":
            await until(lambda: not alive(pid), what="the child killed")
            await asyncio.sleep(2.5)
            assert not (tmp_path / f"{job_id}.after").exists()
        else:
            await wait_file(tmp_path / f"{job_id}.after")


# -- a child that dies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("t.Exits", "** (Oban.CrashError) ** (exit) {:exit_status, 9}"),
        ("t.Killed", "** (Oban.CrashError) ** (exit) killed"),
    ],
)
async def test_a_child_that_dies_fails_only_its_job_which_is_retried(
    name: str, entry: str, conn: Conn, oban_prefix: str, database_url: str, tmp_path: Path
) -> None:
    """``os._exit(9)`` / SIGKILL in the body on its first attempt: the attempt gets Oban's crash
    entry, the job is retried per its attempts (backoff 0 here) and completes in a new child;
    a job running beside it in another child is untouched and the node runs on."""
    beside = insert(
        conn, oban_prefix, "t.Sleeps", {"dir": str(tmp_path), "seconds": 1.0}, queue="faults"
    )
    registry = process_workers.PROCESSES
    async with running_node(database_url, oban_prefix, {"faults": 2}, registry) as node:
        await wait_file(tmp_path / f"{beside}.pid")
        crashing = insert(
            conn, oban_prefix, name, {"dir": str(tmp_path)}, queue="faults", max_attempts=3
        )
        done = await wait_for_state(database_url, oban_prefix, crashing, {"completed"}, 60)
        beside_row = await wait_for_state(database_url, oban_prefix, beside, {"completed"})
        assert len(node.processes.children) <= node.processes.size
    first, second = (int((tmp_path / f"{crashing}.{n}.pid").read_text()) for n in (1, 2))
    assert not alive(first) and second != first
    assert done["attempt"] == 2
    assert [(e["attempt"], e["error"]) for e in done["errors"]] == [(1, entry)]
    assert beside_row["errors"] == []
    assert (tmp_path / f"{beside}.after").exists()


# -- shutdown -------------------------------------------------------------------------------------


async def test_a_stopping_node_drains_its_children_and_kills_what_outlives_the_grace(
    conn: Conn, oban_prefix: str, database_url: str, tmp_path: Path
) -> None:
    """Stop (SIGTERM's path) waits up to the grace for running bodies: a short one completes;
    one that outlives the grace is left ``executing`` for a lifeline, as under threads, and its
    child is killed rather than left running."""
    short = insert(
        conn, oban_prefix, "t.Sleeps", {"dir": str(tmp_path), "seconds": 1.0}, queue="faults"
    )
    long = insert(
        conn, oban_prefix, "t.Sleeps", {"dir": str(tmp_path), "seconds": 30.0}, queue="faults"
    )
    registry = process_workers.PROCESSES
    async with running_node(
        database_url, oban_prefix, {"faults": 2}, registry, shutdown_grace=3.0
    ) as node:
        pids = [int(await wait_file(tmp_path / f"{job_id}.pid")) for job_id in (short, long)]
        pool = node.processes
    assert job_row(database_url, oban_prefix, short)["state"] == "completed"
    assert (tmp_path / f"{short}.after").exists()
    assert job_row(database_url, oban_prefix, long)["state"] == "executing"
    await until(lambda: not any(alive(pid) for pid in pids), what="every child gone")
    assert pool.children == []


# -- more jobs than children -----------------------------------------------------------------------


async def test_jobs_wait_for_a_child_without_their_timeout_running_and_can_be_killed_waiting(
    conn: Conn, oban_prefix: str, database_url: str, tmp_path: Path
) -> None:
    """One child, queue limit 3: while the child runs a 4 s body, a job with a 0.5 s timeout
    waits for it and then completes (its clock starts when the child has it, as a thread's
    starts with its body), and a waiting job killed by pkill is cancelled without ever
    running."""
    from bridge.jobs.client import admin

    folder = {"dir": str(tmp_path)}
    first = insert(conn, oban_prefix, "t.Sleeps", {**folder, "seconds": 4.0}, queue="faults")
    registry = process_workers.PROCESSES
    async with running_node(
        database_url, oban_prefix, {"faults": 3}, registry, process_pool_size=1
    ) as node:
        await wait_file(tmp_path / f"{first}.pid")
        timed = insert(conn, oban_prefix, "t.Overruns", {**folder, "seconds": 0.0}, queue="faults")
        killed = insert(conn, oban_prefix, "t.Sleeps", {**folder, "seconds": 0.0}, queue="faults")
        for job_id in (timed, killed):
            await wait_for_state(database_url, oban_prefix, job_id, {"executing"})
        assert admin.cancel_jobs(conn, oban_prefix, [killed]) == [killed]
        await until(lambda: bool(job_row(database_url, oban_prefix, killed)["errors"]))
        done = await wait_for_state(database_url, oban_prefix, timed, {"completed"})
        first_row = await wait_for_state(database_url, oban_prefix, first, {"completed"})
        assert node.processes.started == 1
    # It was claimed while the first body ran, so it waited for the child, longer than 0.5 s.
    assert done["attempted_at"] < first_row["completed_at"]
    assert done["errors"] == []
    row = job_row(database_url, oban_prefix, killed)
    assert row["state"] == "cancelled"
    assert [e["error"] for e in row["errors"]] == [
        "** (Oban.PerformError) t.Sleeps failed with {:cancel, :shutdown}"
    ]
    assert not (tmp_path / f"{killed}.pid").exists()


# -- recycling and refusals -----------------------------------------------------------------------


async def test_max_jobs_per_child_replaces_each_child_after_that_many_jobs(
    conn: Conn, oban_prefix: str, database_url: str, tmp_path: Path
) -> None:
    ids = [
        insert(conn, oban_prefix, "t.Pid", {"dir": str(tmp_path)}, queue="faults") for _ in range(4)
    ]
    registry = process_workers.PROCESSES
    async with running_node(
        database_url,
        oban_prefix,
        {"faults": 1},
        registry,
        process_pool_size=1,
        process_max_jobs=2,
    ) as node:
        for job_id in ids:
            await wait_for_state(database_url, oban_prefix, job_id, {"completed"})
        started = node.processes.started
    pids = [(tmp_path / f"{job_id}.pid").read_text() for job_id in ids]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]
    assert started == 2


def test_executor_process_is_refused_where_a_child_could_not_run_it() -> None:
    registry = Registry()
    with pytest.raises(WorkerRegistrationError, match="runs sync workers only"):

        @worker(name="t.AsyncProcess", executor="process", registry=registry)
        async def async_body(job: Job) -> None:
            pass

    with pytest.raises(WorkerRegistrationError, match="top level of an importable module"):

        @worker(name="t.NestedProcess", executor="process", registry=registry)
        def nested(job: Job) -> None:
            pass

    with pytest.raises(WorkerRegistrationError, match="executor must be one of"):

        @worker(name="t.Fiber", executor="fiber", registry=registry)
        def fiber(job: Job) -> None:
            pass

    assert registry.names() == []


def test_perform_job_runs_a_process_worker_in_the_tests_own_process() -> None:
    """``bridge.testing`` has no pool: the body runs on a thread here, so what it raises reaches
    the test (and mocks would apply), and the outcome is the row a node writes."""
    from bridge.testing import perform_job

    assert process_workers.raises.spec.executor == "process"
    with pytest.raises(ValueError, match="bad input 3"):
        perform_job(process_workers.raises, {"n": 3})
    outcome = perform_job(process_workers.ok, {"xs": [2, 3]})
    assert outcome.state == "completed"
