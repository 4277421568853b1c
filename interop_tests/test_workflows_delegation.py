"""Steps across the language line, both ways, with the real fixture VM, real PostgreSQL and a real
Python node: Elixir workflows (HephaestusOban's workers in the VM) with steps run by Python
workers through ``ObanBridge.DelegatedStep``, and Python workflows with steps run in the VM by
``ObanBridge.StepWorker`` — the modules of ``integrations/elixir``, compiled into the fixture."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge.jobs.client.registry import Registry, default_registry
from bridge.jobs.plugins.lifeline import Lifeline
from bridge.jobs.plugins.stager import Stager
from bridge.workflows import DONE, Context, Instance, StepAsync, StepOk, Workflow, step
from bridge.workflows.delegation.elixir import elixir_step
from bridge.workflows.delegation.host import (
    DelegatedCall,
    DelegationHost,
    UndeclaredResumeError,
    delegated,
    resume_elixir_step,
)
from bridge.workflows.delegation.lifeline import DelegationLifeline
from bridge.workflows.model.serializer import from_row
from bridge.workflows.run.repair import repair
from bridge.workflows.run.runner import WorkflowRunner, resume_job
from bridge.workflows.run.workers import register
from interop_tests.fixture import ElixirFixture
from interop_tests.workflow_support import (
    CONFIG_KEY,
    elixir_instance_row,
    load_in_vm,
    serve_hephaestus,
    wait_status,
)
from tests.jobs.support import running_node
from tests.support.worker import spawn_worker

Json = dict[str, Any]
FANOUT = "Elixir.Delegation.Flows.Fanout"
STRICT = "Elixir.Delegation.Flows.Strict"
AWAIT = "Elixir.Delegation.Flows.Await"
RENDER = "Elixir.Delegation.Steps.Render"
CHECK = "Elixir.Delegation.Steps.Check"
ELIXIR_STEPS_QUEUE = "elixir_steps"


# -- Python bodies of the fixture's delegated steps --------------------------------------------


@delegated(worker="interop.delegation.Render", steps=[RENDER])
def render(call: DelegatedCall) -> StepOk:
    mode = call.context.initial.get("mode")
    if mode == "fail":
        raise RuntimeError("renderer unavailable")
    if mode == "slow":
        time.sleep(0.8)
    assert call.context.steps == {"start": {"started": True}}  # only what Render asks for
    return StepOk("rendered", {"pdf_url": f"s3://{call.context.initial['url']}.pdf", "pages": 3})


@delegated(worker="interop.delegation.Check", steps=[CHECK])
def check(call: DelegatedCall) -> StepOk:
    mode = call.context.initial.get("mode")
    if mode == "fail":
        raise RuntimeError("checker crashed")
    if mode == "undeclared":
        return StepOk("checked", {"verdict": "ok", "zz_python_only_key_q7": "value"})
    return StepOk("checked", {"verdict": "ok"})


SLOW = "Elixir.Delegation.Steps.Slow"
SLOW_LAST = "Elixir.Delegation.Steps.SlowLast"
KILL_QUEUE = "python_kill"
DOOMED_ENV = "BRIDGE_TEST_DELEGATION_DOOMED"  # "<url> <schema>" in the node that is killed


@delegated(worker="interop.delegation.Slow", steps=[SLOW, SLOW_LAST], queue=KILL_QUEUE)
def slow(call: DelegatedCall) -> StepOk:
    if call.attempt == 1:
        time.sleep(60)  # the doomed node is killed here
    return StepOk("finished", {"attempt": call.attempt})


# This module is also the worker module of the killed node (``bridge worker --workers
# interop_tests.test_workflows_delegation``): there it registers ``slow`` in the default registry.
if os.environ.get(DOOMED_ENV):
    _url, _schema = os.environ[DOOMED_ENV].split(" ")
    DelegationHost(_url, [slow], prefix=_schema).register(default_registry)


# -- Python workflows with an Elixir step ---------------------------------------------------


@step(name="Elixir.Py.Deleg.Prepare", events=["ready"])
def prepare(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ready", {"amount": context.initial["amount"]})


CHARGE = elixir_step(
    name="Elixir.Delegation.Steps.Charge",
    events=["charged", "declined"],
    context_keys=["amount", "receipt"],
    queue=ELIXIR_STEPS_QUEUE,
    max_attempts=1,
    failure_event="declined",
)
CHECKOUT = Workflow(
    name="Elixir.Py.Deleg.Checkout",
    start=prepare,
    transitions=[(prepare, "ready", CHARGE), (CHARGE, "charged", DONE), (CHARGE, "declined", DONE)],
    atoms=["amount", "mode"],
)
CHARGE_STRICT = elixir_step(
    name="Elixir.Delegation.Steps.Charge",
    events=["charged"],
    context_keys=["amount", "receipt"],
    queue=ELIXIR_STEPS_QUEUE,
    max_attempts=1,
)
UNLISTED = elixir_step(
    name="Elixir.Delegation.Steps.NotListed",
    events=["charged"],
    queue=ELIXIR_STEPS_QUEUE,
    max_attempts=1,
)
STRICT_CHECKOUT = Workflow(
    name="Elixir.Py.Deleg.StrictCheckout",
    start=prepare,
    transitions=[(prepare, "ready", CHARGE_STRICT), (CHARGE_STRICT, "charged", DONE)],
    atoms=["amount", "mode"],
)
UNLISTED_CHECKOUT = Workflow(
    name="Elixir.Py.Deleg.Unlisted",
    start=prepare,
    transitions=[(prepare, "ready", UNLISTED), (UNLISTED, "charged", DONE)],
    atoms=["amount", "mode"],
)


@step(name="Elixir.Py.Deleg.AwaitPickup", events=["picked_up"])
def await_pickup(instance: Instance, config: Any, context: Context) -> StepAsync:
    return StepAsync()


PICKUP = Workflow(
    name="Elixir.Py.Deleg.Pickup",
    start=prepare,
    transitions=[(prepare, "ready", await_pickup), (await_pickup, "picked_up", DONE)],
    tags=["py"],
    atoms=["amount", "mode"],
)
PY_FLOWS = [CHECKOUT, STRICT_CHECKOUT, UNLISTED_CHECKOUT, PICKUP]


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def both(fx: ElixirFixture, database_url: str, schema: str) -> Iterator[ElixirFixture]:
    """The VM serving queue ``hephaestus`` and the StepWorker queue, configured as an app."""
    fx.call("delegate.configure", config_key=CONFIG_KEY, steps=["Elixir.Delegation.Steps.Charge"])
    serve_hephaestus(fx)
    fx.call("start_queue", queue=ELIXIR_STEPS_QUEUE, limit=5)
    yield fx


@asynccontextmanager
async def python_node(database_url: str, schema: str) -> AsyncIterator[WorkflowRunner]:
    host = DelegationHost(database_url, [render, check], prefix=schema, settle_timeout=10.0)
    runner = WorkflowRunner(database_url, PY_FLOWS, prefix=schema, config_key="py")
    registry = Registry()
    host.register(registry)
    register(registry, runner)
    try:
        queues = {"python": 5, runner.queue: 5}
        async with (
            healing(database_url, schema, [runner]),
            running_node(database_url, schema, queues, registry),
        ):
            yield runner
    finally:
        runner.close()
        host.close()


@asynccontextmanager
async def healing(
    database_url: str, schema: str, runners: list[WorkflowRunner]
) -> AsyncIterator[None]:
    healer = asyncio.create_task(heal(database_url, schema, runners))
    try:
        yield
    finally:
        healer.cancel()


async def heal(database_url: str, schema: str, runners: list[WorkflowRunner]) -> None:
    """The workflow lifeline's pass, twice a second: the fixture reproduces HephaestusOban's
    lost-advance defect (a result left unprocessed when its AdvanceWorker insert is deduplicated
    against one already executing), which strikes these short workflows often; the lifeline is
    how a deployment heals it, and these tests are not about it."""

    def once() -> None:
        with psycopg.connect(database_url, autocommit=True) as c:
            repair(c, schema, grace=0.3, runners=runners)

    while True:
        await asyncio.to_thread(once)
        await asyncio.sleep(0.5)


def start(fx: ElixirFixture, workflow: str, instance_id: str, context: Json) -> str:
    reply = fx.call(
        "workflow.start",
        workflow=workflow,
        context=context,
        instance_id=instance_id,
        config_key=CONFIG_KEY,
    )
    return str(reply["instance_id"])


async def elixir_status(fx: ElixirFixture, instance_id: str, *statuses: str) -> str:
    return await asyncio.to_thread(wait_status, fx, instance_id, *statuses, timeout_ms=20_000)


def rows(conn: psycopg.Connection[Any], schema: str, table: str, instance_id: str) -> list[Json]:
    column = {"oban_jobs": "args->>'instance_id'", "workflow_instances": "id"}.get(
        table, "instance_id"
    )
    order = "inserted_at, id" if table == "hephaestus_step_results" else "id"
    query = sql.SQL("SELECT row_to_json(t) FROM {}.{} t WHERE {} = %s ORDER BY {}").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(column), sql.SQL(order)
    )
    return [r[0] for r in conn.execute(query, (instance_id,)).fetchall()]


def jobs_of(
    conn: psycopg.Connection[Any], schema: str, instance_id: str, worker: str
) -> list[Json]:
    return [j for j in rows(conn, schema, "oban_jobs", instance_id) if j["worker"] == worker]


async def python_status(
    conn: psycopg.Connection[Any], schema: str, instance_id: str, *statuses: str
) -> Json:
    found: list[Json] = []
    for _ in range(400):
        found = rows(conn, schema, "workflow_instances", instance_id)
        if found and found[0]["status"] in statuses:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{instance_id} never reached {statuses}: {found}")


async def settled(conn: psycopg.Connection[Any], schema: str, instance_id: str) -> list[Json]:
    """The instance's jobs once none is pending (the last acks are written after the rows)."""
    for _ in range(200):
        jobs = rows(conn, schema, "oban_jobs", instance_id)
        if all(j["state"] not in ("available", "executing", "scheduled") for j in jobs):
            return jobs
        await asyncio.sleep(0.05)
    raise AssertionError(f"jobs of {instance_id} still pending: {jobs}")


