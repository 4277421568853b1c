"""``bridge workflows graph`` as users run it: the installed script, from a scratch directory
holding the module of workflows it draws (``--workflows flows``). Instances are run by a real
runner on the test database and then drawn with their steps' states and languages; an
Elixir-owned instance is the genuine stack's s2d rows, drawn from a Python mirror."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

from bridge.workflows.run.runner import WorkflowRunner
from tests.support.cli import run_bridge
from tests.workflows.run.test_repair import STUCK_ID, build_stuck_s2d
from tests.workflows.run.test_runner import serving, status_is, wait_for_instance

FLOWS = """
from bridge.workflows import (
    DONE, WAIT, RetryConfig, StepAsync, StepOk, Unique, Workflow, elixir_step, step,
)

@step(name="Elixir.Shop.Steps.Validate", events=["valid"])
def validate(instance, config, context):
    return StepOk("valid", {"ok": True})

@step(name="Elixir.Shop.Steps.Reserve", events=["reserved"])
def reserve(instance, config, context):
    return StepOk("reserved", {"sku": "A-1"})

@step(name="Elixir.Shop.Steps.Approve", events=["approved"])
def approve(instance, config, context):
    return StepAsync()

charge = elixir_step(name="Elixir.Shop.Steps.Charge", events=["charged"], context_keys=["ref"])

@step(name="Elixir.Shop.Steps.Ship", events=["shipped"])
def ship(instance, config, context):
    return StepOk("shipped")

ORDER = Workflow(
    name="Elixir.Shop.Flows.Order",
    unique=Unique(key="order"),
    start=validate,
    transitions=[
        (validate, "valid", [reserve, approve, charge]),
        (reserve, "reserved", ship),
        (approve, "approved", ship),
        (charge, "charged", ship),
        (ship, "shipped", (WAIT, {"duration": 1, "unit": "day"})),
        (WAIT, "timeout", DONE),
    ],
    atoms=["ok", "sku", "ref"],
)

@step(name="Elixir.Shop.Steps.Boom", events=["done"], retry=RetryConfig(max_attempts=1))
def boom(instance, config, context):
    raise RuntimeError("boom")

BROKEN = Workflow(
    name="Elixir.Shop.Flows.Broken",
    start=validate,
    transitions=[(validate, "valid", boom), (boom, "done", DONE)],
    atoms=["ok"],
)
"""

# The Elixir workflow of golden s2d (Realstack.WF.AsyncFirst), mirrored: no bodies.
MIRROR = """
from bridge.workflows import DONE, Step, Workflow

pass_ = Step(name="Elixir.Realstack.Steps.Pass", events=["done"])
async_wait = Step(name="Elixir.Realstack.Steps.AsyncWait", events=["resumed"])
normal_slow = Step(name="Elixir.Realstack.Steps.NormalSlow", events=["done"])
join = Step(name="Elixir.Realstack.Steps.Join", events=["done"])

ASYNC_FIRST = Workflow(
    name="Elixir.Realstack.WF.AsyncFirst",
    start=pass_,
    transitions=[
        (pass_, "done", [async_wait, normal_slow]),
        (async_wait, "resumed", join),
        (normal_slow, "done", join),
        (join, "done", DONE),
    ],
)
"""

ORDER_MERMAID = """\
---
title: "Elixir.Shop.Flows.Order (version 1)"
---
flowchart TD
    s0["Validate"]
    s1["Reserve"]
    s2["Approve"]
    s3["Charge<br>runs in Elixir"]
    s4["Ship"]
    s5{{"Wait<br>for 1 day"}}
    s6(("Done"))
    s0 -->|"valid"| s1
    s0 -->|"valid"| s2
    s0 -->|"valid"| s3
    s1 -->|"reserved"| s4
    s2 -->|"approved"| s4
    s3 -->|"charged"| s4
    s4 -->|"shipped"| s5
    s5 -->|"timeout"| s6
