"""Definitions: Elixir-derived names (checked in a real BEAM) and Hephaestus's graph rules."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from bridge.workflows import (
    DONE,
    WAIT,
    WAIT_FOR_EVENT,
    BusinessKeyError,
    Context,
    ContextKeyCollisionError,
    CycleError,
    DefinitionError,
    DuplicateStepError,
    DuplicateTransitionError,
    FanOutConvergenceError,
    Instance,
    InvalidNameError,
    InvalidOptionError,
    NonTerminalLeafError,
    RetryConfig,
    Step,
    StepAsync,
    StepOk,
    UndeclaredEventError,
    UnhandledEventError,
    Unique,
    UnknownStepError,
    UnknownWorkflowError,
    UnreachableStepError,
    Workflow,
    execute_step,
    new_instance,
    registry,
    short_name,
    underscore,
    wait_delay_ms,
)
from bridge.workflows.model.definition import extract_business_value, lookup
from tests.support.beam import run_elixir
from tests.workflows import FAIL_LINEAR, ORDER, WORKFLOWS, charge, notify, reserve, validate

HAND_PICKED = [
    "AwaitShipment",
    "HTTPClient",
    "HTTP2Server",
    "V2Step",
    "Step1",
    "ABC",
    "A1B",
    "Ab2C",
    "Foo_Bar",
    "Foo__Bar",
    "SAPExample",
    "A",
    "a",
    "Done",
    "Foo.Bar",
    "Foo.",
    "FOO.BAR",
    "_Leading",
    "XMLHttpRequest",
    "PDF2HTML",
    "ÀBcDé",
]


def random_segments(count: int) -> list[str]:
    rng = random.Random(20261122)
    alphabet = "AAABBZaabz0129__"
    return [
        rng.choice("ABXZ") + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9)))
        for _ in range(count)
    ]


SAMPLES = HAND_PICKED + random_segments(400)
MODULES = [
    "Elixir.RealStack.Steps.AwaitShipment",
    "Elixir.Realstack.WF.FailLinear",
    "Elixir.Hephaestus.Steps.Done",
    "Elixir.RealStack.Flows.Order",
    "Elixir.A.HTTPClient",
]


@pytest.fixture(scope="module")
def beam_names() -> tuple[list[str], list[str]]:
    """``Macro.underscore`` of each sample and the last-segment rule on module atoms."""
    samples = ", ".join(f'"{s}"' for s in SAMPLES)
    modules = ", ".join(f'"{m}"' for m in MODULES)
    code = (
        f"for s <- [{samples}], do: IO.puts(Macro.underscore(s))\n"
        'IO.puts("--")\n'
        f"for m <- [{modules}] do\n"
        "  m |> String.to_atom() |> Module.split() |> List.last() |> Macro.underscore()\n"
        "  |> IO.puts()\n"
        "end"
    )
    lines = run_elixir(code).decode().split("\n")
    cut = lines.index("--")
    return lines[:cut], lines[cut + 1 : cut + 1 + len(MODULES)]


def test_underscore_matches_macro_underscore(beam_names: tuple[list[str], list[str]]) -> None:
    expected, _ = beam_names
    assert [underscore(s) for s in SAMPLES] == expected
    assert underscore("HTTPClient") == "http_client"


def test_short_names_match_the_elixir_rule(beam_names: tuple[list[str], list[str]]) -> None:
    _, expected = beam_names
    assert [short_name(m) for m in MODULES] == expected
    assert FAIL_LINEAR.short_name == "fail_linear"  # golden job meta heph_workflow
    assert ORDER.short_name == "order"


def test_context_key_is_step_key_else_short_name() -> None:
    assert ORDER.step("Elixir.RealStack.Steps.AwaitShipment").context_key == "await_shipment"
    keyed = Step(name="Elixir.A.Steps.ValidateOrder", events=("ok",), step_key="validate")
    assert keyed.context_key == "validate"
    assert keyed.short_name == "validate_order"  # job meta ignores step_key
    assert Step(name="Elixir.A.HTTPClient", events=("ok",)).context_key == "http_client"


def test_order_graph_has_hephaestus_predecessors() -> None:
    await_shipment = "Elixir.RealStack.Steps.AwaitShipment"
    assert ORDER.predecessors == {
        validate.name: frozenset(),
        charge.name: {validate.name},
        reserve.name: {validate.name},
        await_shipment: {charge.name, reserve.name},
        notify.name: {await_shipment},
        DONE.name: {notify.name},
    }
    assert ORDER.start_step == validate.name
    assert ORDER.start_config is None


# -- definition errors -----------------------------------------------------------------------


def mk(name: str, *events: str, key: str | None = None) -> Step:
    return Step(name=f"Elixir.T.Steps.{name}", events=events, step_key=key)


A = mk("A", "go")
B = mk("B", "go")
C = mk("C", "go")


def flow(start: Any, transitions: list[Any], **options: Any) -> Workflow:
    return Workflow(name="Elixir.T.Flow", start=start, transitions=transitions, **options)


def test_a_minimal_workflow_is_valid() -> None:
    assert flow(A, [(A, "go", DONE)]).predecessors == {A.name: frozenset(), DONE.name: {A.name}}


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: flow(A, [(A, "go", B), (B, "go", A)]), CycleError, "A -> .*B -> .*A"),
        (lambda: flow(A, [(A, "go", [B, DONE]), (B, "go", B)]), CycleError, "cycle"),
        (
            lambda: flow(A, [(A, "go", DONE), (B, "go", DONE)]),
            UnreachableStepError,
            "Elixir.T.Steps.B",
        ),
        (lambda: flow(A, [(A, "go", B)]), NonTerminalLeafError, "terminates at Elixir.T.Steps.B"),
        (lambda: flow(A, []), NonTerminalLeafError, "Elixir.T.Steps.A"),
        (
            lambda: flow(A, [(A, "go", [B, C]), (B, "go", DONE), (C, "go", DONE)]),
            FanOutConvergenceError,
            "must converge",
        ),
        (
            lambda: flow(mk("X", "go"), [(mk("X", "go"), "go", DONE)]),
            DuplicateStepError,
            "Elixir.T.Steps.X",
        ),
        (lambda: flow(A, [(A, "stop", DONE)]), UndeclaredEventError, "'stop'"),
        (
            lambda: flow(mk("Two", "go", "halt"), []),
            NonTerminalLeafError,
            "Two",
        ),
        (lambda: flow(A, [(A, "go", DONE), (A, "go", DONE)]), DuplicateTransitionError, "go"),
        (lambda: flow(A, [(A, "go", [])]), InvalidOptionError, "no targets"),
        (lambda: flow("Elixir.T.Steps.A", []), InvalidOptionError, "must be a Step"),
        (lambda: flow((A, [1]), [(A, "go", DONE)]), InvalidOptionError, "JSON object"),
        (lambda: flow((A, {1: 2}), [(A, "go", DONE)]), InvalidOptionError, "non-string key"),
        (lambda: flow(A, [(A, "go", DONE)], version=0), InvalidOptionError, "version"),
        (lambda: flow(A, [(A, "go", DONE)], version=True), InvalidOptionError, "version"),
        (lambda: flow(A, [(A, "go", DONE)], tags="x"), InvalidOptionError, "tags"),
        (lambda: flow(A, [(A, "go", DONE)], tags=[1]), InvalidOptionError, "tags"),
        (lambda: flow(A, [(A, "go", DONE)], tags=5), InvalidOptionError, "tags"),
        (lambda: flow(A, "nope"), InvalidOptionError, "transitions"),  # type: ignore[arg-type]
        (lambda: flow(A, [(A, "go")]), InvalidOptionError, "transition is"),
        (lambda: flow(A, [(A, 3, DONE)]), InvalidNameError, "event"),
        (lambda: flow(A, [(A, "go", DONE)], metadata={1: "x"}), InvalidOptionError, "key"),
        (lambda: flow(A, [(A, "go", DONE)], metadata={"x": {1}}), InvalidOptionError, "JSON"),
        (lambda: flow(A, [(A, "go", DONE)], unique="order"), InvalidOptionError, "Unique"),
        (lambda: flow(A, [(A, "go", DONE)], atoms=[""]), InvalidNameError, "atom"),
        (lambda: Workflow(name="Flow", start=A, transitions=[]), InvalidNameError, "Elixir"),
        (lambda: mk("lower_case", "go"), InvalidNameError, "Elixir.My.Module"),
        (lambda: Step(name="MyApp.Steps.A", events=("go",)), InvalidNameError, "Elixir"),
        (lambda: Step(name="Elixir.", events=("go",)), InvalidNameError, "Elixir"),
        (lambda: mk("Z", "__async__"), InvalidNameError, "reserved"),
        (lambda: mk("Z", ""), InvalidNameError, "event"),
        (lambda: mk("Z", "x" * 256), InvalidNameError, "255"),
        (lambda: Step(name="Elixir.T.Z", events="go"), InvalidOptionError, "list"),  # type: ignore[arg-type]
        (lambda: mk("Z", "go", key=""), InvalidNameError, "step_key"),
        (lambda: Step(name="Elixir.T.Z", events=(), run=3), InvalidOptionError, "callable"),  # type: ignore[arg-type]
        (lambda: RetryConfig(max_attempts=0), InvalidOptionError, "max_attempts"),
        (lambda: RetryConfig(backoff="random"), InvalidOptionError, "backoff"),  # type: ignore[arg-type]
        (lambda: Unique(key="Order"), InvalidOptionError, "a-z0-9"),
        (lambda: Unique(key="order", scope="world"), InvalidOptionError, "scope"),  # type: ignore[arg-type]
    ],
)
def test_definition_errors(build: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build()


def test_context_key_collisions_are_refused() -> None:
    one = mk("One", "go", key="same")
    two = mk("Two", "go", key="same")
    with pytest.raises(ContextKeyCollisionError, match="'same'"):
        flow(one, [(one, "go", two), (two, "go", DONE)])


def test_declared_events_need_a_transition() -> None:
    two = mk("Two", "go", "halt")
    with pytest.raises(UnhandledEventError, match="'halt'"):
        flow(two, [(two, "go", DONE)])


def test_fan_outs_that_converge_are_accepted() -> None:
    join = mk("Join", "go")
    wf = flow(A, [(A, "go", [B, C]), (B, "go", join), (C, "go", join), (join, "go", DONE)])
    assert wf.predecessors[join.name] == {B.name, C.name}


def test_every_definition_error_is_a_workflow_error() -> None:
    with pytest.raises(DefinitionError):
        flow(A, [(A, "go", B)])


# -- business keys, registry, retry ----------------------------------------------------------


def test_business_key_ids_follow_hephaestus_uniqueness() -> None:
    unique = Unique(key="order")
    assert unique.build_id("o1") == "order::o1"
    uuid = "8f698b46-b0fd-47be-a094-d0506da3805b"
    assert ORDER.build_id(uuid) == f"order::{uuid}"
    assert unique.build_id_with_suffix("o1", bytes([0, 171, 205, 255])) == "order::o1::00abcdff"
    assert extract_business_value("order::o1::00abcdff") == "o1"
    assert extract_business_value("order::o1") == "o1"
    # The golden instance "order::o-1" was started with an explicit id: the facade's
    # Uniqueness.validate_value! would refuse "o-1".
    for bad in ["o-1", "O1", uuid.upper(), "", "a::b"]:
        with pytest.raises(BusinessKeyError):
            unique.build_id(bad)
    with pytest.raises(BusinessKeyError):
        extract_business_value("no-separator")
    with pytest.raises(BusinessKeyError):
        flow(A, [(A, "go", DONE)]).build_id("x1")


def test_registry_and_lookup() -> None:
    assert lookup(WORKFLOWS, ORDER.name) is ORDER
    with pytest.raises(UnknownWorkflowError):
        lookup(WORKFLOWS, "Elixir.Nope")
    other = Workflow(name=ORDER.name, start=A, transitions=[(A, "go", DONE)])
    with pytest.raises(DuplicateStepError):
        registry(ORDER, other)
    with pytest.raises(UnknownStepError):
        ORDER.step("Elixir.Nope.Step")


def test_retry_config_resolution() -> None:
    slow = Step(name="Elixir.T.Steps.Slow", events=("go",), retry=RetryConfig(max_attempts=1))
    wf = flow(slow, [(slow, "go", A), (A, "go", DONE)], default_retry=RetryConfig(max_attempts=9))
    assert wf.retry_for(slow.name).max_attempts == 1
    assert wf.retry_for(A.name).max_attempts == 9
    assert ORDER.retry_for(validate.name) == RetryConfig(5, "exponential", 60_000)


# -- built-in steps --------------------------------------------------------------------------


def test_builtin_steps_behave_like_hephaestus_ones() -> None:
    assert (DONE.name, DONE.events) == ("Elixir.Hephaestus.Steps.Done", ("done",))
    assert (WAIT.name, WAIT.events) == ("Elixir.Hephaestus.Steps.Wait", ("timeout",))
    assert WAIT_FOR_EVENT.events == ("received",)
    assert WAIT_FOR_EVENT.name == "Elixir.Hephaestus.Steps.WaitForEvent"
    wf = flow(
        (WAIT, {"duration": 2, "unit": "minute"}),
        [(WAIT, "timeout", WAIT_FOR_EVENT), (WAIT_FOR_EVENT, "received", DONE)],
    )
    instance = new_instance(wf, {}, id="t::1")
    assert execute_step(wf, instance, WAIT.name) == StepAsync()
    assert execute_step(wf, instance, WAIT_FOR_EVENT.name) == StepAsync()
    assert execute_step(wf, instance, DONE.name) == StepOk("done")
    assert wf.start_config == {"duration": 2, "unit": "minute"}


@pytest.mark.parametrize(
    ("config", "ms"),
    [
        ({"duration": 3, "unit": "second"}, 3_000),
        ({"duration": 2, "unit": "minute"}, 120_000),
        ({"duration": 1, "unit": "hour"}, 3_600_000),
        ({"duration": 2, "unit": "day"}, 172_800_000),
    ],
)
def test_wait_delay(config: Mapping[str, Any], ms: int) -> None:
    assert wait_delay_ms(config) == ms


@pytest.mark.parametrize(
    "config",
    [
        None,
        {},
        {"duration": 1},
        {"duration": 1.5, "unit": "second"},
        {"duration": 1, "unit": "week"},
        {"duration": True, "unit": "second"},
    ],
)
def test_wait_delay_rejects_bad_config(config: Any) -> None:
    with pytest.raises(InvalidOptionError):
        wait_delay_ms(config)


def test_step_decorator_keeps_the_body() -> None:
    instance = Instance(id="order::1", workflow=ORDER.name)
    assert charge.run is not None
    assert charge.run(instance, None, Context()) == StepOk(
        "charged", {"amount": 42.5}, {"payment_ref": "pay_1"}
    )
