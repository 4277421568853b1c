"""The test database the pytest plugin hands out: which server, which schema, kept clean.

A server is found as the plugin's docstring says (an option or environment URL, else a
throwaway embedded PostgreSQL). The run never touches the database the URL names: it creates a
database of its own on that server (``bridge_test_<hex>``, dropped at the end) with the shared
tables in ``public``, Oban's default prefix, so the code under test needs no prefix of its own.
Where the role may not create databases, the tables go into a schema of the run's own in the
given database instead (``bridge_db.prefix`` names it). Between tests the tables are emptied
(``DELETE`` of the four tables, about 3 ms here, against about 40 ms to install and drop a
fresh schema; ``--bridge-isolation=schema`` gives each test a fresh schema instead, for tests
that alter the tables).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

# The environment variables a URL is taken from, in order, after --bridge-database-url.
URL_VARIABLES = ("BRIDGE_TEST_DATABASE_URL", "BRIDGE_DATABASE_URL")

# The tables a reset empties, children first.
TABLES = ("hephaestus_step_results", "workflow_instances", "oban_jobs", "oban_peers")

NO_DATABASE = (
    "bridge.testing: no database for the bridge_* fixtures: pass --bridge-database-url, set "
    "BRIDGE_TEST_DATABASE_URL (or BRIDGE_DATABASE_URL), or install the embedded extra "
    "(pip install 'oban-bridge[embedded]') for a throwaway PostgreSQL"
)


def configured_url(option: str | None, env: dict[str, str] | None = None) -> str | None:
    """The URL the user gave, or None: the option first, then :data:`URL_VARIABLES`."""
    if option:
        return option
    environ = os.environ if env is None else env
    for name in URL_VARIABLES:
        if environ.get(name):
            return environ[name]
    return None


def embedded_server(directory: Path) -> Any | None:
    """A throwaway embedded PostgreSQL in ``directory`` (stopped with the run), or None when
    the ``embedded`` extra is not installed."""
    from bridge.db.embedded import import_pgserver
    from bridge.db.errors import NoDatabaseError

    try:
        pgserver = import_pgserver()
    except NoDatabaseError:
        return None
    return pgserver.get_server(str(directory), cleanup_mode="stop")


def new_prefix() -> str:
    return f"bridge_test_{uuid.uuid4().hex[:10]}"


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (query options kept)."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def create_database(server_url: str) -> str | None:
    """A new database on the server, its URL; None when the role may not create one."""
    name = new_prefix()
    try:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.InsufficientPrivilege:
        return None
    return with_database(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    from urllib.parse import urlsplit

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def install(url: str, prefix: str) -> None:
    """Create ``prefix`` with the shared tables (Oban v14, HephaestusEcto, HephaestusOban)."""
    from bridge import schema

    with psycopg.connect(url, autocommit=True) as conn:
        schema.install(conn, prefix)


def reset(url: str, prefix: str) -> None:
    """Empty the schema's tables in one transaction (ids keep counting, as a sequence does)."""
    with psycopg.connect(url) as conn, conn.transaction():
        for table in TABLES:
            conn.execute(
                sql.SQL("DELETE FROM {}.{}").format(sql.Identifier(prefix), sql.Identifier(table))
            )


def drop(url: str, prefix: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(prefix)))


@dataclass
class BridgeDatabase:
    """One test's database: its URL and schema, and the helpers bound to both.

    ``bridge_db.assert_enqueued(worker=W)`` is ``assert_enqueued(url, prefix=prefix,
    worker=W)``; likewise ``all_enqueued``, ``refute_enqueued``, ``drain_queue``,
    ``run_workflow``, ``start_workflow``, ``drain_workflows``, ``read_workflow``,
    ``assert_workflow``, ``wait_for_job``, ``wait_for_instance``."""

    url: str
    prefix: str

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        """A new connection to the test database (the caller closes it)."""
        return psycopg.connect(self.url, autocommit=autocommit)

    def __getattr__(self, name: str) -> Any:
        if name not in _BOUND:
            raise AttributeError(f"BridgeDatabase has no attribute {name!r}")
        import importlib

        function = getattr(importlib.import_module(_BOUND[name]), name)
        return partial(function, self.url, prefix=self.prefix)


_BOUND = {
    "all_enqueued": "bridge.testing.enqueued",
    "assert_enqueued": "bridge.testing.enqueued",
    "refute_enqueued": "bridge.testing.enqueued",
    "all_enqueued_async": "bridge.testing.enqueued",
    "assert_enqueued_async": "bridge.testing.enqueued",
    "refute_enqueued_async": "bridge.testing.enqueued",
    "drain_queue": "bridge.testing.drain",
    "drain_queue_async": "bridge.testing.drain",
    "run_workflow": "bridge.testing.workflows",
    "run_workflow_async": "bridge.testing.workflows",
    "start_workflow": "bridge.testing.workflows",
    "drain_workflows": "bridge.testing.workflows",
    "drain_workflows_async": "bridge.testing.workflows",
    "read_workflow": "bridge.testing.workflows",
    "assert_workflow": "bridge.testing.workflows",
    "wait_for_job": "bridge.testing.waiting",
    "wait_for_job_async": "bridge.testing.waiting",
    "wait_for_instance": "bridge.testing.waiting",
    "wait_for_instance_async": "bridge.testing.waiting",
}
