"""``bridge schema install|verify|show`` as a user types them (the installed script, from a
scratch directory): any schema name PostgreSQL and Oban can use works end to end, an
incompatible schema is never "nothing to do", every failure is one line with its own status."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from bridge.schema import shown
from tests.support.cli import run_bridge
from tests.support.pg import load_golden
from tests.test_schema import NASTY_PREFIXES

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A directory outside the repository to run ``bridge`` from."""
    return tmp_path


def _drop(conn: Conn, name: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def dropped(conn: Conn) -> Iterator[list[str]]:
    """Schema names a test creates, dropped at its end."""
    names: list[str] = []
    yield names
    for name in names:
        _drop(conn, name)


@pytest.mark.parametrize("name", NASTY_PREFIXES, ids=repr)
def test_any_schema_name_installs_verifies_and_takes_jobs(
    database_url: str, conn: Conn, scratch: Path, dropped: list[str], name: str
) -> None:
    dropped.append(name)
    _drop(conn, name)

    def bridge(*args: str) -> tuple[int, str, str]:
        done = run_bridge("--database-url", database_url, "--prefix", name, *args, cwd=scratch)
        return done.returncode, done.stdout, done.stderr

    code, out, err = bridge("schema", "install")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"created schema {shown(name)}"
    assert "created index idx_step_results_unique" in out.splitlines()
    assert bridge("schema", "verify") == (0, f"schema {shown(name)} is compatible\n", "")
    assert bridge("schema", "install") == (
        0,
        f"schema {shown(name)}: nothing to do, every object exists\n",
        "",
    )
    code, out, err = bridge("enqueue", "MyApp.Worker", "--args", '{"n": 1}', "--json")
    assert (code, err) == (0, "")
    job_id = json.loads(out)["id"]
    code, out, err = bridge("jobs", "list", "--json")
    assert (code, err) == (0, "")
    assert [(j["id"], j["worker"], j["args"]) for j in json.loads(out)] == [
        (job_id, "MyApp.Worker", {"n": 1})
    ]


@pytest.mark.parametrize("name", ["x\nDROP TABLE victim; --", "a;b", "o'x", "-- z"], ids=repr)
def test_schema_show_prints_a_script_that_creates_that_schema(
    database_url: str, conn: Conn, scratch: Path, dropped: list[str], name: str
) -> None:
    dropped.append(name)
    _drop(conn, name)
    conn.execute("CREATE TABLE IF NOT EXISTS victim (id int)")
    shown_sql = run_bridge("--prefix", name, "schema", "show", cwd=scratch)
    assert (shown_sql.returncode, shown_sql.stderr) == (0, "")
    try:
        conn.execute(shown_sql.stdout.encode())  # one simple query, as psql -f sends it
        assert conn.execute("SELECT to_regclass('victim') IS NOT NULL").fetchone() == (True,)
    finally:
        conn.execute("DROP TABLE IF EXISTS victim")
    verified = run_bridge(
        "--database-url", database_url, "--prefix", name, "schema", "verify", cwd=scratch
    )
    assert (verified.returncode, verified.stdout) == (0, f"schema {shown(name)} is compatible\n")


def test_install_on_an_incompatible_schema_names_the_differences(
    database_url: str, conn: Conn, oban_prefix: str, scratch: Path
) -> None:
    for damage in (
        "ALTER TABLE {p}.oban_jobs DROP COLUMN meta",  # and its index with it
        "ALTER TABLE {p}.oban_jobs ALTER COLUMN attempt TYPE smallint",
        "ALTER TABLE {p}.oban_peers SET LOGGED",  # a note only
    ):
        conn.execute(sql.SQL(damage).format(p=sql.Identifier(oban_prefix)))
    mismatches = [
        "MISMATCH: column oban_jobs.attempt: type is smallint, expected integer",
        "MISMATCH: column oban_jobs.meta: column is missing (expected jsonb)",
        "MISMATCH: index oban_jobs_meta_index: index is missing on oban_jobs",
    ]
    base = ("--database-url", database_url, "--prefix", oban_prefix)

    install = run_bridge(*base, "schema", "install", cwd=scratch)
    assert install.returncode == 5
    assert install.stdout.splitlines() == mismatches  # the index cannot be created: nothing was
    assert install.stderr == (
        f'Error: schema "{oban_prefix}" exists but differs from what bridge needs '
        "(3 differences above): fix it with the Elixir migrations\n"
    )

    install_json = run_bridge(*base, "schema", "install", "--json", cwd=scratch)
    assert install_json.returncode == 5
    document = json.loads(install_json.stdout)
    assert (document["prefix"], document["created"], document["compatible"]) == (
        oban_prefix,
        [],
        False,
    )
    assert [d["blocking"] for d in document["differences"]] == [True, True, False, True]
    assert install_json.stderr.endswith(
        "(3 differences in the JSON): fix it with the Elixir migrations\n"
    )

    verify = run_bridge(*base, "schema", "verify", cwd=scratch)
    assert verify.returncode == 1
    assert verify.stdout.splitlines() == [
        *mismatches[:2],
        "note: table oban_peers: is logged, expected unlogged",
        mismatches[2],
    ]
    assert verify.stderr == (
        f'schema "{oban_prefix}" is NOT compatible (3 mismatches above): fix it with the Elixir '
        "migrations\n"
    )
    verify_json = run_bridge(*base, "schema", "verify", "--json", cwd=scratch)
    assert verify_json.returncode == 1
    assert json.loads(verify_json.stdout)["differences"] == document["differences"]

    # once the column is back, install creates the missing index and still reports the type
    conn.execute(
        sql.SQL("ALTER TABLE {}.oban_jobs ADD COLUMN meta jsonb DEFAULT '{{}}'::jsonb").format(
            sql.Identifier(oban_prefix)
        )
    )
    again = run_bridge(*base, "schema", "install", cwd=scratch)
    assert again.returncode == 5
    assert again.stdout.splitlines() == ["created index oban_jobs_meta_index", mismatches[0]]
    assert "(1 difference above)" in again.stderr


def test_install_and_verify_json(database_url: str, prefix: str, scratch: Path) -> None:
    base = ("--database-url", database_url, "--prefix", prefix)
    missing = run_bridge(*base, "schema", "verify", "--json", cwd=scratch)
    assert missing.returncode == 1
    assert json.loads(missing.stdout) == {
        "prefix": prefix,
        "compatible": False,
        "differences": [
            {"blocking": True, "subject": f"schema {prefix}", "message": "does not exist"}
        ],
    }
    assert missing.stderr == (
        f'schema "{prefix}" is NOT compatible: it does not exist; create it with '
        "`bridge schema install` or the Elixir migrations\n"
    )
    install = run_bridge(*base, "schema", "install", "--json", cwd=scratch)
    assert (install.returncode, install.stderr) == (0, "")
    document = json.loads(install.stdout)
    assert document["created"][:3] == [f"schema {prefix}", "type oban_job_state", "table oban_jobs"]
    assert (len(document["created"]), document["compatible"], document["differences"]) == (
        17,
        True,
        [],
    )
    verify = run_bridge(*base, "schema", "verify", "--json", cwd=scratch)
    assert (verify.returncode, verify.stderr) == (0, "")
    assert json.loads(verify.stdout) == {"prefix": prefix, "compatible": True, "differences": []}


def test_an_ecto_timestamps_setting_is_a_note(
    database_url: str, conn: Conn, prefix: str, scratch: Path
) -> None:
    """An Elixir app with ``migration_timestamps: [type: :utc_datetime_usec]`` gets microsecond
    timestamps in workflow_instances: compatible, said as notes."""
    load_golden(conn, prefix)
    for column in ("inserted_at", "updated_at"):
        conn.execute(
            sql.SQL("ALTER TABLE {}.workflow_instances ALTER {} TYPE timestamp").format(
                sql.Identifier(prefix), sql.Identifier(column)
            )
        )
    done = run_bridge(
        "--database-url", database_url, "--prefix", prefix, "schema", "verify", cwd=scratch
    )
    note = (
        "type is timestamp without time zone, the Elixir migrations' default is timestamp(0) "
        "without time zone (an Ecto Repo's migration_timestamps setting makes this one); bridge "
        "reads and writes either"
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        f"note: column workflow_instances.inserted_at: {note}",
        f"note: column workflow_instances.updated_at: {note}",
        f'schema "{prefix}" is compatible',
    ]


def test_timestamptz_timestamps_are_a_note_that_says_hephaestus_ecto_cannot_write_them(
    database_url: str, conn: Conn, prefix: str, scratch: Path
) -> None:
    """``migration_timestamps: [type: :timestamptz]``: bridge works, HephaestusEcto cannot
    insert (Postgrex refuses its NaiveDateTime for timestamptz): still compatible, said so."""
    load_golden(conn, prefix)
    for column in ("inserted_at", "updated_at"):
        conn.execute(
            sql.SQL("ALTER TABLE {}.workflow_instances ALTER {} TYPE timestamptz").format(
                sql.Identifier(prefix), sql.Identifier(column)
            )
        )
    done = run_bridge(
        "--database-url", database_url, "--prefix", prefix, "schema", "verify", cwd=scratch
    )
    note = (
        "type is timestamp with time zone, the Elixir migrations' default is timestamp(0) "
        "without time zone (an Ecto Repo's migration_timestamps setting makes this one); bridge "
        "reads and writes either, but HephaestusEcto 0.3.0 cannot write it (Postgrex refuses "
        "its NaiveDateTime timestamps for timestamptz): Elixir nodes cannot start or advance "
        "workflows here"
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        f"note: column workflow_instances.inserted_at: {note}",
        f"note: column workflow_instances.updated_at: {note}",
        f'schema "{prefix}" is compatible',
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "the schema name is empty: give one such as public"),
        (
            "é" * 32,
            f'the schema name "{"é" * 32}" is 64 bytes long: Oban notifies on channels named '
            '"<prefix>.oban_insert" and PostgreSQL names hold at most 63 bytes, so use at most '
            "51 bytes",
        ),
        (
            "50%",
            "the schema name \"50%\" holds '%', which bridge's parameterised queries cannot carry: "
            "choose a name without it",
        ),
    ],
)
@pytest.mark.parametrize("command", ["install", "verify", "show"])
def test_a_schema_name_bridge_cannot_use_is_a_usage_error(
    database_url: str, scratch: Path, name: str, message: str, command: str
) -> None:
    done = run_bridge(
        "--database-url", database_url, "--prefix", name, "schema", command, cwd=scratch
    )
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"Error: --prefix: {message}\n")


