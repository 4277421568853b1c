"""The schema installer and verifier against real PostgreSQL and the genuine Elixir DDL."""

from __future__ import annotations

import re

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from bridge import schema
from bridge.cli import main
from tests.support.pg import dump_schema, load_golden, scratch_database

Conn = psycopg.Connection[tuple[object, ...]]


def messages(report: schema.VerifyReport) -> list[str]:
    return [str(d) for d in report.differences]


def test_install_into_empty_prefix_then_verify_is_clean(conn: Conn, prefix: str) -> None:
    report = schema.install(conn, prefix)
    assert report.created[0] == f"schema {prefix}"
    assert "table oban_jobs" in report.created
    assert "index idx_step_results_unique" in report.created
    verified = schema.verify(conn, prefix)
    assert verified.compatible
    assert verified.differences == []


def test_install_twice_is_a_no_op(conn: Conn, prefix: str, database_url: str) -> None:
    schema.install(conn, prefix)
    before = dump_schema(database_url, prefix)
    again = schema.install(conn, prefix)
    assert again.created == []
    assert dump_schema(database_url, prefix) == before


def test_install_into_a_prefix_that_needs_quoting(conn: Conn, database_url: str) -> None:
    odd = 'Odd "Prefix" 1'
    try:
        schema.install(conn, odd)
        assert schema.verify(conn, odd).compatible
        conn.execute(
            sql.SQL("INSERT INTO {}.oban_jobs (worker) VALUES ('W')").format(sql.Identifier(odd))
        )
        state = conn.execute(
            sql.SQL("SELECT state::text, queue FROM {}.oban_jobs").format(sql.Identifier(odd))
        ).fetchone()
        assert state == ("available", "default")
    finally:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(odd)))


def test_our_install_dumps_identically_to_the_elixir_migrated_schema(server_url: str) -> None:
    """Same pg_dump for our DDL and for the genuine Elixir migrations (golden dump)."""
    with scratch_database(server_url) as ours_url, scratch_database(server_url) as theirs_url:
        with psycopg.connect(ours_url, autocommit=True) as c:
            schema.install(c, "public")
        with psycopg.connect(theirs_url, autocommit=True) as c:
            load_golden(c, "public")
        assert dump_schema(ours_url) == dump_schema(theirs_url)


def test_elixir_schema_verifies_clean_and_install_leaves_it_unchanged(
    conn: Conn, prefix: str, database_url: str
) -> None:
    load_golden(conn, prefix)
    report = schema.verify(conn, prefix)
    assert report.compatible, messages(report)
    assert report.differences == []
    before = dump_schema(database_url, prefix)
    assert schema.install(conn, prefix).created == []
    assert dump_schema(database_url, prefix) == before


