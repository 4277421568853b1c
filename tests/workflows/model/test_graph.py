"""``bridge.workflows.model.graph``: the Mermaid and DOT text of a workflow, byte for byte, and
the rules that mark an instance's steps. Pure: no database."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.workflows import DONE, WAIT, WAIT_FOR_EVENT, Step, StepOk, Transition, Workflow
from bridge.workflows.model.graph import (
    StepJob,
    StepMark,
    dot_text,
    mermaid_text,
    result_events,
    step_marks,
    to_dot,
    to_mermaid,
)
from tests.workflows import ASYNC_FANOUT, ORDER

# An event is any atom text: quotes, |, #, markup, a backslash, a backtick, a newline.
ODD = 'ok "a|b" <#1>\\ & `x`\nnext'


def _ok(event: str) -> Any:
    return lambda instance, config, context: StepOk(event)


SUBMIT = Step(name="Elixir.Review.Steps.Submit", events=["submitted"], run=_ok("submitted"))
CHECK_A = Step(name="Elixir.Review.A.Check", events=[ODD], run=_ok(ODD))
CHECK_B = Step(name="Elixir.Review.B.Check", events=["ok"], run=_ok("ok"), step_key="check_b")
MERGE = Step(name="Elixir.Review.Steps.Merge", events=["merged"], run=_ok("merged"))
ROUTE = Step(name="Elixir.Review.Steps.Route", events=["route"])  # declared only: Elixir's

# Fan-out and join (two steps sharing a last segment), a timed Wait with its config, a dynamic
# transition, WaitForEvent, an Elixir-run step.
REVIEW = Workflow(
    name="Elixir.Review.Flows.Review",
    start=SUBMIT,
    transitions=[
        (SUBMIT, "submitted", [CHECK_A, CHECK_B]),
        (CHECK_A, ODD, MERGE),
        (CHECK_B, "ok", MERGE),
        (MERGE, "merged", (WAIT, {"duration": 2, "unit": "minute"})),
        (WAIT, "timeout", ROUTE),
        Transition(ROUTE, "route", [WAIT_FOR_EVENT, DONE], choose=lambda context: DONE),
        (WAIT_FOR_EVENT, "received", DONE),
    ],
)

ORDER_MERMAID = """\
---
title: "Elixir.RealStack.Flows.Order (version 1)"
---
flowchart TD
    s0["Validate"]
    s1["Charge"]
    s2["Reserve"]
    s3["AwaitShipment"]
    s4["Notify"]
    s5(("Done"))
    s0 -->|"valid"| s1
    s0 -->|"valid"| s2
    s1 -->|"charged"| s3
    s2 -->|"reserved"| s3
    s3 -->|"shipped"| s4
    s4 -->|"notified"| s5
"""

ORDER_DOT = """\
digraph "Elixir.RealStack.Flows.Order" {
  label="Elixir.RealStack.Flows.Order (version 1)";
  labelloc=t;
  fontname="Helvetica";
  rankdir=TB;
  node [fontname="Helvetica"];
  edge [fontname="Helvetica"];
  s0 [label="Validate", shape=box, style="rounded"];
  s1 [label="Charge", shape=box, style="rounded"];
  s2 [label="Reserve", shape=box, style="rounded"];
  s3 [label="AwaitShipment", shape=box, style="rounded"];
  s4 [label="Notify", shape=box, style="rounded"];
  s5 [label="Done", shape=doublecircle];
  s0 -> s1 [label="valid"];
  s0 -> s2 [label="valid"];
  s1 -> s3 [label="charged"];
  s2 -> s3 [label="reserved"];
  s3 -> s4 [label="shipped"];
  s4 -> s5 [label="notified"];
}
"""

REVIEW_MERMAID = """\
---
title: "Elixir.Review.Flows.Review (version 1)"
---
flowchart TD
    s0["Submit"]
    s1["Review.A.Check"]
    s2["Review.B.Check"]
    s3["Merge"]
    s4{{"Wait<br>for 2 minute"}}
    s5["Route<br>runs in Elixir"]
    s6{{"WaitForEvent<br>for an event"}}
    s7(("Done"))
    s0 -->|"submitted"| s1
    s0 -->|"submitted"| s2
    s1 -->|"ok #quot;a#124;b#quot; #lt;#35;1#gt;#92; #amp; #96;x#96;#10;next"| s3
    s2 -->|"ok"| s3
    s3 -->|"merged"| s4
    s4 -->|"timeout"| s5
    s5 -.->|"route"| s6
    s5 -.->|"route"| s7
    s6 -->|"received"| s7