def test_every_schema_command_and_option_has_help(scratch: Path) -> None:
    for command in ("install", "verify", "show"):
        done = run_bridge("schema", command, "--help", cwd=scratch)
        assert done.returncode == 0
        lines = done.stdout.splitlines()
        options = [line for line in lines if line.lstrip().startswith("--")]
        assert options and all(len(line.split(None, 1)) == 2 for line in options), lines


def test_verify_as_a_role_without_create_says_what_it_could_not_compare(
    database_url: str, prefix: str, conn: Conn, scratch: Path
) -> None:
    """The comparison builds the expected schema in a scratch schema; the usual least-privilege
    worker role may not, and verify says so in one line (it said "unexpected
    InsufficientPrivilege" before) with exit status 1, never "compatible"."""
    assert (
        run_bridge(
            "--database-url", database_url, "--prefix", prefix, "schema", "install", cwd=scratch
        ).returncode
        == 0
    )
    role = f"bridge_verify_{uuid.uuid4().hex[:8]}"
    name = sql.Identifier(role)
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(name))
    try:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(prefix), name))
        parts = urlsplit(database_url)
        url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
        done = run_bridge(
            "--database-url", url, "--prefix", prefix, "schema", "verify", cwd=scratch
        )
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr.startswith(
            f"Error: schema {shown(prefix)} was not compared with what bridge needs (permission "
            "denied for database "
        )
        assert done.stderr.endswith(
            "run `bridge schema verify` as a role that has it (a worker started as this role "
            "checks only that oban_jobs exists)\n"
        )
        assert done.stderr.count("\n") == 1
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(name))
        conn.execute(sql.SQL("DROP ROLE {}").format(name))
