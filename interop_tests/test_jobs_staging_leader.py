"""Only leaders stage, on both sides, as Oban 2.23's ``Oban.Stager`` (lib/oban/stager.ex):
a follower sends no staging statement.

The Elixir side is elixir_fixture/ in its app mode (``Fixture.Stager`` asking ``Fixture.Peer``,
both as upstream), the Python side a real node. A due job stays ``scheduled`` while only
followers run, and becomes ``available`` as soon as a leader of either side stages it: an
Elixir leader stages every queue, Python queues included, and its ``oban_insert`` wakes them.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, Registry, insert, worker
from bridge.jobs.plugins.peer import Peer
from bridge.jobs.plugins.stager import Stager
from bridge.testing import ElixirApp, wait_for_job
from bridge.testing.elixir import ElixirAppConfig, load_config
from bridge.testing.node import start_node
from bridge.wire import notify
from bridge.wire.timefmt import utc_now

ROOT = Path(__file__).resolve().parents[1]
# Ten rounds of the 0.1 s stagers below: ample chances for a follower to stage by mistake.
QUIET_WINDOW = 1.0
APP_READY_TIMEOUT = 60.0

pytestmark = pytest.mark.usefixtures("compiled_fixture")

REGISTRY = Registry()


@worker(name="staging.Ok", queue="py", registry=REGISTRY)
def ok(job: Job) -> None:
    return None


def app_config(node: str) -> ElixirAppConfig:
    """The project's [tool.bridge.testing] app, node ``node``, staging every 0.1 s."""
    config = load_config(None, None, ROOT / "pyproject.toml", ROOT)
    assert config is not None
    env = {**config.env, "FIXTURE_NODE": node, "FIXTURE_STAGE_INTERVAL_MS": "100"}
    return ElixirAppConfig(**{**config.__dict__, "env": env})


def hold_leadership(url: str, prefix: str, name: str, node: str) -> None:
    """Another node leads ``name`` for the next five minutes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.oban_peers VALUES (%s, %s, now() at time zone 'utc', "
                "now() at time zone 'utc' + interval '5 minutes')"
            ).format(sql.Identifier(prefix)),
            (name, node),
        )


def step_down(url: str, prefix: str, name: str, node: str) -> None:
    """What a stopping leader of either side does: delete its row, NOTIFY ``{"down": name}``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DELETE FROM {}.oban_peers WHERE name = %s AND node = %s").format(
                sql.Identifier(prefix)
            ),
            (name, node),
        )
        conn.execute(
            "SELECT pg_notify(%s, %s)",
            (notify.channel(prefix, "leader"), notify.encode({"down": name})),
        )


def due_job(url: str, prefix: str, worker_name: str, queue: str) -> int:
    """A ``scheduled`` job already due: any leader's next round stages it."""
    due = utc_now() - timedelta(seconds=1)
    with psycopg.connect(url, autocommit=True) as conn:
        job = insert(conn, Job.new(worker_name, {}, queue=queue, scheduled_at=due), prefix=prefix)
    assert job.id is not None
    return job.id


def state_of(url: str, prefix: str, job_id: int) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT state::text FROM {}.oban_jobs WHERE id = %s").format(
                sql.Identifier(prefix)
            ),
            (job_id,),
        ).fetchone()
    assert row is not None
    return row[0]


def wait_until_serving(app: ElixirApp, node: str) -> None:
    """Its queues run: the app's start only waited for an ``Oban`` row, which another holds."""
    deadline = time.monotonic() + APP_READY_TIMEOUT
    while f"[fixture-app] node {node} serving" not in app.log_text():
        app.check()
        assert time.monotonic() < deadline, f"the app never served its queues:\n{app.log_tail()}"
        time.sleep(0.05)


def test_an_elixir_follower_does_not_stage_until_it_leads(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    hold_leadership(database_url, schema, "Oban", "elixir_ghost")
    app = ElixirApp(app_config("elixir_follower"), database_url, schema, tmp_path / "app.log")
    app.start()
    try:
        wait_until_serving(app, "elixir_follower")
        job_id = due_job(database_url, schema, "Fixture.Echo", "echo")
        time.sleep(QUIET_WINDOW)
        assert state_of(database_url, schema, job_id) == "scheduled"

        # The leader stops: the app elects at once, and its next round stages the job.
        step_down(database_url, schema, "Oban", "elixir_ghost")
        done = wait_for_job(database_url, job_id, prefix=schema)
    finally:
        app.stop()
    assert done.attempted_by[0] == "elixir_follower"


def test_a_python_follower_runs_what_the_elixir_leader_stages(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    hold_leadership(database_url, schema, "Bridge", "py_ghost")
    stager, peer = Stager(interval=0.1), Peer()
    node = start_node(
        database_url,
        schema,
        {"py": 1},
        registry=REGISTRY,
        node="py_follower",
        poll_interval=0.2,
        plugins=[stager, peer],
    )
    try:
        job_id = due_job(database_url, schema, "staging.Ok", "py")
        time.sleep(QUIET_WINDOW)
        assert not node.node.is_leader()
        assert state_of(database_url, schema, job_id) == "scheduled"

        # The Elixir leader's stager stages every queue's due jobs, the Python queue's too.
        app = ElixirApp(app_config("elixir_leader"), database_url, schema, tmp_path / "app.log")
        app.start()
        try:
            assert app.node == "elixir_leader"
            done = wait_for_job(database_url, job_id, prefix=schema)
        finally:
            app.stop()
        assert not node.node.is_leader()
    finally:
        node.stop()
    assert done.attempted_by[0] == "py_follower"
