"""``bridge worker --processes N`` as an operator runs it: the installed script from a scratch
directory, N ordinary nodes under a supervisor, on the real database.

The same jobs run under one node and under two node processes leave the same rows; a node
process that dies (``os._exit`` in a body, SIGKILL) has its jobs failed with Oban's crash entry
and is replaced while the other keeps working; SIGTERM drains every node; pkill stops a job as
in one node; a start-up failure ends everything with the node's own line and status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from bridge import Job, insert_all
from bridge.jobs.client import admin
from tests.support.cli import ROOT, bridge_script, run_bridge

Conn = psycopg.Connection[tuple[Any, ...]]

WORKERS = """\
import os
import time
from pathlib import Path

from bridge import Cancel, Discard, Error, Snooze, worker


@worker(queue="cpu", recorded=True)
def ok(job):
    return {"sum": sum(job.args["xs"]), "by": "python"}


@worker(queue="cpu", max_attempts=3)
def raises(job):
    raise ValueError(f"bad input {job.args['n']}")


@worker(queue="cpu")
def cancels(job):
    return Cancel("no badge_id")


@worker(queue="cpu")
def discards(job):
    return Discard({"reason": "gone"})


@worker(queue="cpu")
def errors(job):
    return Error("try later")


@worker(queue="cpu")
def snoozes(job):
    return Snooze(60)


@worker(queue="cpu", timeout=0.3)
def slow(job):
    time.sleep(1.0)


@worker(queue="cpu", max_attempts=3)
def crashes(job):
    if job.attempt == 1:
        os._exit(3)
    return None


@worker(queue="cpu")
def sleeps(job):
    Path(job.args["pid_file"]).write_text(str(os.getpid()))
    time.sleep(job.args["seconds"])
