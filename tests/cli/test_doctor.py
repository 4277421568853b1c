"""``bridge doctor`` as a user runs it (the installed script, from a scratch directory), against
databases where each hazard is made for real: rows written as Elixir writes them, a real
``bridge worker`` process as the Python node, the genuine Oban payloads as the Elixir node, a
clock really shifted (libfaketime). Each test asserts the exact lines and the exit status."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.cli.test_queues_and_nodes import elixir_node
from tests.jobs.support import golden_examiner_payload
from tests.support.cli import bridge_script, run_bridge
from tests.support.worker import spawn_worker
from tests.workflows.run.test_repair import STUCK_ID, build_stuck_s2d, put_instance

Conn = psycopg.Connection[Any]
Run = subprocess.CompletedProcess[str]

REPAIR_FIX = (
    "fix: `bridge workflows repair` enqueues the job its owner's own code would have (or run "
    "a node with `bridge worker --workflow-repair-after SECONDS`)"
)


def doctor(url: str, prefix: str, cwd: Path, *args: str) -> Run:
    return run_bridge("--database-url", url, "--prefix", prefix, "doctor", *args, cwd=cwd)


def lines(result: Run, status: int) -> list[str]:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout.splitlines()


def put_job(conn: Conn, prefix: str, **row: Any) -> int:
    """A job row as Oban's insert writes it (the table's defaults for the rest); its id."""
    row = {"args": {}, "meta": {}, "max_attempts": 20, "attempt": 0, **row}
    names = list(row)
    values = [Jsonb(v) if k in ("args", "meta") else v for k, v in row.items()]
    statement = sql.SQL("INSERT INTO {}.oban_jobs ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(prefix),
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(
            sql.SQL("%s::{}.oban_job_state").format(sql.Identifier(prefix))
            if k == "state"
            else sql.Placeholder()
            for k in names
        ),
    )
    found = conn.execute(statement, values).fetchone()
    assert found is not None
    return int(found[0])


# -- nothing to find -------------------------------------------------------------------------------


def test_a_clean_database_reports_nothing_and_exits_0(
    database_url: str, oban_prefix: str, tmp_path: Path
) -> None:
    result = doctor(database_url, oban_prefix, tmp_path, "--wait", "0.3")
    assert lines(result, 0) == [f'doctor: schema "{oban_prefix}": no hazard found']
    assert result.stderr == ""
    data = json.loads(doctor(database_url, oban_prefix, tmp_path, "--wait", "0", "--json").stdout)
    assert (data["findings"], data["exit_status"]) == ([], 0)
    assert data["facts"]["migration_versions"] == {
        "oban": 14,
        "hephaestus_ecto": 3,
        "hephaestus_oban": 4,
    }
    assert data["facts"]["notify_round_trip_seconds"] is not None


# -- the schema ------------------------------------------------------------------------------------


def test_a_missing_schema_is_exit_5(database_url: str, prefix: str, tmp_path: Path) -> None:
    assert lines(doctor(database_url, prefix, tmp_path, "--wait", "0"), 5) == [
        f'error: schema "{prefix}" does not exist; fix: create it with `bridge schema install` '
        "or the Elixir migrations (or pass --prefix)",
        f'doctor: schema "{prefix}": 1 error',
    ]


def test_a_schema_difference_and_an_old_oban_migration_are_exit_5(
    database_url: str, oban_prefix: str, tmp_path: Path, conn: Conn
) -> None:
    table = sql.Identifier(oban_prefix, "oban_jobs")
    conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN meta").format(table))
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS '12'").format(table))
    fix = (
        "fix: run the Elixir migrations (Oban, HephaestusEcto, HephaestusOban) up to the "
        "versions `bridge schema show` prints; `bridge schema verify` lists every difference"
    )
    result = doctor(database_url, oban_prefix, tmp_path, "--wait", "0")
    assert lines(result, 5) == [
        f'error: schema "{oban_prefix}": column oban_jobs.meta: column is missing (expected '
        f"jsonb); {fix}",
        f'error: schema "{oban_prefix}": table oban_jobs: Oban migration version 12 is older '
        f"than 14, the oldest bridge supports: run the Oban migrations up to 14; {fix}",
        f'error: schema "{oban_prefix}": index oban_jobs_meta_index: index is missing on '
        f"oban_jobs; {fix}",
        f'doctor: schema "{oban_prefix}": 3 errors',
    ]
    data = json.loads(doctor(database_url, oban_prefix, tmp_path, "--wait", "0", "--json").stdout)
    assert data["facts"]["migration_versions"]["oban"] == 12
    assert data["exit_status"] == 5


# -- the clock -------------------------------------------------------------------------------------


def test_a_host_clock_30_s_ahead_is_a_warning(
    database_url: str, oban_prefix: str, tmp_path: Path
) -> None:
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.skip("libfaketime's `faketime` is not installed (apt-get install faketime)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BRIDGE_DATABASE_URL")}
    env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"  # a shifted wall clock, as a misset host has
    command = [faketime, "-f", "+30s", bridge_script(), "--database-url", database_url]
    command.extend(["--prefix", oban_prefix, "doctor", "--wait", "0"])
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert lines(result, 1) == [
        "warning: the database clock is 30.0 s behind this host's (limit 1 s); fix: "
        "synchronise both machines' clocks (NTP, chrony): scheduled jobs, leases and rescues "
        "compare times written by each",
        f'doctor: schema "{oban_prefix}": 1 warning',
    ]


# -- nodes -----------------------------------------------------------------------------------------


def test_jobs_executing_on_a_node_never_heard_are_named_with_the_rescue_setting(
    database_url: str, oban_prefix: str, tmp_path: Path, conn: Conn
) -> None:
    ids = [
        put_job(
            conn,
            oban_prefix,
            state="executing",
            queue="default",
            worker="BadgeForge.PrintCenter",
            attempt=1,
            attempted_by=["gone-node", str(uuid.uuid4())],
            attempted_at=sql_time(conn, "2 hours"),
        )
        for _ in range(2)
    ]
    result = doctor(database_url, oban_prefix, tmp_path, "--wait", "0.5")
    [line, summary] = lines(result, 1)
    age = re.search(r"the oldest for (\d+) s", line)
    assert age is not None and 7200 <= int(age[1]) < 7300, line  # attempted 2 h ago
    assert line == (
        f"warning: 2 jobs executing on node 'gone-node' (ids {ids[0]}, {ids[1]}, the oldest for "
        f"{age[1]} s), which was not heard alive in 0.5 s (no sonar ping, check-in or "
        "oban_peers lease); fix: a leader's lifeline makes them available again once they have "
        "run longer than its rescue-after: `bridge worker --rescue-after SECONDS` on a Python "
        "node, Oban.Plugins.Lifeline's rescue_after (default 60 min) on an Elixir one; any "
        f"rescue-after under {age[1]} s frees these; listen a whole sonar interval (--wait 16) "
        "to tell a dead node from a quiet one"
    )
    assert summary == f'doctor: schema "{oban_prefix}": 1 warning'


def sql_time(conn: Conn, ago: str) -> Any:
    row = conn.execute("SELECT timezone('UTC', now()) - %s::interval", (ago,)).fetchone()
    assert row is not None
    return row[0]


def examiner(*queues: str) -> str:
    """oban_met's message from the golden node ``vm`` for ``queues`` (the golden check, its
    queue renamed)."""
    [check] = json.loads(golden_examiner_payload())["checks"]
    return json.dumps({"checks": [{**check, "queue": q, "running": []} for q in queues]})


@contextmanager
def python_node(url: str, prefix: str, queues: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``bridge worker --gossip`` named ``py-node``, once it leads ``Bridge``."""
    process = spawn_worker(url, prefix, "--queues", queues, "--node", "py-node", "--gossip")
    try:
        deadline = time.monotonic() + 30
        with psycopg.connect(url, autocommit=True) as conn:
            query = sql.SQL("SELECT 1 FROM {}.oban_peers WHERE name = 'Bridge'").format(
                sql.Identifier(prefix)
            )
            while conn.execute(query).fetchone() is None:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the Python node never led"
                time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_queues_of_both_languages_and_jobs_no_live_node_of_their_language_takes(
    database_url: str, oban_prefix: str, tmp_path: Path, conn: Conn
) -> None:
    later = sql_time(conn, "-1 hour")  # retryable until then: no node claims it meanwhile
    elixir_in_py = put_job(
        conn,
        oban_prefix,
        state="retryable",
        queue="pyq",
        worker="BadgeForge.PrintCenter",
        scheduled_at=later,
    )
    python_in_ex = put_job(
        conn, oban_prefix, state="available", queue="exq", worker="myapp.workers.Resize"
    )
    nowhere = put_job(
        conn, oban_prefix, state="available", queue="nobody", worker="myapp.workers.Resize"
    )
    with (
        python_node(database_url, oban_prefix, "pyq:1,shared:1"),
        elixir_node(database_url, oban_prefix, gossip=True, payload=examiner("exq", "shared")),
    ):
        result = doctor(database_url, oban_prefix, tmp_path, "--wait", "2")
    python_fix = (
        "fix: start a Python node serving it (`bridge worker --queues {q}:10 --workers MODULE` "
        "with the module defining myapp.workers.Resize), or enqueue it in a queue Python nodes "
        "serve"
    )
    assert lines(result, 1) == [
        "warning: queue 'shared' is served by both languages: Elixir node(s) vm and Python "
        "node(s) py-node, so a job goes to whichever claims it first and fails there if that "
        "side has no such worker; fix: serve each queue from one language only: give Python "
        "workers a queue of their own (@worker(queue=...), bridge worker --queues) and drop it "
        "from the other side's queue list",
        f"error: 1 job of Python worker myapp.workers.Resize wait in queue 'exq' (ids "
        f"{python_in_ex}), served only by Elixir node(s) vm, which cannot run it; "
        + python_fix.format(q="exq"),
        f"error: 1 job of Python worker myapp.workers.Resize wait in queue 'nobody' (ids "
        f"{nowhere}), which no live node serves; " + python_fix.format(q="nobody"),
        f"error: 1 job of Elixir worker BadgeForge.PrintCenter wait in queue 'pyq' (ids "
        f"{elixir_in_py}), served only by Python node(s) py-node, which cannot run it; fix: "
        "add 'pyq' to the queues of the Elixir app that defines BadgeForge.PrintCenter (config "
        ":my_app, Oban, queues: [...]), or enqueue it in a queue that app serves",
        f'doctor: schema "{oban_prefix}": 3 errors, 1 warning',
    ]