def _sql(conn: Conn, template: str, prefix: str) -> None:
    conn.execute(sql.SQL(template).format(p=sql.Identifier(prefix)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            "ALTER TABLE {p}.oban_jobs DROP COLUMN meta",
            "MISMATCH: column oban_jobs.meta: column is missing (expected jsonb)",
        ),
        (
            "DROP INDEX {p}.oban_jobs_args_index",
            "MISMATCH: index oban_jobs_args_index: index is missing on oban_jobs",
        ),
        (
            "DROP INDEX {p}.idx_step_results_unique",
            "MISMATCH: index idx_step_results_unique: index is missing on hephaestus_step_results",
        ),
        (
            "COMMENT ON TABLE {p}.oban_jobs IS '13'",
            "MISMATCH: table oban_jobs: Oban migration version 13 is older than 14, the oldest "
            "bridge supports: run the Oban migrations up to 14",
        ),
        (
            "COMMENT ON TABLE {p}.hephaestus_step_results IS NULL",
            "MISMATCH: table hephaestus_step_results: no HephaestusOban migration version comment "
            "(found None); expected version 4",
        ),
        (
            "ALTER TABLE {p}.oban_jobs ALTER COLUMN attempt TYPE smallint",
            "MISMATCH: column oban_jobs.attempt: type is smallint, expected integer",
        ),
        (
            "ALTER TABLE {p}.oban_jobs ALTER COLUMN meta SET NOT NULL",
            "MISMATCH: column oban_jobs.meta: is NOT NULL, expected nullable",
        ),
        (
            "ALTER TABLE {p}.oban_jobs ALTER COLUMN queue DROP DEFAULT",
            "MISMATCH: column oban_jobs.queue: default is none, expected 'default'::text",
        ),
        (
            "DROP TABLE {p}.oban_peers",
            "MISMATCH: table oban_peers: table is missing",
        ),
        (
            "ALTER TABLE {p}.oban_jobs DROP CONSTRAINT attempt_range",
            "MISMATCH: constraint oban_jobs.attempt_range: constraint is missing "
            "(CHECK (((attempt >= 0) AND (attempt <= max_attempts))))",
        ),
        (
            "ALTER TABLE {p}.oban_jobs ADD COLUMN extra int",
            "note: column oban_jobs.extra: extra column (not used by bridge)",
        ),
        (
            "ALTER TABLE {p}.oban_peers SET LOGGED",
            "note: table oban_peers: is logged, expected unlogged",
        ),
    ],
)
def test_verify_names_each_difference(conn: Conn, prefix: str, damage: str, expected: str) -> None:
    schema.install(conn, prefix)
    _sql(conn, damage, prefix)
    report = schema.verify(conn, prefix)
    assert expected in messages(report)
    assert report.compatible == expected.startswith("note")


def test_verify_reports_a_missing_enum_value(conn: Conn, prefix: str) -> None:
    """An enum value cannot be dropped, so build the pre-v14 type (no 'suspended') by hand."""
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(prefix)))
    _sql(
        conn,
        "CREATE TYPE {p}.oban_job_state AS ENUM ('available', 'scheduled', 'executing', "
        "'retryable', 'completed', 'discarded', 'cancelled')",
        prefix,
    )
    created = schema.install(conn, prefix).created
    assert "type oban_job_state" not in created, "install must not touch an existing type"
    report = schema.verify(conn, prefix)
    assert "MISMATCH: type oban_job_state: enum value 'suspended' is missing" in messages(report)
    assert not report.compatible


def test_verify_reports_a_missing_schema(conn: Conn, prefix: str) -> None:
    report = schema.verify(conn, prefix)
    assert messages(report) == [f"MISMATCH: schema {prefix}: does not exist"]


def test_install_adds_a_missing_index_to_an_existing_table(conn: Conn, prefix: str) -> None:
    schema.install(conn, prefix)
    _sql(conn, "DROP INDEX {p}.oban_jobs_meta_index", prefix)
    assert schema.install(conn, prefix).created == ["index oban_jobs_meta_index"]
    assert schema.verify(conn, prefix).differences == []


def test_install_never_alters_an_existing_table(conn: Conn, prefix: str) -> None:
    """A table missing a column is for the Elixir migrations to fix: install changes nothing."""
    schema.install(conn, prefix)
    _sql(conn, "ALTER TABLE {p}.oban_jobs DROP COLUMN meta", prefix)  # drops its index too
    with pytest.raises(schema.SchemaInstallError, match=r"oban_jobs_meta_index.*schema verify"):
        schema.install(conn, prefix)
    columns = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'oban_jobs'",
        (prefix,),
    ).fetchall()
    assert ("meta",) not in columns
    assert "MISMATCH: column oban_jobs.meta: column is missing (expected jsonb)" in messages(
        schema.verify(conn, prefix)
    )


