"""A node that dies mid-job: its job is rescued and finished by the other language.

Both sides serve the same queue with the same worker name (`Fixture.Echo` and its Python twin),
which is what lets the survivor finish the job. Mirrors Oban's Lifeline (OSS: an `executing`
row older than `rescue_after` goes back to `available`, attempt and attempted_by untouched, no
error entry; golden/lifeline) and Oban.Queue.Watchman's shutdown (jobs still running after the
grace period stay `executing`).

This module is also the worker module of the killed node: ``bridge worker --workers
interop_tests.test_jobs_rescue`` imports it, which registers the twin in the default registry.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any

from bridge.jobs.client.registry import default_registry
from bridge.jobs.plugins.lifeline import Lifeline
from bridge.jobs.plugins.stager import Stager
from interop_tests.fixture import ElixirFixture
from interop_tests.support import (
    ECHO,
    UUID4,
    echo_registry,
    eventually,
    in_thread,
    register_echo,
)
from tests.jobs.support import job_row, running_node
from tests.support.worker import spawn_worker

register_echo(default_registry)

QUEUE = "shared"


def start_doomed_node(database_url: str, schema: str) -> subprocess.Popen[bytes]:
    return spawn_worker(
        database_url,
        schema,
        "--queues",
        f"{QUEUE}:1",
        "--workers",
        __name__,
        "--node",
        "doomed",
        "--poll-interval",
        "0.2",
    )


def state_is(database_url: str, schema: str, job_id: int, state: str) -> dict[str, Any] | None:
    row = job_row(database_url, schema, job_id)
    return row if row["state"] == state else None


async def test_python_node_killed_mid_job_is_finished_by_elixir(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    spec = {"worker": ECHO, "queue": QUEUE, "args": {"sleep": 1500}, "max_attempts": 3}
    [job] = await in_thread(fx.enqueue, [spec])
    proc = start_doomed_node(database_url, schema)
    try:
        claimed = await eventually(
            lambda: state_is(database_url, schema, job["id"], "executing"),
            timeout=30,
            what="the Python node to claim the job",
        )
        assert claimed["attempted_by"][0] == "doomed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert job_row(database_url, schema, job["id"])["state"] == "executing"

    # A Python lifeline (another node, not serving the queue) puts the orphan back...
    plugins = [Lifeline(rescue_after=0.5, interval=0.1)]
    async with running_node(
        database_url, schema, {"elsewhere": 1}, echo_registry(), node="rescuer", plugins=plugins
    ):
        rescued = await eventually(
            lambda: state_is(database_url, schema, job["id"], "available"),
            what="the lifeline to rescue the orphan",
        )
    assert rescued["attempt"] == 1 and rescued["errors"] == []
    assert rescued["attempted_by"] == claimed["attempted_by"]
    assert rescued["attempted_at"] == claimed["attempted_at"]

    # ...and the fixture's queue of the same name finishes it.
    await in_thread(fx.call, "start_queue", queue=QUEUE, limit=1)
    [row] = await eventually(
        lambda: [r for r in fx.jobs([job["id"]]) if r["state"] == "completed"],
        what="the fixture to finish the rescued job",
    )
    assert (row["attempt"], row["max_attempts"], row["errors"]) == (2, 3, [])
    node, uuid = row["attempted_by"]
    assert node == "vm" and UUID4.match(uuid)


async def test_elixir_queue_stopped_mid_job_is_finished_by_python(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    """The fixture's shutdown with no grace leaves the job `executing` (as a dead Oban node
    would); a Python node serving the same queue rescues it and runs it to completion."""
    await in_thread(fx.connect, database_url, schema, node="vm", shutdown_grace_ms=0)
    spec = {"worker": ECHO, "queue": QUEUE, "args": {"sleep": 300}, "max_attempts": 3}
    [job] = await in_thread(fx.enqueue, [spec])
    await in_thread(fx.call, "start_queue", queue=QUEUE, limit=1)
    await eventually(
        lambda: state_is(database_url, schema, job["id"], "executing"),
        what="the fixture to run the job",
    )
    await in_thread(fx.call, "stop_queue", queue=QUEUE)
    orphan = job_row(database_url, schema, job["id"])
    assert orphan["state"] == "executing" and orphan["attempted_by"][0] == "vm"

    plugins = [Lifeline(rescue_after=0.5, interval=0.1), Stager(interval=0.1)]
    async with running_node(
        database_url, schema, {QUEUE: 1}, echo_registry(), node="py", plugins=plugins
    ):
        row = await eventually(
            lambda: state_is(database_url, schema, job["id"], "completed"),
            what="Python to rescue and finish the job",
        )
    assert (row["attempt"], row["max_attempts"], row["errors"]) == (2, 3, [])
    assert row["attempted_by"][0] == "py"
    assert [r["state"] for r in await in_thread(fx.jobs, [job["id"]])] == ["completed"]
