"""Delegated steps, Python side, on real PostgreSQL: the protocol's args and checks, the door
into Elixir-owned instances (rows laid as the genuine stack leaves them in golden
``external-step-completion``), the delegated worker on a real node, and the Python runner's
Elixir-run steps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry
from bridge.wire import notify
from bridge.workflows import DONE, Context, Instance, StepError, StepOk, Workflow, step
from bridge.workflows.delegation.door import (
    complete_elixir_step,
    fail_elixir_instance,
)
from bridge.workflows.delegation.elixir import elixir_step
from bridge.workflows.delegation.host import DelegatedCall, DelegationHost, delegated
from bridge.workflows.delegation.lifeline import sweep, sweep_elixir_steps
from bridge.workflows.delegation.protocol import (
    DelegationArgs,
    DelegationArgsError,
    DelegationViolation,
    check_remote_outcome,
    job_args,
)
from bridge.workflows.run.runner import WorkflowRunner
from bridge.workflows.run.workers import register
from tests.jobs.support import running_node, wait_for_state

WORKFLOW = "Elixir.Realstack.WF.AsyncFanout"
STEP = "Elixir.Realstack.Steps.AsyncWait"
CONFIG_KEY = "Elixir.Realstack.Heph"
# Job 9 of golden external-step-completion/s3_oban_jobs.jsonl: the AdvanceWorker the psql door
# wrote, mirroring ResumeWorker's (the fields the door sets).
GOLDEN_ADVANCE: dict[str, Any] = {
    "worker": "HephaestusOban.AdvanceWorker",
    "queue": "hephaestus",
    "args": {
        "workflow": "Elixir.Realstack.WF.AsyncFanout",
        "config_key": "Elixir.Realstack.Heph",
        "instance_id": "asyncfanout::s3a",
        "workflow_version": 1,
    },
    "attempt": 0,
    "max_attempts": 20,
    "priority": 0,
    "tags": ["async_fanout"],
    "meta": {
        "step": "async_wait",
        "instance_id": "asyncfanout::s3a",
        "heph_workflow": "async_fanout",
        "workflow_version": 1,
    },
}


def args_for(instance_id: str, **changes: Any) -> dict[str, Any]:
    args = job_args(
        instance_id=instance_id,
        step_ref=STEP,
        workflow=WORKFLOW,
        workflow_version=1,
        config_key=CONFIG_KEY,
        advance_queue="hephaestus",
        context_key="async_wait",
        events=["resumed", "gave_up"],
        context_keys=["external_ref", "amount_cents", "nested_info", "items"],
        failure_event=None,
        context=Context({"order_id": 7}, {"pass": {"pass": True}}),
        config=None,
    )
    args.update(changes)
    return args


def q(conn: psycopg.Connection[Any], text: str, prefix: str, *params: Any) -> list[Any]:
    cur = conn.execute(sql.SQL(text).format(p=sql.Identifier(prefix)), params)
    return cur.fetchall() if cur.description else []


def waiting_instance(
    conn: psycopg.Connection[Any],
    prefix: str,
    instance_id: str,
    *,
    status: str = "waiting",
    async_processed: bool = True,
) -> None:
    """The s3a instance as the genuine stack left it before the external completion."""
    state = {
        "active_steps": [STEP],
        "completed_steps": ["Elixir.Realstack.Steps.Normal", "Elixir.Realstack.Steps.Pass"],
        "context": {
            "initial": {"order_id": 7},
            "steps": {"normal": {"n": 1, "normal": "ok"}, "pass": {"pass": True}},
        },
        "current_step": STEP if status == "waiting" else None,
        "execution_history": [],
        "runtime_metadata": {},
        "step_configs": {},
    }
    q(
        conn,
        "INSERT INTO {p}.workflow_instances (id, workflow, status, state, workflow_version,"
        " inserted_at, updated_at) VALUES (%s, %s, %s, %s, 1, now(), now())",
        prefix,
        instance_id,
        WORKFLOW,
        status,
        Jsonb(state),
    )
    q(
        conn,
        "INSERT INTO {p}.hephaestus_step_results (instance_id, step_ref, event, context_updates,"
        " metadata_updates, workflow_version, processed) VALUES (%s, %s, '__async__', '{{}}',"
        " '{{}}', 1, %s)",
        prefix,
        instance_id,
        STEP,
        async_processed,
    )


def golden_meta(instance_id: str) -> dict[str, Any]:
    return {**GOLDEN_ADVANCE["meta"], "instance_id": instance_id}


def results(conn: psycopg.Connection[Any], prefix: str, instance_id: str) -> list[Any]:
    return q(
        conn,
        "SELECT step_ref, event, context_updates, processed FROM {p}.hephaestus_step_results"
        " WHERE instance_id = %s ORDER BY inserted_at, id",
        prefix,
        instance_id,
    )


def jobs(conn: psycopg.Connection[Any], prefix: str, instance_id: str) -> list[dict[str, Any]]:
    rows = q(
        conn,
        "SELECT row_to_json(j) FROM {p}.oban_jobs j WHERE args->>'instance_id' = %s ORDER BY id",
        prefix,
        instance_id,
    )
    return [r[0] for r in rows]


def door(conn: psycopg.Connection[Any], prefix: str, args: dict[str, Any], **outcome: Any) -> Any:
    parsed = DelegationArgs.parse(args)
    checked = check_remote_outcome(
        parsed, outcome.get("event", "resumed"), outcome.get("updates", {"external_ref": "py"})
    )
    with conn.transaction():
        return complete_elixir_step(
            conn,
            prefix,
            parsed,
            checked,
            meta=golden_meta(parsed.instance_id),
            tags=["async_fanout"],
        )


# -- protocol (pure) ------------------------------------------------------------------------


def test_args_round_trip_and_refusals() -> None:
    parsed = DelegationArgs.parse(args_for("a::1"))
    assert (parsed.step_ref, parsed.context_key, parsed.events) == (
        STEP,
        "async_wait",
        ("resumed", "gave_up"),
    )
    assert parsed.context.initial == {"order_id": 7}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"protocol": 2}, "protocol"),
        ({"surprise": 1}, "unknown args keys"),
        ({"failure_event": "nope"}, "failure_event"),
        ({"events": ["__async__"]}, "__async__"),
        ({"step_ref": "os.system"}, "step_ref"),
        ({"workflow_version": True}, "workflow_version"),
        ({"context": {"initial": {}, "other": {}}}, "context"),
        ({"context_keys": ["x" * 256]}, "255"),
    ]
    for change, needle in bad:
        with pytest.raises(DelegationArgsError, match=needle):
            DelegationArgs.parse(args_for("a::1", **change))


def test_outcome_checks_name_what_is_undeclared() -> None:
    parsed = DelegationArgs.parse(args_for("a::1"))
    ok = check_remote_outcome(parsed, "resumed", {"nested_info": {"items": [1, {"items": 2}]}})
    assert ok.context_updates == {"nested_info": {"items": [1, {"items": 2}]}}
    with pytest.raises(DelegationViolation, match="'shipped' is not declared"):
        check_remote_outcome(parsed, "shipped", {})
    with pytest.raises(DelegationViolation, match=r"\['zz_python_only_key_q7'\]"):
        check_remote_outcome(parsed, "resumed", {"external_ref": "x", "zz_python_only_key_q7": 1})
    with pytest.raises(DelegationViolation, match=r"\['deep'\]"):
        check_remote_outcome(parsed, "resumed", {"nested_info": [{"deep": 1}]})
    with pytest.raises(DelegationViolation, match="not a finite number"):
        check_remote_outcome(parsed, "resumed", {"amount_cents": float("nan")})
    with pytest.raises(DelegationViolation, match="__async__"):
        check_remote_outcome(parsed, "__async__", {})


# -- the door ---------------------------------------------------------------------------------


def test_door_writes_the_golden_rows_and_notifies(
    conn: psycopg.Connection[Any], oban_prefix: str, database_url: str
) -> None:
    waiting_instance(conn, oban_prefix, "f::1")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(
            sql.SQL("LISTEN {}").format(sql.Identifier(notify.channel(oban_prefix, "insert")))
        )
        result = door(
            conn,
            oban_prefix,
            args_for("f::1"),
            updates={"external_ref": "py-123", "amount_cents": 4200},
        )
        heard = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
    assert result.verdict == "completed"
    assert heard == ['{"queue":"hephaestus"}']
    assert results(conn, oban_prefix, "f::1")[-1] == (
        STEP,
        "resumed",
        {"external_ref": "py-123", "amount_cents": 4200},
        False,
    )
    (advance,) = jobs(conn, oban_prefix, "f::1")
    for key in ("worker", "queue", "max_attempts", "tags", "state", "priority", "attempt"):
        assert advance[key] == (GOLDEN_ADVANCE[key] if key != "state" else "available"), key
    assert advance["args"] == {**GOLDEN_ADVANCE["args"], "instance_id": "f::1"}
    assert advance["meta"] == golden_meta("f::1")


def test_door_waits_until_the_step_is_settled(
    conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    waiting_instance(conn, oban_prefix, "nr::1", async_processed=False)
    first = door(conn, oban_prefix, args_for("nr::1"))
    assert first.verdict == "not_ready" and "lost" in first.detail
    # the unprocessed __async__ had no advance: the door queued it, once
    assert door(conn, oban_prefix, args_for("nr::1")).verdict == "not_ready"
    (healing,) = jobs(conn, oban_prefix, "nr::1")
    assert healing["worker"] == "HephaestusOban.AdvanceWorker"
    assert healing["args"] == {**GOLDEN_ADVANCE["args"], "instance_id": "nr::1"}
    waiting_instance(conn, oban_prefix, "nr::2", status="running")
    assert door(conn, oban_prefix, args_for("nr::2")).verdict == "not_ready"
    waiting_instance(conn, oban_prefix, "nr::3")
    execute = Job.new(
        "HephaestusOban.ExecuteStepWorker",
        {"instance_id": "nr::3", "step_ref": STEP, "config_key": CONFIG_KEY, "workflow": WORKFLOW},
        queue="hephaestus",
    )
    insert_all(conn, [execute], prefix=oban_prefix)
    assert door(conn, oban_prefix, args_for("nr::3")).verdict == "not_ready"
    for instance_id in ("nr::1", "nr::2", "nr::3"):
        assert [r[1] for r in results(conn, oban_prefix, instance_id)] == ["__async__"]
    assert jobs(conn, oban_prefix, "nr::2") == []
    assert [j["worker"] for j in jobs(conn, oban_prefix, "nr::3")] == [
        "HephaestusOban.ExecuteStepWorker"
    ]


def test_door_no_ops(conn: psycopg.Connection[Any], oban_prefix: str) -> None:
    assert door(conn, oban_prefix, args_for("gone::1")).verdict == "gone"
    waiting_instance(conn, oban_prefix, "n::1", status="completed")
    assert door(conn, oban_prefix, args_for("n::1")).verdict == "finished"
    waiting_instance(conn, oban_prefix, "n::2")
    assert door(conn, oban_prefix, args_for("n::2")).verdict == "completed"
    assert door(conn, oban_prefix, args_for("n::2")).verdict == "recorded"  # duplicate
    q(
        conn,
        "UPDATE {p}.workflow_instances SET state = jsonb_set(state, '{{active_steps}}', '[]')"
        " WHERE id = 'n::2'",
        oban_prefix,
    )
    assert door(conn, oban_prefix, args_for("n::2")).verdict == "inactive"
    assert len(results(conn, oban_prefix, "n::2")) == 2
    assert len(jobs(conn, oban_prefix, "n::2")) == 1


def test_advance_dedup_only_against_unstarted(
    conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    waiting_instance(conn, oban_prefix, "d::1")
    advance_args = {**GOLDEN_ADVANCE["args"], "instance_id": "d::1"}
    (running,) = insert_all(
        conn,
        [Job.new("HephaestusOban.AdvanceWorker", advance_args, queue="hephaestus")],
        prefix=oban_prefix,
    )
    q(conn, "UPDATE {p}.oban_jobs SET state = 'executing' WHERE id = %s", oban_prefix, running.id)
    door(conn, oban_prefix, args_for("d::1"))
    assert [j["state"] for j in jobs(conn, oban_prefix, "d::1")] == ["executing", "available"]

    waiting_instance(conn, oban_prefix, "d::2")
    advance_args = {**GOLDEN_ADVANCE["args"], "instance_id": "d::2"}
    insert_all(
        conn,
        [Job.new("HephaestusOban.AdvanceWorker", advance_args, queue="hephaestus")],
        prefix=oban_prefix,
    )
    door(conn, oban_prefix, args_for("d::2"))
    assert [j["state"] for j in jobs(conn, oban_prefix, "d::2")] == ["available"]


def test_fail_instance_as_hephaestus_oban_does(
    conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    waiting_instance(conn, oban_prefix, "x::1")
    other = Job.new("interop.other", {"instance_id": "x::1"}, queue="python")
    own = Job.new("interop.render", {"instance_id": "x::1"}, queue="python")
    other_row, own_row = insert_all(conn, [other, own], prefix=oban_prefix)
    with conn.transaction():
        result = fail_elixir_instance(
            conn, oban_prefix, DelegationArgs.parse(args_for("x::1")), own_job=own_row.id or 0
        )
    assert result.verdict == "failed" and result.cancelled == (other_row.id,)
    status, state = q(
        conn, "SELECT status, state FROM {p}.workflow_instances WHERE id = 'x::1'", oban_prefix
    )[0]
    assert status == "failed" and state["current_step"] is None
    assert state["active_steps"] == [STEP]  # left as they were, as HephaestusOban's fail_workflow
    assert {j["id"]: j["state"] for j in jobs(conn, oban_prefix, "x::1")} == {
        other_row.id: "cancelled",
        own_row.id: "available",
    }


# -- the delegated worker on a real node ------------------------------------------------------


@delegated(worker="tests.delegation.Resolve", events=["resumed", "gave_up"])
def resolve(call: DelegatedCall) -> StepOk | StepError:
    mode = call.context.initial.get("mode")
    if mode == "undeclared":
        return StepOk("resumed", {"zz_python_only_key_q7": "value"})
    if mode == "fail":
        raise RuntimeError("the python step broke")
    return StepOk("resumed", {"external_ref": f"py-{call.context.initial['order_id']}"})


@pytest.fixture
def host(database_url: str, oban_prefix: str) -> Iterator[DelegationHost]:
    made = DelegationHost(database_url, [resolve], prefix=oban_prefix, settle_timeout=2.0)
    yield made
    made.close()


def delegated_job(
    conn: psycopg.Connection[Any], prefix: str, instance_id: str, **changes: Any
) -> int:
    job = Job.new(
        resolve.worker,
        args_for(instance_id, **changes),
        queue="python",
        max_attempts=1,
        meta=golden_meta(instance_id),
        tags=["async_fanout"],
    )
    job_id = insert_all(conn, [job], prefix=prefix)[0].id
    assert job_id is not None
    return job_id


async def test_worker_completes_rejects_and_fails(
    host: DelegationHost, conn: psycopg.Connection[Any], oban_prefix: str, database_url: str
) -> None:
    registry = Registry()
    host.register(registry)
    for name in ("ok", "undeclared", "fail", "fail_event"):
        waiting_instance(conn, oban_prefix, f"w::{name}")
    context = {"initial": {"order_id": 7, "mode": "undeclared"}, "steps": {}}
    ids = {
        "ok": delegated_job(conn, oban_prefix, "w::ok"),
        "undeclared": delegated_job(conn, oban_prefix, "w::undeclared", context=context),
        "fail": delegated_job(
            conn, oban_prefix, "w::fail", context={"initial": {"mode": "fail"}, "steps": {}}
        ),
        "fail_event": delegated_job(
            conn,
            oban_prefix,
            "w::fail_event",
            context={"initial": {"mode": "fail"}, "steps": {}},
            failure_event="gave_up",
        ),
    }
    async with running_node(database_url, oban_prefix, {"python": 4}, registry):
        rows = {
            name: await wait_for_state(
                database_url, oban_prefix, job_id, {"completed", "discarded"}
            )
            for name, job_id in ids.items()
        }
    assert rows["ok"]["state"] == "completed"
    assert results(conn, oban_prefix, "w::ok")[-1][1:3] == ("resumed", {"external_ref": "py-7"})

    assert rows["undeclared"]["state"] == "discarded"
    error = rows["undeclared"]["errors"][-1]["error"]
    assert "zz_python_only_key_q7" in error and "not declared" in error
    assert [r[1] for r in results(conn, oban_prefix, "w::undeclared")] == ["__async__"]
    status, state = q(
        conn,
        "SELECT status, state FROM {p}.workflow_instances WHERE id = 'w::undeclared'",
        oban_prefix,
    )[0]
    assert status == "failed" and "zz_python_only_key_q7" not in json.dumps(state)

    assert rows["fail"]["state"] == "discarded"
    assert "the python step broke" in rows["fail"]["errors"][-1]["error"]
    assert q(
        conn, "SELECT status FROM {p}.workflow_instances WHERE id = 'w::fail'", oban_prefix
    ) == [("failed",)]
    assert rows["fail_event"]["state"] == "discarded"
    assert results(conn, oban_prefix, "w::fail_event")[-1][1:3] == ("gave_up", {})
    assert q(
        conn, "SELECT status FROM {p}.workflow_instances WHERE id = 'w::fail_event'", oban_prefix
    ) == [("waiting",)]


async def test_worker_ignores_finished_instances_and_bad_args(
    host: DelegationHost, conn: psycopg.Connection[Any], oban_prefix: str, database_url: str
) -> None:
    registry = Registry()
    host.register(registry)
    waiting_instance(conn, oban_prefix, "i::done", status="completed")
    done = delegated_job(conn, oban_prefix, "i::done")
    bad = (
        insert_all(
            conn,
            [Job.new(resolve.worker, {"instance_id": "i::x"}, queue="python")],
            prefix=oban_prefix,
        )[0].id
        or 0
    )
    async with running_node(database_url, oban_prefix, {"python": 2}, registry):
        done_row = await wait_for_state(database_url, oban_prefix, done, {"completed", "discarded"})
        bad_row = await wait_for_state(database_url, oban_prefix, bad, {"completed", "discarded"})
    assert done_row["state"] == "completed"
    assert [r[1] for r in results(conn, oban_prefix, "i::done")] == ["__async__"]
    assert bad_row["state"] == "discarded" and "protocol" in bad_row["errors"][-1]["error"]


# -- Python workflow, Elixir step -------------------------------------------------------------


@step(name="Elixir.Py.Deleg.Prepare", events=["ready"])
def prepare(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ready", {"amount": context.initial["amount"]})


CHARGE = elixir_step(
    name="Elixir.Delegation.Steps.Charge",
    events=["charged", "declined"],
    context_keys=["receipt", "amount"],
    queue="elixir_steps",
    failure_event="declined",
)
PY_FLOW = Workflow(
    name="Elixir.Py.Deleg.Checkout",
    start=prepare,
    transitions=[
        (prepare, "ready", CHARGE),
        (CHARGE, "charged", DONE),
        (CHARGE, "declined", DONE),
    ],
    tags=["py"],
    atoms=["amount"],
)


async def test_elixir_step_job_is_written_with_its_async_result(
    conn: psycopg.Connection[Any], oban_prefix: str, database_url: str
) -> None:
    runner = WorkflowRunner(database_url, [PY_FLOW], prefix=oban_prefix, config_key="py")
    registry = Registry()
    register(registry, runner)
    try:
        runner.start(conn, PY_FLOW, {"amount": 42}, id="co::1")
        async with running_node(database_url, oban_prefix, {runner.queue: 4}, registry):
            for _ in range(200):
                status = q(
                    conn,
                    "SELECT status FROM {p}.workflow_instances WHERE id = 'co::1'",
                    oban_prefix,
                )
                if status == [("waiting",)]:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"never waiting: {status}")
    finally:
        runner.close()
    (remote,) = [
        j for j in jobs(conn, oban_prefix, "co::1") if j["worker"] == "ObanBridge.StepWorker"
    ]
    assert remote["queue"] == "elixir_steps" and remote["state"] == "available"
    assert remote["max_attempts"] == 5 and remote["tags"] == ["checkout", "py"]
    assert remote["meta"] == {
        "heph_workflow": "checkout",
        "instance_id": "co::1",
        "step": "charge",
        "workflow_version": 1,
    }
    args = remote["args"]
    assert DelegationArgs.parse(args).context.steps == {"prepare": {"amount": 42}}
    assert (args["advance_queue"], args["config_key"], args["failure_event"]) == (
        "bridge_workflows",
        "py",
        "declined",
    )
    assert (args["events"], args["context_keys"], args["context_key"]) == (
        ["charged", "declined"],
        ["amount", "receipt"],
        "charge",
    )
    async_rows = [r for r in results(conn, oban_prefix, "co::1") if r[0] == CHARGE.name]
    assert [(r[1], r[3]) for r in async_rows] == [("__async__", True)]


async def test_worker_retries_while_attempts_remain_and_snoozes_when_unsettled(
    conn: psycopg.Connection[Any], oban_prefix: str, database_url: str
) -> None:
    host = DelegationHost(database_url, [resolve], prefix=oban_prefix, settle_timeout=0.2)
    registry = Registry()
    host.register(registry)
    waiting_instance(conn, oban_prefix, "r::retry")
    waiting_instance(conn, oban_prefix, "r::busy", status="running")
    retry = Job.new(
        resolve.worker,
        args_for("r::retry", context={"initial": {"mode": "fail"}, "steps": {}}),
        queue="python",
        max_attempts=3,
    )
    busy = Job.new(resolve.worker, args_for("r::busy"), queue="python", max_attempts=3)
    retry_id, busy_id = (j.id or 0 for j in insert_all(conn, [retry, busy], prefix=oban_prefix))
    try:
        async with running_node(database_url, oban_prefix, {"python": 2}, registry):
            retried = await wait_for_state(database_url, oban_prefix, retry_id, {"retryable"})
            snoozed = await wait_for_state(database_url, oban_prefix, busy_id, {"scheduled"})
    finally:
        host.close()
    assert "the python step broke" in retried["errors"][-1]["error"]
    assert snoozed["attempt"] == 1 and snoozed["errors"] == []
    for instance_id, status in (("r::retry", "waiting"), ("r::busy", "running")):
        assert [r[1] for r in results(conn, oban_prefix, instance_id)] == ["__async__"]
        rows = q(
            conn,
            "SELECT status FROM {p}.workflow_instances WHERE id = %s",
            oban_prefix,
            instance_id,
        )
        assert rows == [(status,)]


def test_sweep_applies_the_policy_for_jobs_discarded_before_their_last_run(
    host: DelegationHost, conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    """As Oban's Lifeline discards an exhausted job whose node died: no policy ran."""
    for name in ("plain", "event", "newer", "done"):
        waiting_instance(
            conn, oban_prefix, f"s::{name}", status="completed" if name == "done" else "waiting"
        )
    changes: dict[str, dict[str, Any]] = {"event": {"failure_event": "gave_up"}}
    ids = {}
    for name in ("plain", "event", "newer", "done"):
        job_id = delegated_job(conn, oban_prefix, f"s::{name}", **changes.get(name, {}))
        q(conn, "UPDATE {p}.oban_jobs SET state = 'discarded' WHERE id = %s", oban_prefix, job_id)
        ids[name] = job_id
    delegated_job(conn, oban_prefix, "s::newer")  # a re-execution queued a fresh job
    assert sorted(sweep(host)) == sorted([ids["plain"], ids["event"]])
    status = dict(
        q(conn, "SELECT id, status FROM {p}.workflow_instances WHERE id LIKE 's::%%'", oban_prefix)
    )
    assert status == {
        "s::plain": "failed",
        "s::event": "waiting",
        "s::newer": "waiting",
        "s::done": "completed",
    }
    assert results(conn, oban_prefix, "s::event")[-1][1] == "gave_up"
    assert sweep(host) == []  # nothing left to do


