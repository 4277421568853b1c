"""``bridge worker`` as an operator starts it: the installed script, run from a scratch directory
beside (or away from) the app's package, with no PYTHONPATH. Each failure at start is one line
and its own exit status, and nothing is started; a node that starts runs the README's jobs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from bridge import Job, insert_all
from tests.support.cli import ROOT, bridge_script, run_bridge

Conn = psycopg.Connection[tuple[Any, ...]]

WORKERS = """\
from pathlib import Path

from bridge import worker


@worker(queue="badges", max_attempts=5)
class GenerateBadge:
    def process(self, job):
        Path(job.args["out"]).write_text(str(job.args["badge_id"]))
"""


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without PYTHONPATH, database or any BRIDGE_* setting."""
    cleared = {"PYTHONPATH", "DATABASE_URL"}
    base = {k: v for k, v in os.environ.items() if k not in cleared and not k.startswith("BRIDGE_")}
    return {**base, **(env or {})}


class Worker:
    """A ``bridge worker`` process whose stderr goes to a file the test can read while it runs."""

    def __init__(self, args: list[str], cwd: Path, env: Mapping[str, str] | None) -> None:
        assert ROOT not in (cwd.resolve(), *cwd.resolve().parents)
        self.log = cwd / f"worker-{time.monotonic_ns()}.log"
        self._file = self.log.open("w")
        self.proc = subprocess.Popen(
            [bridge_script(), *args],
            cwd=cwd,
            env=environment(env),
            stdout=subprocess.DEVNULL,
            stderr=self._file,
        )

    @property
    def stderr(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in:\n{self.stderr}")
            time.sleep(0.05)
        return self.stderr

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._file.close()


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A scratch project directory holding ``myapp/workers.py`` as the README writes it."""
    package = tmp_path / "project" / "myapp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "workers.py").write_text(WORKERS)
    return tmp_path / "project"


@pytest.fixture
def workers(app: Path, database_url: str, oban_prefix: str) -> Iterator[Any]:
    started: list[Worker] = []

    def start(*args: str, cwd: Path = app, env: Mapping[str, str] | None = None) -> Worker:
        base = ["--database-url", database_url, "--prefix", oban_prefix, "worker"]
        worker = Worker([*base, *args], cwd, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(signal.SIGKILL)


def bridge(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Any:
    return run_bridge(*args, cwd=cwd, env={**environment(), **(env or {})}, timeout=60)


def job_state(conn: Conn, prefix: str, job_id: int) -> tuple[str, int, list[str] | None]:
    row = conn.execute(
        sql.SQL("SELECT state::text, attempt, attempted_by FROM {}.oban_jobs WHERE id = %s").format(
            sql.Identifier(prefix)
        ),
        (job_id,),
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def wait_completed(conn: Conn, prefix: str, job_id: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while job_state(conn, prefix, job_id)[0] != "completed":
        assert time.monotonic() < deadline, job_state(conn, prefix, job_id)
        time.sleep(0.1)


def badge_job(conn: Conn, prefix: str, out: Path, **args: Any) -> int:
    [job] = insert_all(
        conn,
        [
            Job.new(
                "myapp.workers.GenerateBadge",
                {"badge_id": 7, "out": str(out), **args},
                queue="badges",
            )
        ],
        prefix=prefix,
    )
    assert job.id is not None
    return job.id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the README's command -------------------------------------------------------------------------


def test_the_readme_command_runs_from_the_directory_that_holds_myapp(
    workers: Any, app: Path, conn: Conn, oban_prefix: str
) -> None:
    job_id = badge_job(conn, oban_prefix, app / "badge.txt")
    worker = workers("--queues", "badges:10,default:5", "--workers", "myapp.workers")
    wait_completed(conn, oban_prefix, job_id)
    assert (app / "badge.txt").read_text() == "7"
    assert "INFO bridge.cli: workers: myapp.workers.GenerateBadge" in worker.stderr
    assert worker.stop() == 0


def test_elsewhere_the_module_is_not_found_and_nothing_starts(
    app: Path, tmp_path: Path, database_url: str, oban_prefix: str, conn: Conn
) -> None:
    job_id = badge_job(conn, oban_prefix, app / "badge.txt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ("--database-url", database_url, "--prefix", oban_prefix, "worker", "-q", "badges")
    result = bridge(*args, "--workers", "myapp.workers", cwd=elsewhere)
    assert result.returncode == 2
    assert result.stderr == (
        "Error: cannot import worker module 'myapp.workers': ModuleNotFoundError: No module "
        "named 'myapp' (run from the directory that holds it, or pass --app-dir)\n"
    )
    assert job_state(conn, oban_prefix, job_id) == ("available", 0, None)


@pytest.mark.parametrize("how", ["option", "env"])
def test_app_dir_points_at_the_package(
    how: str, workers: Any, app: Path, tmp_path: Path, conn: Conn, oban_prefix: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    job_id = badge_job(conn, oban_prefix, app / "badge.txt")
    args = ["-q", "badges", "-w", "myapp.workers"]
    if how == "option":
        worker = workers(*args, "--app-dir", str(app), cwd=elsewhere)
    else:
        worker = workers(*args, cwd=elsewhere, env={"BRIDGE_APP_DIR": str(app)})
    wait_completed(conn, oban_prefix, job_id)
    assert worker.stop() == 0


def test_a_missing_app_dir_is_named(app: Path, database_url: str) -> None:
    result = bridge(
        "--database-url", database_url, "worker", "-q", "a", "--app-dir", "nope", cwd=app
    )
    assert result.returncode == 2
    assert "Directory 'nope' does not exist" in result.stderr
    env = {"BRIDGE_APP_DIR": "nope"}
    result = bridge("--database-url", database_url, "worker", "-q", "a", cwd=app, env=env)
    assert (result.returncode, result.stderr) == (
        2,
        "Error: environment variable BRIDGE_APP_DIR='nope': no such directory 'nope'\n",
    )


# -- modules that do not import ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from bridge import worker\n\ndef broken(:\n    pass\n",
            "Error: cannot import worker module 'myapp.workers': SyntaxError: invalid syntax "
            "(myapp/workers.py, line 3)\n",
        ),
        (
            "from bridge import worker\n\n\nraise RuntimeError('no config')\n",
            "Error: cannot import worker module 'myapp.workers': RuntimeError: no config "
            "(raised at myapp/workers.py:4)\n",
        ),
        (
            "import a_missing_dependency\n",
            "Error: cannot import worker module 'myapp.workers': ModuleNotFoundError: No module "
            "named 'a_missing_dependency' (raised at myapp/workers.py:1)\n",
        ),
    ],
    ids=["syntax", "raises", "dependency"],
)
def test_a_worker_module_that_does_not_import_stops_start_up(
    source: str, expected: str, app: Path, database_url: str, oban_prefix: str
) -> None:
    (app / "myapp" / "workers.py").write_text(source)
    result = bridge(
        "--database-url", database_url, "--prefix", oban_prefix,
        "worker", "-q", "badges", "-w", "myapp.workers", cwd=app,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (2, expected)


def test_a_typo_in_the_module_name_names_the_package(app: Path, database_url: str) -> None:
    result = bridge(
        "--database-url", database_url, "worker", "-q", "a", "-w", "myapp.wrkers", cwd=app
    )
    assert (result.returncode, result.stderr) == (
        2,
        "Error: cannot import worker module 'myapp.wrkers': ModuleNotFoundError: No module named "
        "'myapp.wrkers' (package 'myapp' at myapp has no module 'wrkers')\n",
    )


def test_a_workflows_module_that_does_not_import_stops_start_up_the_same_way(
    app: Path, database_url: str
) -> None:
    result = bridge("--database-url", database_url, "worker", "--workflows", "myapp.flows", cwd=app)
    assert (result.returncode, result.stderr) == (
        2,
        "Error: cannot import workflows module 'myapp.flows': ModuleNotFoundError: No module "
        "named 'myapp.flows' (package 'myapp' at myapp has no module 'flows')\n",
    )


def test_a_module_without_workers_is_a_warning_not_a_failure(workers: Any, app: Path) -> None:
    (app / "myapp" / "empty.py").write_text("X = 1\n")
    worker = workers("-q", "badges", "-w", "myapp.empty,myapp.workers")
    text = worker.wait_for("workers: myapp.workers.GenerateBadge")
    assert (
        "WARNING bridge.cli: worker module 'myapp.empty' defines no @worker or @delegated step: "
        "nothing to run from it" in text
    )
    assert worker.stop() == 0


# -- the database and its schema -----------------------------------------------------------


def test_an_unreachable_database_is_retried_then_given_up(app: Path) -> None:
    port = free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    started = time.monotonic()
    result = bridge("--database-url", url, "worker", "-q", "a", "--wait-for-database", "2", cwd=app)
    assert time.monotonic() - started < 15
    assert result.returncode == 4
    lines = result.stderr.splitlines()
    retry = (
        f"database 127.0.0.1:{port} unreachable (connection refused); retrying in {{}} s "
        "(gives up after 2 s; --wait-for-database)"
    )
    assert lines[0].endswith(retry.format("0.5")), lines
    assert lines[1].endswith(retry.format("1.0")), lines
    assert lines[-1] == (
        f"Error: database 127.0.0.1:{port} unreachable (connection refused); gave up after 2 s "
        "(--wait-for-database 2)"
    )
    assert "Traceback" not in result.stderr


def test_no_wait_fails_at_once_and_the_variable_sets_the_wait(app: Path) -> None:
    port = free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    env = {"BRIDGE_WAIT_FOR_DATABASE": "0"}
    result = bridge("--database-url", url, "worker", "-q", "a", cwd=app, env=env)
    assert (result.returncode, result.stderr) == (
        4,
        f"Error: database 127.0.0.1:{port} unreachable (connection refused); gave up after 0 s "
        "(--wait-for-database 0)\n",
    )


def test_a_refusal_waiting_cannot_fix_is_not_retried(app: Path, database_url: str) -> None:
    # The path is the database name; a query (an embedded server's socket) stays as it is.
    url = urlunsplit(urlsplit(database_url)._replace(path="/no_such_database_here"))
    result = bridge("--database-url", url, "worker", "-q", "a", cwd=app)
    assert result.returncode == 4
    assert result.stderr.endswith(
        'refused the connection: database "no_such_database_here" does not exist\n'
    )
    assert "retrying" not in result.stderr


def test_ctrl_c_while_waiting_for_the_database_stops_at_once(app: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    worker = Worker(["--database-url", url, "worker", "-q", "a"], app, None)
    worker.wait_for("retrying in")
    started = time.monotonic()
    status = worker.stop(signal.SIGINT, timeout=5)
    assert time.monotonic() - started < 1.0
    assert status == 130
    assert worker.stderr.splitlines()[-1] == (
        f"Error: interrupted while waiting for database {url.split('@')[1].split('/')[0]}"
    )
    assert "Traceback" not in worker.stderr


def test_a_missing_schema_refuses_with_the_differences(
    app: Path, database_url: str, prefix: str
) -> None:
    result = bridge(
        "--database-url", database_url, "--prefix", prefix, "worker", "-q", "a", cwd=app
    )
    assert result.returncode == 5
    assert result.stderr.splitlines() == [
        f'Error: schema "{prefix}" is not what this node needs: run `bridge schema install` or '
        "the Elixir migrations (`bridge schema verify` shows every difference)",
        f"  MISMATCH: schema {prefix}: does not exist",
    ]


def test_a_jobs_node_needs_only_obans_tables(
    workers: Any, app: Path, conn: Conn, database_url: str, oban_prefix: str
) -> None:
    conn.execute(
        sql.SQL("DROP TABLE {}.workflow_instances CASCADE").format(sql.Identifier(oban_prefix))
    )
    workflows = bridge(
        "--database-url", database_url, "--prefix", oban_prefix,
        "worker", "--workflow-repair-after", "60", cwd=app,
    )  # fmt: skip
    assert workflows.returncode == 5
    assert "  MISMATCH: table workflow_instances: table is missing" in workflows.stderr.splitlines()
    worker = workers("-q", "badges", "-w", "myapp.workers")
    worker.wait_for("node ")
    assert worker.stop() == 0


def test_a_role_that_may_not_run_verify_still_gets_the_table_check(
    app: Path, conn: Conn, database_url: str, oban_prefix: str
) -> None:
    """verify builds the expected schema in a scratch schema; a worker role without CREATE on
    the database cannot, so start-up checks only that oban_jobs exists, and says so."""
    import uuid

    role = f"bridge_worker_{uuid.uuid4().hex[:8]}"
    absent = f"absent_{uuid.uuid4().hex[:8]}"
    name = sql.Identifier(role)
    schema = sql.Identifier(oban_prefix)
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(name))
    try:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, name))
        conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO {}").format(schema, name))
        conn.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA {} TO {}").format(schema, name))
        parts = urlsplit(database_url)
        url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
        missing = bridge("--database-url", url, "--prefix", absent, "worker", "-q", "a", cwd=app)
        assert missing.returncode == 5
        assert missing.stderr.splitlines()[-1] == (
            f'Error: schema "{absent}" has no oban_jobs table: run `bridge schema install` or '
            "the Elixir migrations"
        )
        worker = Worker(
            ["--database-url", url, "--prefix", oban_prefix, "worker", "-q", "badges"], app, None
        )
        try:
            text = worker.wait_for(" starting on ")
            assert f'cannot verify schema "{oban_prefix}" (permission denied' in text
        finally:
            assert worker.stop() == 0
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(name))
        conn.execute(sql.SQL("DROP ROLE {}").format(name))


# -- logs ------------------------------------------------------------------------------------------


def test_json_logs_are_one_object_a_line_with_obans_keys(
    workers: Any, app: Path, conn: Conn, oban_prefix: str
) -> None:
    job_id = badge_job(conn, oban_prefix, app / "badge.txt", n=2**70)
    worker = workers("-q", "badges", "-w", "myapp.workers", "--log-format", "json")
    wait_completed(conn, oban_prefix, job_id)
    worker.wait_for('"job:stop"')
    assert worker.stop() == 0
    lines = [json.loads(line) for line in worker.stderr.splitlines()]
    stop = next(line for line in lines if line.get("event") == "job:stop")
    assert sorted(stop) == sorted(
        [
            "args", "attempt", "duration", "event", "id", "max_attempts", "meta", "queue",
            "queue_time", "source", "state", "tags", "worker", "time", "level", "logger",
        ]
    )  # fmt: skip
    assert (stop["id"], stop["state"], stop["args"]["n"]) == (job_id, "success", 2**70)
    assert stop["source"] == "oban" and stop["level"] == "info"
    others = [line for line in lines if "event" not in line]
    assert others and all(sorted(line) == ["level", "logger", "message", "time"] for line in others)


def test_text_logs_render_job_events_and_the_level_is_set_by_variable(
    workers: Any, app: Path, conn: Conn, oban_prefix: str
) -> None:
    job_id = badge_job(conn, oban_prefix, app / "badge.txt")
    worker = workers("-q", "badges", "-w", "myapp.workers", env={"BRIDGE_LOG_LEVEL": "INFO"})
    wait_completed(conn, oban_prefix, job_id)
    text = worker.wait_for("job:stop")
    assert worker.stop() == 0
    [line] = [line for line in text.splitlines() if "job:stop" in line]
    assert f"INFO bridge.jobs: job:stop worker=myapp.workers.GenerateBadge id={job_id} " in line
    assert "queue=badges attempt=1 state=success duration=" in line and line.endswith("ms")
    assert "{" not in line  # not JSON in a text line
    quiet = workers("-q", "badges", "-w", "myapp.workers", "--log-level", "warning")
    time.sleep(1.5)
    assert quiet.stop() == 0
    assert not [line for line in quiet.stderr.splitlines() if " INFO bridge.node" in line]
    assert " INFO bridge.cli: workers:" not in quiet.stderr


# -- settings from the environment -----------------------------------------------------------------


def test_settings_from_environment_variables(
    workers: Any, app: Path, conn: Conn, oban_prefix: str
) -> None:
    (app / "pyproject.toml").write_text('[tool.bridge]\nnode = "from-file"\nqueues = "other"\n')
    job_id = badge_job(conn, oban_prefix, app / "badge.txt")
    env = {
        "BRIDGE_QUEUES": "badges:2",
        "BRIDGE_WORKERS": "myapp.workers",
        "BRIDGE_NODE": "env-node",
    }
    worker = workers(env=env)
    wait_completed(conn, oban_prefix, job_id)
    assert (job_state(conn, oban_prefix, job_id)[2] or [""])[0] == "env-node"
    assert "(prefix " in worker.stderr and "): badges:2" in worker.stderr
    assert worker.stop() == 0
    job_id = badge_job(conn, oban_prefix, app / "badge2.txt")
    worker = workers("--node", "option-node", env=env)
    wait_completed(conn, oban_prefix, job_id)
    assert (job_state(conn, oban_prefix, job_id)[2] or [""])[0] == "option-node"
    assert worker.stop() == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BRIDGE_GRACE", "soon", "must be a positive number"),
        ("BRIDGE_QUEUES", "a:0", "queue 'a': limit must be >= 1"),
        ("BRIDGE_WORKFLOW_CONCURRENCY", "many", "must be an integer >= 1"),
        ("BRIDGE_LOG_FORMAT", "xml", "must be one of text, json"),
        ("BRIDGE_WAIT_FOR_DATABASE", "-1", "must be a number of seconds >= 0"),
    ],
)
def test_a_malformed_variable_is_named(
    name: str, value: str, message: str, app: Path, database_url: str
) -> None:
    result = bridge("--database-url", database_url, "worker", "-q", "a", cwd=app, env={name: value})
    assert (result.returncode, result.stderr) == (
        2,
        f"Error: environment variable {name}={value!r}: {message}\n",
    )


def test_help_lists_every_setting_with_its_variable_and_key(app: Path) -> None:
    from bridge.cli.settings import SETTINGS

    result = bridge("worker", "--help", cwd=app, env={"COLUMNS": "120"})
    assert result.returncode == 0
    assert "an option wins over its environment variable, which wins over the TOML" in (
        " ".join(result.stdout.split())
    )
    table = result.stdout.split("option ", 1)[1].splitlines()[1:]
    rows = {line.split()[0]: line.split() for line in table if line.strip()}
    for setting in SETTINGS:
        assert rows[setting.option][1:3] == [setting.env, setting.key], setting


def _event_record(args: dict[str, Any]) -> Any:
    """The log record telemetry's default logger makes for a job:stop of a job with ``args``."""
    import logging

    from bridge.jobs.runtime import telemetry

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    log = logging.getLogger("bridge.jobs")
    log.addHandler(keep)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        telemetry.default_logger(
            "job:stop",
            {"duration": 1234, "queue_time": 50},
            {"args": args, "attempt": 1, "id": 9, "max_attempts": 20, "meta": {}, "queue": "q",
             "tags": [], "worker": "W", "state": "success"},
        )  # fmt: skip
    finally:
        log.removeHandler(keep)
        log.setLevel(level)
    [record] = records
    return record


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "args",
    [{"n": 2**70}, _nested(300), _nested(5000)],
    ids=["beyond-64-bits", "past-orjson-depth", "past-any-encoder"],
)
def test_no_job_line_is_lost_to_what_its_args_hold(args: dict[str, Any]) -> None:
    from bridge.cli.logs import JsonFormatter, TextFormatter

    record = _event_record(args)
    line = json.loads(JsonFormatter().format(record))
    assert (line["event"], line["id"], line["worker"], line["state"]) == (
        "job:stop",
        9,
        "W",
        "success",
    )
    if args == {"n": 2**70}:
        assert line["args"] == args
    oban = json.loads(record.getMessage())  # Oban's own JSON line, for other handlers
    assert (oban["event"], oban["id"], oban["source"]) == ("job:stop", 9, "oban")
    text = TextFormatter().format(record)
    assert text.endswith(
        "INFO bridge.jobs: job:stop worker=W id=9 queue=q attempt=1 state=success "
        "duration=1.2ms queue_time=0.1ms"
    )
