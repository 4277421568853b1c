"""A node whose database goes away for good still stops on SIGTERM, within its grace and a
bounded last try at storing outcomes, exits 0 and says what it could not store.

Seen writing the guide: a worker whose database was dropped under it never exited. The leader's
last write (deleting its ``oban_peers`` row) raised, which skipped the rest of the shutdown, and
the job thread left idle kept the interpreter from exiting; a producer holding an outcome also
retried it for ever. Here a job is running when the database is dropped (``WITH (FORCE)``), then
the node gets SIGTERM; the old code was still running 90 s later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from bridge import schema
from bridge.testing import wait_for_job
from tests.support.cli import _CLEARED, bridge_script

WORKERS = """\
import time

from bridge import worker


@worker(queue="slow")
def nap(job):
    time.sleep(8)
"""
# Grace (15 s) + the producer's last try (5 s) + start-up and exit, with room for a slow machine;
# the process is killed after this, so a regression fails instead of hanging the suite.
EXIT_WITHIN = 90


@pytest.fixture
def doomed(server_url: str) -> Iterator[str]:
    """A database of this test's own, with the schema, dropped by the test (or at the end)."""
    name = f"bridge_gone_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    with psycopg.connect(url, autocommit=True) as conn:
        schema.install(conn)
    yield url
    with psycopg.connect(server_url, autocommit=True) as admin:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        admin.execute(drop)


def test_sigterm_after_the_database_is_dropped_stops_the_node(
    doomed: str, server_url: str, tmp_path: Path
) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "slow.py").write_text(WORKERS)
    with psycopg.connect(doomed, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO oban_jobs (state, queue, worker, args) "
            "VALUES ('available', 'slow', 'myapp.slow.nap', '{}')"
        )
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    command = [bridge_script(), "--database-url", doomed, "worker", "-q", "slow:1"]
    node = subprocess.Popen(
        [*command, "-w", "myapp.slow"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_job(doomed, worker="myapp.slow.nap", state="executing", timeout=60)
        name = urlsplit(doomed).path.lstrip("/")
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        node.send_signal(signal.SIGTERM)
        _, stderr = node.communicate(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        node.kill()
        _, stderr = node.communicate()
        pytest.fail(f"the node still ran {EXIT_WITHIN} s after SIGTERM:\n{stderr[-3000:]}")
    assert node.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "stopped without storing 1 job outcomes" in stderr, stderr[-3000:]
    assert "lifeline" in stderr