def test_cli_schema_commands(database_url: str, prefix: str) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["--database-url", database_url, "--prefix", prefix, "schema", "verify"]
    )
    assert result.exit_code == 1
    assert "does not exist" in result.output
    result = runner.invoke(
        main, ["--database-url", database_url, "--prefix", prefix, "schema", "install"]
    )
    assert result.exit_code == 0, result.output
    assert "created table oban_jobs" in result.output
    result = runner.invoke(
        main, ["--database-url", database_url, "--prefix", prefix, "schema", "verify"]
    )
    assert result.exit_code == 0, result.output
    assert "compatible" in result.output
    result = runner.invoke(main, ["--prefix", prefix, "schema", "show"])
    assert result.exit_code == 0
    assert f'CREATE TABLE "{prefix}".oban_jobs' in result.output
    assert "postgresql://" not in result.output


# -- any schema name PostgreSQL and Oban can use ---------------------------------------------------

# Names that break SQL assembled as text: statement ends, comment starts at a line start, quotes
# of both kinds, placeholders of psycopg and of the SQL files, unicode, the longest allowed.
NASTY_PREFIXES = [
    "o'x",
    "a;b",
    "x\n-- y",
    "x\n--y;z",
    "-- z",
    'q"q',
    "x'; DROP TABLE t; --",
    "Ünï cødé ☃",
    "public.x",
    "{prefix}",
    "$1 ? :x",
    "a\\nb",
    "Select",
    "é" * 25 + "a",  # 51 bytes: the longest Oban's channel names leave room for
]


def _drop(conn: Conn, name: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.mark.parametrize("name", NASTY_PREFIXES, ids=repr)
def test_install_and_verify_any_schema_name(conn: Conn, name: str) -> None:
    from bridge import Job, insert

    _drop(conn, name)
    try:
        created = schema.install(conn, name).created
        assert created[0] == f"schema {name}" and "table hephaestus_step_results" in created
        report = schema.verify(conn, name)
        assert report.differences == [], messages(report)
        job = insert(conn, Job.new("W", {"a": 1}), prefix=name)  # NOTIFY on its channel too
        row = conn.execute(
            sql.SQL("SELECT state::text, worker FROM {}.oban_jobs WHERE id = %s").format(
                sql.Identifier(name)
            ),
            (job.id,),
        ).fetchone()
        assert row == ("available", "W")
        assert schema.install(conn, name).created == []
    finally:
        _drop(conn, name)


@pytest.mark.parametrize("name", ["x\nDROP TABLE victim; --", "a;b", "o'x"], ids=repr)
def test_the_shown_script_creates_the_schema_and_nothing_else(conn: Conn, name: str) -> None:
    """``bridge schema show`` is run by DBAs: a name holding a newline must not turn the rest
    of a comment line into SQL (it once did: the files' header comment names ``{prefix}``)."""
    conn.execute("CREATE TABLE IF NOT EXISTS victim (id int)")
    _drop(conn, name)
    try:
        script = schema.render_all(name)
        conn.execute(script.encode())  # the whole script as one simple query, as psql sends it
        assert schema.verify(conn, name).differences == []
        assert conn.execute("SELECT to_regclass('victim') IS NOT NULL").fetchone() == (True,)
    finally:
        _drop(conn, name)
        conn.execute("DROP TABLE IF EXISTS victim")


def test_a_report_line_stays_one_line() -> None:
    report = schema.VerifyReport("a\nb", [schema.Difference(True, "schema a\nb", "does not exist")])
    assert [str(d) for d in report.differences] == ["MISMATCH: schema a\\x0ab: does not exist"]
    assert not report.exists


def test_the_sql_files_split_into_their_statements() -> None:
    """Statements are split on ``;`` before the name goes in: no literal of the files may hold
    a ``;`` or a line break, or the split would cut it."""
    from bridge.schema.ddl import load_objects

    objects = load_objects()
    assert len(objects) == 16
    for obj in objects:
        for literal in re.findall(r"'(?:[^']|'')*'", obj.template):
            assert ";" not in literal and "\n" not in literal, (obj.name, literal)
        statements = obj.templates()
        assert all(s.split()[0] in ("CREATE", "ALTER", "COMMENT") for s in statements), statements
    table = next(o for o in objects if o.name == "oban_jobs")
    assert [s.split("\n")[0] for s in table.templates()] == [
        "CREATE TABLE {prefix}.oban_jobs (",
        "ALTER TABLE {prefix}.oban_jobs",
        "COMMENT ON TABLE {prefix}.oban_jobs IS '14'",
    ]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "the schema name is empty: give one such as public"),
        ("a\x00b", 'the schema name "a\\u0000b" holds a NUL character, which names cannot hold'),
        (
            "é" * 26,
            'the schema name "' + "é" * 26 + '" is 52 bytes long: Oban notifies on channels named '
            '"<prefix>.oban_insert" and PostgreSQL names hold at most 63 bytes, so use at most '
            "51 bytes",
        ),
        (
            "a%sb",
            "the schema name \"a%sb\" holds '%', which bridge's parameterised queries cannot "
            "carry: choose a name without it",
        ),
        ("é" * 25 + "a", None),
        ("public", None),
    ],
)
def test_schema_names_bridge_refuses(conn: Conn, name: str, problem: str | None) -> None:
    assert schema.prefix_problem(name) == problem
    if problem is not None:
        with pytest.raises(ValueError, match=re.escape(problem)):
            schema.install(conn, name)


