"""A Python-owned workflow never writes a key its Elixir declaration does not pin.

HephaestusEcto turns every map key under ``context`` into an existing atom when an Elixir node
loads a row; for a Python-owned workflow the only such atoms are those its generated
``use ObanBridge.PythonWorkflow`` declaration pins (``declared_names``). A row with any other key
crashes every Elixir node that lists instances, so the runner refuses it: a start with such an
initial context raises before anything is inserted, and a step returning such a key has its job
discarded on its first attempt with the key, path and fix in its error, the instance failed and
nothing of the result written. Real PostgreSQL, a real node.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from bridge.workflows import (
    DONE,
    Context,
    Instance,
    KnownNames,
    StepOk,
    UndeclaredKeyError,
    Workflow,
    elixir_step,
    step,
)
from bridge.workflows.delegation.declaration import declared_names
from bridge.workflows.run.runner import EXECUTE_STEP_WORKER, WorkflowRunner
from interop_tests import cold_flows
from tests.workflows import ORDER, WORKFLOWS
from tests.workflows.run.test_runner import (
    instance_json,
    jobs_json,
    results_json,
    serving,
    status_is,
    wait_for_instance,
)

FIX = (
    "declare them in Workflow(atoms=[...]) and regenerate the Elixir declaration with "
    "`bridge workflows export-elixir`"
)


@step(name="Elixir.Py.Keys.Render", events=["rendered"])
def render(instance: Instance, config: Any, context: Context) -> StepOk:
    # "badge" is declared; "pages" is not, at any of these depths.
    mode = context.initial.get("mode")
    if mode == "nested":
        return StepOk("rendered", {"badge": {"pages": 3}})
    if mode == "in_list":
        return StepOk("rendered", {"badge": [{"ok": 1}, {"pages": 3}]})
    if mode == "top":
        return StepOk("rendered", {"pages": 3, "badge": 1})
    return StepOk("rendered", {"badge": 1})


@step(name="Elixir.Py.Keys.Publish", events=["published"])
def publish(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("published", {"badge": 2})


BADGE = Workflow(
    name="Elixir.Py.Keys.Badge",
    start=render,
    transitions=[(render, "rendered", publish), (publish, "published", DONE)],
    atoms=["badge", "mode", "ok"],
)


@pytest.fixture(params=[True, False], ids=["coalesced", "job-by-job"])
def runner(request: pytest.FixtureRequest, database_url: str, oban_prefix: str) -> Any:
    made = WorkflowRunner(database_url, [BADGE], prefix=oban_prefix, coalesce=request.param)
    yield made
    made.close()


def test_a_start_with_an_undeclared_key_writes_nothing(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    with pytest.raises(UndeclaredKeyError) as refused:
        runner.start(conn, BADGE, {"mode": "ok", "extra": {"pages": 1}}, id="keys::start")
    message = str(refused.value)
    assert message == (
        "the initial context holds key(s) 'extra', 'pages' that Py.Keys.Badge's Elixir "
        "declaration does not pin (state.context.initial.extra: not an atom known to the "
        "Elixir side; state.context.initial.extra.pages: not an atom known to the Elixir side), "
        f"so an Elixir node could not load the instance; {FIX}"
    )
    assert [p.path for p in refused.value.problems] == [
        "state.context.initial.extra",
        "state.context.initial.extra.pages",
    ]
    count = conn.execute(
        f'SELECT (SELECT count(*) FROM "{runner.prefix}".workflow_instances),'
        f' (SELECT count(*) FROM "{runner.prefix}".oban_jobs)'
    ).fetchone()
    assert count == (0, 0)
    # Declared keys start as before.
    assert runner.start(conn, BADGE, {"mode": "ok"}, id="keys::ok") == "keys::ok"


@pytest.mark.parametrize(
    ("mode", "path"),
    [
        ("top", "state.context.steps.render.pages"),
        ("nested", "state.context.steps.render.badge.pages"),
        ("in_list", "state.context.steps.render.badge[1].pages"),
    ],
)
async def test_a_step_returning_an_undeclared_key_is_discarded_and_fails_the_instance(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], mode: str, path: str
) -> None:
    instance_id = f"keys::{mode}"
    runner.start(conn, BADGE, {"mode": mode}, id=instance_id)
    runner.start(conn, BADGE, {"mode": "ok"}, id="keys::fine")
    async with serving(runner):
        row = await wait_for_instance(runner.url, runner.prefix, instance_id, status_is("failed"))
        await wait_for_instance(runner.url, runner.prefix, "keys::fine", status_is("completed"))
        jobs = await _settled_jobs(runner, instance_id)
    # Failed as Hephaestus fails an instance whose step job is discarded: status failed, no
    # current step, the step still active; nothing of the refused result was written.
    assert row["state"]["context"] == {"initial": {"mode": mode}, "steps": {}}
    assert row["state"]["active_steps"] == [render.name]
    assert row["state"]["current_step"] is None
    assert results_json(runner.url, runner.prefix, instance_id) == []
    step_jobs = [j for j in jobs if j["worker"] == EXECUTE_STEP_WORKER]
    assert [(j["state"], j["attempt"], j["max_attempts"]) for j in step_jobs] == [
        ("discarded", 1, 5)
    ]
    error = step_jobs[0]["errors"][-1]["error"]
    assert "'pages'" in error and path in error and FIX in error, error
    assert all(j["state"] in ("completed", "discarded") for j in jobs), jobs
    # The instance fails alone: a sibling instance of the same workflow completed.
    fine = instance_json(runner.url, runner.prefix, "keys::fine")
    steps = fine["state"]["context"]["steps"]
    assert steps == {"render": {"badge": 1}, "publish": {"badge": 2}, "done": {}}


async def _settled_jobs(runner: WorkflowRunner, instance_id: str) -> list[dict[str, Any]]:
    """The instance's jobs once none is still running (the discard is recorded after the
    instance is failed)."""
    for _ in range(400):
        jobs = jobs_json(runner.url, runner.prefix, instance_id)
        if all(j["state"] not in ("available", "executing", "scheduled") for j in jobs):
            return jobs
        await asyncio.sleep(0.05)
    raise AssertionError(f"jobs of {instance_id} still running: {jobs}")


def _with_elixir_step() -> Workflow:
    charge = elixir_step(
        name="Elixir.Py.Keys.Charge", events=["charged"], context_keys=["receipt", "amount"]
    )
    return Workflow(
        name="Elixir.Py.Keys.WithElixir",
        start=render,
        transitions=[(render, "rendered", charge), (charge, "charged", DONE)],
        atoms=["badge"],
    )


@pytest.mark.parametrize(
    "workflow",
    [
        BADGE,
        ORDER,
        _with_elixir_step(),
        *WORKFLOWS.values(),
        cold_flows.DECLARED,
        cold_flows.RESUMED,
    ],
    ids=lambda w: w.name,
)
def test_the_runner_counts_exactly_what_the_declaration_pins(workflow: Workflow) -> None:
    """``KnownNames.declared_by`` (the run layer's view) is ``declared_names`` (built from the
    generated declaration)."""
    assert KnownNames.declared_by(workflow) == declared_names(workflow)
