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
from psycopg import sql

from bridge.cli import main
from bridge.cli.settings import ConfigError, load_settings
from bridge.jobs.client.registry import Registry
from bridge.jobs.node import NodeConfig
from bridge.wire import jsonfmt
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
    atoms=["hello", "name"],
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
    assert bad_module.output == (
        "Error: cannot import workflows module 'no.such.mod': ModuleNotFoundError: No module "
        "named 'no' (run from the directory that holds it, or pass --app-dir)\n"
    )
    unknown = cli(
        database_url, oban_prefix, "workflows", "start", "nope", "--workflows", MODULE, "--id", "x"
    )
    assert unknown.exit_code == 2 and unknown.output == (
        f"Error: no workflow 'nope' in {MODULE}: known: Elixir.Cli.Flows.Greeting (Greeting)\n"
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


def test_repair_command(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Through the installed script: the dry run, then a run whose advance nobody serves (no
    Elixir node here), so the healed instance never settles and the command says so, then a
    single pass that finds the advance queued and nothing stuck."""
    build_stuck_s2d(conn, oban_prefix)

    def bridge(*args: str) -> str:
        status, out, err = _bridge(
            database_url, oban_prefix, tmp_path, "workflows", "repair", *args
        )
        assert (status, err) == (0, ""), (status, out, err)
        return out

    assert bridge("--dry-run").splitlines() == [
        f"pass 1: would enqueue {STUCK_ID} [running; pending normal_slow]"
        " (elixir, queue hephaestus)",
        "1 stuck instance(s), 0 advance(s) enqueued in 1 pass(es) (dry run: nothing written)",
    ]
    assert len(jobs_json(database_url, oban_prefix, STUCK_ID)) == LOST_JOB_ID - 1
    done = json.loads(bridge("--json", "--settle", "0.2"))
    assert {k: done[k] for k in ("passes", "stuck", "enqueued", "unsettled")} == {
        "passes": 1,
        "stuck": 1,
        "enqueued": 1,
        "unsettled": [STUCK_ID],
    }
    assert [(r["pass"], r["instance_id"], r["kind"], r["action"]) for r in done["repairs"]] == [
        (1, STUCK_ID, "lost advance", "enqueued")
    ]
    golden = golden_jobs()[LOST_JOB_ID - 1]
    job = done["repairs"][0]["job"]
    assert {k: job[k] for k in ("worker", "queue", "args", "meta", "tags", "max_attempts")} == {
        k: golden[k] for k in ("worker", "queue", "args", "meta", "tags", "max_attempts")
    }
    assert bridge("--once").splitlines() == [
        "0 stuck instance(s), 0 advance(s) enqueued in 1 pass(es)"
    ]
    # The advance ends without applying the result (as the lost one did): stuck again.
    conn.execute(
        f"UPDATE {oban_prefix}.oban_jobs SET state = 'completed' WHERE id = %s", (job["id"],)
    )
    again = bridge("--settle", "0").splitlines()
    assert again[0].startswith("pass 1: enqueued job ") and again[0].endswith(
        f" {STUCK_ID} [running; pending normal_slow] (elixir, queue hephaestus)"
    )
    assert again[1] == (
        "1 stuck instance(s), 1 advance(s) enqueued in 1 pass(es); 1 healed instance(s) still"
        " moving after 0 s: run repair again later"
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


# -- every row the database can hold, as a user runs the commands ------------------------------

# What an Elixir app, a bug or a hand-written UPDATE may leave in workflow_instances.state. The
# commands read JSON as Jason does: huge integers, 300 and 2,000 levels (psycopg's own decoder
# stops near 1,000); a value of the wrong shape is marked.
DEEP_300 = "[" * 300 + "1" + "]" * 300
DEEP_2000 = "[" * 2000 + "1" + "]" * 2000
LONG_5000 = "1" + "0" * 5000  # past int()'s 4,300 digits; Jason reads it
ODD_STATES = {
    "huge": '{"context": {"initial": {"n": 123456789012345678901234567890}, "steps": {}},'
    ' "active_steps": [], "completed_steps": []}',
    "deep300": '{"context": {"initial": {"d": ' + DEEP_300 + '}, "steps": {}}}',
    "long": '{"context": {"initial": {"n": ' + LONG_5000 + '}, "steps": {}},'
    ' "active_steps": [], "completed_steps": []}',
    "deep2000": '{"context": {"initial": {"d": ' + DEEP_2000 + '}, "steps": {}},'
    ' "active_steps": ' + DEEP_2000 + "}",
    "shape": '{"context": [1, 2], "active_steps": "x", "execution_history": {"a": 1},'
    ' "current_step": 7}',
    "array": "[1, 2, 3]",
    "unknown": '{"bogus": 1, "context": {"initial": {}, "steps": {"zzz": 1}},'
    ' "active_steps": ["Elixir.No.Such"]}',
}


def _insert_odd_rows(conn: psycopg.Connection[Any], prefix: str) -> None:
    from psycopg import sql

    p = sql.Identifier(prefix)
    for instance_id, state in ODD_STATES.items():
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.workflow_instances (id, workflow, status, state, inserted_at,"
                " updated_at) VALUES (%s, %s, 'running', %s::jsonb, '2026-01-02 03:04:05',"
                " %s)"
            ).format(p),
            (
                instance_id,
                GREETING.name,
                state,
                "infinity" if instance_id == "huge" else "2026-01-02 03:04:06",
            ),
        )
    # a step result and a job of deep2000 that hold JSON nested as deep
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.hephaestus_step_results (instance_id, step_ref, event,"
            " context_updates) VALUES ('deep2000', 'Elixir.Cli.Steps.Greet', 'greeted', %s::jsonb)"
        ).format(p),
        ('{"d": ' + DEEP_2000 + "}",),
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_jobs (worker, queue, args, errors) VALUES"
            " ('Some.Worker', 'q', %s::jsonb, ARRAY[%s::jsonb])"
        ).format(p),
        ('{"instance_id": "deep2000", "d": ' + DEEP_2000 + "}", DEEP_2000),
    )


def _bridge(database_url: str, prefix: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    from tests.support.cli import run_bridge

    done = run_bridge(
        "--database-url", database_url, "--prefix", prefix, *args,
        cwd=cwd, env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_list_and_show_read_every_row_the_database_can_hold(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    _insert_odd_rows(conn, oban_prefix)

    def bridge(*args: str) -> str:
        code, out, err = _bridge(database_url, oban_prefix, tmp_path, *args)
        assert (code, err) == (0, ""), err
        return out

    listed = bridge("workflows", "list").splitlines()
    assert listed[0].split() == ["id", "status", "workflow", "active", "done", "unproc", "updated"]
    rows = {line.split()[0]: line for line in listed[1:]}
    assert rows.keys() == ODD_STATES.keys()
    assert rows["huge"].split()[-1] == "infinity"
    assert "<undecodable: active_steps is an array, not a list of step names>" in rows["deep2000"]
    assert "<undecodable: active_steps is a string, not a list of step names>" in rows["shape"]
    assert rows["unknown"].split()[3] == "Such"

    as_json = {r["id"]: r for r in jsonfmt.loads(bridge("workflows", "list", "--json"))}
    assert jsonfmt.dumps(as_json["deep2000"]["active_steps"]) == DEEP_2000
    assert as_json["shape"]["active_steps"] == "x"
    assert as_json["huge"]["updated_at"] == "infinity"

    shows = {instance_id: bridge("workflows", "show", instance_id) for instance_id in ODD_STATES}
    assert '     context: initial {"n":123456789012345678901234567890}' in shows["huge"]
    assert "    inserted: 2026-01-02 03:04:05  updated infinity" in shows["huge"]
    assert f'     context: initial {{"d":{DEEP_300}}}' in shows["deep300"]
    assert f'     context: initial {{"n":{LONG_5000}}}' in shows["long"].splitlines()
    deep = shows["deep2000"]
    assert f'     context: initial {{"d":{DEEP_2000}}}' in deep.splitlines()
    assert "      active: <undecodable: active_steps is an array, not a list of step names>" in deep
    assert f'  Greet                    greeted      UNPROCESSED {{"d":{DEEP_2000}}}' in deep
    assert "Some.Worker" in deep and "jobs (1):" in deep
    assert shows["shape"].splitlines()[4:11] == [
        "current step: <undecodable: current_step is a number, not a step name>",
        "      active: <undecodable: active_steps is a string, not a list of step names>",
        "   completed: -",
        "    inserted: 2026-01-02 03:04:05  updated 2026-01-02 03:04:06",
        "     context: <undecodable: context is an array, not an object>",
        "    metadata: {}",
        "     history: <undecodable: execution_history is an object, not a list>",
    ]
    assert "       state: <undecodable: the state is an array, not an object>" in shows["array"]
    assert "              steps.zzz 1" in shows["unknown"]
    assert " unknown key: bogus 1" in shows["unknown"]

    shown = {i: jsonfmt.loads(bridge("workflows", "show", i, "--json")) for i in ODD_STATES}
    assert shown["huge"]["instance"]["state"]["context"]["initial"] == {
        "n": 123456789012345678901234567890
    }
    assert shown["deep300"]["instance"]["state"]["context"]["initial"]["d"] == json.loads(DEEP_300)
    data = shown["deep2000"]
    deep_json = '{"d":' + DEEP_2000 + "}"
    assert jsonfmt.dumps(data["instance"]["state"]["context"]["initial"]) == deep_json
    assert jsonfmt.dumps(data["instance"]["state"]["active_steps"]) == DEEP_2000
    assert jsonfmt.dumps(data["step_results"][0]["context_updates"]) == deep_json
    assert jsonfmt.dumps(data["jobs"][0]["errors"]) == "[" + DEEP_2000 + "]"
    assert data["jobs"][0]["args"]["instance_id"] == "deep2000"
    assert shown["array"]["instance"]["state"] == [1, 2, 3]
    assert shown["long"]["instance"]["state"]["context"]["initial"] == {"n": 10**5000}


@pytest.mark.parametrize(
    ("instance_id", "message"),
    [
        (
            "deep2000",
            "cannot cancel 'deep2000': its state cannot be decoded: active_steps must hold module "
            "strings, got [[[[...]]]]",
        ),
        (
            "shape",
            "cannot cancel 'shape': its state cannot be decoded: current_step must hold module "
            "strings, got 7",
        ),
        (
            "array",
            "cannot cancel 'array': its state cannot be decoded: state must be a JSON object",
        ),
        (
            "unknown",
            "cannot cancel 'unknown': its state cannot be decoded: context.steps has the key "
            "'zzz', which no step of Elixir.Cli.Flows.Greeting writes",
        ),
        ("nobody", "no workflow instance 'nobody'"),
    ],
)
def test_cancel_says_why_it_cannot(
    database_url: str,
    oban_prefix: str,
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    instance_id: str,
    message: str,
) -> None:
    _insert_odd_rows(conn, oban_prefix)
    done = _bridge(
        database_url, oban_prefix, tmp_path, "workflows", "cancel", instance_id,
        "--workflows", MODULE,
    )  # fmt: skip
    assert done == (1, "", f"Error: {message}\n")


def test_cancel_and_resume_json(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    runner = WorkflowRunner(database_url, WORKFLOWS, prefix=oban_prefix)
    try:
        runner.start(conn, GREETING, {"name": "x"}, id="greeting::j1")
    finally:
        runner.close()
    code, out, err = _bridge(
        database_url, oban_prefix, tmp_path, "workflows", "cancel", "greeting::j1",
        "--workflows", MODULE, "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    cancelled = json.loads(out)
    assert cancelled["instance_id"] == "greeting::j1" and cancelled["status"] == "failed"
    assert len(cancelled["cancelled_jobs"]) == 1
    code, out, err = _bridge(
        database_url, oban_prefix, tmp_path, "workflows", "resume", "greeting::j1", "approved",
        "--workflows", MODULE, "--json",
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err == "Error: ResumeError: greeting::j1 is failed, not waiting on a step\n"


# -- workflow names ---------------------------------------------------------------------------

TWO_ORDERS = """
from bridge.workflows import DONE, StepOk, Workflow, step

@step(name="Elixir.Shop.Steps.Pick", events=["done"])
def pick(instance, config, context):
    return StepOk("done", {})

SHOP = Workflow(name="Elixir.Shop.Flows.Order", start=pick, transitions=[(pick, "done", DONE)])
BACK = Workflow(name="Elixir.Back.Flows.Order", start=pick, transitions=[(pick, "done", DONE)])
BADGE = Workflow(name="Elixir.Shop.Flows.Badge", start=pick, transitions=[(pick, "done", DONE)])
"""


def test_workflow_names_full_short_unknown_and_ambiguous(
    database_url: str, oban_prefix: str, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    (app / "myapp").mkdir(parents=True)
    (app / "myapp" / "__init__.py").write_text("")
    (app / "myapp" / "flows.py").write_text(TWO_ORDERS)
    from tests.support.cli import run_bridge

    def start(name: str, *more: str) -> tuple[int, str, str]:
        done = run_bridge(
            "--database-url", database_url, "--prefix", oban_prefix, "workflows", "start", name,
            "--workflows", "myapp.flows", *more, "--id", f"id-{name}", cwd=app,
        )  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    assert start("Badge") == (
        0,
        "started id-Badge (Elixir.Shop.Flows.Badge) in queue bridge_workflows\n",
        "",
    )
    assert start("Shop.Flows.Order")[0] == 0  # imported from the current directory, as a user
    elsewhere = run_bridge(
        "--database-url", database_url, "--prefix", oban_prefix, "workflows", "start",
        "Elixir.Back.Flows.Order", "--workflows", "myapp.flows", "--app-dir", str(app),
        "--id", "id-elsewhere", cwd=tmp_path,
    )  # fmt: skip
    assert (elsewhere.returncode, elsewhere.stderr) == (0, "")
    not_found = run_bridge(
        "--database-url", database_url, "--prefix", oban_prefix, "workflows", "start", "Order",
        "--workflows", "myapp.flows", "--id", "x", cwd=tmp_path,
    )  # fmt: skip
    assert (not_found.returncode, not_found.stderr) == (
        2,
        "Error: cannot import workflows module 'myapp.flows': ModuleNotFoundError: No module "
        "named 'myapp' (run from the directory that holds it, or pass --app-dir)\n",
    )
    assert start("badge", "--json")[:2] == (
        0,
        '{"instance_id":"id-badge","workflow":"Elixir.Shop.Flows.Badge",'
        '"queue":"bridge_workflows"}\n',
    )
    assert start("Order") == (
        2,
        "",
        "Error: workflow 'Order' is ambiguous in myapp.flows: Elixir.Back.Flows.Order, "
        "Elixir.Shop.Flows.Order; give the full name\n",
    )
    assert start("Invoice") == (
        2,
        "",
        "Error: no workflow 'Invoice' in myapp.flows: known: Elixir.Back.Flows.Order (Order), "
        "Elixir.Shop.Flows.Badge (Badge), Elixir.Shop.Flows.Order (Order)\n",
    )
    listed = _bridge(
        database_url, oban_prefix, tmp_path, "workflows", "list", "--workflow", "Order"
    )
    assert sorted(line.split()[0] for line in listed[1].splitlines()[1:]) == [
        "id-Shop.Flows.Order",
        "id-elsewhere",
    ]


def test_every_workflows_command_and_option_has_help(tmp_path: Path) -> None:
    from tests.support.cli import run_bridge

    for command in ("list", "show", "start", "resume", "cancel", "repair"):
        done = run_bridge("workflows", command, "--help", cwd=tmp_path)
        assert (done.returncode, done.stderr) == (0, "")
        lines = done.stdout.splitlines()
        assert lines[2].strip(), lines  # the command's own description
        options = lines[lines.index("Options:") + 1 :]
        options = options[: options.index("")] if "" in options else options  # then the epilog
        starts = [n for n, line in enumerate(options) if line.startswith("  -")]
        assert len(starts) >= 2, lines
        for n in starts:  # "  --name TYPE  help", the help possibly on the next line
            same_line = len(options[n].strip().split("  ")) >= 2
            next_line = n + 1 < len(options) and options[n + 1].startswith(" " * 6)
            assert same_line or next_line, options[n]
    done = run_bridge("workflows", "--help", cwd=tmp_path)
    assert "list and show read any instance as stored" in done.stdout


def test_repair_shows_progress_on_a_terminal_only(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    import os
    import pty
    import subprocess

    from tests.support.cli import bridge_script

    build_stuck_s2d(conn, oban_prefix)
    piped = _bridge(database_url, oban_prefix, tmp_path, "workflows", "repair", "--dry-run")
    assert piped[0] == 0 and piped[2] == ""  # no progress when stderr is not a terminal
    main_fd, terminal = pty.openpty()
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NO_COLOR")}
        proc = subprocess.run(
            [bridge_script(), "--database-url", database_url, "--prefix", oban_prefix,
             "workflows", "repair", "--dry-run"],
            cwd=tmp_path, env={**env, "TERM": "xterm"}, stdout=subprocess.PIPE,
            stderr=terminal, timeout=60, check=False,
        )  # fmt: skip
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main_fd)
    assert proc.returncode == 0
    assert proc.stdout.decode().splitlines()[-1] == (
        "1 stuck instance(s), 0 advance(s) enqueued in 1 pass(es) (dry run: nothing written)"
    )
    assert b"repair: looking for stuck workflow instances" in shown


def test_start_refuses_a_context_key_the_declaration_does_not_pin(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The installed script from a scratch directory: one line naming the key, its path and the
    fix, exit status 1, nothing inserted."""
    code, out, err = _bridge(
        database_url, oban_prefix, tmp_path,
        "workflows", "start", "greeting", "--workflows", MODULE, "--key", "u1",
        "--context", '{"name": "ada", "pages": 3}',
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err == (
        "Error: UndeclaredKeyError: the initial context holds key(s) 'pages' that "
        "Cli.Flows.Greeting's Elixir declaration does not pin (state.context.initial.pages: not "
        "an atom known to the Elixir side), so an Elixir node could not load the instance; "
        "declare them in Workflow(atoms=[...]) and regenerate the Elixir declaration with "
        "`bridge workflows export-elixir`\n"
    )
    counts = conn.execute(
        sql.SQL("SELECT (SELECT count(*) FROM {p}.workflow_instances),"
                " (SELECT count(*) FROM {p}.oban_jobs)").format(p=sql.Identifier(oban_prefix))
    ).fetchone()  # fmt: skip
    assert counts == (0, 0)
