"""PostgreSQL tooling for tests: pg_dump of a matching version, golden DDL loading, scratch DBs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DATA = Path(__file__).resolve().parent.parent / "data"
GOLDEN_SCHEMA = DATA / "golden" / "elixir-schema-public.sql"


# Some server builds keep a per-column "pg_attver" attribute option that newer pg_dumps print;
# it is bookkeeping of that build, not schema, and differs between any two databases.
_BUILD_NOISE = re.compile(r"^ALTER TABLE ONLY .* ALTER COLUMN .* SET \(pg_attver=\d+\);$")


def pg_dump_binary(server_major: int) -> str:
    """A pg_dump at least as new as the server (older ones refuse to dump newer servers)."""
    candidates = []
    system = shutil.which("pg_dump")
    if system:
        candidates.append(system)
    try:
        import pgserver

        candidates.append(str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_dump"))
    except ImportError:
        pass
    for binary in candidates:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
        version = re.search(r"\)\s+(\d+)", out.stdout)
        if out.returncode == 0 and version and int(version.group(1)) >= server_major:
            return binary
    raise RuntimeError(f"no pg_dump >= {server_major} found (tried {candidates})")


def dump_schema(url: str, schema: str | None = None) -> str:
    """``pg_dump --schema-only`` without the per-run \\restrict keys and version banners."""
    with psycopg.connect(url) as conn:
        major = conn.info.server_version // 10000
    args = [pg_dump_binary(major), "--schema-only", "--no-owner", "--no-privileges"]
    if schema:
        args += ["--schema", schema]
    env = dict(os.environ)
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True, env=env)
    lines = [
        line
        for line in out.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped from", "-- Dumped by"))
        and not _BUILD_NOISE.match(line)
    ]
    return "\n".join(lines)


def golden_ddl(prefix: str = "public") -> str:
    """The genuine Elixir-migrated schema as SQL runnable by psycopg, moved to ``prefix``."""
    text = GOLDEN_SCHEMA.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("\\"))
    body = body.replace("SELECT pg_catalog.set_config('search_path', '', false);", "")
    quoted = '"' + prefix.replace('"', '""') + '"'
    return body.replace("public.", quoted + ".")


def load_golden(conn: psycopg.Connection[tuple[object, ...]], prefix: str = "public") -> None:
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(prefix)))
        conn.execute(golden_ddl(prefix).encode())


def with_dbname(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A brand-new empty database (its ``public`` schema included), dropped afterwards."""
    name = f"bridge_scratch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
