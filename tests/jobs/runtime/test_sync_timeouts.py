"""A sync job's timeout runs from the moment its code starts, and a node never claims a job it
cannot start.

A thread cannot be stopped: a sync body that times out (or is killed) runs on after its outcome
is written, and keeps its queue's slot until it returns. The busy node of the issue: queue limit
1, a sync worker with a 1 s timeout whose body takes 2.5 s, four jobs. Before, the second job's
timeout ran while it waited for the only thread, and it was discarded without its code ever
starting. Assertions are orderings (started before timed out, claimed after the previous body
returned), never exact durations; every moment is read on the monotonic clock, in the thread or
in the node's telemetry, because the wall clock of a loaded machine may step.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, Registry, insert_all, worker
from bridge.jobs.runtime import telemetry
from bridge.jobs.runtime.threads import JobThreads
from tests.jobs.support import job_row, running_node, wait_for_state

Conn = psycopg.Connection[tuple[object, ...]]
SLACK = 0.05  # seconds between a thread beginning a body and the body's first line, under load


class Bodies:
    """When each job's code started and returned, as the code itself saw it, and how many ran
    at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: dict[int, float] = {}
        self.ends: dict[int, float] = {}
        self.active = 0
        self.peak = 0

    def run(self, job: Job, seconds: float) -> None:
        assert job.id is not None
        with self.lock:
            self.starts[job.id] = time.monotonic()
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(seconds)
        finally:
            with self.lock:
                self.active -= 1
                self.ends[job.id] = time.monotonic()


class Moments:
    """When the node claimed each job (``job:start``, emitted as the claim returns) and decided
    its outcome (``job:stop``/``job:exception``, emitted as the outcome is handed to the acker)."""

    def __init__(self) -> None:
        self.claims: dict[int, float] = {}
        self.outcomes: dict[int, float] = {}

    def __call__(self, event: str, measurements: dict[str, Any], meta: dict[str, Any]) -> None:
        moments = self.claims if event == "job:start" else self.outcomes
        moments.setdefault(meta["id"], time.monotonic())


@pytest.fixture
def bodies() -> Bodies:
    return Bodies()


@pytest.fixture
def moments() -> Iterator[Moments]:
    handler = Moments()
    telemetry.attach(handler)
    try:
        yield handler
    finally:
        telemetry.detach(handler)


@pytest.fixture
def registry(bodies: Bodies) -> Registry:
    registry = Registry()

    @worker(name="t.Overrun", queue="busy", timeout=1.0, registry=registry)
    def overrun(job: Job) -> None:
        bodies.run(job, 2.5)

    @worker(name="t.Long", queue="busy", registry=registry)
    def long(job: Job) -> None:
        bodies.run(job, float(job.args["seconds"]))

    @worker(name="t.OwnTimeoutSync", queue="own", timeout=30.0, registry=registry)
    def own_timeout_sync(job: Job) -> None:
        raise TimeoutError("the worker's own socket timed out")

    @worker(name="t.OwnTimeoutNoLimit", queue="own", registry=registry)
    def own_timeout_no_limit(job: Job) -> None:
        raise TimeoutError("the worker's own socket timed out")

    @worker(name="t.OwnTimeoutAsync", queue="own", timeout=30.0, registry=registry)
    async def own_timeout_async(job: Job) -> None:
        raise TimeoutError("the worker's own socket timed out")

    return registry


async def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_busy_queue_starts_every_job_and_times_it_from_its_start(
    conn: Conn,
    oban_prefix: str,
    database_url: str,
    bodies: Bodies,
    moments: Moments,
    registry: Registry,
) -> None:
    jobs = insert_all(
        conn,
        [Job.new("t.Overrun", {"n": n}, queue="busy", max_attempts=1) for n in range(4)],
        prefix=oban_prefix,
    )
    ids = [job.id for job in jobs if job.id is not None]
    async with running_node(database_url, oban_prefix, {"busy": 1}, registry) as node:
        rows = [
            await wait_for_state(database_url, oban_prefix, job_id, {"discarded"}, timeout=25)
            for job_id in ids
        ]
        # Every job is claimed by now; wait for the code that started to return.
        await eventually(lambda: bodies.active == 0 and len(bodies.ends) == len(bodies.starts))
        await eventually(lambda: not node.producers["busy"].lingering)
        assert node.threads.alive <= 1
    never_started = sorted(set(ids) - set(bodies.starts))
    assert never_started == [], f"jobs discarded without their code ever starting: {never_started}"
    for row in rows:
        job_id = row["id"]
        [entry] = row["errors"]
        assert entry["error"] == "** (Oban.TimeoutError) t.Overrun timed out after 1000ms"
        assert row["discarded_at"] is not None
        # Its timeout ran from the moment its code started: it had run its second (the body
        # notes its start a moment after its thread began it, hence the small allowance).
        ran = moments.outcomes[job_id] - bodies.starts[job_id]
        assert ran >= 1.0 - SLACK, f"job {job_id} timed out after running {ran:.3f}s"
        # The outcome was decided at the deadline, while the code was still running.
        assert moments.outcomes[job_id] < bodies.ends[job_id]
    # Limit 1: one body at a time, and no job claimed before the previous body returned
    # (a timed-out body keeps its slot until its thread does).
    assert bodies.peak == 1
    by_start = sorted(ids, key=lambda job_id: bodies.starts[job_id])
    for before, after in itertools.pairwise(by_start):
        assert moments.claims[after] > bodies.ends[before], f"job {after} claimed too early"


