"""Instances load from and re-serialise to exactly what HephaestusEcto wrote (golden rows)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.workflows import (
    ExecutionEntry,
    Instance,
    KnownNames,
    MalformedStateError,
    UnknownContextKeyError,
    UnknownStepError,
    UnknownWorkflowError,
    UnloadableStateError,
    engine_context_keys,
    ensure_loadable,
    from_row,
    from_state,
    to_row,
    to_state,
    unloadable_names,
    unloadable_update,
)
from bridge.workflows.model.serializer import format_entry_timestamp, parse_entry_timestamp
from tests.support.beam import run_elixir
from tests.workflows import (
    ASYNC_FANOUT,
    ORDER,
    SNAPSHOT_FILES,
    WORKFLOWS,
    golden_instance_rows,
    load_jsonl,
    snapshot_instances,
)


def canonical(value: Any) -> str:
    """Distinguishes 1 / 1.0 / true and list order, unlike ``==``."""
    return json.dumps(value, sort_keys=True)


def golden_states() -> list[dict[str, Any]]:
    rows = golden_instance_rows()
    for name in SNAPSHOT_FILES:
        rows.extend(snap["instance"] for snap in snapshot_instances(name))
    return rows


@pytest.mark.parametrize("row", golden_instance_rows(), ids=lambda r: r["id"])
def test_golden_rows_round_trip_exactly(row: dict[str, Any]) -> None:
    instance = from_row(row, WORKFLOWS)
    moment = datetime.fromisoformat(row["updated_at"])
    out = to_row(instance, clock=lambda: moment)

    assert canonical(out.state) == canonical(row["state"])
    assert list(out.state) == list(to_state(instance))
    assert (out.id, out.workflow, out.status, out.workflow_version) == (
        row["id"],
        row["workflow"],
        row["status"],
        row["workflow_version"],
    )
    assert out.updated_at.isoformat() == row["updated_at"]


def test_every_snapshot_state_round_trips() -> None:
    states = golden_states()
    assert len(states) > 100
    for row in states:
        assert canonical(to_state(from_row(row, WORKFLOWS))) == canonical(row["state"]), row


def test_loaded_instance_holds_python_values() -> None:
    row = golden_instance_rows()[0]
    instance = from_row(row, WORKFLOWS)
    assert instance.status == "completed"
    assert instance.current_step is None
    assert instance.context.initial == {"items": 3, "customer": "c-9"}
    assert instance.context.steps["charge"] == {"amount": 42.5}
    assert isinstance(instance.context.steps["charge"]["amount"], float)
    assert instance.completed_steps == frozenset(ORDER.steps)
    assert instance.runtime_metadata == {"payment_ref": "pay_1"}


def test_step_sets_are_written_sorted_bytewise() -> None:
    instance = Instance(
        id="order::x",
        workflow=ORDER.name,
        active_steps=frozenset(ORDER.steps),
        completed_steps=frozenset(["Elixir.RealStack.Steps.Reserve"]),
    )
    state = to_state(instance)
    assert state["active_steps"] == [
        "Elixir.Hephaestus.Steps.Done",
        "Elixir.RealStack.Steps.AwaitShipment",
        "Elixir.RealStack.Steps.Charge",
        "Elixir.RealStack.Steps.Notify",
        "Elixir.RealStack.Steps.Reserve",
        "Elixir.RealStack.Steps.Validate",
    ]
    assert state["completed_steps"] == ["Elixir.RealStack.Steps.Reserve"]


def test_row_timestamps_are_whole_seconds_like_ecto_naive_datetime() -> None:
    instance = Instance(id="order::x", workflow=ORDER.name)
    row = to_row(instance, clock=lambda: datetime(2026, 11, 22, 16, 10, 14, 999_999))
    assert row.inserted_at == row.updated_at == datetime(2026, 11, 22, 16, 10, 14)
    assert row.inserted_at.tzinfo is None
    aware = to_row(instance, clock=lambda: datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=UTC))
    assert aware.updated_at == datetime(2026, 1, 1, 12, 0, 0)


def test_missing_state_keys_take_elixir_defaults() -> None:
    instance = from_state("order::x", ORDER.name, "pending", 1, {}, WORKFLOWS)
    assert canonical(to_state(instance)) == canonical(
        {
            "current_step": None,
            "context": {"initial": {}, "steps": {}},
            "step_configs": {},
            "active_steps": [],
            "completed_steps": [],
            "execution_history": [],
            "runtime_metadata": {},
        }
    )


HISTORY_TIMES = [
    "2026-11-22T16:10:15.030468Z",
    "2026-11-22T16:10:15Z",
    "2026-11-22T16:10:15.5Z",
    "2026-11-22T16:10:15.120Z",
    "2026-11-22T16:10:15.000001+00:00",
    "2026-11-22T16:10:15.1234567Z",
    "2026-11-22 16:10:15,25+0000",
    "2026-11-22T16:10:15-00",
    "2024-02-29T23:59:59.999999-0000",
    "2024-02-29T23:59:59.999999-00:00",
    "2026-11-22T16:10:15+01:00",
    "2026-11-22T16:10:15z",
    "2026-11-22T16:10:15.Z",
    "2026-11-22T16:10:15+000",
    "2026-02-30T16:10:15Z",
    "2026-11-22T24:00:00Z",
    "20261122T161015Z",
]


@pytest.fixture(scope="module")
def elixir_iso8601() -> list[str]:
    """``DateTime.to_iso8601`` of what ``from_iso8601`` gives with offset 0 (else ``error``),
    the only case in which HephaestusEcto's history loader does not crash."""
    items = ", ".join(f'"{t}"' for t in HISTORY_TIMES)
    code = (
        f"for t <- [{items}] do\n"
        "  case DateTime.from_iso8601(t) do\n"
        "    {:ok, dt, 0} -> IO.puts(DateTime.to_iso8601(dt))\n"
        '    _ -> IO.puts("error")\n'
        "  end\n"
        "end"
    )
    return run_elixir(code).decode().split()


