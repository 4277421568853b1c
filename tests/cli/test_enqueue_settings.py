"""``bridge enqueue`` takes its worker modules and app directories from the sources ``bridge
worker`` reads (option > ``BRIDGE_*`` variable > ``[tool.bridge]``), so in a project whose
pyproject.toml names the workers module a Python worker's job gets the worker's queue and
attempts without ``--workers``. Through the installed script, from a scratch directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support.cli import run_bridge

Conn = psycopg.Connection[tuple[Any, ...]]

WORKERS = """\
from bridge import worker


@worker(queue="badges", max_attempts=5)
class GenerateBadge:
    def process(self, job):
        return None
"""

OTHER_WORKERS = """\
from bridge import worker


@worker(name="myapp.workers.GenerateBadge", queue="elsewhere", max_attempts=2)
def generate(job):
    return None
"""

NAME = "myapp.workers.GenerateBadge"


def package(root: Path, module: str, text: str) -> None:
    """``root/myapp/<module>.py`` holding ``text``."""
    (root / "myapp").mkdir(parents=True, exist_ok=True)
    (root / "myapp" / "__init__.py").write_text("")
    (root / "myapp" / f"{module}.py").write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose pyproject.toml names its workers module, as `bridge worker` reads it."""
    package(tmp_path, "workers", WORKERS)
    package(tmp_path, "other", OTHER_WORKERS)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.bridge]\nqueues = "badges:5"\nworkers = ["myapp.workers"]\n'
    )
    return tmp_path


@pytest.fixture
def enqueue(project: Path, database_url: str, oban_prefix: str) -> Any:
    def run(*args: str, env: Mapping[str, str] | None = None, cwd: Path = project) -> Any:
        base = ("--database-url", database_url, "--prefix", oban_prefix, "enqueue")
        clean = {k: "" for k in os.environ if k.startswith("BRIDGE_")}
        return run_bridge(*base, *args, cwd=cwd, env={**clean, **(env or {})})

    return run


def last_row(conn: Conn, prefix: str) -> tuple[str, str, int]:
    query = sql.SQL("SELECT worker, queue, max_attempts FROM {}.oban_jobs ORDER BY id DESC LIMIT 1")
    row = conn.execute(query.format(sql.Identifier(prefix))).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_the_workers_of_tool_bridge_give_the_job_its_queue_and_attempts(
    enqueue: Any, conn: Conn, oban_prefix: str
) -> None:
    result = enqueue(NAME, "--args", '{"badge_id": 7}')
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.endswith(f" ({NAME}) in queue badges: available\n")
    assert last_row(conn, oban_prefix) == (NAME, "badges", 5)


def test_the_variable_wins_over_the_file_and_the_option_over_both(
    enqueue: Any, conn: Conn, oban_prefix: str
) -> None:
    by_variable = enqueue(NAME, env={"BRIDGE_WORKERS": "myapp.other"})
    assert by_variable.returncode == 0, by_variable.stderr
    assert last_row(conn, oban_prefix) == (NAME, "elsewhere", 2)
    by_option = enqueue(NAME, "--workers", "myapp.workers", env={"BRIDGE_WORKERS": "myapp.other"})
    assert by_option.returncode == 0, by_option.stderr
    assert last_row(conn, oban_prefix) == (NAME, "badges", 5)


def test_app_dir_of_the_file_is_where_the_modules_are(
    enqueue: Any, project: Path, conn: Conn, oban_prefix: str, tmp_path_factory: Any
) -> None:
    """``--config`` names a file elsewhere; its ``app_dir`` is relative to that file."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    settings = project / "bridge.toml"
    settings.write_text('workers = ["myapp.workers"]\napp_dir = ["."]\n')
    result = enqueue(NAME, "--config", str(settings), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert last_row(conn, oban_prefix) == (NAME, "badges", 5)


def test_an_elixir_worker_in_such_a_project_keeps_obans_defaults_with_a_note(
    enqueue: Any, conn: Conn, oban_prefix: str
) -> None:
    result = enqueue("BadgeForge.PrintCenter", "--queue", "printing")
    assert result.returncode == 0
    assert result.stderr == (
        "note: 'BadgeForge.PrintCenter' is not a worker of myapp.workers; inserting it with "
        "the command's defaults (an Elixir worker needs no registration)\n"
    )
    assert last_row(conn, oban_prefix) == ("BadgeForge.PrintCenter", "printing", 20)


def test_only_the_settings_enqueue_uses_are_read_from_the_environment(
    enqueue: Any, conn: Conn, oban_prefix: str
) -> None:
    """A malformed variable of a setting enqueue does not use does not stop it; one it uses
    does, naming the value."""
    unrelated = enqueue(NAME, env={"BRIDGE_QUEUES": "badges:many"})
    assert unrelated.returncode == 0, unrelated.stderr
    assert last_row(conn, oban_prefix) == (NAME, "badges", 5)
    used = enqueue(NAME, env={"BRIDGE_APP_DIR": "/no/such/dir"})
    assert used.returncode == 2 and "'/no/such/dir' does not exist" in used.stderr


def test_a_bad_tool_bridge_table_is_named_in_one_line(
    enqueue: Any, project: Path, conn: Conn, oban_prefix: str
) -> None:
    (project / "pyproject.toml").write_text('[tool.bridge]\nworkers = "myapp.workers"\nq = 1\n')
    result = enqueue(NAME)
    assert (result.returncode, result.stderr) == (
        2,
        "Error: pyproject.toml: unknown key(s) q\n",
    )
    assert conn.execute(
        sql.SQL("SELECT count(*) FROM {}.oban_jobs").format(sql.Identifier(oban_prefix))
    ).fetchone() == (0,)