CHARGE_STRICT = elixir_step(
    name="Elixir.Delegation.Steps.Charge", events=["charged"], queue="elixir_steps"
)
PY_STRICT = Workflow(
    name="Elixir.Py.Deleg.StrictCheckout",
    start=prepare,
    transitions=[(prepare, "ready", CHARGE_STRICT), (CHARGE_STRICT, "charged", DONE)],
    atoms=["amount"],
)


async def test_owner_sweeps_discarded_elixir_step_jobs(
    conn: psycopg.Connection[Any], oban_prefix: str, database_url: str
) -> None:
    """An Elixir StepWorker job discarded before its last run (its node died): the Python
    owner completes the step with its failure event, or fails the instance."""
    runner = WorkflowRunner(database_url, [PY_FLOW, PY_STRICT], prefix=oban_prefix, config_key="py")
    registry = Registry()
    register(registry, runner)
    try:
        runner.start(conn, PY_FLOW, {"amount": 1}, id="sw::event")
        runner.start(conn, PY_STRICT, {"amount": 1}, id="sw::plain")
        async with running_node(database_url, oban_prefix, {runner.queue: 4}, registry):
            for instance_id in ("sw::event", "sw::plain"):
                for _ in range(200):
                    found = q(
                        conn,
                        "SELECT status FROM {p}.workflow_instances WHERE id = %s",
                        oban_prefix,
                        instance_id,
                    )
                    if found == [("waiting",)]:
                        break
                    await asyncio.sleep(0.05)
            q(
                conn,
                "UPDATE {p}.oban_jobs SET state = 'discarded'"
                " WHERE worker = 'ObanBridge.StepWorker'",
                oban_prefix,
            )
            # Off the loop: the node shares it, and its acks must commit while the sweep waits.
            assert len(await asyncio.to_thread(sweep_elixir_steps, runner)) == 2
            for _ in range(200):
                found = q(
                    conn,
                    "SELECT id, status FROM {p}.workflow_instances WHERE id LIKE 'sw::%%'"
                    " ORDER BY id",
                    oban_prefix,
                )
                if found == [("sw::event", "completed"), ("sw::plain", "failed")]:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(found)
        assert sweep_elixir_steps(runner) == []
    finally:
        runner.close()
    declined = [r for r in results(conn, oban_prefix, "sw::event") if r[0] == CHARGE.name]
    assert [r[1] for r in declined] == ["__async__", "declined"]