def test_history_timestamps_parse_and_print_as_elixir_datetime(elixir_iso8601: list[str]) -> None:
    ours = []
    for text in HISTORY_TIMES:
        try:
            moment, precision = parse_entry_timestamp(text)
        except MalformedStateError:
            ours.append("error")
        else:
            ours.append(format_entry_timestamp(moment, precision))
    assert ours == elixir_iso8601
    assert "error" in ours


def test_history_entries_load_and_re_serialise() -> None:
    entry = {
        "step_ref": "Elixir.RealStack.Steps.Charge",
        "event": "charged",
        "timestamp": "2026-11-22T16:10:15.5Z",
        "context_updates": {"amount": 42.5},
    }
    bare = {**entry, "context_updates": None, "timestamp": "2026-11-22T16:10:15Z"}
    state = {"execution_history": [entry, bare]}
    instance = from_state("order::x", ORDER.name, "running", 1, state, WORKFLOWS)
    first = instance.execution_history[0]
    assert first == ExecutionEntry(
        "Elixir.RealStack.Steps.Charge",
        "charged",
        datetime(2026, 11, 22, 16, 10, 15, 500_000, tzinfo=UTC),
        {"amount": 42.5},
        precision=1,
    )
    assert to_state(instance)["execution_history"] == [entry, bare]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"workflow": "Elixir.Nope.Flow"}, UnknownWorkflowError),
        ({"workflow": 7}, UnknownWorkflowError),
        ({"status": "cancelled"}, MalformedStateError),
        ({"workflow_version": 0}, MalformedStateError),
        ({"workflow_version": "1"}, MalformedStateError),
        ({"id": None}, MalformedStateError),
        ({"state": []}, MalformedStateError),
        ({"state": {"current_step": "Elixir.RealStack.Steps.Nope"}}, UnknownStepError),
        ({"state": {"active_steps": ["Elixir.Realstack.Steps.Pass"]}}, UnknownStepError),
        ({"state": {"active_steps": "Elixir.RealStack.Steps.Charge"}}, MalformedStateError),
        ({"state": {"completed_steps": [1]}}, MalformedStateError),
        ({"state": {"step_configs": {"Elixir.X.Y": {}}}}, UnknownStepError),
        ({"state": {"step_configs": {"Elixir.RealStack.Steps.Charge": 3}}}, MalformedStateError),
        ({"state": {"context": {"initial": {}}}}, MalformedStateError),
        ({"state": {"context": {"initial": [], "steps": {}}}}, MalformedStateError),
        ({"state": {"context": {"initial": {}, "steps": {"charge": 1}}}}, MalformedStateError),
        ({"state": {"context": {"initial": {}, "steps": {"nope": {}}}}}, UnknownContextKeyError),
        ({"state": {"runtime_metadata": [1]}}, MalformedStateError),
        ({"state": {"execution_history": {}}}, MalformedStateError),
        ({"state": {"execution_history": [{"event": "x"}]}}, MalformedStateError),
        (
            {
                "state": {
                    "execution_history": [
                        {
                            "step_ref": "Elixir.RealStack.Steps.Charge",
                            "event": "charged",
                            "timestamp": "2026-11-22T16:10:15+01:00",
                        }
                    ]
                }
            },
            MalformedStateError,
        ),
        (
            {"state": {"context": {"initial": {"x": float("nan")}, "steps": {}}}},
            MalformedStateError,
        ),
    ],
)
def test_bad_rows_raise_specific_errors(change: dict[str, Any], error: type[Exception]) -> None:
    row = {**golden_instance_rows()[0], **change}
    with pytest.raises(error):
        from_row(row, WORKFLOWS)


def test_row_without_columns_is_refused() -> None:
    with pytest.raises(MalformedStateError, match="workflow_version"):
        from_row({"id": "x", "workflow": ORDER.name, "status": "pending", "state": {}}, WORKFLOWS)


