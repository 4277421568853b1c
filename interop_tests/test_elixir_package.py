"""integrations/elixir as the Mix package ``oban_bridge``, seen from the app that depends on it.

The fixture app (elixir_fixture/) depends on the package by path, as a user's app does, and
configures it in ``config/config.exs``. Booting it must not print Mix's "application
:oban_bridge is not available" warning (it did at every boot while the modules were copied into
the app), and ``ObanBridge.enqueue_python/3`` must put a job where a Python node runs it.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry, worker
from interop_tests.fixture import PROJECT_DIR, CommandFailed, ElixirFixture, build
from interop_tests.support import eventually, in_thread
from tests.jobs.support import running_node

GENERATE = "badge_forge.generator.GenerateBadge"
BADGES = "badges"
PACKAGE_VERSION = "0.1.0"  # integrations/elixir/mix.exs @version


def test_configured_app_boots_without_the_not_available_warning() -> None:
    """`mix run` of the fixture app loads its `config :oban_bridge` with no warning on stderr."""
    build()
    probe = (
        "IO.puts(Enum.join([inspect(Application.get_env(:oban_bridge, :repo)), "
        "Application.spec(:oban_bridge, :vsn), "
        'inspect(List.keymember?(Application.started_applications(), :oban_bridge, 0))], " "))'
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.run(
        ["mix", "run", "--no-compile", "-e", probe],
        cwd=PROJECT_DIR,
        env=dict(env, MIX_ENV="dev"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is not available" not in proc.stderr, proc.stderr
    assert "You have configured application" not in proc.stderr, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"Fixture.EctoRepo {PACKAGE_VERSION} true"


def python_worker(seen: list[Job]) -> Registry:
    """A registry holding only the Python twin of the example's badge generator."""
    registry = Registry()

    @worker(name=GENERATE, queue=BADGES, registry=registry)
    def generate(job: Job) -> None:
        seen.append(job)

    return registry


def job_rows(database_url: str, schema: str) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT id, worker, queue, state, args FROM {}.oban_jobs ORDER BY id").format(
        sql.Identifier(schema)
    )
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(query)
        names = [column.name for column in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


async def test_enqueue_python_runs_on_a_python_node(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    fx.call("delegate.configure")
    seen: list[Job] = []
    async with running_node(database_url, schema, {BADGES: 2}, python_worker(seen), node="py"):
        reply = await in_thread(
            fx.call,
            "delegate.enqueue_python",
            worker=GENERATE,
            args={"badge_id": "b-1", "name": "Zoë"},
            opts={"queue": BADGES, "max_attempts": 3, "tags": ["badge"]},
        )
        assert (reply["worker"], reply["queue"]) == (GENERATE, BADGES)
        await eventually(
            lambda: [r for r in job_rows(database_url, schema) if r["state"] == "completed"],
            what="the Python node to complete the job",
        )

    [job] = seen
    assert (job.id, job.worker, job.queue) == (reply["job_id"], GENERATE, BADGES)
    assert job.args == {"badge_id": "b-1", "name": "Zoë"}
    assert job.max_attempts == 3 and job.tags == ["badge"]


@pytest.mark.parametrize(
    ("worker_name", "opts", "message"),
    [
        (GENERATE, {}, "no queue for the Python worker"),
        ("Elixir.BadgeForge.PrintCenter", {"queue": BADGES}, "a Python worker is named"),
    ],
)
def test_enqueue_python_refuses_without_inserting(
    fx: ElixirFixture,
    database_url: str,
    schema: str,
    worker_name: str,
    opts: dict[str, Any],
    message: str,
) -> None:
    """No queue (none given, none configured) or an Elixir module name: ArgumentError, no row.
    A default queue would hand the job to whatever serves it, an Elixir node first."""
    fx.call("delegate.configure")
    with pytest.raises(CommandFailed) as failed:
        fx.call("delegate.enqueue_python", worker=worker_name, args={"x": 1}, opts=opts)
    assert failed.value.type == "ArgumentError"
    assert message in failed.value.error
    assert job_rows(database_url, schema) == []
