"""``bridge jobs ...`` as a user runs it (the installed script, from a scratch directory), on
rows written by raw SQL the way an Elixir app can write them: every row is listed and shown,
whatever it holds; actions tell missing ids from ones whose state forbids them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest
from psycopg import sql

from bridge.cli import main
from bridge.wire import jsonfmt
from tests.support.cli import run_bridge

Conn = psycopg.Connection[tuple[object, ...]]

BIG = 2**70
DEEP_OK = 300  # beyond orjson's 254 levels, within what Python reads
DEEP = 2000  # beyond what Python's json module reads (RecursionError near 1,000); Jason reads it
LONG_NUMBER = "1" + "0" * 5000  # beyond Python's 4,300-digit int conversion limit; Jason reads it


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


class Rows:
    """The ids of the odd rows one test schema holds."""

    def __init__(self, conn: Conn, prefix: str) -> None:
        self.conn, self.prefix = conn, prefix

    def insert(self, columns: str, values: str, params: tuple[Any, ...] = ()) -> int:
        query = sql.SQL(
            "INSERT INTO {}.oban_jobs (worker, queue, {}) VALUES ('W', 'q', {}) RETURNING id"
        ).format(sql.Identifier(self.prefix), sql.SQL(columns), sql.SQL(values))
        row = self.conn.execute(query, params).fetchone()
        assert row is not None
        return int(str(row[0]))


@pytest.fixture
def odd(conn: Conn, oban_prefix: str) -> dict[str, int]:
    rows = Rows(conn, oban_prefix)
    return {
        "big": rows.insert(
            "args, meta", "%s::jsonb, %s::jsonb", (json.dumps({"n": BIG}), json.dumps({"m": -BIG}))
        ),
        "deep_ok": rows.insert("args", "jsonb_build_object('d', %s::jsonb)", (nested(DEEP_OK),)),
        "deep": rows.insert(
            "args, state", "jsonb_build_object('d', %s::jsonb), 'retryable'", (nested(DEEP),)
        ),
        "long_number": rows.insert("meta", "jsonb_build_object('x', %s::numeric)", (LONG_NUMBER,)),
        "odd_errors": rows.insert(
            "errors, attempt, state",
            """ARRAY['1'::jsonb, '"x"'::jsonb, '{"no_error_key": 1}'::jsonb], 1, 'retryable'""",
        ),
        "deep_error": rows.insert(
            "errors, attempt, state",
            'ARRAY[%s::jsonb, \'{"attempt": 1, "at": "2026-01-01T00:00:00", '
            '"error": "** (RuntimeError) boom\\n    (app) lib/a.ex:1"}\'::jsonb], 2, '
            "'retryable'",
            (nested(DEEP),),
        ),
        "infinity": rows.insert("scheduled_at, state", "'infinity', 'scheduled'"),
        "year_10000": rows.insert("scheduled_at, state", "'10000-01-01 00:00:00', 'scheduled'"),
        "bc": rows.insert("inserted_at", "'0044-03-15 12:00:00 BC'"),
        "plain": rows.insert("args", """'{"badge": 7}'"""),
    }


def bridge(
    database_url: str, prefix: str, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return run_bridge("--database-url", database_url, "--prefix", prefix, *args, cwd=tmp_path)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def error_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The one error line of a failed command, with its exit status checked."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


# -- list / show: every row, whatever it holds -----------------------------------------------------


def test_list_shows_every_odd_row(
    database_url: str, oban_prefix: str, odd: dict[str, int], tmp_path: Path
) -> None:
    out = ok(bridge(database_url, oban_prefix, tmp_path, "jobs", "list", "--limit", "100"))
    lines = out.splitlines()
    assert lines[0].split() == ["id", "state", "queue", "worker", "attempt", "last", "error"]
    listed = {int(line.split()[0]) for line in lines[1:]}
    assert listed == set(odd.values())
    by_id = {int(line.split()[0]): line for line in lines[1:]}
    assert by_id[odd["odd_errors"]].endswith('{"no_error_key":1}')
    assert by_id[odd["deep_error"]].endswith("** (RuntimeError) boom")


def test_list_json_keeps_every_value_jason_reads(
    database_url: str, oban_prefix: str, odd: dict[str, int], tmp_path: Path
) -> None:
    """Nesting of 2,000 levels and a 5,000-digit integer are values, as an Elixir node reads
    them (they used to be marked undecodable); the output is JSON at any depth and length."""
    out = ok(bridge(database_url, oban_prefix, tmp_path, "jobs", "list", "--json"))
    rows = {row["id"]: row for row in jsonfmt.loads(out)}
    assert set(rows) == set(odd.values())
    assert rows[odd["big"]]["args"] == {"n": BIG} and rows[odd["big"]]["meta"] == {"m": -BIG}
    assert rows[odd["deep_ok"]]["args"] == {"d": json.loads(nested(DEEP_OK))}
    assert jsonfmt.dumps(rows[odd["deep"]]["args"]) == '{"d":' + nested(DEEP) + "}"
    assert rows[odd["long_number"]]["meta"] == {"x": 10**5000}
    assert rows[odd["odd_errors"]]["errors"] == [1, "x", {"no_error_key": 1}]
    first, second = rows[odd["deep_error"]]["errors"]
    assert jsonfmt.dumps(first) == nested(DEEP) and second["attempt"] == 1
    assert rows[odd["infinity"]]["scheduled_at"] == "infinity"
    assert rows[odd["year_10000"]]["scheduled_at"] == "10000-01-01T00:00:00"
    assert rows[odd["bc"]]["inserted_at"] == "0044-03-15T12:00:00 BC"
    assert rows[odd["plain"]]["args"] == {"badge": 7}


def test_show_prints_each_odd_row_with_its_markers(
    database_url: str, oban_prefix: str, odd: dict[str, int], tmp_path: Path
) -> None:
    def show(name: str) -> str:
        return ok(bridge(database_url, oban_prefix, tmp_path, "jobs", "show", str(odd[name])))

    assert f'         args: {{"n":{BIG}}}' in show("big").splitlines()
    assert f'         args: {{"d":{nested(DEEP_OK)}}}' in show("deep_ok").splitlines()
    deep = show("deep").splitlines()
    assert f'         args: {{"d":{nested(DEEP)}}}' in deep
    assert "        state: retryable" in deep
    assert f'         meta: {{"x":{LONG_NUMBER}}}' in show("long_number").splitlines()
    assert show("odd_errors").splitlines()[-9:] == [
        "",
        "-- entry 1 (not an error object)",
        "1",
        "",
        "-- entry 2 (not an error object)",
        '"x"',
        "",
        "-- attempt ? at ? (no error text)",
        '{"no_error_key":1}',
    ]
    assert show("deep_error").splitlines()[-7:] == [
        "",
        "-- entry 1 (not an error object)",
        nested(DEEP),
        "",
        "-- attempt 1 at 2026-01-01T00:00:00",
        "** (RuntimeError) boom",
        "    (app) lib/a.ex:1",
    ]
    assert " scheduled_at: infinity" in show("infinity").splitlines()
    assert " scheduled_at: 10000-01-01T00:00:00" in show("year_10000").splitlines()
    assert "  inserted_at: 0044-03-15T12:00:00 BC" in show("bc").splitlines()


def test_show_json_of_a_deep_and_a_long_row(
    database_url: str, oban_prefix: str, odd: dict[str, int], tmp_path: Path
) -> None:
    def show(name: str) -> Any:
        args = ("jobs", "show", str(odd[name]), "--json")
        return jsonfmt.loads(ok(bridge(database_url, oban_prefix, tmp_path, *args)))

    row = show("deep")
    assert row["id"] == odd["deep"] and row["state"] == "retryable"
    assert jsonfmt.dumps(row["args"]) == '{"d":' + nested(DEEP) + "}"
    assert show("long_number")["meta"] == {"x": 10**5000}


def test_control_characters_in_a_row_are_shown_escaped(
    conn: Conn, database_url: str, oban_prefix: str, tmp_path: Path
) -> None:
    job_id = Rows(conn, oban_prefix).insert("args", "'{}'")
    conn.execute(
        sql.SQL("UPDATE {}.oban_jobs SET worker = 'Evil' || chr(27) || '[2J' WHERE id = %s").format(
            sql.Identifier(oban_prefix)
        ),
        (job_id,),
    )
    listed = ok(bridge(database_url, oban_prefix, tmp_path, "jobs", "list"))
    shown = ok(bridge(database_url, oban_prefix, tmp_path, "jobs", "show", str(job_id)))
    for out in (listed, shown):
        assert "\x1b" not in out and "Evil\\x1b[2J" in out


def test_show_of_a_missing_job(database_url: str, oban_prefix: str, tmp_path: Path) -> None:
    for job_id in ("99999", str(2**70)):
        result = bridge(database_url, oban_prefix, tmp_path, "jobs", "show", job_id)
        assert error_line(result, 1) == f"Error: no job {job_id}"
        assert result.stdout == ""


def test_bad_limits_and_states_are_usage_errors(
    database_url: str, oban_prefix: str, tmp_path: Path
) -> None:
    for limit in ("-1", "0", "many"):
        result = bridge(database_url, oban_prefix, tmp_path, "jobs", "list", "--limit", limit)
        line = error_line(result, 2)
        assert line.startswith("Error: Invalid value for '--limit'"), line
    result = bridge(database_url, oban_prefix, tmp_path, "jobs", "list", "--state", "bogus")
    assert error_line(result, 2).startswith("Error: Invalid value for '--state'")


def test_list_filters(
    database_url: str, oban_prefix: str, odd: dict[str, int], tmp_path: Path
) -> None:
    out = ok(
        bridge(
            database_url, oban_prefix, tmp_path, "jobs", "list", "--state", "scheduled", "--json"
        )
    )
    assert {row["id"] for row in json.loads(out)} == {odd["infinity"], odd["year_10000"]}
    out = ok(bridge(database_url, oban_prefix, tmp_path, "jobs", "list", "--limit", "2", "--json"))
    assert [row["id"] for row in json.loads(out)] == sorted(odd.values(), reverse=True)[:2]


# -- retry / cancel / delete: done, left alone, missing -------------------------------------------


@pytest.fixture
def states(conn: Conn, oban_prefix: str) -> dict[str, int]:
    rows = Rows(conn, oban_prefix)
    return {
        state: rows.insert("state", f"'{state}'")
        for state in ("available", "scheduled", "completed", "discarded")
    }


def row_state(conn: Conn, prefix: str, job_id: int) -> str | None:
    row = conn.execute(
        sql.SQL("SELECT state::text FROM {}.oban_jobs WHERE id = %s").format(
            sql.Identifier(prefix)
        ),
        (job_id,),
    ).fetchone()
    return None if row is None else str(row[0])


def test_cancel_of_a_missing_id_says_so(
    database_url: str, oban_prefix: str, states: dict[str, int], tmp_path: Path
) -> None:
    result = bridge(database_url, oban_prefix, tmp_path, "jobs", "cancel", "99999")
    assert error_line(result, 1) == "Error: no job 99999"
    result = bridge(database_url, oban_prefix, tmp_path, "jobs", "delete", "99998", "99999")
    assert error_line(result, 1) == "Error: no jobs 99998, 99999"


def test_cancel_of_a_finished_job_names_its_state(
    conn: Conn, database_url: str, oban_prefix: str, states: dict[str, int], tmp_path: Path
) -> None:
    done = states["completed"]
    result = bridge(database_url, oban_prefix, tmp_path, "jobs", "cancel", str(done), "99999")
    assert error_line(result, 1) == (
        f"Error: left alone (state does not allow cancel): {done} (completed); no job 99999"
    )
    assert row_state(conn, oban_prefix, done) == "completed"


def test_partial_cancel_reports_each_id_and_succeeds(
    conn: Conn, database_url: str, oban_prefix: str, states: dict[str, int], tmp_path: Path
) -> None:
    avail, sched, done = states["available"], states["scheduled"], states["completed"]
    result = bridge(
        database_url,
        oban_prefix,
        tmp_path,
        "jobs",
        "cancel",
        str(avail),
        str(sched),
        str(done),
        "99999",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"cancelled 2 jobs: {avail}, {sched}\n"
    assert result.stderr.splitlines() == [
        f"left alone (state does not allow cancel): {done} (completed)",
        "no job 99999",
    ]
    assert row_state(conn, oban_prefix, avail) == "cancelled"


def test_action_json(
    conn: Conn, database_url: str, oban_prefix: str, states: dict[str, int], tmp_path: Path
) -> None:
    disc, avail = states["discarded"], states["available"]
    args = ("jobs", "retry", str(disc), str(avail), "99999", "--json")
    result = bridge(database_url, oban_prefix, tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "action": "retry",
        "done": [disc],
        "skipped": [{"id": avail, "state": "available"}],
        "missing": [99999],
    }
    assert row_state(conn, oban_prefix, disc) == "available"
    result = bridge(database_url, oban_prefix, tmp_path, "jobs", "delete", "99999", "--json")
    assert json.loads(result.stdout) == {
        "action": "delete",
        "done": [],
        "skipped": [],
        "missing": [99999],
    }
    assert error_line(result, 1) == "Error: no job 99999"


def test_delete_then_show(
    conn: Conn, database_url: str, oban_prefix: str, states: dict[str, int], tmp_path: Path
) -> None:
    target = states["scheduled"]
    result = bridge(database_url, oban_prefix, tmp_path, "jobs", "delete", str(target))
    assert ok(result) == f"deleted 1 job: {target}\n"
    assert row_state(conn, oban_prefix, target) is None


# -- help ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("list", ["--state", "--queue", "--worker", "--limit", "--json"]),
        ("show", ["--json"]),
        ("retry", ["--json"]),
        ("cancel", ["--json"]),
        ("delete", ["--json"]),
    ],
)
def test_every_jobs_command_has_help(tmp_path: Path, command: str, options: list[str]) -> None:
    out = ok(run_bridge("jobs", command, "--help", cwd=tmp_path))
    description = out.split("\n\n")[1].strip()
    assert not description.startswith("Options:") and len(description) > 20, out
    for option in options:
        assert f"  {option} " in out, out
    group = main.commands["jobs"]
    assert isinstance(group, click.Group)
    for param in group.commands[command].params:
        if isinstance(param, click.Option):
            assert param.help, f"jobs {command} {param.opts} has no help"