def test_deeply_nested_context_is_handled_without_recursion() -> None:
    deep: Any = 1
    for _ in range(50_000):
        deep = {"k": [deep]}
    state = {"context": {"initial": {"deep": deep}, "steps": {}}}
    instance = from_state("order::x", ORDER.name, "pending", 1, state, WORKFLOWS)
    known = KnownNames.for_workflow(ORDER)
    problems = unloadable_names(to_state(instance), known)
    assert {p.name for p in problems} == {"deep", "k"}
    assert len(problems) == 100  # reports are capped, not one per level


# -- what the Elixir side can load ------------------------------------------------------------


def external_rows() -> dict[str, dict[str, Any]]:
    return {
        row["id"]: row for row in load_jsonl("external-step-completion/s3_workflow_instances.jsonl")
    }


def test_validator_accepts_the_row_elixir_loaded() -> None:
    """On the node whose engine completed its steps (which made their context keys)."""
    row = external_rows()["asyncfanout::s3a"]
    known = KnownNames.for_workflow(ASYNC_FANOUT).with_atoms(engine_context_keys(ASYNC_FANOUT))
    assert (
        unloadable_names(row["state"], known, workflow=row["workflow"], status=row["status"]) == []
    )


def test_step_context_keys_are_not_known_names() -> None:
    """The same row on a node that just booted: its step context keys are no literal of the
    Elixir code (Hephaestus makes them only on completing the step), so they are not counted."""
    row = external_rows()["asyncfanout::s3a"]
    known = KnownNames.for_workflow(ASYNC_FANOUT)
    problems = unloadable_names(row["state"], known, workflow=row["workflow"], status=row["status"])
    undeclared = set(row["state"]["context"]["steps"]) - known.atoms  # "done" is also an event
    assert {"async_wait", "join"} <= undeclared
    assert {p.path for p in problems} == {f"state.context.steps.{k}" for k in undeclared}
    assert all("does not declare" in p.reason for p in problems)
    assert engine_context_keys(ASYNC_FANOUT) >= undeclared


def test_validator_names_the_key_that_broke_s3b() -> None:
    row = external_rows()["asyncfanout::s3b"]
    known = KnownNames.for_workflow(ASYNC_FANOUT).with_atoms(engine_context_keys(ASYNC_FANOUT))
    problems = unloadable_names(row["state"], known, workflow=row["workflow"], status=row["status"])
    assert [(p.path, p.name) for p in problems] == [
        ("state.context.steps.async_wait.zz_python_only_key_q7", "zz_python_only_key_q7")
    ]
    with pytest.raises(UnloadableStateError, match="zz_python_only_key_q7"):
        ensure_loadable(problems)


def test_validator_checks_a_step_result_before_it_is_written() -> None:
    known = KnownNames.for_workflow(ASYNC_FANOUT)
    results = {
        r["context_updates"].get("external_ref"): r
        for r in load_jsonl("external-step-completion/s3_hephaestus_step_results.jsonl")
        if r["event"] == "resumed"
    }
    good = results["py-123"]
    bad = results["py-456"]
    step_ref = good["step_ref"]
    assert (
        unloadable_update(ASYNC_FANOUT, step_ref, "resumed", good["context_updates"], known) == []
    )
    problems = unloadable_update(ASYNC_FANOUT, step_ref, "resumed", bad["context_updates"], known)
    assert [p.path for p in problems] == ["state.context.steps.async_wait.zz_python_only_key_q7"]
    unknown_event = unloadable_update(ASYNC_FANOUT, step_ref, "shipped", {}, known)
    assert [p.path for p in unknown_event] == ["event"]


def test_validator_covers_every_converted_name() -> None:
    known = KnownNames.for_workflow(ORDER)
    state = {
        "current_step": "Elixir.Other.Step",
        "active_steps": ["Elixir.RealStack.Steps.Charge", "Elixir.Other.A"],
        "completed_steps": ["Elixir.Other.B"],
        "step_configs": {"Elixir.Other.C": {"not_checked": 1}},
        "context": {
            "initial": {"items": [{"inner": 1}], "x" * 256: 0},
            "steps": {"charge": {"amount": 1}, "mystery": {}},
        },
        "execution_history": [
            {"step_ref": "Elixir.Other.D", "event": "zap", "context_updates": {"q": 1}}
        ],
        "runtime_metadata": {"anything_goes": 1},
    }
    problems = unloadable_names(state, known, workflow="Elixir.Other.Flow", status="paused")
    paths = sorted(p.path for p in problems)
    assert paths == sorted(
        [
            "workflow",
            "status",
            "state.current_step",
            "state.active_steps[1]",
            "state.completed_steps[0]",
            "state.step_configs.Elixir.Other.C",
            "state.context.initial.items[0].inner",
            "state.context.initial." + "x" * 256,
            "state.context.steps.charge",
            "state.context.steps.mystery",
            "state.execution_history[0].step_ref",
            "state.execution_history[0].event",
            "state.execution_history[0].context_updates.q",
        ]
    )
    too_long = next(p for p in problems if p.name == "x" * 256)
    assert re.search("255", too_long.reason)
