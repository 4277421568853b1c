"""The Python workflow runner on real PostgreSQL with a real node: workflows complete and the
rows they leave have the shapes the genuine HephaestusOban wrote (golden ``Order`` rows)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge.jobs.client.registry import Registry
from bridge.jobs.node import Node
from bridge.workflows import (
    DONE,
    Context,
    Instance,
    StepOk,
    Workflow,
    step,
)
from bridge.workflows.run.runner import (
    ADVANCE_WORKER,
    EXECUTE_STEP_WORKER,
    RESUME_WORKER,
    ResumeError,
    WorkflowRunner,
)
from bridge.workflows.run.workers import register
from bridge.workflows.store.instances import DuplicateInstanceError, InstanceNotFoundError
from tests.jobs.support import running_node
from tests.workflows import ASYNC_FANOUT, ORDER, async_wait, load_json, normal

GOLDEN_JOBS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[2] / "data" / "golden" / "elixir-jobs.json").read_text()
)
HEPH_JOBS = [r for r in GOLDEN_JOBS if r["worker"].startswith("HephaestusOban.")]
QUEUE = "bridge_workflows"


# -- Python-only workflows ------------------------------------------------------------------


@step(name="Elixir.Py.Steps.First", events=["ok"])
def first(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"n": context.initial["n"] + 1})


@step(name="Elixir.Py.Steps.Second", events=["ok"])
async def second(instance: Instance, config: Any, context: Context) -> StepOk:
    await asyncio.sleep(0)
    return StepOk("ok", {"n": context.steps["first"]["n"] * 10}, {"seen": True})


LINEAR = Workflow(
    name="Elixir.Py.Flows.Linear",
    start=first,
    transitions=[(first, "ok", second), (second, "ok", DONE)],
    tags=["python"],
    metadata={"team": "py"},
    atoms=["n"],
)


# -- helpers ----------------------------------------------------------------------------------


def fetch_all(url: str, query: str, prefix: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(sql.SQL(query).format(prefix=sql.Identifier(prefix)), params).fetchall()


def instance_json(url: str, prefix: str, instance_id: str) -> dict[str, Any]:
    rows = fetch_all(
        url,
        "SELECT row_to_json(i) FROM {prefix}.workflow_instances i WHERE id = %s",
        prefix,
        (instance_id,),
    )
    assert rows, f"no instance {instance_id}"
    return rows[0][0]  # type: ignore[no-any-return]


def jobs_json(url: str, prefix: str, instance_id: str) -> list[dict[str, Any]]:
    rows = fetch_all(
        url,
        "SELECT row_to_json(j) FROM {prefix}.oban_jobs j"
        " WHERE args->>'instance_id' = %s ORDER BY id",
        prefix,
        (instance_id,),
    )
    return [r[0] for r in rows]


def results_json(url: str, prefix: str, instance_id: str) -> list[dict[str, Any]]:
    rows = fetch_all(
        url,
        "SELECT row_to_json(r) FROM {prefix}.hephaestus_step_results r"
        " WHERE instance_id = %s ORDER BY inserted_at, id",
        prefix,
        (instance_id,),
    )
    return [r[0] for r in rows]


async def wait_for_instance(
    url: str,
    prefix: str,
    instance_id: str,
    predicate: Any,
    timeout: float = 20.0,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        row = instance_json(url, prefix, instance_id)
        if predicate(row):
            return row
        if loop.time() > deadline:
            raise AssertionError(f"instance {instance_id} never matched: {row}")
        await asyncio.sleep(0.05)


@pytest.fixture
def runner(database_url: str, oban_prefix: str) -> Iterator[WorkflowRunner]:
    flows = [ORDER, LINEAR, ASYNC_FANOUT]
    made = WorkflowRunner(database_url, flows, prefix=oban_prefix, config_key="golden")
    yield made
    made.close()


@asynccontextmanager
async def serving(runner: WorkflowRunner, concurrency: int = 10) -> AsyncIterator[Node]:
    registry = Registry()
    register(registry, runner)
    async with running_node(runner.url, runner.prefix, {runner.queue: concurrency}, registry) as n:
        yield n


def status_is(*statuses: str) -> Any:
    return lambda row: row["status"] in statuses


# -- tests ------------------------------------------------------------------------------------


async def test_linear_workflow_completes(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    async with serving(runner):
        assert runner.start(conn, LINEAR, {"n": 1}, id="lin-1") == "lin-1"
        row = await wait_for_instance(runner.url, runner.prefix, "lin-1", status_is("completed"))
    state = row["state"]
    assert state["context"] == {
        "initial": {"n": 1},
        "steps": {"first": {"n": 2}, "second": {"n": 20}, "done": {}},
    }
    assert state["runtime_metadata"] == {"seen": True}
    assert state["active_steps"] == [] and state["current_step"] is None
    jobs = jobs_json(runner.url, runner.prefix, "lin-1")
    assert {j["state"] for j in jobs} == {"completed"}
    assert {j["queue"] for j in jobs} == {QUEUE}
    steps = [j["args"]["step_ref"] for j in jobs if j["worker"] == EXECUTE_STEP_WORKER]
    assert sorted(steps) == sorted([first.name, second.name, DONE.name])
    for job in jobs:
        assert job["tags"] == ["linear", "python"]
        assert job["meta"]["team"] == "py"
        assert job["meta"]["heph_workflow"] == "linear"
    done_job = next(j for j in jobs if j["args"].get("step_ref") == DONE.name)
    assert done_job["meta"]["seen"] is True  # runtime metadata is merged into step meta
    assert all(r["processed"] for r in results_json(runner.url, runner.prefix, "lin-1"))


@pytest.mark.parametrize("inline", [False, True], ids=["advance-jobs", "inline-advance"])
async def test_order_rows_have_the_golden_shapes(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], inline: bool
) -> None:
    """The instance, step-result, step-job and resume-job rows are the genuine stack's either
    way; with inline advance the AdvanceWorker jobs are only the start's and the resume's."""
    runner.inline_advance = inline
    instance_id = "order::o-1"
    async with serving(runner):
        runner.start(conn, ORDER, {"items": 3, "customer": "c-9"}, id=instance_id)
        waiting = await wait_for_instance(
            runner.url, runner.prefix, instance_id, status_is("waiting")
        )
        assert waiting["state"]["current_step"] == "Elixir.RealStack.Steps.AwaitShipment"
        runner.resume(conn, instance_id, "shipped")
        row = await wait_for_instance(
            runner.url, runner.prefix, instance_id, status_is("completed")
        )
        await asyncio.sleep(0.3)  # let the last advance job's outcome be written

    golden_instance = load_json("elixir-workflow-instance.json")[0]
    assert row.keys() == golden_instance.keys()
    assert row["state"] == golden_instance["state"]
    assert (row["workflow"], row["workflow_version"]) == ("Elixir.RealStack.Flows.Order", 1)

    golden_results = load_json("elixir-step-results.json")
    ours = results_json(runner.url, runner.prefix, instance_id)
    assert [r.keys() for r in ours] == [r.keys() for r in golden_results]

    def comparable(rows: list[dict[str, Any]]) -> list[Any]:
        skip = ("id", "inserted_at")
        return sorted(
            (json.dumps({k: v for k, v in r.items() if k not in skip}, sort_keys=True))
            for r in rows
        )

    assert comparable(ours) == comparable(golden_results)

    jobs = jobs_json(runner.url, runner.prefix, instance_id)
    assert all(j["state"] == "completed" and j["queue"] == QUEUE for j in jobs)
    assert [j.keys() for j in jobs] == [HEPH_JOBS[0].keys()] * len(jobs)

    def shape(job: dict[str, Any]) -> str:
        keep = ("worker", "args", "meta", "tags", "max_attempts", "priority", "errors", "attempt")
        return json.dumps({k: job[k] for k in keep}, sort_keys=True)

    golden_by_worker = {
        w: [g for g in HEPH_JOBS if g["worker"] == w]
        for w in (ADVANCE_WORKER, EXECUTE_STEP_WORKER, RESUME_WORKER)
    }
    ours_by_worker = {w: [j for j in jobs if j["worker"] == w] for w in golden_by_worker}
    # Step and resume jobs: exactly the golden ones (one job per step, the same meta).
    for worker in (EXECUTE_STEP_WORKER, RESUME_WORKER):
        assert sorted(map(shape, ours_by_worker[worker])) == sorted(
            map(shape, golden_by_worker[worker])
        )
    # Advance jobs: the golden args, tags and attempts; meta as golden's first advance plus the
    # reporting step. Which of Charge/Reserve got its own advance depends on timing (the golden
    # run deduplicated Charge's), so one of the two is enough.
    first = golden_by_worker[ADVANCE_WORKER][0]
    steps = []
    for job in ours_by_worker[ADVANCE_WORKER]:
        meta = dict(job["meta"])
        steps.append(meta.pop("step", None))
        assert meta == first["meta"]
        assert shape({**job, "meta": first["meta"]}) == shape(first)
    assert steps[0] is None
    if inline:  # the start's and the resume's (a resume records and queues an advance)
        assert steps == [None, "await_shipment"]
        return
    fixed = [None, "validate", "await_shipment", "await_shipment", "notify", "done"]
    rest = list(steps)
    for name in fixed:
        rest.remove(name)
    assert rest and set(rest) <= {"charge", "reserve"}


async def test_async_step_in_fanout_executes_once_and_resume_completes(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    instance_id = "asyncfanout::p1"
    async with serving(runner):
        runner.start(conn, ASYNC_FANOUT, {"order_id": 1}, id=instance_id)
        row = await wait_for_instance(
            runner.url,
            runner.prefix,
            instance_id,
            lambda r: r["status"] == "waiting" and normal.name in r["state"]["completed_steps"],
        )
        # Whichever result was applied last, the instance waits on the async step.
        assert row["state"]["current_step"] == async_wait.name
        assert row["state"]["active_steps"] == [async_wait.name]
        await asyncio.sleep(0.3)  # a re-execution, if any were queued, would show up now
        runs = [
            j
            for j in jobs_json(runner.url, runner.prefix, instance_id)
            if j["worker"] == EXECUTE_STEP_WORKER and j["args"]["step_ref"] == async_wait.name
        ]
        assert len(runs) == 1
        runner.resume(conn, instance_id, "resumed")
        row = await wait_for_instance(
            runner.url, runner.prefix, instance_id, status_is("completed")
        )
    assert row["state"]["context"]["steps"]["join"]["seen_steps"] == [
        "async_wait",
        "normal",
        "pass",
    ]
    jobs = jobs_json(runner.url, runner.prefix, instance_id)
    step_runs = [j["args"]["step_ref"] for j in jobs if j["worker"] == EXECUTE_STEP_WORKER]
    assert len(step_runs) == len(set(step_runs)) == 5
    assert all(r["processed"] for r in results_json(runner.url, runner.prefix, instance_id))


def test_refusals(runner: WorkflowRunner, conn: psycopg.Connection[Any]) -> None:
    runner.start(conn, LINEAR, {"n": 1}, id="refuse-1")
    with pytest.raises(DuplicateInstanceError, match="refuse-1"):
        runner.start(conn, LINEAR, {"n": 2}, id="refuse-1")
    with pytest.raises(ResumeError, match="pending, not waiting"):
        runner.resume(conn, "refuse-1", "ok")
    with pytest.raises(InstanceNotFoundError, match="nope"):
        runner.resume(conn, "nope", "ok")
    # A refused start leaves nothing behind: one instance, one advance job.
    assert len(jobs_json(runner.url, runner.prefix, "refuse-1")) == 1