"""

REVIEW_DOT = """\
digraph "Elixir.Review.Flows.Review" {
  label="Elixir.Review.Flows.Review (version 1)";
  labelloc=t;
  fontname="Helvetica";
  rankdir=TB;
  node [fontname="Helvetica"];
  edge [fontname="Helvetica"];
  s0 [label="Submit", shape=box, style="rounded"];
  s1 [label="Review.A.Check", shape=box, style="rounded"];
  s2 [label="Review.B.Check", shape=box, style="rounded"];
  s3 [label="Merge", shape=box, style="rounded"];
  s4 [label="Wait\\nfor 2 minute", shape=hexagon];
  s5 [label="Route\\nruns in Elixir", shape=box, style="rounded"];
  s6 [label="WaitForEvent\\nfor an event", shape=hexagon];
  s7 [label="Done", shape=doublecircle];
  s0 -> s1 [label="submitted"];
  s0 -> s2 [label="submitted"];
  s1 -> s3 [label="ok \\"a|b\\" <#1>\\\\ & `x`\\nnext"];
  s2 -> s3 [label="ok"];
  s3 -> s4 [label="merged"];
  s4 -> s5 [label="timeout"];
  s5 -> s6 [label="route", style=dashed];
  s5 -> s7 [label="route", style=dashed];
  s6 -> s7 [label="received"];
}
"""


def test_fan_out_and_join_with_an_async_step() -> None:
    assert to_mermaid(ORDER) == ORDER_MERMAID
    assert to_dot(ORDER) == ORDER_DOT


def test_waits_dynamic_edges_elixir_steps_and_escaped_labels() -> None:
    assert to_mermaid(REVIEW, elixir_steps=[ROUTE.name]) == REVIEW_MERMAID
    assert to_dot(REVIEW, elixir_steps=[ROUTE.name]) == REVIEW_DOT


def test_the_same_workflow_gives_the_same_bytes() -> None:
    assert {to_mermaid(REVIEW) for _ in range(3)} == {to_mermaid(REVIEW)}
    assert to_dot(ORDER) == to_dot(ORDER)


P = "Elixir.Realstack.Steps."
WAITING_RESULTS = [(P + "Pass", "done"), (P + "AsyncWait", "__async__"), (P + "Normal", "done")]
WAITING_JOBS = [
    StepJob(2, P + "Pass", "completed", "elixir"),
    StepJob(4, P + "AsyncWait", "completed", "elixir"),
    StepJob(5, P + "Normal", "completed", "python"),
]

MARKED_MERMAID = """\
---
title: "Elixir.Realstack.WF.AsyncFanout (version 1), instance asyncfanout::x"
---
flowchart TD
    s0["Pass<br>completed · Elixir"]
    s1["AsyncWait<br>waiting · Elixir"]
    s2["Normal<br>completed · Python"]
    s3["Join<br>not reached"]
    s4(("Done<br>not reached"))
    s0 ==>|"done"| s1
    s0 ==>|"done"| s2
    s1 -->|"resumed"| s3
    s2 -->|"done"| s3
    s3 -->|"done"| s4
    classDef completed fill:#d4edda,stroke:#2e7d32
    class s0,s2 completed
    classDef waiting fill:#fff3cd,stroke:#b8860b
    class s1 waiting
    classDef not_reached fill:#f5f5f5,stroke:#9e9e9e,stroke-dasharray:4 3
    class s3,s4 not_reached