"""

ORDER_DOT = """\
digraph "Elixir.Shop.Flows.Order" {
  label="Elixir.Shop.Flows.Order (version 1)";
  labelloc=t;
  fontname="Helvetica";
  rankdir=TB;
  node [fontname="Helvetica"];
  edge [fontname="Helvetica"];
  s0 [label="Validate", shape=box, style="rounded"];
  s1 [label="Reserve", shape=box, style="rounded"];
  s2 [label="Approve", shape=box, style="rounded"];
  s3 [label="Charge\\nruns in Elixir", shape=box, style="rounded"];
  s4 [label="Ship", shape=box, style="rounded"];
  s5 [label="Wait\\nfor 1 day", shape=hexagon];
  s6 [label="Done", shape=doublecircle];
  s0 -> s1 [label="valid"];
  s0 -> s2 [label="valid"];
  s0 -> s3 [label="valid"];
  s1 -> s4 [label="reserved"];
  s2 -> s4 [label="approved"];
  s3 -> s4 [label="charged"];
  s4 -> s5 [label="shipped"];
  s5 -> s6 [label="timeout"];
}
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A scratch directory holding ``flows.py`` and ``mirror.py``."""
    (tmp_path / "flows.py").write_text(FLOWS, encoding="utf-8")
    (tmp_path / "mirror.py").write_text(MIRROR, encoding="utf-8")
    return tmp_path


def _module(path: Path) -> ModuleType:
    """The scratch module in this process too, so the runner runs what the command draws."""
    spec = importlib.util.spec_from_file_location(f"graph_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_draws_a_workflow_as_mermaid_and_dot(app: Path) -> None:
    shown = run_bridge("workflows", "graph", "Order", "--workflows", "flows", cwd=app)
    assert (shown.returncode, shown.stdout, shown.stderr) == (0, ORDER_MERMAID, "")
    dot = run_bridge(
        "workflows", "graph", "Order", "--workflows", "flows", "--format", "dot", cwd=app
    )
    assert (dot.returncode, dot.stdout) == (0, ORDER_DOT)
    out = app / "order.gv"  # the format follows the suffix
    written = run_bridge(
        "workflows", "graph", "Order", "--workflows", "flows", "-o", str(out), cwd=app
    )
    assert (written.returncode, written.stdout) == (0, f"wrote {out}\n")
    assert out.read_text(encoding="utf-8") == ORDER_DOT
    elsewhere = run_bridge(
        "workflows", "graph", "Elixir.Shop.Flows.Order", "--workflows", "flows",
        "--app-dir", str(app), cwd=app.parent,
    )  # fmt: skip
    assert (elsewhere.returncode, elsewhere.stdout) == (0, ORDER_MERMAID)


def test_svg_and_png_need_graphviz(app: Path) -> None:
    no_dot = app / "bin"  # a PATH where dot is not
    no_dot.mkdir()
    for fmt in ("svg", "png"):
        refused = run_bridge(
            "workflows", "graph", "Order", "--workflows", "flows", "--format", fmt,
            cwd=app, env={"PATH": str(no_dot)},
        )  # fmt: skip
        assert (refused.returncode, refused.stdout, refused.stderr) == (
            2,
            "",
            f"Error: --format {fmt} needs Graphviz's dot, which is not on PATH: install Graphviz "
            "(apt-get install graphviz, brew install graphviz) or use --format dot or mermaid\n",
        )
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed: rendering not exercised")
    svg = run_bridge(
        "workflows", "graph", "Order", "--workflows", "flows", "--format", "svg", cwd=app
    )
    assert svg.returncode == 0, svg.stderr
    assert "<svg" in svg.stdout and "Validate" in svg.stdout and "runs in Elixir" in svg.stdout
    png = app / "order.png"
    drawn = run_bridge(
        "workflows", "graph", "Order", "--workflows", "flows", "-o", str(png), cwd=app
    )
    assert (drawn.returncode, drawn.stdout) == (0, f"wrote {png}\n")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_are_one_line(app: Path) -> None:
    def graph(*args: str) -> tuple[int, str, str]:
        done = run_bridge("workflows", "graph", *args, cwd=app)
        return done.returncode, done.stdout, done.stderr

    assert graph("--workflows", "flows")[0] == 2
    assert graph("--workflows", "flows")[2].endswith(
        "Error: name the WORKFLOW to draw, or give --instance ID\n"
    )
    assert graph("Order")[2].endswith(
        "Error: name the workflows: --workflows MODULE (or [tool.bridge])\n"
    )
    assert graph("Invoice", "--workflows", "flows") == (
        2,
        "",
        "Error: no workflow 'Invoice' in flows: known: Elixir.Shop.Flows.Broken (Broken), "
        "Elixir.Shop.Flows.Order (Order)\n",
    )


WAITING_MERMAID = """\
---
title: "Elixir.Shop.Flows.Order (version 1), instance order::o1"
---
flowchart TD
    s0["Validate<br>completed · Python"]
    s1["Reserve<br>completed · Python"]
    s2["Approve<br>waiting · Python"]
    s3["Charge<br>waiting · Elixir"]
    s4["Ship<br>not reached"]
    s5{{"Wait<br>for 1 day<br>not reached"}}
    s6(("Done<br>not reached"))
    s0 ==>|"valid"| s1
    s0 ==>|"valid"| s2
    s0 ==>|"valid"| s3
    s1 -->|"reserved"| s4
    s2 -->|"approved"| s4
    s3 -->|"charged"| s4
    s4 -->|"shipped"| s5
    s5 -->|"timeout"| s6
    classDef completed fill:#d4edda,stroke:#2e7d32
    class s0,s1 completed
    classDef waiting fill:#fff3cd,stroke:#b8860b
    class s2,s3 waiting
    classDef not_reached fill:#f5f5f5,stroke:#9e9e9e,stroke-dasharray:4 3
    class s4,s5,s6 not_reached
