"""examples/python_only, followed as its README says: every line of its ``sh`` blocks typed at a
shell, in order, from a copy of the example outside the repository, through the installed
``bridge`` script, on the embedded database the commands start (``./.bridge/pgdata`` of the
copy). The README is the script: when it changes, this test runs the new text.

``pip`` lines are what installed this package; ``cd examples/python_only`` is the copy itself.
``bridge … worker`` runs in the background, as in a second terminal. Before the README's
``bridge embedded stop`` the test waits for what the README says the reader sees (the cron job
needs the next minute: up to about 65 s), stops the node as Ctrl-C would (SIGTERM, its graceful
twin) and checks the rows.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bridge import db
from tests.support.cli import _CLEARED as CLEARED
from tests.support.cli import ROOT, bridge_script, run_bridge

EXAMPLE = ROOT / "examples" / "python_only"
_SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def readme_commands() -> list[list[str]]:
    """Each command of the README's ``sh`` blocks as words, comments dropped."""
    text = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in _SH_BLOCK.findall(text):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def is_worker(words: list[str]) -> bool:
    """``bridge [root options] worker …``: the long-running node."""
    return words[0] == "bridge" and "worker" in words[1:3]


@pytest.fixture
def copy(tmp_path: Path) -> Iterator[Path]:
    """The example copied outside the repository; its embedded server stopped at the end."""
    target = tmp_path / "python_only"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".bridge", "__pycache__"))
    try:
        yield target
    finally:
        db.stop_embedded(target / ".bridge" / "pgdata")


def wait_for_rows(url: str, timeout: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The Python jobs and the instance once every job named by the README has finished and the
    cron entry's job has run; fails with what there is after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url, autocommit=True) as conn:
            jobs = [
                dict(zip(("worker", "queue", "state", "args", "meta", "errors"), row, strict=True))
                for row in conn.execute(
                    "SELECT worker, queue, state::text, args, meta, errors FROM oban_jobs "
                    "WHERE worker LIKE 'shop.%' ORDER BY id"
                ).fetchall()
            ]
            found = conn.execute(
                "SELECT status, state FROM workflow_instances WHERE id = 'signup::ada'"
            ).fetchone()
        instance = {"status": found[0], "state": found[1]} if found else {}
        welcome = [j for j in jobs if j["worker"] == "shop.workers.SendWelcome"]
        cron = [j for j in jobs if j["worker"] == "shop.workers.tidy_outbox"]
        done = (
            len(welcome) == 2
            and all(j["state"] in ("completed", "cancelled") for j in welcome)
            and any(j["state"] == "completed" for j in cron)
            and instance.get("status") == "completed"
        )
        if done:
            return jobs, instance
        assert time.monotonic() < deadline, f"jobs {jobs}, instance {instance}"
        time.sleep(0.5)


def test_the_readme_commands_work_as_written(copy: Path) -> None:
    commands = readme_commands()
    assert any(is_worker(words) for words in commands), commands
    background: list[tuple[str, subprocess.Popen[str], Path]] = []
    stopped: list[tuple[str, int, str]] = []
    jobs: list[dict[str, Any]] = []
    instance: dict[str, Any] = {}
    try:
        for words in commands:
            command = shlex.join(words)
            if words[0] == "pip":
                continue  # what installed the package this test runs
            if words[0] == "cd":
                assert words[1:] == ["examples/python_only"], command  # the copy is that folder
                continue
            assert words[0] == "bridge", f"the test does not know how to type {command!r}"
            if is_worker(words):
                background.append(start_in_background(words, copy))
                continue
            if words[1:3] == ["embedded", "stop"]:
                # "When you are done": first what the README says the reader has seen by then.
                url = db.embedded_status(copy / ".bridge" / "pgdata").url_or_fail()
                jobs, instance = wait_for_rows(url, timeout=150)
                stopped += stop(background)
            result = run_bridge(*words[1:], cwd=copy)
            assert result.returncode == 0, f"{command!r}:\n{result.stdout}\n{result.stderr}"
            assert "Traceback" not in result.stderr, result.stderr
    finally:
        stopped += stop(background)

    for command, status, output in stopped:
        assert status == 0, f"{command!r} exited {status} on SIGTERM:\n{output}"
        assert "Traceback" not in output, output
    node_log = "\n".join(output for _, _, output in stopped)
    assert "welcome mail sent to ada@example.com" in node_log
    assert "hello ada!" in node_log

    welcome_ok, welcome_bad = (j for j in jobs if j["worker"] == "shop.workers.SendWelcome")
    assert (welcome_ok["queue"], welcome_ok["state"]) == ("mail", "completed")
    assert welcome_bad["state"] == "cancelled"
    assert welcome_bad["errors"][-1]["error"] == (
        "** (Oban.PerformError) shop.workers.SendWelcome failed with "
        "{:cancel, \"not an email address: 'nobody'\"}"
    )
    tidy = next(j for j in jobs if j["worker"] == "shop.workers.tidy_outbox")
    assert tidy["meta"]["cron"] is True and tidy["meta"]["cron_expr"] == "* * * * *", tidy
    assert instance["state"]["context"]["steps"] == {
        "create_account": {"account": "ada"},
        "greet": {"greeting": "hello ada"},
        "done": {},
    }
    assert not db.embedded_status(copy / ".bridge" / "pgdata").running


def start_in_background(words: list[str], cwd: Path) -> tuple[str, subprocess.Popen[str], Path]:
    """``bridge … worker`` as in a second terminal, its output in a file (a pipe nobody reads
    would fill and block it); returns once the node leads (it then evaluates cron)."""
    log = cwd.parent / "node.log"
    environ = {k: v for k, v in os.environ.items() if k not in CLEARED}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [bridge_script(), *words[1:]],
            cwd=cwd,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.monotonic() + 60
    while "took leadership" not in log.read_text():
        if proc.poll() is not None:
            pytest.fail(f"{shlex.join(words)!r} exited {proc.returncode}:\n{log.read_text()}")
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return shlex.join(words), proc, log


def stop(background: list[tuple[str, subprocess.Popen[str], Path]]) -> list[tuple[str, int, str]]:
    """SIGTERM each background command (Ctrl-C's graceful twin); how each ended and its output."""
    results = []
    for command, proc, log in background:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        results.append((command, proc.returncode, log.read_text()))
    background.clear()
    return results
