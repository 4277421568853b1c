"""Fixtures for the cross-language tests: real PostgreSQL (shared with ``tests/``) and one real
BEAM per test module, pointed at a fresh schema for every test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from interop_tests.fixture import ElixirFixture, build
from tests.conftest import conn, database_url, prefix, server_url  # noqa: F401

NODE = "vm"  # the node name in the golden captures, so attempted_by and idents compare equal


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
def fx(elixir: ElixirFixture, database_url: str, schema: str) -> Iterator[ElixirFixture]:  # noqa: F811
    """The module's VM connected to this test's schema as node ``vm``; disconnected after."""
    elixir.connect(database_url, schema, node=NODE)
    yield elixir
    elixir.call("disconnect")


@pytest.fixture(scope="session")
def compiled_fixture() -> None:
    """elixir_fixture/ compiled under the build lock, before bridge_elixir_app runs it as the
    project's Elixir app with ``mix run --no-compile`` ([tool.bridge.testing] in pyproject)."""
    build()