"""

FAILED_DOT = """\
digraph "Elixir.Shop.Flows.Broken" {
  label="Elixir.Shop.Flows.Broken (version 1), instance broken-1";
  labelloc=t;
  fontname="Helvetica";
  rankdir=TB;
  node [fontname="Helvetica"];
  edge [fontname="Helvetica"];
  s0 [label="Validate\\ncompleted · Python", shape=box, style="rounded,filled", \
fillcolor="#d4edda", color="#2e7d32"];
  s1 [label="Boom\\nfailed · Python", shape=box, style="rounded,filled", \
fillcolor="#f8d7da", color="#c62828"];
  s2 [label="Done\\nnot reached", shape=doublecircle, style="filled,dashed", \
fillcolor="#f5f5f5", color="#9e9e9e"];
  s0 -> s1 [label="valid", penwidth=2.5];
  s1 -> s2 [label="done"];
}
"""


async def test_draws_instances_a_real_runner_ran(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any], app: Path
) -> None:
    flows = _module(app / "flows.py")
    runner = WorkflowRunner(database_url, [flows.ORDER, flows.BROKEN], prefix=oban_prefix)
    try:
        async with serving(runner):
            runner.start(conn, flows.ORDER, {}, id="order::o1")
            runner.start(conn, flows.BROKEN, {}, id="broken-1")
            await wait_for_instance(database_url, oban_prefix, "broken-1", status_is("failed"))
            await wait_for_instance(
                database_url,
                oban_prefix,
                "order::o1",
                lambda row: (
                    len(row["state"]["completed_steps"]) == 2 and row["status"] == "waiting"
                ),
            )
    finally:
        runner.close()

    def graph(*args: str) -> tuple[int, str, str]:
        done = run_bridge(
            "--database-url", database_url, "--prefix", oban_prefix, "workflows", "graph",
            "--workflows", "flows", *args, cwd=app,
        )  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    assert graph("--instance", "order::o1") == (0, WAITING_MERMAID, "")
    assert graph("Order", "--instance", "order::o1") == (0, WAITING_MERMAID, "")
    assert graph("--instance", "broken-1", "--format", "dot") == (0, FAILED_DOT, "")
    assert graph("Order", "--instance", "broken-1") == (
        2,
        "",
        "Usage: bridge workflows graph [OPTIONS] [WORKFLOW]\n"
        "Try 'bridge workflows graph --help' for help.\n\n"
        "Error: broken-1 is an instance of Elixir.Shop.Flows.Broken, not of "
        "Elixir.Shop.Flows.Order\n",
    )
    assert graph("--instance", "nosuch") == (1, "", "Error: no workflow instance 'nosuch'\n")


S2D_MERMAID = f"""\
---
title: "Elixir.Realstack.WF.AsyncFirst (version 1), instance {STUCK_ID}"
---
flowchart TD
    s0["Pass<br>completed · Elixir"]
    s1["AsyncWait<br>completed · Elixir"]
    s2["NormalSlow<br>active · Elixir"]
    s3["Join<br>not reached"]
    s4(("Done<br>not reached"))
    s0 ==>|"done"| s1
    s0 ==>|"done"| s2
    s1 -->|"resumed"| s3
    s2 -->|"done"| s3
    s3 -->|"done"| s4
    classDef completed fill:#d4edda,stroke:#2e7d32
    class s0,s1 completed
    classDef active fill:#dbe9ff,stroke:#1f5fbf
    class s2 active
    classDef not_reached fill:#f5f5f5,stroke:#9e9e9e,stroke-dasharray:4 3
    class s3,s4 not_reached