def test_without_check_ins_doctor_says_it_cannot_tell(
    database_url: str, oban_prefix: str, tmp_path: Path, conn: Conn
) -> None:
    put_job(conn, oban_prefix, state="available", queue="nobody", worker="myapp.workers.Resize")
    with elixir_node(database_url, oban_prefix, gossip=False):
        result = doctor(database_url, oban_prefix, tmp_path, "--wait", "0.5")
    assert lines(result, 0) == [
        "note: cannot tell whether a live node serves the workers waiting in queue(s) 'nobody' "
        "(1 job): not every live node sent a gossip check-in in 0.5 s, or its language is "
        "unknown; fix: start Python nodes with `bridge worker --gossip` (Elixir nodes send "
        "check-ins with Oban Web's oban_met), or check with `bridge queues list`",
        f'doctor: schema "{oban_prefix}": no hazard found (1 note)',
    ]


# -- workflows -------------------------------------------------------------------------------------


def test_a_stuck_workflow_instance_points_at_repair(
    database_url: str, oban_prefix: str, tmp_path: Path, conn: Conn
) -> None:
    build_stuck_s2d(conn, oban_prefix)
    result = doctor(database_url, oban_prefix, tmp_path, "--wait", "0")
    assert lines(result, 1) == [
        f"error: workflow instance '{STUCK_ID}' (Elixir.Realstack.WF.AsyncFirst, running) is "
        "stuck: the result of Elixir.Realstack.Steps.NormalSlow waits with no advance job to "
        f"apply it (a lost advance); {REPAIR_FIX}",
        f'doctor: schema "{oban_prefix}": 1 error',
    ]
    run_bridge(
        "--database-url",
        database_url,
        "--prefix",
        oban_prefix,
        "workflows",
        "repair",
        "--once",
        cwd=tmp_path,
    )
    # Healed: the advance waits for an Elixir node, which doctor, hearing none, cannot judge.
    assert lines(doctor(database_url, oban_prefix, tmp_path, "--wait", "0"), 0) == [
        "note: cannot tell whether a live node serves the workers waiting in queue(s) "
        "'hephaestus' (1 job): not every live node sent a gossip check-in in 0 s, or its "
        "language is unknown; fix: start Python nodes with `bridge worker --gossip` (Elixir "
        "nodes send check-ins with Oban Web's oban_met), or check with `bridge queues list`",
        f'doctor: schema "{oban_prefix}": no hazard found (1 note)',
    ]


