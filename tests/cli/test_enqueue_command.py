"""``bridge enqueue`` through the installed script from a scratch directory: a registered
worker's defaults, unique options and conflicts, bulk JSON lines, and output that cannot fail
after the row is in."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from tests.support.cli import run_bridge

Conn = psycopg.Connection[tuple[Any, ...]]

WORKERS = """\
from bridge import worker


@worker(queue="badges", max_attempts=5, priority=3, tags=["badge"])
class GenerateBadge:
    def process(self, job):
        return None


@worker(name="myapp.mail", queue="mail", unique={"period": 300, "keys": ["to"]})
def mail(job):
    return None
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "workers.py").write_text(WORKERS)
    return tmp_path


@pytest.fixture
def enqueue(app: Path, database_url: str, oban_prefix: str) -> Any:
    def run(*args: str, env: Mapping[str, str] | None = None, input: str | None = None) -> Any:
        base = ("--database-url", database_url, "--prefix", oban_prefix, "enqueue")
        clean = {k: "" for k in os.environ if k.startswith("BRIDGE_")}
        return run_bridge(*base, *args, cwd=app, env={**clean, **(env or {})}, input=input)

    return run


def rows(conn: Conn, prefix: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                "SELECT id, worker, queue, priority, max_attempts, tags, args, state::text "
                "FROM {}.oban_jobs ORDER BY id"
            ).format(sql.Identifier(prefix))
        )
        return list(cur.fetchall())


def test_a_registered_workers_defaults_apply_and_options_override(
    enqueue: Any, conn: Conn, oban_prefix: str
) -> None:
    name = "myapp.workers.GenerateBadge"
    first = enqueue(name, "--workers", "myapp.workers", "--args", '{"badge_id": 7}')
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("inserted job ") and first.stdout.endswith(
        f" ({name}) in queue badges: available\n"
    )
    second = enqueue(name, "-w", "myapp.workers", "--queue", "urgent", "--max-attempts", "2")
    assert second.returncode == 0, second.stderr
    assert [
        (r["queue"], r["max_attempts"], r["priority"], r["tags"]) for r in rows(conn, oban_prefix)
    ] == [
        ("badges", 5, 3, ["badge"]),
        ("urgent", 2, 3, ["badge"]),
    ]
    without = enqueue(name)  # no --workers: Oban's defaults, as for any Elixir worker
    assert without.returncode == 0
    assert rows(conn, oban_prefix)[-1]["queue"] == "default"


def test_an_unknown_name_with_workers_given_is_inserted_with_a_note(
    enqueue: Any, conn: Conn, oban_prefix: str
) -> None:
    result = enqueue("Elixir.MyApp.PrintCenter", "-w", "myapp.workers")
    assert result.returncode == 0
    assert result.stderr == (
        "note: 'Elixir.MyApp.PrintCenter' is not a worker of myapp.workers; inserting it with "
        "the command's defaults (an Elixir worker needs no registration)\n"
    )
    assert rows(conn, oban_prefix)[0]["worker"] == "Elixir.MyApp.PrintCenter"


def test_a_worker_module_that_does_not_import_stops_enqueue(
    enqueue: Any, app: Path, conn: Conn, oban_prefix: str
) -> None:
    (app / "myapp" / "workers.py").write_text("import a_missing_dependency\n")
    result = enqueue("myapp.workers.GenerateBadge", "-w", "myapp.workers")
    assert (result.returncode, result.stderr) == (
        2,
        "Error: cannot import worker module 'myapp.workers': ModuleNotFoundError: No module "
        "named 'a_missing_dependency' (raised at myapp/workers.py:1)\n",
    )
    assert rows(conn, oban_prefix) == []


def test_unique_options_and_the_conflict_they_report(
    enqueue: Any, conn: Conn, oban_prefix: str
) -> None:
    args = ("Elixir.Report", "--args", '{"day": 1}', "--unique-period", "60")
    first = enqueue(*args)
    assert first.returncode == 0
    job_id = int(first.stdout.split()[2])
    again = enqueue(*args)
    assert (again.returncode, again.stdout) == (
        0,
        f"job {job_id} (Elixir.Report) already exists in queue default (available): unique "
        "conflict, nothing inserted\n",
    )
    as_json = json.loads(enqueue(*args, "--json").stdout)
    assert (as_json["id"], as_json["conflict"]) == (job_id, True)
    other_day = enqueue("Elixir.Report", "--args", '{"day": 2}', "--unique-period", "infinity")
    assert other_day.stdout.startswith("inserted job ")
    keyed = enqueue(
        "Elixir.Report", "--args", '{"day": 1, "run": 2}',
        "--unique-keys", "day", "--unique-states", "incomplete", "--unique-fields", "args,worker",
    )  # fmt: skip
    assert keyed.stdout.startswith(f"job {job_id} (Elixir.Report) already exists")
    assert len(rows(conn, oban_prefix)) == 2