"""


def test_draws_an_elixir_owned_instance_from_a_mirror(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any], app: Path
) -> None:
    build_stuck_s2d(conn, oban_prefix)

    def graph(*args: str) -> tuple[int, str, str]:
        done = run_bridge(
            "--database-url", database_url, "--prefix", oban_prefix, "workflows", "graph",
            "--instance", STUCK_ID, *args, cwd=app,
        )  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    assert graph("--workflows", "mirror") == (0, S2D_MERMAID, "")
    needed = (
        "a Python mirror of it: a Workflow with the same name, step modules, events and "
        "transitions, its steps declared without bodies (Step(name=..., events=[...]))\n"
    )
    assert graph("--workflows", "flows") == (
        2,
        "",
        f"Error: {STUCK_ID} is an Elixir-owned instance of Elixir.Realstack.WF.AsyncFirst, "
        f"which has no Python definition in flows: give --workflows a module with {needed}",
    )
    assert graph() == (
        2,
        "",
        f"Error: {STUCK_ID} is an Elixir-owned instance of Elixir.Realstack.WF.AsyncFirst, "
        "which has no Python definition (no --workflows given): give --workflows a module "
        f"with {needed}",
    )


def test_refuses_rows_it_cannot_draw(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any], app: Path
) -> None:
    """States a bug or a hand-written UPDATE may leave, and an instance of another version."""
    from psycopg import sql

    states = {
        "odd": '{"active_steps": "x", "completed_steps": []}',
        "deep": '{"active_steps": ' + "[" * 2000 + "]" * 2000 + "}",
        "other": '{"active_steps": ["Elixir.Shop.Steps.Gone"], "completed_steps": []}',
    }
    for instance_id, state in states.items():
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.workflow_instances (id, workflow, status, state, inserted_at,"
                " updated_at) VALUES (%s, 'Elixir.Shop.Flows.Order', 'running', %s::jsonb,"
                " now(), now())"
            ).format(sql.Identifier(oban_prefix)),
            (instance_id, state),
        )

    def graph(instance_id: str) -> tuple[int, str, str]:
        done = run_bridge(
            "--database-url", database_url, "--prefix", oban_prefix, "workflows", "graph",
            "--workflows", "flows", "--instance", instance_id, cwd=app,
        )  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    for instance_id in ("odd", "deep"):
        assert graph(instance_id) == (
            1,
            "",
            f"Error: cannot graph {instance_id!r}: its state holds no readable lists of active "
            f"and completed steps; `bridge workflows show {instance_id}` shows what it holds\n",
        )
    assert graph("other") == (
        1,
        "",
        "Error: instance 'other' (version 1) has steps that Elixir.Shop.Flows.Order (version 1) "
        "lacks: Elixir.Shop.Steps.Gone; give --workflows the definition it ran\n",
    )
