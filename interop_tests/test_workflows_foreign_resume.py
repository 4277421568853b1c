"""Hephaestus's own resume, and the Elixir runner's jobs, on a Python-owned instance (issue 15,
item 2).

An Elixir developer resumes a waiting instance with ``MyApp.Hephaestus.resume/2`` (hephaestus
``use Hephaestus``'s ``resume/2`` → ``HephaestusOban.Runner.resume/2``: a ResumeWorker with the
*Elixir* runner's config key, on queue ``hephaestus``) or with the workflow module's ``resume/2``.
With the workflow's ``ObanBridge.PythonWorkflow`` declaration, either ends in the Python runner:
the facade is the declaration's (the Python runner's ResumeWorker), and a job the Elixir runner
takes is refused by the declaration's callbacks before that worker writes anything and handed
back (cancelled, its twin queued for the Python runner). Each test boots its own VM serving
``hephaestus`` with a genuine-named runner, and a Python node serving the Python runner's queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from bridge.jobs.client.registry import Registry
from bridge.workflows.run.runner import WorkflowRunner
from bridge.workflows.run.workers import register
from interop_tests.cold_flows import RESUMED, RESUMED_UNDECLARED
from interop_tests.fixture import CommandFailed, ElixirFixture, cold_fixture
from interop_tests.workflow_support import serve_hephaestus
from tests.jobs.support import running_node

Json = dict[str, Any]
ELIXIR_KEY = "golden"
PY_QUEUE, PY_KEY = "bridge_workflows", "bridge"


@asynccontextmanager
async def python_node(database_url: str, schema: str) -> AsyncIterator[WorkflowRunner]:
    runner = WorkflowRunner(database_url, [RESUMED, RESUMED_UNDECLARED], prefix=schema)
    registry = Registry()
    register(registry, runner)
    try:
        async with running_node(database_url, schema, {runner.queue: 5}, registry):
            yield runner
    finally:
        runner.close()


def elixir_node(database_url: str, schema: str) -> Any:
    return cold_fixture(database_url, schema)


def serve(fx: ElixirFixture) -> None:
    """The app's configuration and its HephaestusOban runner serving ``hephaestus``."""
    fx.call("delegate.configure", config_key=ELIXIR_KEY)
    serve_hephaestus(fx, config_key=ELIXIR_KEY)


def rows(conn: psycopg.Connection[Any], schema: str, query: str, *params: Any) -> list[Json]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL(query).format(s=sql.Identifier(schema)), params)
        return list(cur.fetchall())


def instance(conn: psycopg.Connection[Any], schema: str, instance_id: str) -> Json:
    found = rows(conn, schema, "SELECT * FROM {s}.workflow_instances WHERE id = %s", instance_id)
    assert found, instance_id
    return found[0]


def jobs(conn: psycopg.Connection[Any], schema: str, instance_id: str) -> list[Json]:
    return rows(
        conn,
        schema,
        "SELECT id, worker, queue, state::text, args, meta, tags, max_attempts, errors"
        " FROM {s}.oban_jobs WHERE args->>'instance_id' = %s ORDER BY id",
        instance_id,
    )


def results(conn: psycopg.Connection[Any], schema: str, instance_id: str) -> list[Json]:
    return rows(
        conn,
        schema,
        "SELECT step_ref, event, context_updates, metadata_updates, processed, workflow_version"
        " FROM {s}.hephaestus_step_results WHERE instance_id = %s ORDER BY inserted_at, id",
        instance_id,
    )


