"""The embedded PostgreSQL is used only when asked for (``--embedded``, ``BRIDGE_EMBEDDED=1``,
or ``bridge demo`` with no URL), every start is said, and the user can see, connect to and
stop it with ``bridge embedded status|url|stop``. Run through the installed script from a
scratch directory, each test with a data directory of its own, stopped at the end even when
the test fails.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bridge import db
from tests.support.cli import run_bridge


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory of this test's own; its server is stopped afterwards, whatever
    happened."""
    directory = (tmp_path / "pg").resolve()
    try:
        yield directory
    finally:
        db.stop_embedded(directory)


def embedded_env(data_dir: Path) -> dict[str, str]:
    return {db.EMBEDDED_DIR_ENV: str(data_dir), db.EMBEDDED_ENV: "0"}


def no_warnings(stderr: str) -> None:
    assert "Warning" not in stderr and "XDG_RUNTIME_DIR" not in stderr, stderr


def test_status_url_stop_round_trip(tmp_path: Path, data_dir: Path) -> None:
    env = embedded_env(data_dir)
    cwd = tmp_path

    before = run_bridge("embedded", "status", cwd=cwd, env=env)
    assert (before.returncode, before.stdout) == (
        1,
        f"running: no\ndata directory: {data_dir} (no data yet)\n",
    )

    started = run_bridge("--embedded", "schema", "install", cwd=cwd, env=env)
    assert started.returncode == 0, started.stderr
    no_warnings(started.stderr)
    lines = started.stderr.splitlines()
    assert lines[-1] == (
        f"bridge: starting an embedded PostgreSQL in {data_dir}; it keeps running after this "
        f"command: stop it with `bridge embedded stop --data-dir {data_dir}`"
    )
    if os.geteuid() == 0:  # what pgserver does to the system under root is said first
        assert lines[0].startswith("bridge: running as root: pgserver runs PostgreSQL as ")
        assert len(lines) == 2
    else:
        assert len(lines) == 1

    status = run_bridge("embedded", "status", "--json", cwd=cwd, env=env)
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["running"] is True
    assert state["data_dir"] == str(data_dir)
    assert isinstance(state["pid"], int)

    text = run_bridge("embedded", "status", cwd=cwd, env=env)
    assert text.returncode == 0
    assert text.stdout.splitlines()[:2] == [
        f"running: yes (pid {state['pid']}, ready)",
        f"data directory: {data_dir}",
    ]
    assert f"url: {state['url']}" in text.stdout.splitlines()

    url = run_bridge("embedded", "url", cwd=cwd, env=env)
    assert (url.returncode, url.stdout, url.stderr) == (0, state["url"] + "\n", "")
    with psycopg.connect(url.stdout.strip()) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
        assert row is not None and Path(row[0]).resolve() == data_dir
        # the schema went into the embedded server, as the command said
        assert conn.execute("SELECT to_regclass('public.oban_jobs') IS NOT NULL").fetchone() == (
            True,
        )

    # a second command reuses it, and says so
    listed = run_bridge("--embedded", "jobs", "list", cwd=cwd, env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr == (
        f"bridge: using the embedded PostgreSQL running in {data_dir} (pid {state['pid']})\n"
    )

    stopped = run_bridge("embedded", "stop", cwd=cwd, env=env)
    assert (stopped.returncode, stopped.stdout) == (
        0,
        f"stopped the embedded PostgreSQL in {data_dir} (pid {state['pid']}); "
        "its data stays there\n",
    )
    assert not db.embedded_status(data_dir).running
    again = run_bridge("embedded", "stop", cwd=cwd, env=env)
    assert (again.returncode, again.stdout) == (
        0,
        f"no embedded PostgreSQL is running in {data_dir}: nothing to stop\n",
    )
    gone = run_bridge("embedded", "url", cwd=cwd, env=env)
    assert (gone.returncode, gone.stderr) == (
        3,
        f"Error: no embedded PostgreSQL is running in {data_dir}: start one with "
        "`bridge embedded start` (or any command with --embedded)\n",
    )
    after = run_bridge("embedded", "status", cwd=cwd, env=env)
    assert (after.returncode, after.stdout) == (
        1,
        f"running: no\ndata directory: {data_dir} (holds data from an earlier run)\n",
    )


def test_data_dir_option_and_the_default_directory(tmp_path: Path) -> None:
    # ./.bridge/pgdata of the current directory, unless --data-dir names another.
    default = (tmp_path / ".bridge" / "pgdata").resolve()
    other = (tmp_path / "elsewhere").resolve()
    env = {db.EMBEDDED_ENV: "0"}
    try:
        started = run_bridge("embedded", "start", "--data-dir", str(other), cwd=tmp_path, env=env)
        assert started.returncode == 0, started.stderr
        assert started.stdout == f"{db.embedded_status(other).url}\n"
        assert not default.exists()
        status = run_bridge("embedded", "status", cwd=tmp_path, env=env)
        assert (status.returncode, status.stdout.splitlines()[0]) == (1, "running: no")
        status = run_bridge("embedded", "status", "--data-dir", str(other), cwd=tmp_path, env=env)
        assert status.returncode == 0
        assert f"stop it with: bridge embedded stop --data-dir {other}" in status.stdout
    finally:
        db.stop_embedded(other)


def test_bridge_embedded_env_opts_in(tmp_path: Path, data_dir: Path) -> None:
    env = {db.EMBEDDED_DIR_ENV: str(data_dir), db.EMBEDDED_ENV: "1"}
    result = run_bridge("jobs", "list", cwd=tmp_path, env=env)
    # a fresh server has no schema: the command says so, and the server it started is said too
    assert result.returncode == 5, result.stderr
    assert result.stderr.endswith(
        'Error: schema "public" has no oban_jobs table: run `bridge schema install` or the '
        "Elixir migrations (or pass --prefix)\n"
    )
    assert f"bridge: starting an embedded PostgreSQL in {data_dir}" in result.stderr
    assert db.embedded_status(data_dir).running


def test_demo_falls_back_to_the_embedded_server_and_says_it_still_runs(
    tmp_path: Path, data_dir: Path
) -> None:
    result = run_bridge("demo", cwd=tmp_path, env=embedded_env(data_dir), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    no_warnings(result.stderr)
    server = db.embedded_status(data_dir)
    assert server.running
    assert result.stdout.splitlines()[0] == (
        f"database: {server.url} (embedded: no database URL given)"
    )
    assert result.stdout.endswith(
        f"The embedded PostgreSQL is still running, its data in {data_dir}.\n"
        f"  connect:  psql '{server.url}'\n"
        f"  look:     BRIDGE_EMBEDDED_DIR={data_dir} bridge --embedded jobs list\n"
        f"  stop:     bridge embedded stop --data-dir {data_dir}\n"
    )


def test_without_the_embedded_extra(tmp_path: Path, data_dir: Path) -> None:
    # pgserver made unimportable, as in an install without the extra
    shadow = tmp_path / "shadow" / "pgserver"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'pgserver'\")\n")
    env = {**embedded_env(data_dir), "PYTHONPATH": str(shadow.parent)}
    expected = (
        "Error: the embedded PostgreSQL needs the 'embedded' extra: "
        "pip install 'oban-bridge[embedded]'\n"
    )
    for args in (("--embedded", "jobs", "list"), ("demo",), ("embedded", "start")):
        result = run_bridge(*args, cwd=tmp_path, env=env)
        assert (result.returncode, result.stderr) == (3, expected), args
    assert not data_dir.exists()
    # seeing and stopping need no extra
    status = run_bridge("embedded", "status", cwd=tmp_path, env=env)
    assert (status.returncode, status.stdout.splitlines()[0]) == (1, "running: no")
    stop = run_bridge("embedded", "stop", cwd=tmp_path, env=env)
    assert stop.returncode == 0