# -- what Ecto settings change in a genuinely migrated schema --------------------------------------


@pytest.mark.parametrize(
    "column_type",
    [
        "timestamp",  # migration_timestamps: [type: :utc_datetime_usec] (or naive_datetime_usec)
        "timestamp(3)",
        "timestamptz",  # migration_timestamps: [type: :timestamptz]
        "timestamptz(0)",
    ],
)
def test_verify_accepts_the_timestamps_ecto_settings_produce(
    conn: Conn, prefix: str, column_type: str
) -> None:
    load_golden(conn, prefix)
    for column in ("inserted_at", "updated_at"):
        _sql(
            conn, f"ALTER TABLE {{p}}.workflow_instances ALTER {column} TYPE {column_type}", prefix
        )
    _sql(conn, "ALTER TABLE {p}.workflow_instances ALTER inserted_at SET DEFAULT now()", prefix)
    report = schema.verify(conn, prefix)
    assert report.compatible, messages(report)
    shown_type = conn.execute(
        sql.SQL(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
            "'{}.workflow_instances'::regclass AND attname = 'updated_at'"
        ).format(sql.Identifier(prefix))
    ).fetchone()
    assert shown_type is not None
    note = (
        f"type is {shown_type[0]}, the Elixir migrations' default is timestamp(0) without time "
        "zone (an Ecto Repo's migration_timestamps setting makes this one); bridge reads and "
        "writes either"
    )
    if column_type.startswith("timestamptz"):
        note += (
            ", but HephaestusEcto 0.3.0 cannot write it (Postgrex refuses its NaiveDateTime "
            "timestamps for timestamptz): Elixir nodes cannot start or advance workflows here"
        )
    assert messages(report) == [
        f"note: column workflow_instances.inserted_at: {note}",
        "note: column workflow_instances.inserted_at: default is now(), expected none",
        f"note: column workflow_instances.updated_at: {note}",
    ]


def test_other_timestamp_columns_must_keep_their_type(conn: Conn, prefix: str) -> None:
    """Oban's columns are typed explicitly by its migrations: no Ecto setting changes them."""
    load_golden(conn, prefix)
    _sql(conn, "ALTER TABLE {p}.oban_jobs ALTER scheduled_at TYPE timestamptz", prefix)
    _sql(conn, "ALTER TABLE {p}.workflow_instances ALTER updated_at TYPE date", prefix)
    report = schema.verify(conn, prefix)
    assert not report.compatible
    assert set(messages(report)) == {
        "MISMATCH: column oban_jobs.scheduled_at: type is timestamp with time zone, expected "
        "timestamp without time zone",
        "MISMATCH: column workflow_instances.updated_at: type is date, expected timestamp(0) "
        "without time zone",
    }
