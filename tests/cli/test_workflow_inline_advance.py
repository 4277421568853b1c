"""``--workflow-inline-advance/--no-workflow-inline-advance`` (``BRIDGE_WORKFLOW_INLINE_ADVANCE``,
``workflow_inline_advance``): step jobs apply their own results by default; off, a node writes
HephaestusOban's job rows, an AdvanceWorker per step result. Checked through the installed
script serving a workflow module from a scratch app."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bridge.cli.settings import WorkerSettings
from bridge.cli.worker import NodeWorkflows, workflows_for_node
from bridge.jobs.node import NodeConfig
from bridge.workflows import DONE, Context, Instance, StepOk, Workflow, step
from bridge.workflows.run.runner import ADVANCE_WORKER, WorkflowRunner
from tests.jobs.plugins.test_rescue_latency import bridge_worker
from tests.support.cli import run_bridge
from tests.workflows.run.test_runner import jobs_json, status_is, wait_for_instance

FLOWS = textwrap.dedent(
    """
    from bridge.workflows import DONE, StepOk, Workflow, step

    @step(name="Elixir.Cli.Steps.One", events=["ok"])
    def one(instance, config, context):
        return StepOk("ok", {"n": 1})

    @step(name="Elixir.Cli.Steps.Two", events=["ok"])
    def two(instance, config, context):
        return StepOk("ok", {"n": 2})

    LINE = Workflow(
        name="Elixir.Cli.Flows.Line",
        start=one,
        transitions=[(one, "ok", two), (two, "ok", DONE)],
        atoms=["n"],
    )
    """
)


@step(name="Elixir.Cli.Steps.One", events=["ok"])
def one(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"n": 1})


@step(name="Elixir.Cli.Steps.Two", events=["ok"])
def two(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"n": 2})


# The same definition as the app's, for starting instances from the test.
LINE = Workflow(
    name="Elixir.Cli.Flows.Line",
    start=one,
    transitions=[(one, "ok", two), (two, "ok", DONE)],
    atoms=["n"],
)


def test_the_setting_reaches_the_runner() -> None:
    assert NodeWorkflows().inline_advance is True
    off = workflows_for_node(
        WorkerSettings(workflow_inline_advance=False),
        (),
        queue=None,
        concurrency=None,
        config_key=None,
        repair_after=None,
    )
    assert off.inline_advance is False
    config = NodeConfig(url="postgresql://nowhere/db", queues={})
    runner = NodeWorkflows(workflows=[LINE], inline_advance=False).attach(config)
    assert runner is not None and runner.inline_advance is False
    runner.close()


@pytest.mark.parametrize(
    ("args", "env", "advances"),
    [
        ((), {}, [None]),
        (("--no-workflow-inline-advance",), {}, [None, "one", "two", "done"]),
        ((), {"BRIDGE_WORKFLOW_INLINE_ADVANCE": "off"}, [None, "one", "two", "done"]),
        (("--workflow-inline-advance",), {"BRIDGE_WORKFLOW_INLINE_ADVANCE": "0"}, [None]),
    ],
    ids=["default", "option-off", "variable-off", "option-beats-variable"],
)
def test_a_worker_writes_one_job_per_step_unless_told_otherwise(
    tmp_path: Path,
    database_url: str,
    oban_prefix: str,
    conn: psycopg.Connection[Any],
    args: tuple[str, ...],
    env: dict[str, str],
    advances: list[str | None],
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "cliflows.py").write_text(FLOWS)
    runner = WorkflowRunner(database_url, [LINE], prefix=oban_prefix)
    try:
        runner.start(conn, LINE, {}, id="cli-1")
        with bridge_worker(
            database_url, oban_prefix, app, "--workflows", "cliflows", *args, env=env
        ):
            row = asyncio.run(
                wait_for_instance(
                    database_url, oban_prefix, "cli-1", status_is("completed"), timeout=30
                )
            )
    finally:
        runner.close()
    assert row["state"]["context"]["steps"] == {"one": {"n": 1}, "two": {"n": 2}, "done": {}}
    jobs = jobs_json(database_url, oban_prefix, "cli-1")
    steps = [j["meta"].get("step") for j in jobs if j["worker"] == ADVANCE_WORKER]
    assert steps == advances


def test_a_bad_variable_is_refused_in_one_line(tmp_path: Path, database_url: str) -> None:
    result = run_bridge(
        "worker",
        "-q",
        "a",
        cwd=tmp_path,
        env={"BRIDGE_DATABASE_URL": database_url, "BRIDGE_WORKFLOW_INLINE_ADVANCE": "maybe"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: environment variable BRIDGE_WORKFLOW_INLINE_ADVANCE='maybe': must be true or "
        "false (1/0, yes/no, on/off in a variable)"
    )
