"""Every way a database can be missing, wrong or gone ends a ``bridge`` command with one line
saying what is wrong and what to do, a distinct exit status and no traceback (``-v`` adds
one), the password never shown. Commands run as a user runs them: the installed script, from
a scratch directory (``run_bridge``).

The wrong-password case needs a server that asks for one: a cluster of this module's own with
scram authentication on a spare port, stopped at the end. The shared server is never touched
beyond terminating a backend of this test's own command.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from bridge.cli.root import BridgeGroup
from bridge.db import redact_url, scrub
from tests.support.cli import bridge_script, run_bridge
from tests.support.cluster import Cluster, free_port

NO_DATABASE = (
    "Error: no database given: pass --database-url URL or set BRIDGE_DATABASE_URL "
    "(or DATABASE_URL); for a local trial add --embedded (an embedded PostgreSQL in "
    "./.bridge/pgdata)\n"
)
SCHEMA_HINT = "run `bridge schema install` or the Elixir migrations (or pass --prefix)"
# Unset for every run here: the refusal must not depend on the developer's shell.
NO_EMBEDDED = {"BRIDGE_EMBEDDED": "0"}


def with_dbname(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


def postgres_processes_under(path: Path) -> list[int]:
    """Pids of processes whose command line names ``path`` (a server started for it)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline and "postgres" in cmdline:
            found.append(int(entry.name))
    return found


# -- no database given: refuse, start nothing --------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("worker", "--queues", "default:1"), ("enqueue", "W"), ("jobs", "list")],
    ids=["worker", "enqueue", "jobs-list"],
)
def test_a_command_without_a_database_refuses_and_starts_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = run_bridge(*args, cwd=tmp_path, env=NO_EMBEDDED, timeout=60)
    assert (result.returncode, result.stderr) == (3, NO_DATABASE)
    assert not (tmp_path / ".bridge").exists()
    assert postgres_processes_under(tmp_path) == []


def test_choosing_two_databases_at_once_is_refused(tmp_path: Path, database_url: str) -> None:
    both = run_bridge("--database-url", database_url, "--embedded", "jobs", "list", cwd=tmp_path)
    assert (both.returncode, both.stderr) == (
        2,
        "Error: --database-url and --embedded both given: pass one of them\n",
    )
    env_both = run_bridge(
        "jobs",
        "list",
        cwd=tmp_path,
        env={"BRIDGE_DATABASE_URL": database_url, "BRIDGE_EMBEDDED": "1"},
    )
    assert (env_both.returncode, env_both.stderr) == (
        2,
        "Error: BRIDGE_DATABASE_URL and BRIDGE_EMBEDDED=1 are both set: unset one of them\n",
    )
    assert not (tmp_path / ".bridge").exists()


# -- malformed URLs: exit 3 --------------------------------------------------------------------


def test_a_url_that_is_not_a_url(tmp_path: Path) -> None:
    result = run_bridge("--database-url", "notaurl", "jobs", "list", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        3,
        'Error: malformed database URL from --database-url: missing "=" after "notaurl" in '
        "connection info string; expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME\n",
    )


