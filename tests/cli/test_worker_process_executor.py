"""``@worker(..., executor="process")`` under the installed ``bridge worker`` script, run from a
scratch directory as an operator runs it, on the real database.

The worker module is the operator's (``--workers myapp.workers`` from ``--app-dir``): the
node's children import it by that name. A body that overruns its timeout is killed (its marker,
written if it ever got past its sleep, never appears), one that exits kills only its child and
gets Oban's crash entry, a recorded result comes back from the child, and SIGTERM drains and
exits 0. ``--process-pool`` and ``--process-max-jobs`` are settings like the others.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bridge import Job, insert_all
from tests.cli.test_worker_processes import Supervised, environment, wait_file, wait_state
from tests.support.cli import run_bridge

Conn = psycopg.Connection[tuple[Any, ...]]

WORKERS = """\
import os
import time
from pathlib import Path

from bridge import worker


@worker(queue="cpu", recorded=True, executor="process")
def square(job):
    return {"square": job.args["n"] ** 2, "child": os.getpid() != job.args["node_pid"]}


@worker(queue="cpu", timeout=0.5, max_attempts=1, executor="process")
def overruns(job):
    folder = Path(job.args["dir"])
    (folder / "overruns.pid").write_text(str(os.getpid()))
    time.sleep(2.0)
    (folder / "overruns.after").write_text("ran on")


@worker(queue="cpu", max_attempts=2, executor="process")
def crashes(job):
    os._exit(3)


@worker(queue="cpu", executor="process")
def sleeps(job):
    Path(job.args["dir"], "sleeps.pid").write_text(str(os.getpid()))
    time.sleep(job.args["seconds"])
    Path(job.args["dir"], "sleeps.done").write_text(str(os.getpid()))
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "app" / "myapp").mkdir(parents=True)
    (project / "app" / "myapp" / "__init__.py").write_text("")
    (project / "app" / "myapp" / "workers.py").write_text(WORKERS)
    return project


def insert(conn: Conn, prefix: str, worker: str, args: dict[str, Any], **opts: Any) -> int:
    job = Job.new(f"myapp.workers.{worker}", args, queue="cpu", **opts)
    [inserted] = insert_all(conn, [job], prefix=prefix)
    assert inserted.id is not None
    return inserted.id


def test_process_workers_under_bridge_worker(
    app: Path, database_url: str, conn: Conn, oban_prefix: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    args = ["--database-url", database_url, "--prefix", oban_prefix, "worker", "-q", "cpu:4"]
    args += ["--app-dir", "app", "-w", "myapp.workers", "--poll-interval", "0.2", "--grace", "10"]
    supervised = Supervised([*args, "--process-pool", "2", "--node", "px"], app)
    try:
        supervised.wait_for("node px starting")
        ok = insert(conn, oban_prefix, "square", {"n": 7, "node_pid": supervised.proc.pid})
        over = insert(conn, oban_prefix, "overruns", {"dir": str(marks)}, max_attempts=1)
        crash = insert(conn, oban_prefix, "crashes", {}, max_attempts=2)
        done = wait_state(conn, oban_prefix, ok, {"completed"})
        assert done["meta"]["recorded"] is True
        timed_out = wait_state(conn, oban_prefix, over, {"discarded"})
        assert [e["error"] for e in timed_out["errors"]] == [
            "** (Oban.TimeoutError) myapp.workers.overruns timed out after 500ms"
        ]
        crashed = wait_state(conn, oban_prefix, crash, {"retryable"})
        assert [e["error"] for e in crashed["errors"]] == [
            "** (Oban.CrashError) ** (exit) {:exit_status, 3}"
        ]
        child = int(wait_file(marks / "overruns.pid"))
        assert child != supervised.proc.pid
        deadline = time.monotonic() + 30
        while _alive(child):
            assert time.monotonic() < deadline, "the timed-out child still runs"
            time.sleep(0.05)
        # A body that starts now is drained by SIGTERM (grace 10 s).
        insert(conn, oban_prefix, "sleeps", {"dir": str(marks), "seconds": 1.0})
        time.sleep(2.5)  # the overrunning body would have written its marker by now
        assert not (marks / "overruns.after").exists()
        assert supervised.stop() == 0
        assert (marks / "sleeps.done").exists()
        assert "its child process died" in supervised.stderr
    finally:
        supervised.stop(signal.SIGKILL, timeout=10)


def test_a_node_killed_mid_job_takes_its_children_with_it(
    app: Path, database_url: str, conn: Conn, oban_prefix: str, tmp_path: Path
) -> None:
    """SIGKILL of the node (the OOM killer, kill -9) while a child runs a body: the child dies
    with it, as a thread would, instead of running the body on unowned; the job stays
    ``executing`` for a lifeline, as after any node's death."""
    marks = tmp_path / "marks"
    marks.mkdir()
    args = ["--database-url", database_url, "--prefix", oban_prefix, "worker", "-q", "cpu:2"]
    args += ["--app-dir", "app", "-w", "myapp.workers", "--poll-interval", "0.2"]
    supervised = Supervised([*args, "--node", "pk9"], app)
    try:
        job_id = insert(conn, oban_prefix, "sleeps", {"dir": str(marks), "seconds": 3.0})
        child = int(wait_file(marks / "sleeps.pid"))
        supervised.proc.kill()
        supervised.proc.wait(30)
        deadline = time.monotonic() + 30
        while _alive(child):
            assert time.monotonic() < deadline, "the child outlived its node"
            time.sleep(0.05)
        time.sleep(3.5)  # the body would have finished and written its marker by now
        assert not (marks / "sleeps.done").exists()
        assert wait_state(conn, oban_prefix, job_id, {"executing"})["attempt"] == 1
    finally:
        supervised.stop(signal.SIGKILL, timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--process-pool", "0"],
            {},
            "Invalid value for '--process-pool': 0 is not in the range x>=1.",
        ),
        (
            [],
            {"BRIDGE_PROCESS_MAX_JOBS": "many"},
            "Error: environment variable BRIDGE_PROCESS_MAX_JOBS='many': must be an integer >= 1\n",
        ),
    ],
)
def test_a_bad_pool_setting_is_refused(
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
