"""The pytest plugin as a user meets it: loaded by installing the package (its ``pytest11``
entry point), a user-style test file run with plain pytest in a scratch directory against the
real PostgreSQL, cheap to load, its fixtures never colliding with a project's own."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bridge.testing import database

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

USER_TESTS = """
import psycopg
import pytest

from bridge import Job, insert


def test_first_inserts(bridge_db, bridge_conn):
    insert(bridge_conn, Job.new("Elixir.Thing", {"n": 1}), prefix=bridge_db.prefix)
    bridge_db.assert_enqueued(worker="Elixir.Thing", args={"n": 1})
    print("PREFIX", bridge_db.prefix, bridge_db.url)


def test_second_starts_empty(bridge_db):
    assert bridge_db.all_enqueued() == []
    print("PREFIX", bridge_db.prefix, bridge_db.url)


def test_a_node_runs_a_worker(bridge_db, bridge_node):
    from jobs_here import Ping

    node = bridge_node({"pings": 2}, workers=["jobs_here"])
    with psycopg.connect(bridge_db.url, autocommit=True) as conn:
        insert(conn, Ping.new({"x": 1}), prefix=bridge_db.prefix)
    bridge_db.assert_enqueued(worker=Ping, state="completed", timeout=15)
    node.wait_idle()


@pytest.mark.bridge_mode("inline")
def test_the_marker_runs_inline(bridge_db, bridge_conn):
    from jobs_here import Ping

    job = insert(bridge_conn, Ping.new({"x": 2}), prefix=bridge_db.prefix)
    assert (job.state, job.id) == ("completed", None)
"""

WORKERS = """
from bridge import worker


@worker(name="jobs_here.Ping", queue="pings")
def ping(job):
    return {"pong": job.args}


Ping = ping
"""


def write_user_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS, jobs_here=WORKERS)


def prefixes(output: list[str]) -> list[tuple[str, str]]:
    """(prefix, url) of each PREFIX line the user tests printed (after pytest's progress)."""
    return [
        (m.group(1), m.group(2))
        for line in output
        for m in re.finditer(r"PREFIX (\S+) (\S+)", line)
    ]


def test_user_tests_pass_with_plain_pytest(pytester: pytest.Pytester, database_url: str) -> None:
    write_user_project(pytester)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "--bridge-database-url", database_url
    )
    result.assert_outcomes(passed=4)
    seen = prefixes(result.outlines)
    assert [p for p, _ in seen] == ["public", "public"]  # a database of the run's own
    urls = {u for _, u in seen}
    assert len(urls) == 1 and urls != {database_url}
    # the run's database is dropped at the end
    name = next(iter(urls)).rsplit("/", 1)[1]
    with psycopg.connect(database_url) as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
        )


def test_schema_isolation_gives_each_test_its_own(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_user_project(pytester)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-s",
        "--bridge-database-url",
        database_url,
        "--bridge-isolation=schema",
        "-k",
        "first or second",
    )
    result.assert_outcomes(passed=2, deselected=2)
    first, second = (p for p, _ in prefixes(result.outlines))
    assert first != second and first.startswith("bridge_test_")


@pytest.fixture
def role_without_createdb(database_url: str) -> Iterator[str]:
    """A login role that may create schemas in the run's database but not databases."""
    role = f"bridge_nocreate_{uuid.uuid4().hex[:8]}"
    dbname = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(role)
            )
        )
    yield role
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_without_createdb_the_tables_go_in_a_schema(
    pytester: pytest.Pytester, database_url: str, role_without_createdb: str
) -> None:
    write_user_project(pytester)
    url = database_url.replace("postgres@", f"{role_without_createdb}@", 1)
    assert url != database_url, "the test database URL names the role postgres"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "--bridge-database-url", url, "-k", "first or second"
    )
    result.assert_outcomes(passed=2, deselected=2)
    seen = prefixes(result.outlines)
    assert {u for _, u in seen} == {url}
    assert all(p.startswith("bridge_test_") for p, _ in seen)


def test_no_database_skips_saying_how_to_give_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in database.URL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    write_user_project(pytester)
    # the embedded extra, as if not installed
    pytester.makeconftest("import sys\nsys.modules['pgserver'] = None\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "-k", "second")
    result.assert_outcomes(skipped=1, deselected=3)
    assert any(
        line.startswith("SKIPPED [1] test_user.py:") and line.endswith(f": {database.NO_DATABASE}")
        for line in result.outlines
    ), result.outlines


def test_help_is_cheap_and_documents_the_options(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, pytest
        pytest.main(["--help"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("psycopg", "psycopg_pool",
                       "pgserver") or m.startswith(("bridge.jobs", "bridge.testing.database",
                       "bridge.testing.node", "bridge.schema", "bridge.workflows")))
        print("HEAVY", heavy)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert "HEAVY []" in done.stdout
    assert "--bridge-database-url=URL" in done.stdout
    assert "--bridge-isolation={reset,schema}" in done.stdout
    markers = subprocess.run(
        [sys.executable, "-m", "pytest", "--markers"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "@pytest.mark.bridge_mode(name):" in markers.stdout


def _fixtures_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef) and any(
            "fixture" in ast.unparse(d) for d in node.decorator_list
        ):
            names.add(node.name)
    return names


def test_fixture_names_never_collide() -> None:
    ours = _fixtures_of(ROOT / "bridge" / "testing" / "plugin.py")
    assert ours and all(n.startswith(("bridge_", "_bridge_")) for n in ours), ours
    project = set()
    for conftest in ROOT.glob("**/conftest.py"):
        project |= _fixtures_of(conftest)
    assert not ours & project


def test_nothing_in_bridge_imports_the_testing_package() -> None:
    offenders = []
    for path in (ROOT / "bridge").rglob("*.py"):
        if "testing" in path.relative_to(ROOT / "bridge").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path}: {n}" for n in names if n.startswith("bridge.testing")]
    assert not offenders
