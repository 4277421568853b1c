"""Durable timers: ``schedule_resume`` writes HephaestusOban's scheduled ResumeWorker row, and a
Python workflow with the built-in Wait resumes by itself on a node served through
``serve_workflows`` (the ``bridge worker --workflows`` path)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from bridge.jobs.client.registry import Registry
from bridge.jobs.node import Node, NodeConfig
from bridge.wire.timefmt import utc_now
from bridge.workflows import (
    DONE,
    WAIT,
    Context,
    Instance,
    RetryConfig,
    StepOk,
    UnknownStepError,
    Workflow,
    step,
)
from bridge.workflows.run.runner import RESUME_WORKER, ResumeError, WorkflowRunner
from bridge.workflows.serving import WorkflowServing, serve_workflows
from bridge.workflows.store.instances import InstanceNotFoundError
from tests.workflows.run.test_runner import (
    HEPH_JOBS,
    jobs_json,
    results_json,
    status_is,
    wait_for_instance,
)


@step(name="Elixir.Py.Timers.Prepare", events=["ready"])
def prepare(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ready", {"at": "start"})


ONE_SECOND = {"duration": 1, "unit": "second"}

PAUSED = Workflow(
    name="Elixir.Py.Timers.Paused",
    start=prepare,
    transitions=[(prepare, "ready", (WAIT, ONE_SECOND)), (WAIT, "timeout", DONE)],
    tags=["timers"],
    atoms=["at", "n"],
)

BROKEN = Workflow(
    name="Elixir.Py.Timers.Broken",
    start=prepare,
    transitions=[
        (prepare, "ready", (WAIT, {"duration": "soon", "unit": "second"})),
        (WAIT, "timeout", DONE),
    ],
    default_retry=RetryConfig(max_attempts=1),
    atoms=["at"],
)


@pytest.fixture
def runner(database_url: str, oban_prefix: str) -> Iterator[WorkflowRunner]:
    made = WorkflowRunner(database_url, [PAUSED, BROKEN], prefix=oban_prefix)
    yield made
    made.close()


@asynccontextmanager
async def node_serving(url: str, prefix: str, flows: list[Workflow]) -> AsyncIterator[Node]:
    config = NodeConfig(url=url, queues={}, prefix=prefix, registry=Registry(), poll_interval=0.2)
    config.shutdown_grace = 2.0
    runner = serve_workflows(config, flows, WorkflowServing(concurrency=4))
    assert config.queues == {"bridge_workflows": 4}
    node = Node(config)
    await node.start()
    await asyncio.wait_for(node.notifier.connected.wait(), 10)
    try:
        yield node
    finally:
        await node.stop()
        runner.close()


def test_schedule_resume_writes_the_scheduled_resume_worker_row(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    runner.start(conn, PAUSED, {"n": 1}, id="paused-1")
    before = utc_now()
    job = runner.schedule_resume(conn, "paused-1", WAIT.name, 30_000)
    after = utc_now()
    row = next(j for j in jobs_json(runner.url, runner.prefix, "paused-1") if j["id"] == job.id)
    assert row["worker"] == RESUME_WORKER and row["state"] == "scheduled"
    assert row["queue"] == "bridge_workflows" and row["max_attempts"] == 3
    assert row["args"] == {
        "instance_id": "paused-1",
        "step_ref": "Elixir.Hephaestus.Steps.Wait",
        "event": "timeout",
        "config_key": "bridge",
        "workflow": "Elixir.Py.Timers.Paused",
        "workflow_version": 1,
    }
    assert row["meta"] == {
        "heph_workflow": "paused",
        "instance_id": "paused-1",
        "workflow_version": 1,
        "step": "wait",
    }
    assert row["tags"] == ["paused", "timers"]
    # The same columns and the same args/meta keys as the genuine ResumeWorker row.
    golden = next(g for g in HEPH_JOBS if g["worker"] == RESUME_WORKER)
    assert row.keys() >= golden.keys()
    assert row["args"].keys() == golden["args"].keys()
    assert row["meta"].keys() == golden["meta"].keys()
    scheduled = job.scheduled_at
    assert scheduled is not None
    assert (
        before + timedelta(seconds=30) - timedelta(milliseconds=5)
        <= scheduled
        <= after + timedelta(seconds=30)
    )


def test_schedule_resume_refuses_bad_calls(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    runner.start(conn, PAUSED, {}, id="paused-2")
    with pytest.raises(ResumeError, match="positive integer"):
        runner.schedule_resume(conn, "paused-2", WAIT.name, 0)
    with pytest.raises(ResumeError, match="does not declare the event 'timeout'"):
        runner.schedule_resume(conn, "paused-2", prepare.name, 1_000)
    with pytest.raises(UnknownStepError):
        runner.schedule_resume(conn, "paused-2", "Elixir.Nope", 1_000)
    with pytest.raises(InstanceNotFoundError):
        runner.schedule_resume(conn, "missing", WAIT.name, 1_000)
    workers = [j["worker"] for j in jobs_json(runner.url, runner.prefix, "paused-2")]
    assert RESUME_WORKER not in workers


async def test_wait_step_resumes_by_itself_on_a_node(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any]
) -> None:
    async with node_serving(database_url, oban_prefix, [PAUSED]) as node:
        starter = WorkflowRunner(database_url, [PAUSED], prefix=oban_prefix)
        starter.start(conn, PAUSED, {"n": 1}, id="paused-3")
        starter.close()
        waiting = await wait_for_instance(
            database_url, oban_prefix, "paused-3", status_is("waiting")
        )
        assert waiting["state"]["current_step"] == WAIT.name
        row = await wait_for_instance(
            database_url, oban_prefix, "paused-3", status_is("completed"), timeout=15
        )
        await node.drain()
    assert row["state"]["completed_steps"] == sorted([prepare.name, WAIT.name, DONE.name])
    jobs = jobs_json(database_url, oban_prefix, "paused-3")
    timers = [j for j in jobs if j["worker"] == RESUME_WORKER]
    assert len(timers) == 1  # one timer per wait
    timer = timers[0]
    assert timer["args"]["event"] == "timeout" and timer["args"]["step_ref"] == WAIT.name
    # Scheduled one second after the advance that applied Wait's __async__ result.
    lag = timer_lag(timer)
    assert timedelta(milliseconds=990) <= lag <= timedelta(milliseconds=1100)
    events = [
        (r["step_ref"], r["event"]) for r in results_json(database_url, oban_prefix, "paused-3")
    ]
    assert (WAIT.name, "__async__") in events and (WAIT.name, "timeout") in events
    assert all(r["processed"] for r in results_json(database_url, oban_prefix, "paused-3"))


def timer_lag(job: dict[str, Any]) -> timedelta:
    from datetime import datetime

    return datetime.fromisoformat(job["scheduled_at"]) - datetime.fromisoformat(job["inserted_at"])


async def test_a_wait_with_a_bad_config_fails_the_workflow(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any]
) -> None:
    async with node_serving(database_url, oban_prefix, [BROKEN]):
        starter = WorkflowRunner(database_url, [BROKEN], prefix=oban_prefix)
        starter.start(conn, BROKEN, {}, id="broken-1")
        starter.close()
        row = await wait_for_instance(database_url, oban_prefix, "broken-1", status_is("failed"))
    assert WAIT.name in row["state"]["active_steps"]
    jobs = jobs_json(database_url, oban_prefix, "broken-1")
    assert not [j for j in jobs if j["worker"] == RESUME_WORKER]
    step_job = next(j for j in jobs if j["args"].get("step_ref") == WAIT.name)
    assert step_job["state"] == "discarded"
    assert "Wait config must be" in step_job["errors"][-1]["error"]
