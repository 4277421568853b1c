"""run_workflow / drain_workflows / assert_workflow on real rows: a Python workflow runs to
completion in-process through the runner's own jobs, and assert_workflow says what differs."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge.testing import (
    assert_workflow,
    drain_workflows,
    read_workflow,
    run_workflow,
    run_workflow_async,
    start_workflow,
)
from bridge.workflows import DONE, Context, Instance, StepError, StepOk, Workflow, step


@step(name="Elixir.T.Render", events=["rendered"])
def render(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("rendered", {"pages": context.initial["n"] * 3})


@step(name="Elixir.T.Ship", events=["shipped"])
async def ship(instance: Instance, config: Any, context: Context) -> StepOk | StepError:
    if context.initial["n"] < 0:
        return StepError("negative")
    return StepOk("shipped", {"ok": True})


FLOW = Workflow(
    name="Elixir.T.Flow",
    start=render,
    transitions=[(render, "rendered", ship), (ship, "shipped", DONE)],
    atoms=["n", "pages", "ok"],
)


def job_states(url: str, prefix: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT worker, state::text FROM {}.oban_jobs ORDER BY id").format(
                sql.Identifier(prefix)
            )
        ).fetchall()
    return [(w, s) for w, s in rows]


def test_run_workflow_to_completion(database_url: str, oban_prefix: str) -> None:
    state = run_workflow(database_url, FLOW, {"n": 2}, id="flow::1", prefix=oban_prefix)
    assert state.status == "completed"
    assert state.context["steps"]["render"] == {"pages": 6}
    # The start's advance and three step jobs: each step applies its own result (inline advance,
    # the runner's default), so no AdvanceWorker follows a step.
    assert state.drained["success"] == 4 and state.drained["failure"] == 0
    assert {s for _, s in job_states(database_url, oban_prefix)} == {"completed"}
    assert_workflow(
        database_url,
        "flow::1",
        prefix=oban_prefix,
        status="completed",
        completed_steps=[render, ship, DONE],
        context={"initial": {"n": 2}, "steps": {"render": {"pages": 6}, "ship": {"ok": "_"}}},
    )


def test_assert_workflow_names_every_difference(database_url: str, oban_prefix: str) -> None:
    run_workflow(database_url, FLOW, {"n": 2}, id="flow::2", prefix=oban_prefix)
    with pytest.raises(AssertionError) as failed:
        assert_workflow(
            database_url,
            "flow::2",
            prefix=oban_prefix,
            status="failed",
            completed_steps=["Elixir.T.Render"],
            context={"steps": {"render": {"pages": 7}}},
        )
    lines = str(failed.value).splitlines()
    assert lines[:4] == [
        "workflow instance 'flow::2' (Elixir.T.Flow):",
        "    status is 'completed', expected 'failed'",
        "    completed_steps differ: not expected"
        " ['Elixir.Hephaestus.Steps.Done', 'Elixir.T.Ship']",
        "    context.steps.render.pages is 6, expected 7",
    ]
    assert lines[4].startswith("the row: status='completed'")
    with pytest.raises(AssertionError, match="no workflow instance 'nope'"):
        assert_workflow(database_url, "nope", prefix=oban_prefix)


def test_a_failing_step_fails_the_instance(database_url: str, oban_prefix: str) -> None:
    state = run_workflow(database_url, FLOW, {"n": -1}, id="flow::3", prefix=oban_prefix)
    assert state.status == "running"  # the step's job is retryable, due later
    # with_scheduled makes each retry due at once: the step's attempts run out
    state = run_workflow(
        database_url, FLOW, {"n": -2}, id="flow::3b", prefix=oban_prefix, with_scheduled=True
    )
    assert state.status == "failed"
    # the drain ran the queue: flow::3's retries too
    assert state.drained["discard"] == 2
    assert read_workflow(database_url, "flow::3", prefix=oban_prefix).status == "failed"
    assert_workflow(database_url, "flow::3b", prefix=oban_prefix, completed_steps=[render])


def test_start_then_drain(database_url: str, oban_prefix: str) -> None:
    start_workflow(database_url, FLOW, {"n": 1}, id="flow::4", prefix=oban_prefix)
    assert read_workflow(database_url, "flow::4", prefix=oban_prefix).status == "pending"
    counts = drain_workflows(database_url, [FLOW], prefix=oban_prefix)
    assert counts["success"] == 4  # the start's advance, three steps applying their own results
    assert read_workflow(database_url, "flow::4", prefix=oban_prefix).status == "completed"


async def test_async_run(database_url: str, oban_prefix: str) -> None:
    state = await run_workflow_async(database_url, FLOW, {"n": 3}, id="flow::5", prefix=oban_prefix)
    assert (state.status, state.context["steps"]["render"]) == ("completed", {"pages": 9})