# -- Elixir workflow, Python step -------------------------------------------------------------


async def test_python_step_inside_an_elixir_fanout_runs_once(
    both: ElixirFixture, conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    """Local finishes while Python still renders: HephaestusOban executes the async Render step
    again (upstream defect), the unique delegated job keeps it to one Python run."""
    context = {"url": "doc-1", "mode": "slow", "sleep_ms": 200}
    async with python_node(database_url, schema):
        instance_id = start(both, FANOUT, "delegfanout::a1", context)
        assert await elixir_status(both, instance_id, "completed", "failed") == "completed"
        jobs = await settled(conn, schema, instance_id)
    row = elixir_instance_row(both, instance_id)
    assert row is not None
    steps = row["state"]["context"]["steps"]
    assert steps["render"] == {"pdf_url": "s3://doc-1.pdf", "pages": 3}
    assert steps["local"] == {"local": "ok"} and steps["join"] == {"joined": True}
    assert row["state"]["current_step"] is None and row["state"]["active_steps"] == []
    executions = [j for j in jobs if j["args"].get("step_ref") == RENDER]
    delegated_jobs = [j for j in jobs if j["worker"] == render.worker]
    # executed again at least once (the lifeline's advances may add more), one Python job
    assert len([j for j in executions if j["worker"].endswith("ExecuteStepWorker")]) >= 2
    assert len(delegated_jobs) == 1 and delegated_jobs[0]["state"] == "completed"
    job = delegated_jobs[0]
    assert (job["queue"], job["max_attempts"], job["tags"]) == ("python", 1, ["fanout"])
    assert job["meta"] == {
        "heph_workflow": "fanout",
        "instance_id": instance_id,
        "step": "render",
        "workflow_version": 1,
    }
    assert job["args"]["context"] == {
        "initial": {"url": "doc-1", "mode": "slow"},
        "steps": {"start": {"started": True}},
    }
    results = [
        (r["step_ref"], r["event"], r["processed"])
        for r in rows(conn, schema, "hephaestus_step_results", instance_id)
    ]
    assert results.count((RENDER, "__async__", True)) >= 2
    assert (RENDER, "rendered", True) in results
    assert all(processed for _, _, processed in results)
    advances = [j for j in jobs if j["worker"] == "HephaestusOban.AdvanceWorker"]
    assert {j["queue"] for j in advances} == {"hephaestus"}
    assert all(j["state"] == "completed" for j in jobs if j["worker"] != render.worker)
    assert load_in_vm(both, instance_id)["loaded"] is True


async def test_python_step_failing_for_good_ends_the_elixir_workflow(
    both: ElixirFixture, conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    """With a failure event the step completes with it (the workflow goes on); without one the
    instance fails as HephaestusOban's failure path fails it, its pending jobs cancelled."""
    async with python_node(database_url, schema):
        with_event = start(
            both, FANOUT, "delegfanout::f1", {"url": "d", "mode": "fail", "sleep_ms": 0}
        )
        without = start(both, STRICT, "delegstrict::f1", {"mode": "fail"})
        assert await elixir_status(both, with_event, "completed", "failed") == "completed"
        assert await elixir_status(both, without, "completed", "failed") == "failed"
        await settled(conn, schema, with_event)
        await settled(conn, schema, without)

    (render_job,) = jobs_of(conn, schema, with_event, render.worker)
    assert render_job["state"] == "discarded"
    assert "renderer unavailable" in render_job["errors"][-1]["error"]
    events = [r["event"] for r in rows(conn, schema, "hephaestus_step_results", with_event)]
    assert "render_failed" in events and "rendered" not in events

    (check_job,) = jobs_of(conn, schema, without, check.worker)
    assert check_job["state"] == "discarded"
    assert "checker crashed" in check_job["errors"][-1]["error"]
    row = elixir_instance_row(both, without)
    assert row is not None
    assert row["status"] == "failed" and row["state"]["current_step"] is None
    assert row["state"]["active_steps"] == [CHECK]
    assert all(r["processed"] for r in rows(conn, schema, "hephaestus_step_results", without))
    assert load_in_vm(both, without)["loaded"] is True


async def test_undeclared_key_is_refused_and_the_instance_stays_loadable(
    both: ElixirFixture, conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    async with python_node(database_url, schema):
        instance_id = start(both, STRICT, "delegstrict::u1", {"mode": "undeclared"})
        assert await elixir_status(both, instance_id, "completed", "failed") == "failed"
        await settled(conn, schema, instance_id)
    (job,) = jobs_of(conn, schema, instance_id, check.worker)
    assert job["state"] == "discarded"
    error = job["errors"][-1]["error"]
    assert (
        "zz_python_only_key_q7" in error
        and "not declared by Elixir.Delegation.Steps.Check" in error
    )
    results = rows(conn, schema, "hephaestus_step_results", instance_id)
    assert all(r["event"] != "checked" for r in results)
    row = elixir_instance_row(both, instance_id)
    assert row is not None and "zz_python_only_key_q7" not in str(row)
    loaded = load_in_vm(both, instance_id)
    assert loaded["loaded"] is True, loaded
    atoms = both.call("workflow.atoms", names=["zz_python_only_key_q7"])
    assert "zz_python_only_key_q7" not in str(atoms.get("existing", atoms.get("atoms", [])))


AWAIT_STEP = elixir_step(
    name="Elixir.Delegation.Steps.Await", events=["arrived"], context_keys=["pages"]
)
UNDECLARED_RESUME_KEY = "zz_resume_only_key_r4"


async def test_elixir_async_step_resumed_from_python(
    both: ElixirFixture, conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    instance_id = start(both, AWAIT, "delegawait::r1", {})
    assert await elixir_status(both, instance_id, "waiting") == "waiting"
    await settled(conn, schema, instance_id)
    result = resume_elixir_step(
        conn, schema, instance_id, AWAIT_STEP, "arrived", {"pages": 2}, config_key=CONFIG_KEY
    )
    assert result.verdict == "completed", result
    assert await elixir_status(both, instance_id, "completed", "failed") == "completed"
    row = elixir_instance_row(both, instance_id)
    assert row is not None and row["state"]["context"]["steps"]["await"] == {"pages": 2}
    again = resume_elixir_step(
        conn, schema, instance_id, AWAIT_STEP, "arrived", config_key=CONFIG_KEY
    )
    assert again.verdict == "finished"  # a duplicate resume is a no-op


async def test_resume_from_python_refuses_keys_the_elixir_step_does_not_declare(
    both: ElixirFixture, conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    """Issue 15, item 4: a key that is not an atom in the VM used to be accepted (the caller
    listed it), and every later ExecuteStepWorker of the instance crashed. Now the keys are
    the step declaration's: an undeclared one (or event) is refused and nothing is written."""
    instance_id = start(both, AWAIT, "delegawait::r2", {})
    assert await elixir_status(both, instance_id, "waiting") == "waiting"
    await settled(conn, schema, instance_id)
    before = rows(conn, schema, "hephaestus_step_results", instance_id)
    jobs_before = rows(conn, schema, "oban_jobs", instance_id)
    updates = {"pages": 1, "nested": [{UNDECLARED_RESUME_KEY: True}]}
    with pytest.raises(UndeclaredResumeError) as refused:
        resume_elixir_step(
            conn, schema, instance_id, AWAIT_STEP, "arrived", updates, config_key=CONFIG_KEY
        )
    assert str(refused.value).startswith(
        f"context update keys ['nested', '{UNDECLARED_RESUME_KEY}'] are not declared by "
        "Elixir.Delegation.Steps.Await (context_keys: ['pages'])"
    )
    with pytest.raises(UndeclaredResumeError, match="does not declare the event 'left'"):
        resume_elixir_step(conn, schema, instance_id, AWAIT_STEP, "left", config_key=CONFIG_KEY)
    assert rows(conn, schema, "hephaestus_step_results", instance_id) == before
    assert rows(conn, schema, "oban_jobs", instance_id) == jobs_before
    assert both.call("workflow.atoms", names=[UNDECLARED_RESUME_KEY])["existing"] == []
    assert load_in_vm(both, instance_id)["loaded"] is True
    done = resume_elixir_step(
        conn, schema, instance_id, AWAIT_STEP, "arrived", {"pages": 1}, config_key=CONFIG_KEY
    )
    assert done.verdict == "completed", done
    assert await elixir_status(both, instance_id, "completed", "failed") == "completed"
    assert load_in_vm(both, instance_id)["loaded"] is True


async def test_python_async_step_resumed_from_elixir(
    both: ElixirFixture, conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    """``ObanBridge.PythonWorkflow.resume/3`` in the VM writes the ResumeWorker the Python
    runner's own ``resume`` would write; the Python node applies it."""
    async with python_node(database_url, schema) as runner:
        runner.start(conn, PICKUP, {"amount": 1}, id="pk::1")
        waiting = await python_status(conn, schema, "pk::1", "waiting")
        instance = from_row({**waiting, "inserted_at": None, "updated_at": None}, runner.workflows)
        reply = both.call(
            "delegate.resume_python",
            instance_id="pk::1",
            event="picked_up",
            config_key="py",
            tags=["py"],
        )
        row = await python_status(conn, schema, "pk::1", "completed", "failed")
        jobs = await settled(conn, schema, "pk::1")
    assert row["status"] == "completed"
    (resume,) = [j for j in jobs if j["worker"] == "HephaestusOban.ResumeWorker"]
    assert resume["id"] == reply["job_id"] and resume["state"] == "completed"
    # only the Python node serves the runner's queue: it ran the job
    own = resume_job(
        PICKUP, instance, await_pickup.name, "picked_up", queue=runner.queue, config_key="py"
    )
    for key in ("args", "meta", "tags", "max_attempts", "queue", "priority"):
        assert resume[key] == getattr(own, key), key


def start_doomed_node(database_url: str, schema: str) -> subprocess.Popen[bytes]:
    return spawn_worker(
        database_url,
        schema,
        "--queues",
        f"{KILL_QUEUE}:2",
        "--workers",
        __name__,
        "--node",
        "doomed",
        "--poll-interval",
        "0.2",
        env={DOOMED_ENV: f"{database_url} {schema}"},
        stdout=subprocess.DEVNULL,
    )


async def kill_mid_body(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str, proc: subprocess.Popen[bytes]
) -> None:
    """Start both workflows, wait until the doomed node runs both bodies, SIGKILL it."""
    again = start(fx, "Elixir.Delegation.Flows.Slow", "delegslow::k1", {})
    last = start(fx, "Elixir.Delegation.Flows.SlowLast", "delegslowlast::k1", {})
    for _ in range(400):
        running = [
            j
            for i in (again, last)
            for j in jobs_of(conn, schema, i, slow.worker)
            if j["state"] == "executing"
        ]
        if len(running) == 2:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the doomed node never ran both bodies")
    assert {j["attempted_by"][0] for j in running} == {"doomed"}
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


async def test_python_node_killed_mid_step(
    both: ElixirFixture, conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    """SIGKILL while the Python bodies run. With attempts left, the rescued job runs again and
    completes the step once; on its last attempt the lifeline discards it and the delegation
    lifeline applies the failure policy (no failure event: the Elixir instance fails)."""
    proc = start_doomed_node(database_url, schema)
    try:
        async with healing(database_url, schema, []):
            await kill_mid_body(both, conn, schema, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    again, last = "delegslow::k1", "delegslowlast::k1"

    host = DelegationHost(database_url, [slow], prefix=schema)
    registry = Registry()
    host.register(registry)
    plugins = [
        Lifeline(rescue_after=0.5, interval=0.1),
        Stager(interval=0.1),
        DelegationLifeline(host, interval=0.2),
    ]
    try:
        async with (
            healing(database_url, schema, []),
            running_node(
                database_url, schema, {KILL_QUEUE: 2}, registry, node="py", plugins=plugins
            ),
        ):
            assert await elixir_status(both, again, "completed", "failed") == "completed"
            assert await elixir_status(both, last, "completed", "failed") == "failed"
    finally:
        host.close()
    (job,) = jobs_of(conn, schema, again, slow.worker)
    assert (job["state"], job["attempt"], job["attempted_by"][0]) == ("completed", 2, "py")
    finished = [
        r for r in rows(conn, schema, "hephaestus_step_results", again) if r["step_ref"] == SLOW
    ]
    assert [r["event"] for r in finished if r["event"] != "__async__"] == ["finished"]
    row = elixir_instance_row(both, again)
    assert row is not None and row["state"]["context"]["steps"]["slow"] == {"attempt": 2}
    (job,) = jobs_of(conn, schema, last, slow.worker)
    assert job["state"] == "discarded"
    assert load_in_vm(both, last)["loaded"] is True


# -- Python workflow, Elixir step -------------------------------------------------------------


async def test_elixir_step_inside_a_python_workflow_completes(
    both: ElixirFixture, conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    async with python_node(database_url, schema) as runner:
        runner.start(conn, CHECKOUT, {"amount": 42}, id="co::ok")
        row = await python_status(conn, schema, "co::ok", "completed", "failed")
        jobs = await settled(conn, schema, "co::ok")
    assert row["status"] == "completed"
    assert row["state"]["context"]["steps"]["charge"] == {"amount": 42, "receipt": "r-co::ok"}
    assert row["state"]["runtime_metadata"] == {"charged_by": "elixir"}
    (remote,) = [j for j in jobs if j["worker"] == "ObanBridge.StepWorker"]
    assert remote["state"] == "completed" and remote["attempted_by"][0] == "vm"
    assert {j["queue"] for j in jobs if j["worker"].startswith("HephaestusOban.")} == {
        "bridge_workflows"
    }
    assert all(j["state"] == "completed" for j in jobs)
    charge_results = [
        (r["event"], r["processed"])
        for r in rows(conn, schema, "hephaestus_step_results", "co::ok")
        if r["step_ref"] == CHARGE.name
    ]
    assert charge_results == [("__async__", True), ("charged", True)]


async def test_elixir_step_failing_for_good_ends_the_python_workflow(
    both: ElixirFixture, conn: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    async with python_node(database_url, schema) as runner:
        runner.start(conn, CHECKOUT, {"amount": 1, "mode": "fail"}, id="co::declined")
        runner.start(conn, STRICT_CHECKOUT, {"amount": 1, "mode": "fail"}, id="co::failed")
        runner.start(conn, CHECKOUT, {"amount": 1, "mode": "undeclared"}, id="co::undeclared")
        runner.start(conn, UNLISTED_CHECKOUT, {"amount": 1}, id="co::unlisted")
        rows_by_id = {
            i: await python_status(conn, schema, i, "completed", "failed")
            for i in ("co::declined", "co::failed", "co::undeclared", "co::unlisted")
        }
        jobs = {i: await settled(conn, schema, i) for i in rows_by_id}

    def remote(instance_id: str) -> Json:
        (job,) = [j for j in jobs[instance_id] if j["worker"] == "ObanBridge.StepWorker"]
        return job

    assert rows_by_id["co::declined"]["status"] == "completed"
    assert rows_by_id["co::declined"]["state"]["context"]["steps"]["charge"] == {}
    assert remote("co::declined")["state"] == "discarded"
    assert "card_declined" in remote("co::declined")["errors"][-1]["error"]

    failed = rows_by_id["co::failed"]
    assert failed["status"] == "failed" and failed["state"]["current_step"] is None
    assert remote("co::failed")["state"] == "discarded"

    undeclared = rows_by_id["co::undeclared"]
    assert undeclared["status"] == "completed"  # completed with its failure event
    assert "zz_not_declared" not in str(undeclared)
    error = remote("co::undeclared")["errors"][-1]["error"]
    assert "zz_not_declared" in error and "not declared" in error

    assert rows_by_id["co::unlisted"]["status"] == "failed"
    unlisted = remote("co::unlisted")
    assert unlisted["state"] == "discarded"
    assert "allow-list" in unlisted["errors"][-1]["error"]
