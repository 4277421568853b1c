"""The engine reproduces what the genuine Hephaestus engine + AdvanceWorker wrote."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.workflows import (
    ASYNC_EVENT,
    DONE,
    Context,
    Instance,
    InvalidStepResultError,
    Step,
    StepAsync,
    StepError,
    StepNotExecutableError,
    StepOk,
    StepOutcomeError,
    StepResult,
    Transition,
    TransitionError,
    Unique,
    UnknownStepError,
    Workflow,
    WorkflowMismatchError,
    activate_transitions,
    advance,
    apply_step_results,
    check_completion,
    complete_step,
    execute_step,
    fail_workflow,
    new_instance,
    prepare_step,
    resume_step,
    step_result,
    to_row,
    to_state,
)
from tests.workflows import (
    ASYNC_FANOUT,
    ORDER,
    SNAPSHOT_FILES,
    WORKFLOWS,
    async_wait,
    charge,
    golden_instance_rows,
    load_json,
    normal,
    notify,
    pass_,
    reserve,
    snapshot_instances,
    validate,
)

Config = Mapping[str, Any] | None


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def as_result(row: Mapping[str, Any]) -> StepResult:
    return StepResult(
        row["step_ref"], row["event"], row["context_updates"], row.get("metadata_updates")
    )


def advance_worker(workflow: Workflow, instance: Instance, rows: Sequence[Any]) -> Instance:
    """The pure part of one AdvanceWorker run with no discarded step job."""
    instance = apply_step_results(workflow, instance, [as_result(r) for r in rows])
    return advance(workflow, instance)


# -- the golden Order workflow ----------------------------------------------------------------

GOLDEN_ROW = load_json("elixir-workflow-instance.json")[0]
GOLDEN_RESULTS = load_json("elixir-step-results.json")


def start_order() -> Instance:
    instance = new_instance(ORDER, {"items": 3, "customer": "c-9"}, id="order::o-1")
    return advance(ORDER, instance)


def test_order_starts_like_the_first_advance_worker() -> None:
    instance = start_order()
    assert instance.status == "running"
    assert instance.current_step == validate.name
    assert instance.active_steps == {validate.name}
    assert instance.workflow_version == 1


def test_order_replayed_result_by_result_ends_as_the_golden_row() -> None:
    instance = start_order()
    for row in GOLDEN_RESULTS:
        assert row["step_ref"] in instance.active_steps
        is_resume = instance.status == "waiting" and row["event"] != ASYNC_EVENT
        if is_resume:
            assert instance.current_step == row["step_ref"]
        else:
            produced = step_result(row["step_ref"], execute_step(ORDER, instance, row["step_ref"]))
            assert produced == StepResult(
                row["step_ref"], row["event"], row["context_updates"], row["metadata_updates"]
            )
        instance = advance_worker(ORDER, instance, [row])

    final = to_row(instance, clock=lambda: datetime(2026, 11, 22, 16, 10, 19, 452_113))
    assert canonical(final.state) == canonical(GOLDEN_ROW["state"])
    assert (final.id, final.workflow, final.status, final.workflow_version) == (
        GOLDEN_ROW["id"],
        GOLDEN_ROW["workflow"],
        GOLDEN_ROW["status"],
        GOLDEN_ROW["workflow_version"],
    )
    # Timestamps differ (another run) but have the golden form: naive, whole seconds.
    whole_seconds = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
    for column in ("inserted_at", "updated_at"):
        assert whole_seconds.fullmatch(GOLDEN_ROW[column])
        assert whole_seconds.fullmatch(getattr(final, column).isoformat())


def test_order_replayed_in_the_golden_advance_batches_gives_the_same_row() -> None:
    # elixir-jobs.json: Reserve's AdvanceWorker also applied Charge's result (Charge's own
    # AdvanceWorker insert was deduplicated by Oban's uniqueness).
    batches = [[0], [1, 2], [3], [4], [5], [6]]
    instance = start_order()
    for batch in batches:
        instance = advance_worker(ORDER, instance, [GOLDEN_RESULTS[i] for i in batch])
    assert instance.status == "completed"
    assert canonical(to_state(instance)) == canonical(GOLDEN_ROW["state"])


def test_order_waits_on_the_async_step_and_resumes() -> None:
    instance = start_order()
    instance = advance_worker(ORDER, instance, GOLDEN_RESULTS[:4])
    assert instance.status == "waiting"
    assert instance.current_step == "Elixir.RealStack.Steps.AwaitShipment"
    assert instance.active_steps == {"Elixir.RealStack.Steps.AwaitShipment"}
    assert "await_shipment" not in instance.context.steps
    instance = advance_worker(ORDER, instance, GOLDEN_RESULTS[4:5])
    assert instance.status == "running"
    assert instance.current_step is None
    assert instance.active_steps == {notify.name}
    assert instance.context.steps["await_shipment"] == {}


# -- every snapshot of the second capture ----------------------------------------------------


@pytest.mark.parametrize("name", SNAPSHOT_FILES)
def test_snapshot_timelines_are_reproduced(name: str) -> None:
    """Each row change the genuine stack made, recomputed from the results it applied.

    Snapshots read the instance and its step results in separate statements, so a result can
    show up as processed one snapshot before the row it changed; it is applied at the next row
    change. A step job in ``discarded`` makes the AdvanceWorker fail the workflow instead of
    advancing it (``detect_discarded_steps``).
    """
    snaps = snapshot_instances(name)
    first = snaps[0]["instance"]
    workflow = WORKFLOWS[first["workflow"]]
    instance = new_instance(workflow, first["state"]["context"]["initial"], id=first["id"])
    assert (instance.status, canonical(to_state(instance))) == (
        "pending",
        canonical(first["state"]),
    )

    consumed: Counter[tuple[str, str, str]] = Counter()
    changes = 0
    for prev, nxt in pairwise(snaps):
        before, after = prev["instance"], nxt["instance"]
        if (before["status"], canonical(before["state"])) == (
            after["status"],
            canonical(after["state"]),
        ):
            continue
        seen: Counter[tuple[str, str, str]] = Counter()
        applied = []
        for row in nxt["step_results"]:
            key = (row["step_ref"], row["event"], canonical(row["context_updates"]))
            seen[key] += 1
            if row["processed"] and seen[key] > consumed[key]:
                applied.append(as_result(row))
                consumed[key] += 1
        instance = apply_step_results(workflow, instance, applied)
        discarded = any(
            job["worker"] == "HephaestusOban.ExecuteStepWorker" and job["state"] == "discarded"
            for job in nxt["jobs"]
        )
        instance = fail_workflow(instance) if discarded else advance(workflow, instance)
        assert instance.status == after["status"], nxt["at"]
        assert canonical(to_state(instance)) == canonical(after["state"]), nxt["at"]
        changes += 1

    last = snaps[-1]["step_results"]
    assert sum(consumed.values()) == sum(1 for row in last if row["processed"])
    assert changes >= 2


def test_final_rows_of_the_scenarios_are_reached() -> None:
    finals = {row["id"]: row for row in golden_instance_rows()}
    for name in SNAPSHOT_FILES:
        last = snapshot_instances(name)[-1]["instance"]
        if last["id"] in finals:
            assert canonical(last["state"]) == canonical(finals[last["id"]]["state"])


def test_async_result_then_sibling_result_reactivates_the_async_step() -> None:
    # golden s2b: the async step is still active after its sibling's result wakes the instance.
    instance = advance(ASYNC_FANOUT, new_instance(ASYNC_FANOUT, {"order_id": 1}, id="a::1"))
    instance = advance_worker(
        ASYNC_FANOUT,
        instance,
        [{"step_ref": pass_.name, "event": "done", "context_updates": {"pass": True}}],
    )
    instance = apply_step_results(
        ASYNC_FANOUT, instance, [StepResult(async_wait.name, ASYNC_EVENT)]
    )
    assert (instance.status, instance.current_step) == ("waiting", async_wait.name)
    instance = apply_step_results(
        ASYNC_FANOUT, instance, [StepResult(normal.name, "done", {"n": 1, "normal": "ok"})]
    )
    assert (instance.status, instance.current_step) == ("running", None)
    assert instance.active_steps == {async_wait.name}
    assert advance(ASYNC_FANOUT, instance) == instance


# -- engine functions one by one -------------------------------------------------------------


def test_advance_leaves_waiting_and_busy_instances_alone_and_completes_idle_ones() -> None:
    running = start_order()
    assert advance(ORDER, running) == running
    waiting = replace(running, status="waiting", active_steps=frozenset())
    assert advance(ORDER, waiting) == waiting
    idle = replace(running, active_steps=frozenset())
    assert advance(ORDER, idle) == replace(idle, status="completed", current_step=None)
    assert check_completion(waiting) == waiting


def test_complete_step_replaces_the_context_entry_and_merges_metadata() -> None:
    instance = replace(
        start_order(),
        context=Context({"items": 3}, {"charge": {"old": 1}}),
        runtime_metadata={"a": 1, "payment_ref": "old"},
        step_configs={charge.name: {"x": 1}, reserve.name: {"y": 2}},
        active_steps=frozenset({charge.name, reserve.name}),
    )
    done = complete_step(ORDER, instance, charge.name, "charged", {"amount": 1}, {"payment_ref": 2})
    assert done.context.steps == {"charge": {"amount": 1}}
    assert done.runtime_metadata == {"a": 1, "payment_ref": 2}
    assert done.step_configs == {reserve.name: {"y": 2}}
    assert done.active_steps == {reserve.name}
    assert done.completed_steps == {charge.name}
    assert instance.context.steps == {"charge": {"old": 1}}  # the input is untouched


def test_fan_in_waits_for_every_predecessor() -> None:
    instance = replace(start_order(), active_steps=frozenset({charge.name, reserve.name}))
    after_charge = activate_transitions(
        ORDER, complete_step(ORDER, instance, charge.name, "charged", {}), charge.name, "charged"
    )
    assert after_charge.active_steps == {reserve.name}
    after_both = activate_transitions(
        ORDER,
        complete_step(ORDER, after_charge, reserve.name, "reserved", {}),
        reserve.name,
        "reserved",
    )
    assert after_both.active_steps == {"Elixir.RealStack.Steps.AwaitShipment"}


def test_unknown_transition_activates_nothing() -> None:
    instance = start_order()
    assert activate_transitions(ORDER, instance, validate.name, "nope") == instance


def test_resume_step_only_acts_on_waiting_instances() -> None:
    running = replace(
        start_order(), active_steps=frozenset({"Elixir.RealStack.Steps.AwaitShipment"})
    )
    assert resume_step(ORDER, running, "Elixir.RealStack.Steps.AwaitShipment", "shipped") == running
    waiting = replace(
        running, status="waiting", current_step="Elixir.RealStack.Steps.AwaitShipment"
    )
    resumed = resume_step(ORDER, waiting, "Elixir.RealStack.Steps.AwaitShipment", "shipped")
    assert (resumed.status, resumed.current_step) == ("running", None)
    assert resumed.active_steps == {notify.name}


def test_fail_workflow_keeps_active_steps_like_the_golden_rows() -> None:
    failed = fail_workflow(start_order())
    assert (failed.status, failed.current_step) == ("failed", None)
    assert failed.active_steps == {validate.name}


def test_configured_targets_store_and_drop_their_config() -> None:
    first = Step(name="Elixir.Cfg.Steps.First", events=("go",), run=lambda i, c, x: StepOk("go"))
    seen: list[Config] = []

    def second_body(instance: Instance, config: Config, context: Context) -> StepOk:
        seen.append(config)
        return StepOk("done")

    second = Step(name="Elixir.Cfg.Steps.Second", events=("done",), run=second_body)
    flow = Workflow(
        name="Elixir.Cfg.Flow",
        start=(first, {"where": "start"}),
        transitions=[(first, "go", (second, {"limit": 3})), (second, "done", DONE)],
    )
    instance = advance(flow, new_instance(flow, {}, id="cfg::1"))
    assert instance.step_configs == {first.name: {"where": "start"}}
    instance = advance_worker(
        flow, instance, [{"step_ref": first.name, "event": "go", "context_updates": {}}]
    )
    assert instance.step_configs == {second.name: {"limit": 3}}
    execute_step(flow, instance, second.name)
    assert seen == [{"limit": 3}]
    assert to_state(instance)["step_configs"] == {second.name: {"limit": 3}}


def test_dynamic_transitions_choose_among_declared_targets() -> None:
    route = Step(
        name="Elixir.Dyn.Steps.Route", events=("routed",), run=lambda i, c, x: StepOk("routed")
    )
    left = Step(name="Elixir.Dyn.Steps.Left", events=("done",))
    right = Step(name="Elixir.Dyn.Steps.Right", events=("done",))
    stray = Step(name="Elixir.Dyn.Steps.Stray", events=("done",))

    def choose(context: Context) -> Any:
        return {"left": left, "right": right, "stray": stray, "none": None}[context.initial["to"]]

    flow = Workflow(
        name="Elixir.Dyn.Flow",
        start=route,
        transitions=[
            Transition(route, "routed", [left, right], choose=choose),
            (left, "done", DONE),
            (right, "done", DONE),
        ],
    )
    assert flow.predecessors[DONE.name] == {left.name, right.name}

    def routed(to: str) -> Instance:
        instance = advance(flow, new_instance(flow, {"to": to}, id="dyn::1"))
        return apply_step_results(flow, instance, [StepResult(route.name, "routed")])

    assert routed("right").active_steps == {right.name}
    assert routed("none").status == "completed"
    with pytest.raises(TransitionError, match="Stray"):
        routed("stray")


# -- step execution and results --------------------------------------------------------------


def test_step_outcomes_map_to_step_result_rows() -> None:
    assert step_result("Elixir.A.B", StepOk("go", {"a": 1}, {"m": 2})) == StepResult(
        "Elixir.A.B", "go", {"a": 1}, {"m": 2}
    )
    assert step_result("Elixir.A.B", StepAsync()) == StepResult("Elixir.A.B", ASYNC_EVENT, {}, {})
    assert step_result("Elixir.A.B", StepError("boom")) is None


def one_step_flow(body: Any, events: tuple[str, ...] = ("done",)) -> tuple[Workflow, Instance]:
    only = Step(name="Elixir.One.Steps.Only", events=events, run=body)
    flow = Workflow(
        name="Elixir.One.Flow",
        start=only,
        transitions=[(only, event, DONE) for event in events],
        unique=Unique(key="one"),
    )
    return flow, advance(flow, new_instance(flow, {"k": {"v": 1}}, id="one::1"))


@pytest.mark.parametrize(
    "returned",
    [
        StepOk("undeclared"),
        StepOk("done", {1: "x"}),  # type: ignore[dict-item]
        StepOk("done", {"x": {1, 2}}),
        StepOk("done", {}, {"m": object()}),
        StepOk("done", []),  # type: ignore[arg-type]
        ("ok", "done"),
        None,
    ],
)
def test_invalid_outcomes_are_refused(returned: Any) -> None:
    flow, instance = one_step_flow(lambda i, c, x: returned)
    with pytest.raises(StepOutcomeError):
        execute_step(flow, instance, "Elixir.One.Steps.Only")


def test_async_bodies_and_declared_only_steps_cannot_run_inline() -> None:
    async def body(instance: Instance, config: Config, context: Context) -> StepOk:
        return StepOk("done")

    flow, instance = one_step_flow(body)
    with pytest.raises(StepOutcomeError, match="asynchronous"):
        execute_step(flow, instance, "Elixir.One.Steps.Only")

    remote = Step(name="Elixir.Mirror.Steps.Remote", events=("done",))
    mirror = Workflow(name="Elixir.Mirror.Flow", start=remote, transitions=[(remote, "done", DONE)])
    mirrored = advance(mirror, new_instance(mirror, {}, id="m::1"))
    with pytest.raises(StepNotExecutableError):
        prepare_step(mirror, mirrored, remote.name)


def test_a_step_body_cannot_alter_the_instance() -> None:
    def meddle(instance: Instance, config: Config, context: Context) -> StepOk:
        context.initial["k"]["v"] = 99
        return StepOk("done")

    flow, instance = one_step_flow(meddle)
    execute_step(flow, instance, "Elixir.One.Steps.Only")
    assert instance.context.initial == {"k": {"v": 1}}


def test_bad_step_results_are_refused() -> None:
    instance = start_order()
    with pytest.raises(InvalidStepResultError, match="does not declare"):
        apply_step_results(ORDER, instance, [StepResult(validate.name, "shipped")])
    with pytest.raises(UnknownStepError):
        apply_step_results(ORDER, instance, [StepResult("Elixir.Nope.Step", "valid")])
    with pytest.raises(InvalidStepResultError):
        apply_step_results(
            ORDER, instance, [StepResult(validate.name, "valid", {"x": float("inf")})]
        )
    with pytest.raises(WorkflowMismatchError):
        advance(ASYNC_FANOUT, instance)
    assert apply_step_results(ORDER, instance, []) == instance


def test_new_instance_copies_and_checks_the_initial_context() -> None:
    initial = {"items": [1]}
    instance = new_instance(ORDER, initial, id="order::1")
    initial["items"].append(2)
    assert instance.context.initial == {"items": [1]}
    assert (instance.status, instance.workflow, instance.workflow_version) == (
        "pending",
        ORDER.name,
        1,
    )
    with pytest.raises(Exception, match="id"):
        new_instance(ORDER, {}, id="")


# -- properties ------------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> dict[int, list[int]]:
    """Successor lists of a random DAG over steps 0..n-1, every step reachable from 0."""
    size = draw(st.integers(1, 7))
    successors: dict[int, list[int]] = {i: [] for i in range(size)}
    for index in range(1, size):
        preds = draw(st.sets(st.integers(0, index - 1), min_size=1, max_size=min(3, index)))
        for pred in sorted(preds):
            successors[pred].append(index)
    return successors


def dag_workflow(successors: dict[int, list[int]]) -> Workflow:
    def body(index: int) -> Any:
        return lambda instance, config, context: StepOk("ok", {"i": index})

    steps = {
        i: Step(name=f"Elixir.Prop.Steps.S{i}", events=("ok",), run=body(i)) for i in successors
    }
    final = Step(name="Elixir.Prop.Steps.Final", events=("ok",), run=body(-1))
    transitions = [
        (steps[i], "ok", [steps[j] for j in succ] if succ else final)
        for i, succ in successors.items()
    ]
    return Workflow(
        name="Elixir.Prop.Flow",
        start=steps[0],
        transitions=[*transitions, (final, "ok", DONE)],
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(successors=dags(), data=st.data())
def test_every_step_runs_once_whatever_the_interleaving(
    successors: dict[int, list[int]], data: st.DataObject
) -> None:
    flow = dag_workflow(successors)
    instance = advance(flow, new_instance(flow, {}, id="prop::1"))
    executed: list[str] = []
    produced: list[StepResult] = []
    pending: list[StepResult] = []
    activations: Counter[str] = Counter(instance.active_steps)
    for _ in range(200):
        if instance.status == "completed":
            break
        runnable = sorted(instance.active_steps - set(executed))
        if runnable and (not pending or data.draw(st.booleans())):
            name = data.draw(st.sampled_from(runnable))
            assert flow.predecessors[name] <= instance.completed_steps
            executed.append(name)
            result = step_result(name, execute_step(flow, instance, name))
            assert result is not None
            produced.append(result)
            pending.append(result)
        else:
            cut = data.draw(st.integers(1, len(pending)))
            before = instance.active_steps
            instance = advance(flow, apply_step_results(flow, instance, pending[:cut]))
            del pending[:cut]
            activations.update(instance.active_steps - before)

    assert instance.status == "completed"
    assert sorted(executed) == sorted(flow.steps)
    assert set(activations.values()) == {1}
    # Batching is invisible: one advance per result gives the same row.
    sequential = advance(flow, new_instance(flow, {}, id="prop::1"))
    for result in produced:
        sequential = advance(flow, apply_step_results(flow, sequential, [result]))
    assert canonical(to_state(sequential)) == canonical(to_state(instance))
