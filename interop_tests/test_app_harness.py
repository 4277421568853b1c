"""bridge.testing's Elixir app harness driving a real BEAM: elixir_fixture/ in its app mode
(``mix run``, Fixture.Application) is "the user's Elixir app", configured as a user configures
theirs ([tool.bridge.testing] of the project's pyproject.toml).

The fixture tests use ``bridge_elixir_app`` exactly as a user's test does; the lifecycle tests
start :class:`ElixirApp` on a schema of their own, to see its start, its failures and its stop.
"""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, insert
from bridge.testing import ElixirApp, ElixirAppError, wait_for_job
from bridge.testing.database import BridgeDatabase
from bridge.testing.elixir import ElixirAppConfig, load_config

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("compiled_fixture")
pytest_plugins = ["pytester"]


def project_config(**changes: Any) -> ElixirAppConfig:
    """The project's own [tool.bridge.testing], as the plugin reads it."""
    config = load_config(None, None, ROOT / "pyproject.toml", ROOT)
    assert config is not None
    return ElixirAppConfig(**{**config.__dict__, **changes})


def peers(url: str, prefix: str) -> list[tuple[str, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        query = sql.SQL("SELECT name, node FROM {}.oban_peers").format(sql.Identifier(prefix))
        return [(name, node) for name, node in conn.execute(query).fetchall()]


# The fixture, as a user's test uses it --------------------------------------------------------


def test_python_jobs_run_on_the_elixir_app(
    bridge_elixir_app: ElixirApp, bridge_db: BridgeDatabase
) -> None:
    assert (bridge_elixir_app.url, bridge_elixir_app.prefix) == (bridge_db.url, bridge_db.prefix)
    assert bridge_elixir_app.node == "fixture_app"  # FIXTURE_NODE from elixir_env
    with bridge_db.connect() as conn:
        ok = insert(conn, Job.new("Fixture.Echo", {"return": 7}, queue="echo"))
        bad = insert(conn, Job.new("Fixture.Echo", {"error": "boom"}, queue="echo"))
    done = bridge_db.wait_for_job(ok)
    assert done.attempted_by[0] == "fixture_app"
    failed = bridge_db.wait_for_job(bad, state="retryable")
    assert [e["error"] for e in failed.errors] == [
        '** (Oban.PerformError) Fixture.Echo failed with {:error, "boom"}'
    ]


def test_the_next_test_gets_the_same_app_on_emptied_tables(
    bridge_elixir_app: ElixirApp, bridge_db: BridgeDatabase
) -> None:
    assert bridge_db.all_enqueued(state=["completed", "retryable"]) == []
    with bridge_db.connect() as conn:
        job = insert(conn, Job.new("Fixture.Echo", {}, queue="echo"))
    assert bridge_db.wait_for_job(job.id).state == "completed"
    assert bridge_elixir_app.running


# Start, failures and stop of one app run -------------------------------------------------------


def test_start_waits_for_the_peer_and_sigterm_stops_it_cleanly(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    app = ElixirApp(project_config(), database_url, schema, tmp_path / "app.log").start()
    try:
        assert peers(database_url, schema) == [("Oban", "fixture_app")]
        with psycopg.connect(database_url, autocommit=True) as conn:
            job = insert(conn, Job.new("Fixture.Echo", {"return": 1}, queue="echo"), prefix=schema)
        wait_for_job(database_url, job, prefix=schema)
    finally:
        status = app.stop()
    # init:stop/0 on SIGTERM: exit 0, and Oban's peer deletes its row on the way out
    assert (status, app.killed, app.running) == (0, False, False)
    assert peers(database_url, schema) == []
    log = app.log_text()
    assert "[fixture-app] node fixture_app serving echo:5, printing:2 on prefix" in log
    assert "SIGTERM received - shutting down" in log


def test_an_app_that_dies_at_start_fails_with_its_log(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    config = project_config(env={"MIX_ENV": "dev", "FIXTURE_QUEUES": "echo:0"})
    app = ElixirApp(config, database_url, schema, tmp_path / "app.log")
    with pytest.raises(ElixirAppError) as failed:
        app.start()
    text = str(failed.value)
    assert text.startswith(
        f"the Elixir app in {ROOT / 'elixir_fixture'} (mix run --no-halt --no-compile) exited "
        "with status 1 before its Oban node was up.\n"
        f"Its log ({tmp_path / 'app.log'}), last lines:\n"
    )
    assert "expected :limit to be an integer greater than 0, got: 0" in text
    assert not app.running


def test_an_app_without_the_awaited_peer_times_out_and_is_stopped(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    config = project_config(peer_name="Elsewhere", start_timeout=3.0)
    app = ElixirApp(config, database_url, schema, tmp_path / "app.log")
    with pytest.raises(ElixirAppError) as failed:
        app.start()
    assert (
        f"wrote no row under name 'Elsewhere' in \"{schema}\".oban_peers within 3s: its Oban must "
        "read DATABASE_URL and OBAN_PREFIX (config/runtime.exs) and run the default Database peer"
    ) in str(failed.value)
    assert "[fixture-app] node fixture_app serving" in str(failed.value)
    assert not app.running and app.returncode == 0


def test_sigkill_after_the_grace(database_url: str, schema: str, tmp_path: Path) -> None:
    """A VM still shutting down when the grace runs out is killed (the BEAM's orderly shutdown
    takes about two seconds here, far over this grace)."""
    app = ElixirApp(project_config(stop_timeout=0.01), database_url, schema, tmp_path / "a.log")
    app.start()
    status = app.stop()
    assert (status, app.killed, app.running) == (-signal.SIGKILL, True, False)


# The report ----------------------------------------------------------------------------------


def test_a_failing_test_gets_the_app_log_in_its_report(
    pytester: pytest.Pytester, database_url: str
) -> None:
    """A user's project (plain pytest in a scratch dir) whose test fails after the print center
    ran: the report shows what the app logged during that test, under its own heading."""
    pytester.makepyfile(
        test_user=textwrap.dedent(
            """
            import base64, hashlib, struct

            from bridge import Job, insert

            # a PNG signature and header are all the print center reads
            PNG = b"\\x89PNG\\r\\n\\x1a\\n" + struct.pack(">I4sII", 13, b"IHDR", 4, 2)

            def test_prints_then_fails(bridge_elixir_app, bridge_db):
                args = {
                    "badge_id": "b-7", "name": "Ada", "width": 4, "height": 2,
                    "png": base64.b64encode(PNG).decode(),
                    "sha256": hashlib.sha256(PNG).hexdigest(),
                }
                with bridge_db.connect() as conn:
                    job = insert(conn, Job.new("BadgeForge.PrintCenter", args, queue="printing"))
                bridge_db.wait_for_job(job)
                assert False, "the user's assertion"

            def test_passes(bridge_elixir_app):
                pass
            """
        )
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--bridge-database-url",
        database_url,
        f"--bridge-elixir-app={ROOT / 'elixir_fixture'}",  # '=': pytest takes a lone path
        "--bridge-elixir-command=mix run --no-halt --no-compile",  # for a rootdir candidate
    )
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    heading = next(line for line in result.stdout.lines if "Captured Elixir app log (" in line)
    assert heading.strip("- ").endswith("elixir-app.log)")
    assert "the user's assertion" in out
    first = out.split(heading + "\n", 1)[1].splitlines()[0]
    assert first.startswith("    [print-center] printed badge b-7 for Ada: 4x2 PNG, 24 bytes")
    assert out.count("Captured Elixir app log") == 1  # the passing test gets none


def test_schema_isolation_gives_each_test_a_run_of_its_own(
    pytester: pytest.Pytester, database_url: str
) -> None:
    """Under --bridge-isolation=schema every test has a fresh schema, so the app runs on it."""
    pytester.makepyfile(
        test_user=textwrap.dedent(
            """
            import pytest
            from bridge import Job, insert

            PIDS = set()

            @pytest.mark.parametrize("n", [1, 2])
            def test_echo(bridge_elixir_app, bridge_db, n):
                assert bridge_elixir_app.prefix == bridge_db.prefix != "public"
                PIDS.add(bridge_elixir_app.pid)
                assert len(PIDS) == n  # a new app run for each test
                with bridge_db.connect() as conn:
                    job = insert(conn, Job.new("Fixture.Echo", {}), prefix=bridge_db.prefix)
                assert bridge_db.wait_for_job(job).attempted_by[0] == bridge_elixir_app.node
            """
        )
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--bridge-database-url",
        database_url,
        "--bridge-isolation=schema",
        f"--bridge-elixir-app={ROOT / 'elixir_fixture'}",  # '=': pytest takes a lone path
        "--bridge-elixir-command=mix run --no-halt --no-compile",  # for a rootdir candidate
    )
    result.assert_outcomes(passed=2)