def test_a_registered_workers_unique_options_apply(
    enqueue: Any, conn: Conn, oban_prefix: str
) -> None:
    first = enqueue("myapp.mail", "-w", "myapp.workers", "--args", '{"to": "a", "n": 1}')
    again = enqueue("myapp.mail", "-w", "myapp.workers", "--args", '{"to": "a", "n": 2}')
    assert first.stdout.startswith("inserted job ") and " in queue mail: " in first.stdout
    assert "unique conflict, nothing inserted" in again.stdout
    assert len(rows(conn, oban_prefix)) == 1


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--unique-period", "soon", "expected a whole number of seconds or infinity, got 'soon'"),
        ("--unique-period", "0", "unique: expected :period to be a positive integer"),
        ("--unique-fields", "args,colour", "expected fields among args, queue, worker, meta"),
        ("--unique-states", "done", "expected a group (all, incomplete, scheduled, successful)"),
    ],
)
def test_bad_unique_options_are_named(
    option: str, value: str, message: str, enqueue: Any, conn: Conn, oban_prefix: str
) -> None:
    result = enqueue("W", option, value)
    assert result.returncode == 2
    assert message in result.stderr.splitlines()[-1]
    assert rows(conn, oban_prefix) == []


def test_integers_beyond_64_bits_print_and_are_stored(
    enqueue: Any, conn: Conn, oban_prefix: str
) -> None:
    big = 2**70
    text = enqueue("W", "--args", json.dumps({"n": big}))
    assert text.returncode == 0 and text.stdout.startswith("inserted job "), text.stderr
    as_json = enqueue("W", "--args", json.dumps({"n": big}), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["args"] == {"n": big}
    assert [r["args"] for r in rows(conn, oban_prefix)] == [{"n": big}, {"n": big}]


# -- many jobs from JSON lines ---------------------------------------------------------------------


def test_from_file_inserts_every_line_with_the_options_as_defaults(
    enqueue: Any, app: Path, conn: Conn, oban_prefix: str
) -> None:
    lines = [{"worker": "Elixir.Bulk", "args": {"i": i, "n": 2**70}} for i in range(150)]
    lines[3] = {"worker": "myapp.workers.GenerateBadge", "args": {"i": 3}}
    lines[4] = {"worker": "Elixir.Bulk", "queue": "own", "priority": 1, "tags": ["x"]}
    (app / "jobs.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n\n")
    result = enqueue("--from-file", "jobs.jsonl", "-w", "myapp.workers", "--priority", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "inserted 150 job(s) from jobs.jsonl\n"
    assert result.stderr == (
        "note: 'Elixir.Bulk' is not a worker of myapp.workers; inserting it with the command's "
        "defaults (an Elixir worker needs no registration)\n"
    )
    found = rows(conn, oban_prefix)
    assert len(found) == 150
    assert [r["args"] for r in found[:3]] == [{"i": i, "n": 2**70} for i in range(3)]
    assert (found[3]["queue"], found[3]["max_attempts"], found[3]["priority"]) == ("badges", 5, 4)
    assert (found[4]["queue"], found[4]["priority"], found[4]["tags"]) == ("own", 1, ["x"])
    assert {r["priority"] for r in found[5:]} == {4}


def test_from_stdin_with_json_output(enqueue: Any, conn: Conn, oban_prefix: str) -> None:
    text = '{"worker": "A"}\n{"worker": "B", "args": {"k": 1}}\n'
    result = enqueue("--from-file", "-", "--json", input=text)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["inserted"] == 2
    assert summary["ids"] == [r["id"] for r in rows(conn, oban_prefix)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "{nope",
            "line 3: not valid JSON (Expecting property name enclosed in double quotes, column 2)",
        ),
        ("[1]", "line 3: expected a JSON object, got list"),
        ('{"args": {}}', "line 3: worker must be a string naming the worker"),
        ('{"worker": "A", "colour": 1}', "line 3: unknown key(s) colour"),
        ('{"worker": "A", "args": [1]}', "line 3: args must be a JSON object, got list"),
        ('{"worker": "A", "priority": 12}', "line 3: priority must be 0..9, got 12"),
        ('{"worker": "A", "unique": {}}', "line 3: unique: --from-file inserts like Oban's"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_inserted(
    bad: str, message: str, enqueue: Any, conn: Conn, oban_prefix: str
) -> None:
    good = "\n".join(json.dumps({"worker": "A", "args": {"i": i}}) for i in range(2500))
    text = '{"worker": "A"}\n\n' + bad + "\n" + good + "\n"
    result = enqueue("--from-file", "-", input=text)
    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: stdin, {message}")
    assert result.stderr.endswith("; nothing inserted\n")
    assert rows(conn, oban_prefix) == []


def test_from_file_and_a_worker_name_do_not_mix(enqueue: Any) -> None:
    both = enqueue("W", "--from-file", "-", input="")
    assert both.returncode == 2
    assert "give WORKER_NAME or --from-file, not both or neither" in both.stderr
    unique = enqueue("--from-file", "-", "--unique-period", "5", input="")
    assert unique.returncode == 2 and "without a uniqueness check" in unique.stderr


# -- the schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["one", "file"])
def test_enqueue_into_a_database_without_the_schema_says_what_to_run(
    how: str, app: Path, database_url: str, prefix: str
) -> None:
    base = ("--database-url", database_url, "--prefix", prefix, "enqueue")
    if how == "one":
        result = run_bridge(*base, "W", cwd=app)
    else:
        result = run_bridge(*base, "--from-file", "-", cwd=app, input='{"worker": "W"}\n')
    assert result.returncode == 5, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f'Error: schema "{prefix}"')
    assert "run `bridge schema install` or the Elixir migrations" in line
