"""A Python step that returns a key its workflow's declaration does not pin leaves a row every
Elixir node with the declaration can still load (issue 15, follow-up of item 1).

HephaestusEcto loads a row with ``String.to_existing_atom`` on every key under ``context``; for a
Python-owned workflow the only atoms an Elixir node has are those its ``use
ObanBridge.PythonWorkflow`` declaration pins. Before the runner refused such a result, it wrote
the key into the instance and every Elixir node listing instances crashed on the row. Now the
step job is discarded, the instance failed without the key, and a VM booted afterwards (with the
declaration of ``interop_tests.cold_flows.DECLARED`` compiled in) loads and lists it.

The workflow here is a twin of ``DECLARED``: the same module, start step, events and atoms, so
everything it writes is pinned by the fixture's declaration, but a start step whose body adds
``pages_uk7``, a name nowhere in the fixture.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg import sql

from bridge.jobs.client.registry import Registry
from bridge.workflows import DONE, Context, Instance, Step, StepOk, Workflow
from bridge.workflows.delegation.declaration import declared_names
from bridge.workflows.run.runner import EXECUTE_STEP_WORKER, WorkflowRunner
from bridge.workflows.run.workers import register
from interop_tests.cold_flows import DECLARED
from interop_tests.fixture import cold_fixture
from tests.jobs.support import running_node

Json = dict[str, Any]
UNDECLARED_KEY = "pages_uk7"
FIX = (
    "declare them in Workflow(atoms=[...]) and regenerate the Elixir declaration with "
    "`bridge workflows export-elixir`"
)


def _twin() -> Workflow:
    pick = DECLARED.step(DECLARED.start_step)

    def body(instance: Instance, config: Any, context: Context) -> StepOk:
        parcel: Json = {"weight_zq": 2}
        if instance.id.endswith("bad"):
            parcel[UNDECLARED_KEY] = 3
        return StepOk("to_done_zq", {"parcel_zq": parcel})

    twin_pick = Step(name=pick.name, events=pick.events, run=body)
    return Workflow(
        name=DECLARED.name,
        start=twin_pick,
        transitions=[(twin_pick, event, DONE) for event in pick.events],
        atoms=DECLARED.atoms,
    )


TWIN = _twin()


def rows(conn: psycopg.Connection[Any], schema: str, table: str, instance_id: str) -> list[Json]:
    column = "id" if table == "workflow_instances" else "args->>'instance_id'"
    query = sql.SQL("SELECT row_to_json(t) FROM {}.{} t WHERE {} = %s ORDER BY t.id").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(column)
    )
    return [dict(r[0]) for r in conn.execute(query, (instance_id,)).fetchall()]


async def test_an_undeclared_key_never_reaches_the_row_and_a_cold_vm_loads_the_instance(
    conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    twin, declared = declared_names(TWIN), declared_names(DECLARED)
    assert twin.modules <= declared.modules and twin.atoms <= declared.atoms
    runner = WorkflowRunner(database_url, [TWIN], prefix=schema, config_key="py")
    registry = Registry()
    register(registry, runner)
    ids = {"bad": "twin::bad", "good": "twin::good"}
    try:
        async with running_node(database_url, schema, {runner.queue: 5}, registry):
            for instance_id in ids.values():
                runner.start(conn, TWIN, {"mode_zq": "done"}, id=instance_id)
            for _ in range(600):
                statuses = {
                    k: [r["status"] for r in rows(conn, schema, "workflow_instances", i)]
                    for k, i in ids.items()
                }
                step_jobs = [
                    j
                    for j in rows(conn, schema, "oban_jobs", ids["bad"])
                    if j["worker"] == EXECUTE_STEP_WORKER
                ]
                finished = all(s and s[0] in ("completed", "failed") for s in statuses.values())
                if finished and all(j["state"] in ("completed", "discarded") for j in step_jobs):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"instances never settled: {statuses} {step_jobs}")
    finally:
        runner.close()

    with cold_fixture(database_url, schema) as fx:
        # The key is not an atom on a node that just booted: had it been written, loading raised.
        assert fx.call("workflow.atoms", names=[UNDECLARED_KEY])["existing"] == []
        for instance_id in ids.values():
            loaded = fx.call("workflow.load", instance_id=instance_id)
            assert loaded["loaded"] is True, (instance_id, loaded)
            row = rows(conn, schema, "workflow_instances", instance_id)[0]
            assert loaded["instance"]["state"] == row["state"]
            assert loaded["instance"]["status"] == row["status"]
        listed = fx.call("workflow.query", filters={"workflow_family": DECLARED.name})
        assert listed["loaded"] is True, listed
        assert listed["ids"] == sorted(ids.values())

    assert statuses == {"bad": ["failed"], "good": ["completed"]}
    assert [j["state"] for j in step_jobs] == ["discarded"]
    bad = rows(conn, schema, "workflow_instances", ids["bad"])[0]
    assert bad["state"]["context"]["steps"] == {}
    error = step_jobs[0]["errors"][-1]["error"]
    assert f"'{UNDECLARED_KEY}'" in error and FIX in error, error
    assert f"state.context.steps.pick_zq.parcel_zq.{UNDECLARED_KEY}" in error
