"""Python-owned instances read by a freshly booted Elixir node (issue 15, item 1).

HephaestusEcto loads a row with ``String.to_existing_atom`` on the workflow and step modules,
the status, history events and every key under ``context`` (``Serializer.from_db/5``). On an
Elixir node a step's context key becomes an atom only when its own engine completes that step
(``Hephaestus.Core.Engine.complete_step/5`` → ``String.to_atom``), which never happens for a
Python-owned workflow. So each test here boots its own VM (:func:`cold_fixture`) after the
Python node has written the rows, and loads them through ``HephaestusEcto.Storage.get/2`` and
``query/2`` exactly as an app's ``get``/``list`` do: with the workflow's
``ObanBridge.PythonWorkflow`` declaration compiled in, every stage loads; without it, every
stage raises, for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql

from bridge.jobs.client.registry import Registry
from bridge.workflows import KnownNames, Workflow, unloadable_names
from bridge.workflows.delegation.declaration import declared_names
from bridge.workflows.run.runner import WorkflowRunner
from bridge.workflows.run.workers import register
from interop_tests.cold_flows import DECLARED, MODES, UNDECLARED
from interop_tests.fixture import ElixirFixture, cold_fixture
from tests.jobs.support import running_node

Json = dict[str, Any]
EXPECTED_STATUS = {"wait": "waiting", "flaky": "running", "fail": "failed", "done": "completed"}
NOT_AN_ATOM = "not an already existing atom"


def names_of(workflow: Workflow) -> list[str]:
    """Every name a row of ``workflow`` can carry that Elixir turns into an atom."""
    steps = workflow.steps.values()
    names = {workflow.name, *workflow.atoms}
    names.update(s.name for s in steps if not s.name.startswith("Elixir.Hephaestus."))
    names.update(e for s in steps if not s.name.startswith("Elixir.Hephaestus.") for e in s.events)
    names.update(s.context_key for s in steps if s.name.startswith("Elixir.ColdPy."))
    return sorted(names)


@asynccontextmanager
async def python_node(database_url: str, schema: str) -> AsyncIterator[WorkflowRunner]:
    runner = WorkflowRunner(database_url, [DECLARED, UNDECLARED], prefix=schema, config_key="py")
    registry = Registry()
    register(registry, runner)
    try:
        async with running_node(database_url, schema, {runner.queue: 5}, registry):
            yield runner
    finally:
        runner.close()


def instance_row(conn: psycopg.Connection[Any], schema: str, instance_id: str) -> Json | None:
    query = sql.SQL("SELECT row_to_json(t) FROM {}.workflow_instances t WHERE id = %s").format(
        sql.Identifier(schema)
    )
    found = conn.execute(query, (instance_id,)).fetchone()
    return None if found is None else dict(found[0])


def flaky_failed_once(conn: psycopg.Connection[Any], schema: str, instance_id: str) -> bool:
    query = sql.SQL(
        "SELECT 1 FROM {}.oban_jobs WHERE args->>'instance_id' = %s"
        " AND args->>'step_ref' LIKE %s AND state = 'retryable'"
    ).format(sql.Identifier(schema))
    return conn.execute(query, (instance_id, "%.Flaky%")).fetchone() is not None


async def run_every_stage(
    conn: psycopg.Connection[Any], database_url: str, schema: str, workflow: Workflow
) -> dict[str, str]:
    """One Python-owned instance of ``workflow`` per stage, by mode: its id once the row is
    at that stage (``flaky``: running, its step job retryable after a first failure)."""
    ids = {mode: f"{workflow.short_name}::{mode}" for mode in MODES}
    suffix = workflow.atoms and sorted(workflow.atoms)[0].rsplit("_", 1)[-1]
    async with python_node(database_url, schema) as runner:
        for mode, instance_id in ids.items():
            runner.start(conn, workflow, {f"mode_{suffix}": mode}, id=instance_id)
        for _ in range(600):
            rows = {mode: instance_row(conn, schema, i) for mode, i in ids.items()}
            at_stage = all(
                row is not None and row["status"] == EXPECTED_STATUS[mode]
                for mode, row in rows.items()
            ) and flaky_failed_once(conn, schema, ids["flaky"])
            if at_stage:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the instances never reached their stages: {rows}")
    return ids


def load(fx: ElixirFixture, instance_id: str) -> Json:
    reply = fx.call("workflow.load", instance_id=instance_id)
    return {key: value for key, value in reply.items() if key not in ("ok", "id")}


async def test_declared_python_workflow_loads_at_every_stage_on_a_cold_vm(
    conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    ids = await run_every_stage(conn, database_url, schema, DECLARED)
    with cold_fixture(database_url, schema) as fx:
        names = names_of(DECLARED)
        assert fx.call("workflow.atoms", names=names)["existing"] == names
        for mode, instance_id in ids.items():
            loaded = load(fx, instance_id)
            assert loaded["loaded"] is True, (mode, loaded)
            assert loaded["instance"]["status"] == EXPECTED_STATUS[mode]
            row = instance_row(conn, schema, instance_id)
            assert row is not None and loaded["instance"]["state"] == row["state"], mode
            # bridge's check agrees: loadable with the declaration's names, and without them
            # (the names an Elixir module of that name would hold) the step keys are missing
            where = {"workflow": row["workflow"], "status": row["status"]}
            assert unloadable_names(row["state"], declared_names(DECLARED), **where) == []
            missing = unloadable_names(row["state"], KnownNames.for_workflow(DECLARED), **where)
            assert "state.context.steps.pick_zq" in {p.path for p in missing}
        listed = fx.call("workflow.query", filters={"workflow_family": DECLARED.name})
        assert listed["loaded"] is True, listed
        assert listed["ids"] == sorted(ids.values())


async def test_undeclared_python_workflow_crashes_a_cold_vm_at_every_stage(
    conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    """The documented failure: an app without the declaration cannot get or list the rows
    (HephaestusEcto raises ``ArgumentError`` on the first name that is not an atom), and a
    node that restarts stays in that state: nothing on the Elixir side ever creates them."""
    ids = await run_every_stage(conn, database_url, schema, UNDECLARED)
    for _boot in range(2):
        with cold_fixture(database_url, schema) as fx:
            assert fx.call("workflow.atoms", names=names_of(UNDECLARED))["existing"] == []
            for mode, instance_id in ids.items():
                loaded = load(fx, instance_id)
                assert loaded["loaded"] is False, (mode, loaded)
                assert loaded["type"] == "ArgumentError" and NOT_AN_ATOM in loaded["error"]
            listed = fx.call(
                "workflow.query", filters={"status_in": list(EXPECTED_STATUS.values())}
            )
            assert listed["loaded"] is False and listed["type"] == "ArgumentError", listed