"""


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    cleared = {"PYTHONPATH", "DATABASE_URL"}
    base = {k: v for k, v in os.environ.items() if k not in cleared and not k.startswith("BRIDGE_")}
    return {**base, **(env or {})}


class Supervised:
    """A ``bridge worker --processes`` run whose stderr the test reads while it runs."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        assert ROOT not in (cwd.resolve(), *cwd.resolve().parents)
        self.log = cwd / f"worker-{time.monotonic_ns()}.log"
        self._file = self.log.open("w")
        _RUNNING.append(self)
        self.proc = subprocess.Popen(
            [bridge_script(), *args],
            cwd=cwd,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=self._file,
        )

    @property
    def stderr(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.stderr.count(text) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited {self.proc.returncode}:\n{self.stderr}")
            assert time.monotonic() < deadline, f"no {count} x {text!r} in:\n{self.stderr}"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._file.close()


@pytest.fixture
def app(tmp_path: Path) -> Path:
    package = tmp_path / "project" / "myapp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "workers.py").write_text(WORKERS)
    return tmp_path / "project"


@pytest.fixture
def start(app: Path, database_url: str) -> Iterator[Callable[..., Supervised]]:
    started: list[Supervised] = []

    def run(prefix: str, *args: str) -> Supervised:
        base = ["--database-url", database_url, "--prefix", prefix, "worker"]
        common = ["-w", "myapp.workers", "--poll-interval", "0.2", "--grace", "5"]
        supervised = Supervised([*base, *common, *args], app)
        started.append(supervised)
        return supervised

    yield run
    for supervised in started:
        supervised.stop(signal.SIGKILL, timeout=10)


def insert(conn: Conn, prefix: str, worker: str, args: dict[str, Any], **opts: Any) -> int:
    opts.setdefault("queue", "cpu")
    [job] = insert_all(conn, [Job.new(f"myapp.workers.{worker}", args, **opts)], prefix=prefix)
    assert job.id is not None
    return job.id


def rows(conn: Conn, prefix: str) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT * FROM {}.oban_jobs ORDER BY id").format(sql.Identifier(prefix))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query).fetchall()


def row(conn: Conn, prefix: str, job_id: int) -> dict[str, Any]:
    [found] = [r for r in rows(conn, prefix) if r["id"] == job_id]
    return found


def wait_state(
    conn: Conn, prefix: str, job_id: int, states: set[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (current := row(conn, prefix, job_id))["state"] not in states:
        assert time.monotonic() < deadline, f"{current}\n{_logs()}"
        time.sleep(0.1)
    return current


_RUNNING: list[Supervised] = []


def _logs() -> str:
    return "\n".join(s.stderr for s in _RUNNING)


def wait_file(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return path.read_text()


@pytest.fixture
def second_prefix(database_url: str) -> Iterator[str]:
    """Another schema with the shared tables, for the thread-run twin."""
    from bridge import schema

    name = f"t2_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    with psycopg.connect(database_url, autocommit=True) as c:
        schema.install(c, name)
    yield name
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


# -- the same rows as one node --------------------------------------------------------------------

TWIN_JOBS: list[tuple[str, dict[str, Any]]] = [
    ("ok", {"xs": [1, 2, 3]}),
    ("raises", {"n": 7}),
    ("cancels", {}),
    ("discards", {}),
    ("errors", {}),
    ("snoozes", {}),
    ("slow", {}),
]


def _comparable(found: dict[str, Any]) -> dict[str, Any]:
    """What must be identical: everything but ids, times and the node's name."""
    return {
        "worker": found["worker"],
        "args": found["args"],
        "state": found["state"],
        "attempt": found["attempt"],
        "max_attempts": found["max_attempts"],
        "meta": found["meta"],
        "errors": [{k: v for k, v in e.items() if k != "at"} for e in found["errors"]],
        "producer_uuid_set": len(found["attempted_by"] or []) == 2,
    }


def test_two_node_processes_leave_the_rows_one_node_leaves(
    start: Callable[..., Supervised], conn: Conn, oban_prefix: str, second_prefix: str
) -> None:
    finals = {"completed", "retryable", "cancelled", "discarded", "scheduled"}
    results = {}
    for prefix, extra in (
        (second_prefix, ["--node", "twin"]),
        (oban_prefix, ["--node", "twin", "--processes", "2"]),
    ):
        ids = [insert(conn, prefix, worker, args) for worker, args in TWIN_JOBS]
        supervised = start(prefix, "-q", "cpu:10", *extra)
        found = [wait_state(conn, prefix, job_id, finals) for job_id in ids]
        # snoozed jobs are `scheduled` before they run too: wait until each has run once
        found = [wait_state(conn, prefix, job_id, finals) for job_id in ids]
        deadline = time.monotonic() + 30
        while any(r["attempt"] == 0 for r in found):
            assert time.monotonic() < deadline, found
            time.sleep(0.1)
            found = [row(conn, prefix, job_id) for job_id in ids]
        assert supervised.stop() == 0
        results[prefix] = found
    single = [_comparable(r) for r in results[second_prefix]]
    processes = [_comparable(r) for r in results[oban_prefix]]
    assert processes == single
    assert {r["attempted_by"][0] for r in results[second_prefix]} == {"twin"}
    assert {r["attempted_by"][0] for r in results[oban_prefix]} <= {"twin-1", "twin-2"}
    assert single[0]["state"] == "completed" and "recorded" in single[0]["meta"]
    assert "Oban.TimeoutError" in single[-1]["errors"][0]["error"]


# -- faults ---------------------------------------------------------------------------------------


def test_a_body_that_exits_fails_its_jobs_with_the_crash_entry_and_the_node_is_replaced(
    start: Callable[..., Supervised], conn: Conn, oban_prefix: str, tmp_path: Path
) -> None:
    supervised = start(oban_prefix, "-q", "cpu:2", "--node", "sv", "--processes", "2")
    supervised.wait_for("node sv-1 starting")
    supervised.wait_for("node sv-2 starting")
    crash_id = insert(conn, oban_prefix, "crashes", {}, max_attempts=3)
    crashed = wait_state(conn, oban_prefix, crash_id, {"retryable"})
    assert crashed["attempt"] == 1
    assert [e["error"] for e in crashed["errors"]] == [
        "** (Oban.CrashError) ** (exit) {:exit_status, 3}"
    ]
    assert crashed["errors"][0]["attempt"] == 1
    dead = crashed["attempted_by"][0]
    assert dead in ("sv-1", "sv-2")
    supervised.wait_for("died (exit status 3)")
    supervised.wait_for(f"node {dead} starting", count=2)
    # Retried (as `bridge jobs retry` does), it completes on its second attempt; the machine's
    # nodes kept running throughout.
    assert admin.retry_jobs(conn, oban_prefix, [crash_id]) == [crash_id]
    assert wait_state(conn, oban_prefix, crash_id, {"completed"})["attempt"] == 2
    later = insert(conn, oban_prefix, "ok", {"xs": [1]})
    assert wait_state(conn, oban_prefix, later, {"completed"})["state"] == "completed"
    assert supervised.stop() == 0


def test_a_node_process_killed_mid_job_fails_the_job_as_killed(
    start: Callable[..., Supervised], conn: Conn, oban_prefix: str, tmp_path: Path
) -> None:
    supervised = start(oban_prefix, "-q", "cpu:2", "--node", "sk", "--processes", "2")
    pid_file = tmp_path / "pid"
    job_id = insert(conn, oban_prefix, "sleeps", {"pid_file": str(pid_file), "seconds": 30})
    os.kill(int(wait_file(pid_file)), signal.SIGKILL)
    killed = wait_state(conn, oban_prefix, job_id, {"retryable"})
    assert [e["error"] for e in killed["errors"]] == ["** (Oban.CrashError) ** (exit) killed"]
    supervised.wait_for("died (signal SIGKILL)")
    supervised.wait_for("supervisor: node process", count=3)  # two starts and the replacement
    assert supervised.stop() == 0


def test_sigterm_drains_every_node_and_exits_0(
    start: Callable[..., Supervised], conn: Conn, oban_prefix: str, tmp_path: Path
) -> None:
    supervised = start(oban_prefix, "-q", "cpu:1", "--node", "dr", "--processes", "2")
    supervised.wait_for("node dr-1 starting")
    supervised.wait_for("node dr-2 starting")
    files = [tmp_path / "a", tmp_path / "b"]
    ids = [insert(conn, oban_prefix, "sleeps", {"pid_file": str(f), "seconds": 1.5}) for f in files]
    pids = {wait_file(f) for f in files}
    assert len(pids) == 2  # one per node process: each node runs one at a time
    assert supervised.stop() == 0
    done = [row(conn, oban_prefix, job_id) for job_id in ids]
    assert [r["state"] for r in done] == ["completed", "completed"]
    assert {r["attempted_by"][0] for r in done} == {"dr-1", "dr-2"}
    assert supervised.stderr.count("signal received, draining") == 2


def test_pkill_stops_a_job_in_a_node_process_as_in_one_node(
    start: Callable[..., Supervised], conn: Conn, oban_prefix: str, tmp_path: Path
) -> None:
    supervised = start(oban_prefix, "-q", "cpu:2", "--node", "pk", "--processes", "2")
    pid_file = tmp_path / "pid"
    job_id = insert(conn, oban_prefix, "sleeps", {"pid_file": str(pid_file), "seconds": 3})
    wait_file(pid_file)
    assert admin.cancel_jobs(conn, oban_prefix, [job_id]) == [job_id]
    cancelled = wait_state(conn, oban_prefix, job_id, {"cancelled"})
    assert cancelled["state"] == "cancelled"
    later = insert(conn, oban_prefix, "ok", {"xs": [2]})
    assert wait_state(conn, oban_prefix, later, {"completed"})["state"] == "completed"
    assert supervised.stop() == 0
    assert "died" not in supervised.stderr


# -- start-up ---------------------------------------------------------------------------------


def test_a_start_up_failure_ends_every_node_with_its_status(
    app: Path, database_url: str, oban_prefix: str
) -> None:
    result = run_bridge(
        "--database-url",
        database_url,
        "--prefix",
        oban_prefix,
        "worker",
        "-q",
        "cpu",
        "-w",
        "myapp.nosuch",
        "--processes",
        "2",
        cwd=app,
        env=environment(),
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "No module named 'myapp.nosuch'" in result.stderr
    assert "failed to start (exit status 2); stopping" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--processes", "0"], {}, "Invalid value for '--processes': 0 is not in the range x>=1."),
        (
            [],
            {"BRIDGE_PROCESSES": "two"},
            "Error: environment variable BRIDGE_PROCESSES='two': must be an integer >= 1\n",
        ),
    ],
)
def test_a_bad_process_count_is_refused(
    app: Path, database_url: str, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_bridge(
        "--database-url",
        database_url,
        "worker",
        "-q",
        "cpu",
        *args,
        cwd=app,
        env=environment(env),
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