INSTANCE = {
    "workflow_version": 1,
    "inserted_at": "2026-11-23T01:00:00",
    "updated_at": "2026-11-23T01:00:00",
}


def test_a_delegated_job_discarded_without_its_failure_policy(
    database_url: str, oban_prefix: str, tmp_path: Path, conn: Conn
) -> None:
    step = "Elixir.Shop.Steps.Reserve"
    state = {"active_steps": [step], "completed_steps": [], "context": {"initial": {}, "steps": {}}}
    put_instance(
        conn,
        oban_prefix,
        {
            **INSTANCE,
            "id": "shop::1",
            "workflow": "Elixir.Shop.Flows.Order",
            "status": "waiting",
            "state": state,
        },
    )
    args = {
        "protocol": 1,
        "instance_id": "shop::1",
        "step_ref": step,
        "workflow": "Elixir.Shop.Flows.Order",
        "workflow_version": 1,
        "config_key": "shop",
        "advance_queue": "hephaestus",
        "context_key": "reserve",
        "events": ["reserved", "failed"],
        "context_keys": [],
        "failure_event": "failed",
        "context": {"initial": {}, "steps": {}},
    }
    job = put_job(
        conn,
        oban_prefix,
        state="discarded",
        queue="default",
        worker="shop.steps.Reserve",
        args=args,
        attempt=3,
        max_attempts=3,
        attempted_by=["gone-node", str(uuid.uuid4())],
        attempted_at=sql_time(conn, "10 minutes"),
        discarded_at=sql_time(conn, "5 minutes"),
    )
    result = doctor(database_url, oban_prefix, tmp_path, "--wait", "0")
    assert lines(result, 1) == [
        f"error: delegated job {job} (shop.steps.Reserve) for step {step} of workflow instance "
        "'shop::1' was discarded without applying its failure policy: the instance waits for "
        "ever; fix: run a `bridge worker` serving that worker's module (its delegation lifeline "
        "applies the failure policy within 30 s), or retry the job with `bridge jobs retry ID`",
        f'doctor: schema "{oban_prefix}": 1 error',
    ]


