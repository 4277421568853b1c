"""Python definitions of the workflows the genuine Elixir stack ran for the golden data.

``ORDER`` is ``RealStack.Flows.Order`` from ``golden/README.md``; the ``Realstack.WF.*`` ones are
the second capture's scenarios (``failing-step/``, ``async-step-in-fanout/``,
``external-step-completion/``, ``runner-config-key/``). Step bodies return what the Elixir steps
returned, as recorded in the step-result rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.workflows import (
    DONE,
    Context,
    Instance,
    StepAsync,
    StepError,
    StepOk,
    Unique,
    Workflow,
    registry,
    step,
)

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden" / "workflows"

Config = Mapping[str, Any] | None


def load_json(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def load_jsonl(name: str) -> list[Any]:
    lines = (GOLDEN / name).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# -- RealStack.Flows.Order --------------------------------------------------------------------


@step(name="Elixir.RealStack.Steps.Validate", events=["valid"])
def validate(instance: Instance, config: Config, context: Context) -> StepOk:
    return StepOk("valid", {"items": context.initial["items"], "checked": True})


@step(name="Elixir.RealStack.Steps.Charge", events=["charged"])
def charge(instance: Instance, config: Config, context: Context) -> StepOk:
    return StepOk("charged", {"amount": 42.5}, {"payment_ref": "pay_1"})


@step(name="Elixir.RealStack.Steps.Reserve", events=["reserved"])
def reserve(instance: Instance, config: Config, context: Context) -> StepOk:
    return StepOk("reserved", {"sku": "A-1", "qty": 2})


@step(name="Elixir.RealStack.Steps.AwaitShipment", events=["shipped"])
def await_shipment(instance: Instance, config: Config, context: Context) -> StepAsync:
    return StepAsync()


@step(name="Elixir.RealStack.Steps.Notify", events=["notified"])
def notify(instance: Instance, config: Config, context: Context) -> StepOk:
    return StepOk("notified")


ORDER = Workflow(
    name="Elixir.RealStack.Flows.Order",
    unique=Unique(key="order"),
    start=validate,
    transitions=[
        (validate, "valid", [charge, reserve]),
        (charge, "charged", await_shipment),
        (reserve, "reserved", await_shipment),
        (await_shipment, "shipped", notify),
        (notify, "notified", DONE),
    ],
    atoms=["items", "customer", "checked", "amount", "sku", "qty"],
)


# -- Realstack.WF.* ---------------------------------------------------------------------------


@step(name="Elixir.Realstack.Steps.Pass", events=["done"])
def pass_(instance: Instance, config: Config, context: Context) -> StepOk:
    return StepOk("done", {"pass": True})


@step(name="Elixir.Realstack.Steps.Normal", events=["done"])
def normal(instance: Instance, config: Config, context: Context) -> StepOk:
    return StepOk("done", {"n": 1, "normal": "ok"})


@step(name="Elixir.Realstack.Steps.NormalSlow", events=["done"])
def normal_slow(instance: Instance, config: Config, context: Context) -> StepOk:
    return StepOk("done", {"normal_slow": "ok"})


@step(name="Elixir.Realstack.Steps.Slow", events=["done"])
def slow(instance: Instance, config: Config, context: Context) -> StepOk:
    return StepOk("done", {"slow": True})


@step(name="Elixir.Realstack.Steps.AsyncWait", events=["resumed"])
def async_wait(instance: Instance, config: Config, context: Context) -> StepAsync:
    return StepAsync()


@step(name="Elixir.Realstack.Steps.AsyncWaitSlow", events=["resumed"])
def async_wait_slow(instance: Instance, config: Config, context: Context) -> StepAsync:
    return StepAsync()


@step(name="Elixir.Realstack.Steps.Boom", events=["done"])
def boom(instance: Instance, config: Config, context: Context) -> StepError:
    return StepError("boom")


@step(name="Elixir.Realstack.Steps.Join", events=["done"])
def join(instance: Instance, config: Config, context: Context) -> StepOk:
    return StepOk("done", {"joined": True, "seen_steps": sorted(context.steps)})


SCENARIO_ATOMS = ["order_id", "input", "pass", "n", "normal", "normal_slow", "slow", "joined"]
# Keys that existed as atoms in the genuine VM when s3a ran (s3b's extra key did not).
EXTERNAL_ATOMS = ["seen_steps", "source", "nested_info", "items", "amount_cents", "external_ref"]


def _fanout(name: str, key: str, branches: list[Any]) -> Workflow:
    return Workflow(
        name=name,
        unique=Unique(key=key),
        start=pass_,
        transitions=[
            (pass_, "done", branches),
            *[(branch, branch.events[0], join) for branch in branches],
            (join, "done", DONE),
        ],
        atoms=[*SCENARIO_ATOMS, *EXTERNAL_ATOMS],
    )


ASYNC_FANOUT = _fanout("Elixir.Realstack.WF.AsyncFanout", "asyncfanout", [async_wait, normal])
ASYNC_FIRST = _fanout("Elixir.Realstack.WF.AsyncFirst", "asyncfirst", [async_wait, normal_slow])
NORMAL_FIRST = _fanout("Elixir.Realstack.WF.NormalFirst", "normalfirst", [async_wait_slow, normal])
FAIL_FANOUT = _fanout("Elixir.Realstack.WF.FailFanout", "failfanout", [boom, slow])
FAIL_LINEAR = Workflow(
    name="Elixir.Realstack.WF.FailLinear",
    unique=Unique(key="faillinear"),
    start=boom,
    transitions=[(boom, "done", DONE)],
    atoms=SCENARIO_ATOMS,
)

WORKFLOWS = registry(ORDER, ASYNC_FANOUT, ASYNC_FIRST, NORMAL_FIRST, FAIL_FANOUT, FAIL_LINEAR)

SCENARIO_INSTANCE_FILES = [
    "failing-step/s1_workflow_instances.jsonl",
    "async-step-in-fanout/s2_workflow_instances.jsonl",
    "async-step-in-fanout/s2b_workflow_instances.jsonl",
    "async-step-in-fanout/s2c_workflow_instances.jsonl",
    "async-step-in-fanout/s2d_workflow_instances.jsonl",
    "external-step-completion/s3_workflow_instances.jsonl",
    "runner-config-key/s0_workflow_instances.jsonl",
]

SNAPSHOT_FILES = [
    "failing-step/s1a_snapshots.jsonl",
    "failing-step/s1b_snapshots.jsonl",
    "async-step-in-fanout/s2_snapshots.jsonl",
    "async-step-in-fanout/s2b_snapshots.jsonl",
    "async-step-in-fanout/s2c_snapshots.jsonl",
    "async-step-in-fanout/s2d_snapshots.jsonl",
    "external-step-completion/s3a_snapshots.jsonl",
    "external-step-completion/s3b_snapshots.jsonl",
]


def golden_instance_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = list(load_json("elixir-workflow-instance.json"))
    for name in SCENARIO_INSTANCE_FILES:
        rows.extend(load_jsonl(name))
    return rows


def snapshot_instances(name: str) -> list[dict[str, Any]]:
    return [snap for snap in load_jsonl(name) if snap.get("instance")]
