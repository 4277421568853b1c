"""``bridge workflows ...`` and ``bridge worker --workflows`` through click's CliRunner, on real
PostgreSQL: Python-owned instances are started, resumed and cancelled; Elixir-owned ones (golden
s2d rows) are listed and shown as stored and refused for writes; repair heals the stuck one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from bridge.cli import main
from bridge.cli.settings import ConfigError, load_settings
from bridge.jobs.client.registry import Registry
from bridge.jobs.node import NodeConfig
from bridge.workflows import DONE, Context, Instance, StepAsync, StepOk, Unique, Workflow, step
from bridge.workflows.run.lifeline import WorkflowLifeline
from bridge.workflows.run.runner import ADVANCE_WORKER, RESUME_WORKER, WorkflowRunner
from bridge.workflows.serving import WorkflowModuleError, load_workflows
from tests.workflows.run.test_repair import LOST_JOB_ID, STUCK_ID, build_stuck_s2d, golden_jobs
from tests.workflows.run.test_runner import jobs_json, serving, status_is, wait_for_instance

MODULE = "tests.cli.test_workflows_commands"


@step(name="Elixir.Cli.Steps.Greet", events=["greeted"])
def greet(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("greeted", {"hello": context.initial.get("name", "?")})


@step(name="Elixir.Cli.Steps.Approval", events=["approved"])
def approval(instance: Instance, config: Any, context: Context) -> StepAsync:
    return StepAsync()


GREETING = Workflow(
    name="Elixir.Cli.Flows.Greeting",
    unique=Unique(key="greeting"),
    start=greet,
    transitions=[(greet, "greeted", approval), (approval, "approved", DONE)],
)

WORKFLOWS = [GREETING]  # what --workflows tests.cli.test_workflows_commands registers


def cli(database_url: str, prefix: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", database_url, "--prefix", prefix, *args])


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


# -- start / list / show -------------------------------------------------------------------------


def test_start_list_and_show_a_python_instance(database_url: str, oban_prefix: str) -> None:
    out = ok(
        cli(
            database_url,
            oban_prefix,
            "workflows",
            "start",
            "greeting",
            "--workflows",
            MODULE,
            "--key",
            "g1",
            "--context",
            '{"name": "ada"}',
        )
    )
    assert (
        out.strip() == "started greeting::g1 (Elixir.Cli.Flows.Greeting) in queue bridge_workflows"
    )
    jobs = jobs_json(database_url, oban_prefix, "greeting::g1")
    assert [(j["worker"], j["queue"], j["state"]) for j in jobs] == [
        (ADVANCE_WORKER, "bridge_workflows", "available")
    ]
    assert jobs[0]["args"]["config_key"] == "bridge"

    listed = ok(cli(database_url, oban_prefix, "workflows", "list"))
    header, line = listed.splitlines()
    assert header.split()[:3] == ["id", "status", "workflow"]
    assert line.split()[:4] == ["greeting::g1", "pending", "Elixir.Cli.Flows.Greeting", "-"]
    rows = json.loads(ok(cli(database_url, oban_prefix, "workflows", "list", "--json")))
    assert [(r["id"], r["status"], r["unprocessed"]) for r in rows] == [
        ("greeting::g1", "pending", 0)
    ]
    assert (
        json.loads(
            ok(cli(database_url, oban_prefix, "workflows", "list", "--status", "running", "--json"))
        )
        == []
    )
    by_name = ok(
        cli(database_url, oban_prefix, "workflows", "list", "--workflow", "Cli.Flows.Greeting")
    )
    assert "greeting::g1" in by_name

    shown = ok(cli(database_url, oban_prefix, "workflows", "show", "greeting::g1"))
    assert "    instance: greeting::g1" in shown
    assert "      status: pending" in shown
    assert '     context: initial {"name":"ada"}' in shown
    assert "owner: python (bridge_workflows)" in shown
    assert "jobs (1):" in shown and ADVANCE_WORKER in shown
    data = json.loads(
        ok(cli(database_url, oban_prefix, "workflows", "show", "greeting::g1", "--json"))
    )
    assert data.keys() == {"instance", "owner", "step_results", "jobs"}
    assert data["instance"]["state"]["context"] == {"initial": {"name": "ada"}, "steps": {}}
    assert data["owner"] == {"kind": "python", "queue": "bridge_workflows"}

    again = cli(
        database_url,
        oban_prefix,
        "workflows",
        "start",
        "greeting",
        "--workflows",
        MODULE,
        "--key",
        "g1",
    )
    assert again.exit_code == 1
    assert "DuplicateInstanceError: a workflow instance with id 'greeting::g1' already exists" in (
        again.output
    )


def test_bad_arguments_give_clear_errors(database_url: str, oban_prefix: str) -> None:
    missing = cli(database_url, oban_prefix, "workflows", "start", "greeting", "--key", "x")
    assert missing.exit_code == 2 and "--workflows MODULE" in missing.output
    bad_module = cli(
        database_url,
        oban_prefix,
        "workflows",
        "start",
        "greeting",
        "--workflows",
        "no.such.mod",
        "--id",
        "x",
    )
    assert bad_module.exit_code == 2
    assert "workflows module no.such.mod failed to import: ModuleNotFoundError" in bad_module.output
    unknown = cli(
        database_url, oban_prefix, "workflows", "start", "nope", "--workflows", MODULE, "--id", "x"
    )
    assert unknown.exit_code == 2 and "no workflow 'nope' among Elixir.Cli.Flows.Greeting" in (
        unknown.output
    )
    both = cli(
        database_url,
        oban_prefix,
        "workflows",
        "start",
        "greeting",
        "--workflows",
        MODULE,
        "--id",
        "a",
        "--key",
        "b",
    )
    assert both.exit_code == 2 and "exactly one of --id and --key" in both.output
    context = cli(
        database_url,
        oban_prefix,
        "workflows",
        "start",
        "greeting",
        "--workflows",
        MODULE,
        "--id",
        "a",
        "--context",
        "[1]",
    )
    assert context.exit_code == 2 and "must be a JSON object" in context.output
    nothing = cli(database_url, oban_prefix, "workflows", "show", "nobody")
    assert nothing.exit_code == 1 and "no workflow instance 'nobody'" in nothing.output
    status = cli(database_url, oban_prefix, "workflows", "list", "--status", "stuck")
    assert status.exit_code == 2


# -- resume / cancel -------------------------------------------------------------------------------


async def test_resume_and_cancel_python_instances(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any]
) -> None:
    runner = WorkflowRunner(database_url, WORKFLOWS, prefix=oban_prefix)
    try:
        async with serving(runner):
            for key in ("r1", "c1"):
                runner.start(conn, GREETING, {"name": key}, id=f"greeting::{key}")
            for key in ("r1", "c1"):
                await wait_for_instance(
                    database_url, oban_prefix, f"greeting::{key}", status_is("waiting")
                )
            out = ok(
                cli(
                    database_url,
                    oban_prefix,
                    "workflows",
                    "resume",
                    "greeting::r1",
                    "approved",
                    "--workflows",
                    MODULE,
                )
            )
            assert out.startswith("resume queued: job ")
            done = await wait_for_instance(
                database_url, oban_prefix, "greeting::r1", status_is("completed")
            )
            assert done["state"]["context"]["steps"]["greet"] == {"hello": "r1"}
            wrong = cli(
                database_url,
                oban_prefix,
                "workflows",
                "resume",
                "greeting::c1",
                "nope",
                "--workflows",
                MODULE,
            )
            assert wrong.exit_code == 1
            assert "ResumeError: Elixir.Cli.Steps.Approval does not declare the event 'nope'" in (
                wrong.output
            )
            out = ok(
                cli(
                    database_url,
                    oban_prefix,
                    "workflows",
                    "cancel",
                    "greeting::c1",
                    "--workflows",
                    MODULE,
                )
            )
            assert out.startswith("cancelled greeting::c1: failed")
    finally:
        runner.close()
    resumes = [
        j
        for j in jobs_json(database_url, oban_prefix, "greeting::r1")
        if j["worker"] == RESUME_WORKER
    ]
    assert [(r["args"]["event"], r["state"]) for r in resumes] == [("approved", "completed")]
    rows = json.loads(ok(cli(database_url, oban_prefix, "workflows", "list", "--json")))
    assert {r["id"]: r["status"] for r in rows} == {
        "greeting::r1": "completed",
        "greeting::c1": "failed",
    }


# -- Elixir-owned rows ---------------------------------------------------------------------------


def test_elixir_instances_are_shown_as_stored_and_refused_for_writes(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any]
) -> None:
    build_stuck_s2d(conn, oban_prefix)
    rows = json.loads(ok(cli(database_url, oban_prefix, "workflows", "list", "--json")))
    assert [(r["id"], r["status"], r["unprocessed"]) for r in rows] == [(STUCK_ID, "running", 1)]
    shown = ok(cli(database_url, oban_prefix, "workflows", "show", STUCK_ID))
    assert "owner: elixir (hephaestus)" in shown
    assert "      active: Elixir.Realstack.Steps.NormalSlow" in shown
    assert "NormalSlow               done         UNPROCESSED" in shown
    assert f"jobs ({LOST_JOB_ID - 1}):" in shown
    data = json.loads(ok(cli(database_url, oban_prefix, "workflows", "show", STUCK_ID, "--json")))
    assert len(data["step_results"]) == 4 and len(data["jobs"]) == LOST_JOB_ID - 1
    for action in (["resume", STUCK_ID, "resumed"], ["cancel", STUCK_ID]):
        refused = cli(database_url, oban_prefix, "workflows", *action, "--workflows", MODULE)
        assert refused.exit_code == 1
        assert f"{STUCK_ID} is Elixir-owned (its jobs run in queue hephaestus)" in refused.output


def test_repair_command(database_url: str, oban_prefix: str, conn: psycopg.Connection[Any]) -> None:
    build_stuck_s2d(conn, oban_prefix)
    dry = ok(cli(database_url, oban_prefix, "workflows", "repair", "--dry-run"))
    assert dry.splitlines() == [
        f"would enqueue {STUCK_ID} [running; pending normal_slow] (elixir, queue hephaestus)",
        "1 stuck instance(s) (dry run: nothing written)",
    ]
    assert len(jobs_json(database_url, oban_prefix, STUCK_ID)) == LOST_JOB_ID - 1
    done = json.loads(ok(cli(database_url, oban_prefix, "workflows", "repair", "--json")))
    assert [(r["instance_id"], r["action"]) for r in done] == [(STUCK_ID, "enqueued")]
    golden = golden_jobs()[LOST_JOB_ID - 1]
    job = done[0]["job"]
    assert {k: job[k] for k in ("worker", "queue", "args", "meta", "tags", "max_attempts")} == {
        k: golden[k] for k in ("worker", "queue", "args", "meta", "tags", "max_attempts")
    }
    assert (
        ok(cli(database_url, oban_prefix, "workflows", "repair")).strip() == "0 stuck instance(s)"
    )


# -- bridge worker --workflows / [tool.bridge] / the API -----------------------------------------


def test_worker_rejects_a_workflows_module_that_cannot_load(database_url: str) -> None:
    result = CliRunner().invoke(
        main, ["--database-url", database_url, "worker", "--workflows", "bridge.db"]
    )
    assert result.exit_code == 2
    assert "module bridge.db defines no Workflow" in result.output


def test_workflow_settings_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        "[tool.bridge]\n"
        f'workflows = ["{MODULE}"]\n'
        'workflow_queue = "py_flows"\n'
        "workflow_concurrency = 7\n"
        'workflow_config_key = "Elixir.MyApp.PyFlows"\n'
        "workflow_repair_after = 90\n"
    )
    settings = load_settings(path)
    assert settings.workflows == [MODULE]
    assert (settings.workflow_queue, settings.workflow_concurrency) == ("py_flows", 7)
    assert settings.workflow_config_key == "Elixir.MyApp.PyFlows"
    assert settings.workflow_repair_after == 90.0
    path.write_text("[tool.bridge]\nworkflow_concurrency = 0\n")
    with pytest.raises(ConfigError, match="workflow_concurrency must be an integer >= 1"):
        load_settings(path)
    path.write_text("[tool.bridge]\nworkflows = [1]\n")
    with pytest.raises(ConfigError, match="workflows must be a list of module names"):
        load_settings(path)


def test_node_workflows_attach_the_runner_queue_and_lifeline(tmp_path: Path) -> None:
    from bridge.cli.worker import workflows_for_node

    path = tmp_path / "bridge.toml"
    path.write_text(f'workflows = ["{MODULE}"]\nworkflow_queue = "py_flows"\n')
    flows = workflows_for_node(
        load_settings(path),
        (),
        queue=None,
        concurrency=3,
        config_key="Elixir.MyApp.PyFlows",
        repair_after=45.0,
    )
    assert flows.workflows == [GREETING]
    config = NodeConfig(url="postgresql://unused", queues={"default": 5}, registry=Registry())
    runner = flows.attach(config)
    assert runner is not None
    assert (runner.queue, runner.config_key) == ("py_flows", "Elixir.MyApp.PyFlows")
    assert config.queues == {"default": 5, "py_flows": 3}
    assert config.registry.names() == sorted(
        ["HephaestusOban.AdvanceWorker", "HephaestusOban.ExecuteStepWorker", RESUME_WORKER]
    )
    assert all(config.registry.resolve(n).queue == "py_flows" for n in config.registry.names())  # type: ignore[union-attr]
    lifelines = [p for p in config.plugins or [] if isinstance(p, WorkflowLifeline)]
    assert [(p.grace, p.runners) for p in lifelines] == [(45.0, [runner])]


def test_load_workflows_explicit_list_or_module_scan() -> None:
    assert load_workflows([MODULE]) == [GREETING]  # WORKFLOWS wins over the scan
    found = load_workflows(["tests.workflows.run.test_timers"])
    assert sorted(w.name for w in found) == ["Elixir.Py.Timers.Broken", "Elixir.Py.Timers.Paused"]
    with pytest.raises(WorkflowModuleError, match="defines no Workflow"):
        load_workflows(["bridge.db"])


async def test_bridge_worker_process_runs_python_workflows(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any]
) -> None:
    """The real command: a ``bridge worker --workflows`` process runs a Wait workflow to the end
    and stops cleanly on SIGTERM."""
    import asyncio
    import signal

    from tests.support.worker import spawn_worker
    from tests.workflows.run.test_timers import PAUSED

    proc = spawn_worker(
        database_url, oban_prefix, "--workflows", "tests.workflows.run.test_timers",
        "--workflow-concurrency", "3", "--poll-interval", "0.2", "--grace", "2",
    )  # fmt: skip
    try:
        starter = WorkflowRunner(database_url, [PAUSED], prefix=oban_prefix)
        starter.start(conn, PAUSED, {"n": 1}, id="proc-1")
        starter.close()
        row = await wait_for_instance(
            database_url, oban_prefix, "proc-1", status_is("completed"), timeout=30
        )
        assert row["state"]["active_steps"] == []
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    text = err.decode()
    assert "workers: HephaestusOban.AdvanceWorker, HephaestusOban.ExecuteStepWorker" in text
    assert "bridge_workflows:3" in text