"""

MARKED_DOT = """\
digraph "Elixir.Realstack.WF.AsyncFanout" {
  label="Elixir.Realstack.WF.AsyncFanout (version 1), instance asyncfanout::x";
  labelloc=t;
  fontname="Helvetica";
  rankdir=TB;
  node [fontname="Helvetica"];
  edge [fontname="Helvetica"];
  s0 [label="Pass\\ncompleted · Elixir", shape=box, style="rounded,filled", \
fillcolor="#d4edda", color="#2e7d32"];
  s1 [label="AsyncWait\\nwaiting · Elixir", shape=box, style="rounded,filled", \
fillcolor="#fff3cd", color="#b8860b"];
  s2 [label="Normal\\ncompleted · Python", shape=box, style="rounded,filled", \
fillcolor="#d4edda", color="#2e7d32"];
  s3 [label="Join\\nnot reached", shape=box, style="rounded,filled,dashed", \
fillcolor="#f5f5f5", color="#9e9e9e"];
  s4 [label="Done\\nnot reached", shape=doublecircle, style="filled,dashed", \
fillcolor="#f5f5f5", color="#9e9e9e"];
  s0 -> s1 [label="done", penwidth=2.5];
  s0 -> s2 [label="done", penwidth=2.5];
  s1 -> s3 [label="resumed"];
  s2 -> s3 [label="done"];
  s3 -> s4 [label="done"];
}
"""


def test_an_instance_marks_states_languages_and_the_edges_taken() -> None:
    marks = step_marks(
        ASYNC_FANOUT,
        status="waiting",
        current_step=P + "AsyncWait",
        active=[P + "AsyncWait"],
        completed=[P + "Pass", P + "Normal"],
        results=WAITING_RESULTS,
        jobs=WAITING_JOBS,
    )
    events = result_events(WAITING_RESULTS)
    assert to_mermaid(ASYNC_FANOUT, marks, events=events, instance="asyncfanout::x") == (
        MARKED_MERMAID
    )
    assert to_dot(ASYNC_FANOUT, marks, events=events, instance="asyncfanout::x") == MARKED_DOT


def _marks(**given: Any) -> dict[str, StepMark]:
    base: dict[str, Any] = {
        "status": "running",
        "current_step": None,
        "active": [],
        "completed": [],
        "results": [],
        "jobs": [],
    }
    return step_marks(ASYNC_FANOUT, **{**base, **given})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, StepMark("not reached")),
        ({"active": [P + "Normal"]}, StepMark("active")),
        (
            {"active": [P + "Normal"], "jobs": [StepJob(1, P + "Normal", "retryable", "python")]},
            StepMark("active", "python"),
        ),
        (
            {"active": [P + "Normal"], "jobs": [StepJob(1, P + "Normal", "discarded", "elixir")]},
            StepMark("failed", "elixir"),
        ),
        ({"active": [P + "Normal"], "status": "failed"}, StepMark("failed")),
        ({"active": [P + "Normal"], "results": [(P + "Normal", "__async__")]}, StepMark("waiting")),
        (
            {"active": [P + "Normal"], "status": "waiting", "current_step": P + "Normal"},
            StepMark("waiting"),
        ),
        (
            {
                "completed": [P + "Normal"],
                "jobs": [  # the owner's ExecuteStep ran again after the delegated job went out
                    StepJob(9, P + "Normal", "completed", "elixir"),
                    StepJob(7, P + "Normal", "completed", "python", delegated=True),
                    StepJob(3, P + "Normal", "completed", "elixir"),
                ],
            },
            StepMark("completed", "python"),
        ),
        (
            {
                "active": [P + "Normal"],
                "jobs": [
                    StepJob(9, P + "Normal", "completed", "elixir"),
                    StepJob(7, P + "Normal", "discarded", "python", delegated=True),
                ],
            },
            StepMark("failed", "python"),
        ),
    ],
)
def test_step_state_rules(given: dict[str, Any], expected: StepMark) -> None:
    assert _marks(**given)[P + "Normal"] == expected


def test_label_escapes() -> None:
    assert mermaid_text('"#|<>&`\\\x07') == "#quot;#35;#124;#lt;#gt;#amp;#96;#92;#7;"
    assert dot_text('"\\\n\x07') == '\\"\\\\\\n\\\\u0007'
    assert result_events([("a", "__async__"), ("a", "x"), ("b", "y")]) == {
        "a": frozenset({"x"}),
        "b": frozenset({"y"}),
    }
