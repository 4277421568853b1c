"""Real PostgreSQL for every test.

The server is found, in order: an explicit URL (``BRIDGE_TEST_DATABASE_URL``,
``BRIDGE_DATABASE_URL`` or ``DATABASE_URL``; CI sets one), a testcontainers PostgreSQL when a
Docker engine answers, else an embedded ``pgserver`` in a temporary directory. Each pytest run
creates its own database on that server and drops it at the end, and each test that asks for
``prefix`` gets its own schema, so runs and tests never see each other's rows.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

URL_VARS = ("BRIDGE_TEST_DATABASE_URL", "BRIDGE_DATABASE_URL", "DATABASE_URL")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    for name in URL_VARS:
        if os.environ.get(name):
            yield os.environ[name]
            return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as container:
            yield container.get_connection_url()
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="bridge-pg-") as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        yield server.get_uri()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database for this pytest run."""
    name = f"bridge_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_dbname(server_url, name)
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def prefix(database_url: str) -> Iterator[str]:
    """A schema name of this test's own (not yet created), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def oban_prefix(conn: psycopg.Connection[tuple[object, ...]], prefix: str) -> str:
    """A schema of this test's own with the shared tables installed by bridge."""
    from bridge import schema

    schema.install(conn, prefix)
    return prefix