FLOWS = """
from bridge.workflows import DONE, StepOk, Workflow, step

@step(name="Elixir.Py.Steps.Render", events=["rendered"])
def render(instance, config, context):
    return StepOk("rendered", {})

WORKFLOWS = [Workflow(name="Elixir.Py.Flows.Badge", start=render,
                      transitions=[(render, "rendered", DONE)])]
"""


def test_python_owned_workflows_need_a_declaration_and_rows_are_checked_against_it(
    database_url: str, oban_prefix: str, tmp_path: Path, conn: Conn
) -> None:
    gone = "Elixir.Py.Steps.Gone"  # a step the definition no longer has
    for instance_id, done in (("badge::1", "Elixir.Py.Steps.Render"), ("badge::2", gone)):
        state = {
            "active_steps": [],
            "completed_steps": [done],
            "context": {"initial": {}, "steps": {}},
        }
        put_instance(
            conn,
            oban_prefix,
            {
                **INSTANCE,
                "id": instance_id,
                "workflow": "Elixir.Py.Flows.Badge",
                "status": "completed",
                "state": state,
            },
        )
        put_job(  # the Python runner's advance, on its own queue (repair.owner_of's rule)
            conn,
            oban_prefix,
            state="completed",
            queue="bridge_workflows",
            worker="HephaestusOban.AdvanceWorker",
            args={"instance_id": instance_id, "config_key": "bridge"},
        )
    result = doctor(database_url, oban_prefix, tmp_path, "--wait", "0")
    assert lines(result, 0) == [
        "note: workflow Elixir.Py.Flows.Badge is Python-owned (2 instances): it needs an "
        "ObanBridge.PythonWorkflow declaration in every Elixir app that loads instances, or "
        "HephaestusEcto raises on its rows; fix: generate it with `bridge workflows "
        "export-elixir MODULE --output lib/my_app/python_workflows.ex` and compile it in; give "
        "doctor --workflows MODULE to check the rows against it",
        f'doctor: schema "{oban_prefix}": no hazard found (1 note)',
    ]

    (tmp_path / "pyflows.py").write_text(FLOWS)
    result = doctor(database_url, oban_prefix, tmp_path, "--wait", "0", "--workflows", "pyflows")
    assert lines(result, 1) == [
        "error: workflow instance 'badge::2' (Elixir.Py.Flows.Badge) holds names its generated "
        f"declaration does not pin (state.completed_steps[0] '{gone}'): an Elixir node raises "
        "loading it; fix: the rows were written by another definition (a step or event since "
        "renamed?): regenerate the declaration from the definition that wrote them with "
        "`bridge workflows export-elixir pyflows --output lib/my_app/python_workflows.ex`, or "
        "finish or delete those instances",
        f'doctor: schema "{oban_prefix}": 1 error',
    ]