async def test_killed_sync_body_keeps_its_slot_until_it_returns(
    conn: Conn,
    oban_prefix: str,
    database_url: str,
    bodies: Bodies,
    moments: Moments,
    registry: Registry,
) -> None:
    """pkill cannot stop a thread: the job is cancelled at once (Oban's row), and the queue
    claims its next job only when the killed code has returned."""
    [killed, waiting] = [
        job.id
        for job in insert_all(
            conn,
            [
                Job.new("t.Long", {"seconds": 3.0}, queue="busy", priority=0),
                Job.new("t.Long", {"seconds": 0.1}, queue="busy", priority=1),
            ],
            prefix=oban_prefix,
        )
    ]
    assert killed is not None and waiting is not None
    async with running_node(database_url, oban_prefix, {"busy": 1}, registry) as node:
        await eventually(lambda: killed in bodies.starts)
        conn.execute(
            sql.SQL(
                "UPDATE {}.oban_jobs SET state = 'cancelled', cancelled_at = now() WHERE id = %s"
            ).format(sql.Identifier(oban_prefix)),
            (killed,),
        )
        conn.execute(
            "SELECT pg_notify(%s, %s)",
            (f"{oban_prefix}.oban_signal", f'{{"action":"pkill","job_id":{killed}}}'),
        )
        cancelled = await wait_for_state(
            database_url, oban_prefix, killed, {"cancelled"}, timeout=10
        )
        await eventually(lambda: bool(job_row(database_url, oban_prefix, killed)["errors"]))
        # The outcome is written while the killed code still runs, and its slot is held.
        assert killed not in bodies.ends
        assert job_row(database_url, oban_prefix, waiting)["state"] == "available"
        assert len(node.producers["busy"].lingering) == 1
        done = await wait_for_state(database_url, oban_prefix, waiting, {"completed"})
    row = job_row(database_url, oban_prefix, killed)
    assert [e["error"] for e in row["errors"]] == [
        "** (Oban.PerformError) t.Long failed with {:cancel, :shutdown}"
    ]
    assert cancelled["cancelled_at"] is not None
    assert done["state"] == "completed"
    assert moments.claims[waiting] > bodies.ends[killed]
    assert bodies.peak == 1


async def test_a_workers_own_timeout_error_is_an_ordinary_error(
    conn: Conn, oban_prefix: str, database_url: str, registry: Registry
) -> None:
    """Only the job's timeout writes Oban.TimeoutError; a TimeoutError the code raises is an
    exception like any other (before, it was reported as the job timing out)."""
    workers = ["t.OwnTimeoutSync", "t.OwnTimeoutNoLimit", "t.OwnTimeoutAsync"]
    jobs = insert_all(
        conn,
        [Job.new(name, {}, queue="own", max_attempts=1) for name in workers],
        prefix=oban_prefix,
    )
    async with running_node(database_url, oban_prefix, {"own": 3}, registry):
        rows = [
            await wait_for_state(database_url, oban_prefix, job.id, {"discarded"})
            for job in jobs
            if job.id is not None
        ]
    for row in rows:
        [entry] = row["errors"]
        assert entry["error"].startswith("** (TimeoutError) the worker's own socket timed out\n"), (
            row["worker"]
        )


def test_job_threads_start_every_body_at_once() -> None:
    """With every kept thread busy (a body that will not return soon), a new body still starts
    at once on a new thread; the extra thread exits once idle, the kept one stays."""
    threads = JobThreads(keep=1)
    release = threading.Event()
    started = threading.Event()
    try:
        # A body that returned left its thread idle before its caller heard of it: the next
        # body reuses it.
        assert [threads.submit(lambda n=n: n).result(10) for n in range(3)] == [0, 1, 2]
        assert threads.alive == 1
        stuck = threads.submit(release.wait, 30)
        second = threads.submit(started.set)
        assert started.wait(10), "the second body waited for the first one's thread"
        assert second.result(10) is None
        assert not stuck.done()
        release.set()
        assert stuck.result(10) is True
        deadline = time.monotonic() + 10
        while threads.alive > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert threads.alive == 1  # one kept for reuse, the other exited when idle
        assert threads.submit(lambda: 42).result(10) == 42
        assert threads.alive == 1  # reused, not a new thread
    finally:
        release.set()
        threads.shutdown(wait=True)
    assert threads.alive == 0
    with pytest.raises(RuntimeError):
        threads.submit(lambda: None)