def test_an_unknown_query_parameter_names_the_variable_it_came_from(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/postgres?bogus=1"
    result = run_bridge("jobs", "list", cwd=tmp_path, env={"DATABASE_URL": url})
    assert (result.returncode, result.stderr) == (
        3,
        'Error: malformed database URL from DATABASE_URL: invalid URI query parameter: "bogus"; '
        "expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME\n",
    )


def test_a_malformed_password_is_not_echoed(tmp_path: Path) -> None:
    result = run_bridge(
        "--database-url", "postgresql://u:s3cr%zz@127.0.0.1/db", "jobs", "list", cwd=tmp_path
    )
    assert (result.returncode, result.stderr) == (
        3,
        'Error: malformed database URL from --database-url: invalid percent-encoded token: "***"; '
        "expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME\n",
    )


# -- cannot connect: exit 4 --------------------------------------------------------------------


def test_nothing_listening(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://postgres:on@127.0.0.1:{port}/postgres"
    result = run_bridge("--database-url", url, "jobs", "list", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        4,
        f"Error: cannot connect to postgresql://postgres:***@127.0.0.1:{port}/postgres: nothing "
        f"is listening on 127.0.0.1 port {port} (connection refused): start PostgreSQL there or "
        "fix the host and port in the URL\n",
    )


def test_unknown_database(tmp_path: Path, database_url: str) -> None:
    name = f"bridge_missing_{uuid.uuid4().hex[:8]}"
    url = with_dbname(database_url, name)
    result = run_bridge("--database-url", url, "enqueue", "W", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        4,
        f'Error: cannot connect to {redact_url(url)}: database "{name}" does not exist: create '
        f"it with createdb {name} or fix the database name in the URL\n",
    )


def test_unknown_role(tmp_path: Path, scram_url: str) -> None:
    # Over the cluster's socket, which trusts: with a password to check, PostgreSQL does not
    # say whether the role exists.
    url = f"postgresql://nobody_here@/postgres?host={_socket_dir(scram_url)}&port={urlsplit(scram_url).port}"
    result = run_bridge("--database-url", url, "jobs", "list", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        4,
        f'Error: cannot connect to {url}: role "nobody_here" does not exist: create it with '
        "createuser nobody_here or fix the user in the URL\n",
    )


def _socket_dir(url: str) -> str:
    return SOCKET_DIRS[url]


# A cluster that asks for a password -------------------------------------------------------------

PASSWORD = "s3cret:@%"
SOCKET_DIRS: dict[str, str] = {}  # scram_url -> its cluster's socket directory


@pytest.fixture(scope="module")
def scram_url() -> Iterator[str]:
    """A URL (password included) of a cluster of this module's own that authenticates with
    scram-sha-256 over TCP on a spare port (its socket trusts); stopped and removed at the
    end."""
    with Cluster.create(
        initdb_args=["--pwfile={base}/pwfile", "--auth-host=scram-sha-256", "--auth-local=trust"],
        files={"pwfile": PASSWORD + "\n"},
    ) as cluster:
        url = f"postgresql://postgres:{_encoded(PASSWORD)}@127.0.0.1:{cluster.port}/postgres"
        SOCKET_DIRS[url] = str(cluster.base)
        yield url


def _encoded(password: str) -> str:
    from urllib.parse import quote

    return quote(password, safe="")


def test_the_right_password_gets_in(scram_url: str) -> None:
    # What makes the next test's failure mean "wrong password" and nothing else.
    with psycopg.connect(scram_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("password", ["on", "wrong", "p@ss:w%rd"])
def test_wrong_password(tmp_path: Path, scram_url: str, password: str) -> None:
    port = urlsplit(scram_url).port
    url = f"postgresql://postgres:{_encoded(password)}@127.0.0.1:{port}/postgres"
    result = run_bridge("--database-url", url, "jobs", "list", cwd=tmp_path)
    # "authentication" and "postgres" keep their "on" and "s": only the password field is masked
    assert (result.returncode, result.stderr) == (
        4,
        f"Error: cannot connect to postgresql://postgres:***@127.0.0.1:{port}/postgres: password "
        'authentication failed for user "postgres": check the password in the URL\n',
    )


def test_no_password_given(tmp_path: Path, scram_url: str) -> None:
    port = urlsplit(scram_url).port
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    result = run_bridge(
        "--database-url", url, "jobs", "list", cwd=tmp_path, env={"PGPASSFILE": "/nonexistent"}
    )
    assert (result.returncode, result.stderr) == (
        4,
        f"Error: cannot connect to {url}: the server wants a password and none was given: put it "
        "in the URL (postgresql://USER:PASSWORD@HOST:PORT/DBNAME) or in ~/.pgpass\n",
    )


# -- the shared schema is missing: exit 5 ------------------------------------------------------


def test_missing_schema(tmp_path: Path, database_url: str, prefix: str) -> None:
    result = run_bridge("--database-url", database_url, "--prefix", prefix, "jobs", "list",
                        cwd=tmp_path)  # fmt: skip
    assert (result.returncode, result.stderr) == (
        5,
        f'Error: schema "{prefix}" has no oban_jobs table: {SCHEMA_HINT}\n',
    )


def test_verbose_adds_the_traceback_above_the_same_line(
    tmp_path: Path, database_url: str, prefix: str
) -> None:
    result = run_bridge(
        "-v", "--database-url", database_url, "--prefix", prefix, "jobs", "list", cwd=tmp_path
    )
    assert result.returncode == 5
    assert "Traceback (most recent call last)" in result.stderr
    assert "psycopg.errors.UndefinedTable" in result.stderr
    assert result.stderr.endswith(
        f'Error: schema "{prefix}" has no oban_jobs table: {SCHEMA_HINT}\n'
    )


# -- the database goes away mid-command: exit 6; Ctrl-C: 130 -----------------------------------


def _start_blocked(
    database_url: str, prefix: str, tmp_path: Path
) -> tuple[subprocess.Popen[str], int]:
    """``bridge jobs list`` waiting on a lock this test holds: the process and its backend."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "BRIDGE_DATABASE_URL", "DATABASE_URL", "BRIDGE_PREFIX")
    }
    process = subprocess.Popen(
        [bridge_script(), "--database-url", database_url, "--prefix", prefix, "jobs", "list"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
                (f'"{prefix}".oban_jobs',),
            ).fetchone()
            if row is not None:
                return process, int(row[0])
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    out, err = process.communicate()
    raise AssertionError(f"bridge jobs list never waited on the lock: {out}{err}")


@pytest.fixture
def locked_jobs(database_url: str, oban_prefix: str) -> Iterator[str]:
    """``oban_jobs`` of a fresh prefix, locked against readers until the test ends."""
    with psycopg.connect(database_url) as holder:
        holder.execute(
            sql.SQL("LOCK TABLE {}.oban_jobs IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier(oban_prefix)
            )
        )
        yield oban_prefix
        holder.rollback()


def test_database_lost_mid_command(tmp_path: Path, database_url: str, locked_jobs: str) -> None:
    process, backend = _start_blocked(database_url, locked_jobs, tmp_path)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (
        6,
        "Error: lost the connection to the database while the command ran (terminating "
        "connection due to administrator command): check that the server is up, then run the "
        "command again\n",
    )


def test_ctrl_c_is_one_line_and_status_130(
    tmp_path: Path, database_url: str, locked_jobs: str
) -> None:
    process, _ = _start_blocked(database_url, locked_jobs, tmp_path)
    process.send_signal(2)  # SIGINT, what Ctrl-C sends
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (130, "Error: interrupted\n")


# -- anything else: one line, exit 1 (the root group, in process) ------------------------------


def _group_raising(exc: BaseException) -> click.Group:
    @click.group(cls=BridgeGroup)
    @click.option("-v", "--verbose", count=True)
    def root(verbose: int) -> None:
        pass

    @root.command()
    def boom() -> None:
        raise exc

    return root


def test_an_unexpected_exception_is_one_line_without_a_secret() -> None:
    group = _group_raising(ValueError("bad value in postgresql://app:hunter2@db/prod\nmore"))
    result = CliRunner().invoke(group, ["boom"])
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: unexpected ValueError: bad value in postgresql://app:***@db/prod "
        "(run with -v for the traceback)\n",
    )
    verbose = CliRunner().invoke(group, ["-v", "boom"])
    assert verbose.exit_code == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert "hunter2" not in verbose.stderr
    assert verbose.stderr.endswith(
        "Error: unexpected ValueError: bad value in postgresql://app:***@db/prod\n"
    )


def test_keyboard_interrupt_in_process() -> None:
    result = CliRunner().invoke(_group_raising(KeyboardInterrupt()), ["boom"])
    assert (result.exit_code, result.stderr) == (130, "Error: interrupted\n")


# -- masking only the password field -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://postgres:on@127.0.0.1:1/postgres", "postgresql://postgres:***@127.0.0.1:1/postgres"),
        ("postgresql://u:p%40ss%3Aw%25rd@db:5432/app?sslmode=disable", "postgresql://u:***@db:5432/app?sslmode=disable"),
        ("postgresql://u:p@ss:w@db/app", "postgresql://u:***@db/app"),
        ("postgres://db/app?user=u&password=on&application_name=on", "postgres://db/app?user=u&password=***&application_name=on"),
        ("postgresql://postgres:@/postgres?host=/tmp", "postgresql://postgres:@/postgres?host=/tmp"),
        ("postgresql://u@db/app", "postgresql://u@db/app"),
        ("host=db password=on user=on", "host=db password=*** user=on"),
        ("host=db password='a b' dbname=x", "host=db password=*** dbname=x"),
    ],
)  # fmt: skip
def test_redact_url_masks_the_password_field_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_leaves_the_message_intact() -> None:
    refused = (
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'
    )
    assert scrub(refused, "postgresql://postgres:on@127.0.0.1:1/postgres") == refused
    auth = 'password authentication failed for user "postgres"'
    assert scrub(auth, "postgresql://postgres:on@h/db") == auth
    # a password with @, : and %-escapes, as written and decoded, where libpq quotes it
    url = "postgresql://u:p%40ss%3Aw%25rd@db/app"
    assert scrub('token "p%40ss%3Aw%25rd" and "p@ss:w%rd"', url) == 'token "***" and "***"'
    assert scrub(f"see {url} or password=p@ss:w%rd", url) == (
        "see postgresql://u:***@db/app or password=***"
    )


def test_libpq_messages_do_not_carry_the_password(scram_url: str) -> None:
    # Checked rather than assumed: libpq's own text for a rejected password, before masking.
    port = urlsplit(scram_url).port
    with pytest.raises(psycopg.OperationalError) as failure:
        psycopg.connect(f"postgresql://postgres:zq9secret@127.0.0.1:{port}/postgres")
    assert "password authentication failed" in str(failure.value)
    assert "zq9secret" not in str(failure.value)