def test_a_role_that_may_not_run_verify_gets_a_note_and_the_other_checks(
    database_url: str, oban_prefix: str, tmp_path: Path, conn: Conn
) -> None:
    """verify builds the expected schema in a scratch schema; a role without CREATE on the
    database cannot, so doctor says what it could not compare and runs every other check."""
    role = f"bridge_doctor_{uuid.uuid4().hex[:8]}"
    name, schema = sql.Identifier(role), sql.Identifier(oban_prefix)
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(name))
    try:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, name))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, name))
        parts = urlsplit(database_url)
        url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
        result = doctor(url, oban_prefix, tmp_path, "--wait", "0")
        [note, summary] = lines(result, 0)
        assert note.startswith(
            f'note: schema "{oban_prefix}" was not compared with what bridge needs (permission '
            "denied"
        )
        assert note.endswith(
            "this role may not create the scratch schema the comparison builds, so only the "
            "presence of oban_jobs was checked; fix: run `bridge schema verify` as a role with "
            "CREATE on the database"
        )
        assert summary == f'doctor: schema "{oban_prefix}": no hazard found (1 note)'
        absent = f"absent_{uuid.uuid4().hex[:8]}"
        assert lines(doctor(url, absent, tmp_path, "--wait", "0"), 5) == [
            f'error: schema "{absent}" has no oban_jobs table; fix: create it with `bridge '
            "schema install` or the Elixir migrations (or pass --prefix)",
            f'doctor: schema "{absent}": 1 error',
        ]
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(name))
        conn.execute(sql.SQL("DROP ROLE {}").format(name))


NAPS = """
import time

from bridge import worker

@worker(queue="slow")
def nap(job):
    time.sleep(job.args["seconds"])
"""


def test_after_a_whole_sonar_interval_a_dead_nodes_jobs_are_an_error_a_live_ones_nothing(
    database_url: str, oban_prefix: str, tmp_path: Path, conn: Conn
) -> None:
    """A real Python node executing a job (alive: it pings and leads) next to a job a gone
    node left executing; doctor listens 16 s, so every live node has pinged."""
    (tmp_path / "naps.py").write_text(NAPS)
    ghost = put_job(
        conn,
        oban_prefix,
        state="executing",
        queue="slow",
        worker="naps.nap",
        attempt=1,
        attempted_by=["gone-node", str(uuid.uuid4())],
        attempted_at=sql_time(conn, "10 minutes"),
    )
    live = put_job(
        conn, oban_prefix, state="available", queue="slow", worker="naps.nap", args={"seconds": 40}
    )
    process = spawn_worker(
        database_url,
        oban_prefix,
        "--queues",
        "slow:1",
        "--workers",
        "naps",
        "--app-dir",
        str(tmp_path),
        "--node",
        "py-node",
    )
    try:
        state = sql.SQL("SELECT state::text FROM {}.oban_jobs WHERE id = %s").format(
            sql.Identifier(oban_prefix)
        )
        deadline = time.monotonic() + 30
        while (conn.execute(state, (live,)).fetchone() or [""])[0] != "executing":
            assert process.poll() is None and time.monotonic() < deadline, "never claimed"
            time.sleep(0.1)
        result = doctor(database_url, oban_prefix, tmp_path, "--wait", "16")
        data = json.loads(
            doctor(database_url, oban_prefix, tmp_path, "--wait", "16", "--json").stdout
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    [line, summary] = lines(result, 1)
    assert line.startswith(
        f"error: 1 job executing on node 'gone-node' (ids {ghost}, the oldest for 6"
    )
    assert "which was not heard alive in 16 s" in line and "--wait 16" not in line
    assert summary == f'doctor: schema "{oban_prefix}": 1 error'
    [py_node] = [n for n in data["facts"]["nodes"] if n["node"] == "py-node"]
    assert (py_node["alive"], py_node["language"], py_node["queues"]) == (True, "python", ["slow"])
