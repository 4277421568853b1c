"""Fixtures for the cross-language tests: real PostgreSQL and one real BEAM per test module,
pointed at a fresh schema for every test.

The database comes from bridge.testing's pytest plugin, as a user's does: ``server_url`` and
``database_url`` are ``bridge_server_url`` and ``bridge_database_url`` (the run's own database,
where ``bridge_db`` and ``bridge_elixir_app`` use ``public``), so the stdin-driven VM's schemas
(``prefix``/``schema``, one per test) and the plugin's tables live in one database of one server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from interop_tests.fixture import ElixirFixture, build
from tests.conftest import conn, prefix  # noqa: F401  (both use database_url below)

NODE = "vm"  # the node name in the golden captures, so attempted_by and idents compare equal


@pytest.fixture(scope="session")
def server_url(bridge_server_url: str) -> str:
    """The plugin's server: --bridge-database-url, BRIDGE_TEST_DATABASE_URL, ... (tests/'s own
    conftest also reads DATABASE_URL and tries a Docker container; the plugin does neither)."""
    return bridge_server_url


@pytest.fixture(scope="session")
def database_url(bridge_database_url: str) -> str:
    """The plugin's database of this run (dropped at its end)."""
    return bridge_database_url


@pytest.fixture(scope="module")
def elixir() -> Iterator[ElixirFixture]:
    """One fixture VM for the whole module (starting a VM costs about a second)."""
    with ElixirFixture() as fixture:
        yield fixture


@pytest.fixture
def schema(conn: psycopg.Connection[Any], prefix: str) -> str:  # noqa: F811
    """This test's schema with the shared tables, installed by ``bridge.schema.install``."""
    from bridge import schema as bridge_schema

    bridge_schema.install(conn, prefix)
    return prefix


@pytest.fixture
def fx(elixir: ElixirFixture, database_url: str, schema: str) -> Iterator[ElixirFixture]:
    """The module's VM connected to this test's schema as node ``vm``; disconnected after."""
    elixir.connect(database_url, schema, node=NODE)
    yield elixir
    elixir.call("disconnect")


@pytest.fixture(scope="session")
def compiled_fixture() -> None:
    """elixir_fixture/ compiled under the build lock, before bridge_elixir_app runs it as the
    project's Elixir app with ``mix run --no-compile`` ([tool.bridge.testing] in pyproject)."""
    build()