async def until(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    for _ in range(int(timeout / 0.05)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def waiting(
    conn: psycopg.Connection[Any], schema: str, runner: WorkflowRunner, value: str
) -> str:
    instance_id = RESUMED.unique.build_id(value) if RESUMED.unique else value
    runner.start(conn, RESUMED, {}, id=instance_id)
    await until(lambda: instance(conn, schema, instance_id)["status"] == "waiting", "waiting")
    return instance_id


async def settled(conn: psycopg.Connection[Any], schema: str, *instance_ids: str) -> None:
    """Until every job of the instances has finished (an instance row is written before its
    last job is acknowledged)."""

    def done() -> bool:
        found = [j for i in instance_ids for j in jobs(conn, schema, i)]
        return all(j["state"] in ("completed", "cancelled", "discarded") for j in found)

    await until(done, f"the jobs of {instance_ids} to finish")


def normalized(instance_id: str, found: list[Json]) -> list[Json]:
    """Rows with the instance id replaced, to compare two instances' rows."""

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return "<id>" if value == instance_id else value

    return [swap(row) for row in found]


def python_jobs(found: list[Json]) -> list[Json]:
    keep = ("worker", "queue", "state", "args", "meta", "tags", "max_attempts")
    return [{k: j[k] for k in keep} for j in found if j["queue"] == PY_QUEUE]


async def twin_resumed_by_python(
    conn: psycopg.Connection[Any], schema: str, runner: WorkflowRunner
) -> str:
    """The same workflow resumed with the Python runner's own ``resume``: the rows to match."""
    twin = await waiting(conn, schema, runner, "twin")
    with conn.transaction():
        runner.resume(conn, twin, "answered_rs")
    await until(lambda: instance(conn, schema, twin)["status"] == "completed", "twin completed")
    return twin


async def assert_python_rows(
    conn: psycopg.Connection[Any], schema: str, instance_id: str, twin: str
) -> None:
    """Completed by the Python runner: the instance's state and step results are the twin's,
    its jobs on the Python queue are the twin's but for the resume itself, and no job of the
    instance was discarded or left for the Elixir runner."""
    await settled(conn, schema, instance_id, twin)
    mine, theirs = instance(conn, schema, instance_id), instance(conn, schema, twin)
    assert mine["status"] == "completed"
    assert normalized(instance_id, [mine["state"]]) == normalized(twin, [theirs["state"]])
    answer = mine["state"]["context"]["steps"]["finish_rs"]["answer_rs"]
    assert answer == {"by_rs": "python", "of_rs": instance_id}  # the Python body ran
    assert normalized(instance_id, results(conn, schema, instance_id)) == normalized(
        twin, results(conn, schema, twin)
    )
    found = jobs(conn, schema, instance_id)
    assert not [j for j in found if j["state"] in ("discarded", "available", "retryable")]
    expected = [
        j
        for j in python_jobs(jobs(conn, schema, twin))
        if j["worker"] != "HephaestusOban.ResumeWorker"
    ]
    ours = [j for j in python_jobs(found) if j["worker"] != "HephaestusOban.ResumeWorker"]
    assert normalized(instance_id, ours) == normalized(twin, expected)
    for job in python_jobs(found):
        assert job["args"]["config_key"] == PY_KEY


async def test_hephaestus_runner_resume_runs_the_python_bodies(
    conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    """``MyApp.Hephaestus.resume/2`` (``HephaestusOban.Runner.resume/2``) returns ``:ok`` and
    queues its ResumeWorker for the Elixir runner; that worker records the resume (the same row
    the Python runner's would) and its AdvanceWorker is refused at ``transit/3`` and handed
    back: the Python runner applies the resume and runs the next step's Python body."""
    async with python_node(database_url, schema) as runner:
        twin = await twin_resumed_by_python(conn, schema, runner)
        instance_id = await waiting(conn, schema, runner, "hephaestus")
        with elixir_node(database_url, schema) as fx:
            serve(fx)
            fx.call("workflow.resume", instance_id=instance_id, event="answered_rs")
            await until(
                lambda: instance(conn, schema, instance_id)["status"] == "completed", "completed"
            )
        await assert_python_rows(conn, schema, instance_id, twin)
        foreign = [j for j in jobs(conn, schema, instance_id) if j["queue"] != PY_QUEUE]
        assert [(j["worker"], j["state"], j["args"]["config_key"]) for j in foreign] == [
            ("HephaestusOban.ResumeWorker", "completed", ELIXIR_KEY),
            ("HephaestusOban.AdvanceWorker", "cancelled", ELIXIR_KEY),
        ]
        assert "ForeignRunnerError" in str(foreign[1]["errors"])
        assert "handed back" in str(foreign[1]["errors"])


async def test_workflow_facade_resume_goes_to_the_python_runner(
    conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    """``MyWorkflow.resume(value, event)`` on the declaration: the business key id, and the
    Python runner's ResumeWorker (its queue, config key, meta and tags): no job ever reaches the
    Elixir runner."""
    async with python_node(database_url, schema) as runner:
        twin = await twin_resumed_by_python(conn, schema, runner)
        instance_id = await waiting(conn, schema, runner, "facade")
        with elixir_node(database_url, schema) as fx:
            serve(fx)
            reply = fx.call(
                "workflow.facade_resume", workflow=RESUMED.name, value="facade", event="answered_rs"
            )
            assert reply["result"] == ":ok"
            await until(
                lambda: instance(conn, schema, instance_id)["status"] == "completed", "completed"
            )
        await assert_python_rows(conn, schema, instance_id, twin)
        found = jobs(conn, schema, instance_id)
        assert all(j["queue"] == PY_QUEUE for j in found)
        resumes = [j for j in found if j["worker"] == "HephaestusOban.ResumeWorker"]
        twin_resume = [
            j for j in python_jobs(jobs(conn, schema, twin)) if j["worker"].endswith("ResumeWorker")
        ]
        assert normalized(instance_id, python_jobs(resumes)) == normalized(twin, twin_resume)


async def test_elixir_runner_jobs_for_a_python_instance_are_handed_back(
    conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    """Jobs of a waiting Python-owned instance that the Elixir runner picks up (a step job and a
    resume with its config key, as its AdvanceWorker and ``Runner.resume`` build them) are
    refused before they write, cancelled — never discarded, which would fail the instance — and
    handed back: the instance completes in Python, its step body run once."""
    async with python_node(database_url, schema) as runner:
        twin = await twin_resumed_by_python(conn, schema, runner)
        instance_id = await waiting(conn, schema, runner, "foreign")
        base = {"instance_id": instance_id, "config_key": ELIXIR_KEY, "workflow": RESUMED.name}
        base["workflow_version"] = RESUMED.version
        step = {**base, "step_ref": "Elixir.ColdPy.Resumed.AskRs"}
        with elixir_node(database_url, schema) as fx:
            fx.enqueue(
                [
                    {
                        "worker": "HephaestusOban.ExecuteStepWorker",
                        "args": step,
                        "queue": "hephaestus",
                    },
                    {
                        "worker": "HephaestusOban.ResumeWorker",
                        "args": {**step, "event": "answered_rs"},
                        "queue": "hephaestus",
                        "max_attempts": 3,
                    },
                ]
            )
            serve(fx)
            await until(
                lambda: instance(conn, schema, instance_id)["status"] == "completed", "completed"
            )
            await until(
                lambda: all(
                    j["state"] in ("completed", "cancelled")
                    for j in jobs(conn, schema, instance_id)
                ),
                "every job settled",
            )
        await assert_python_rows(conn, schema, instance_id, twin)
        foreign = [j for j in jobs(conn, schema, instance_id) if j["queue"] != PY_QUEUE]
        assert [(j["worker"], j["state"]) for j in foreign] == [
            ("HephaestusOban.ExecuteStepWorker", "cancelled"),
            ("HephaestusOban.ResumeWorker", "completed"),
            ("HephaestusOban.AdvanceWorker", "cancelled"),
        ]


async def test_without_the_declaration_hephaestus_resume_raises_in_the_caller(
    conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    """The documented failure: an app with no module of the workflow's name cannot resume it
    with Hephaestus's functions — ``Runner.resume/2`` loads the instance through HephaestusEcto,
    which raises ``ArgumentError`` in the caller; nothing is queued and the instance waits."""
    async with python_node(database_url, schema) as runner:
        instance_id = RESUMED_UNDECLARED.unique.build_id("nodecl")  # type: ignore[union-attr]
        runner.start(conn, RESUMED_UNDECLARED, {}, id=instance_id)
        await until(lambda: instance(conn, schema, instance_id)["status"] == "waiting", "waiting")
        await settled(conn, schema, instance_id)
        before = jobs(conn, schema, instance_id)
        with elixir_node(database_url, schema) as fx:
            serve(fx)
            with pytest.raises(CommandFailed) as failed:
                fx.call("workflow.resume", instance_id=instance_id, event="answered_ru")
            assert failed.value.type == "ArgumentError"
            assert "atom" in failed.value.error
        assert jobs(conn, schema, instance_id) == before
        assert instance(conn, schema, instance_id)["status"] == "waiting"
