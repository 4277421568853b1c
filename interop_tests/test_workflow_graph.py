"""``bridge workflows graph --instance`` on instances whose steps really ran in both languages:
the fixture VM (HephaestusOban's workers, ``ObanBridge.StepWorker``) and a Python node, both
ways across the line, drawn by the installed script from a scratch directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from interop_tests.fixture import ElixirFixture
from interop_tests.test_workflows_delegation import (  # noqa: F401 (both is a fixture)
    CHECKOUT,
    FANOUT,
    both,
    elixir_status,
    python_node,
    python_status,
    settled,
    start,
)
from tests.support.cli import ROOT, run_bridge

# The fixture's Delegation.Flows.Fanout (elixir_fixture/lib/fixture_workflows/delegation.ex),
# mirrored in Python: no bodies, Render's runs in Python through ObanBridge.DelegatedStep.
MIRROR = """
from bridge.workflows import DONE, Step, Workflow

start = Step(name="Elixir.Delegation.Steps.Start", events=["done"])
render = Step(name="Elixir.Delegation.Steps.Render", events=["rendered", "render_failed"])
local = Step(name="Elixir.Delegation.Steps.Local", events=["done"])
join = Step(name="Elixir.Delegation.Steps.Join", events=["done"])

FANOUT = Workflow(
    name="Elixir.Delegation.Flows.Fanout",
    start=start,
    transitions=[
        (start, "done", [render, local]),
        (render, "rendered", join),
        (render, "render_failed", join),
        (local, "done", join),
        (join, "done", DONE),
    ],
)
"""

FANOUT_MERMAID = """\
---
title: "Elixir.Delegation.Flows.Fanout (version 1), instance delegfanout::g1"
---
flowchart TD
    s0["Start<br>completed · Elixir"]
    s1["Render<br>completed · Python"]
    s2["Local<br>completed · Elixir"]
    s3["Join<br>completed · Elixir"]
    s4(("Done<br>completed · Elixir"))
    s0 ==>|"done"| s1
    s0 ==>|"done"| s2
    s1 ==>|"rendered"| s3
    s1 -->|"render_failed"| s3
    s2 ==>|"done"| s3
    s3 ==>|"done"| s4
    classDef completed fill:#d4edda,stroke:#2e7d32
    class s0,s1,s2,s3,s4 completed
"""

CHECKOUT_MERMAID = """\
---
title: "Elixir.Py.Deleg.Checkout (version 1), instance checkout-g1"
---
flowchart TD
    s0["Prepare<br>completed · Python"]
    s1["Charge<br>completed · Elixir"]
    s2(("Done<br>completed · Python"))
    s0 ==>|"ready"| s1
    s1 ==>|"charged"| s2
    s1 -->|"declined"| s2
    classDef completed fill:#d4edda,stroke:#2e7d32
    class s0,s1,s2 completed
"""


async def test_graphs_steps_run_in_both_languages(
    both: ElixirFixture,  # noqa: F811
    conn: psycopg.Connection[Any],
    database_url: str,
    schema: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "mirror.py").write_text(MIRROR, encoding="utf-8")
    async with python_node(database_url, schema) as runner:
        elixir_owned = start(both, FANOUT, "delegfanout::g1", {"url": "d", "mode": "ok"})
        runner.start(conn, CHECKOUT, {"amount": 7}, id="checkout-g1")
        assert await elixir_status(both, elixir_owned, "completed", "failed") == "completed"
        await python_status(conn, schema, "checkout-g1", "completed", "failed")
        await settled(conn, schema, elixir_owned)
        await settled(conn, schema, "checkout-g1")

    def graph(instance_id: str, module: str) -> tuple[int, str, str]:
        done = run_bridge(
            "--database-url", database_url, "--prefix", schema, "workflows", "graph",
            "--instance", instance_id, "--workflows", module, cwd=tmp_path,
            env={"PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    assert graph(elixir_owned, "mirror") == (0, FANOUT_MERMAID, "")
    assert graph("checkout-g1", "interop_tests.test_workflows_delegation") == (
        0,
        CHECKOUT_MERMAID,
        "",
    )
