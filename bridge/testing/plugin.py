"""The pytest plugin of oban-bridge (entry point ``pytest11``: installing the package loads it).

Fixtures, all named ``bridge_*`` so they never shadow a project's own:

- ``bridge_server_url`` (session): ``--bridge-database-url``, else
  ``BRIDGE_TEST_DATABASE_URL``, else ``BRIDGE_DATABASE_URL``, else a throwaway embedded
  PostgreSQL (the ``embedded`` extra); with none of them the tests using it are skipped, saying
  how to give one.
- ``bridge_database_url`` (session): a database of the run's own on that server, with the
  shared tables (Oban's and Hephaestus's) in ``public``, dropped at the end (where the role may
  not create databases: the given database, with the tables in a schema of the run's own).
- ``bridge_prefix``: the schema holding the tables, empty at the start of the test: the
  session's, emptied before each test (``--bridge-isolation=reset``, the default), or a fresh
  one installed for the test and dropped after (``--bridge-isolation=schema``).
- ``bridge_db``: a :class:`~bridge.testing.database.BridgeDatabase` (``url``, ``prefix``,
  ``connect()`` and the helpers bound to both: ``bridge_db.assert_enqueued(worker=W)``).
- ``bridge_conn``: an autocommit psycopg connection to the test database.
- ``bridge_node``: ``bridge_node(queues={"default": 5}, workers=["myapp.workers"])`` starts
  a real node on the test schema (stopped at teardown).

Marker ``@pytest.mark.bridge_mode("inline")`` runs the test in a testing mode
(:func:`bridge.testing.mode`). This module imports only pytest and the standard library;
everything else is imported by the fixtures that need it, so ``pytest --help`` starts nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

    from bridge.testing.database import BridgeDatabase
    from bridge.testing.node import NodeHandle

ISOLATIONS = ("reset", "schema")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bridge", "oban-bridge (bridge.testing fixtures)")
    group.addoption(
        "--bridge-database-url",
        default=None,
        metavar="URL",
        help="PostgreSQL for the bridge_* fixtures (else BRIDGE_TEST_DATABASE_URL, else "
        "BRIDGE_DATABASE_URL, else a throwaway embedded PostgreSQL when the embedded extra is "
        "installed). Tests use a schema of their own and never touch others.",
    )
    group.addoption(
        "--bridge-isolation",
        default="reset",
        choices=ISOLATIONS,
        help="how bridge_prefix keeps tests apart: reset (one schema per session, emptied "
        "before each test; default) or schema (a fresh schema per test, dropped after).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "bridge_mode(name): run the test in a bridge.testing mode: 'inline' (an insert runs a "
        "Python @worker at once, writing no row) or 'manual' (inserts are written, nothing runs)",
    )


@pytest.fixture(scope="session")
def bridge_server_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The PostgreSQL server the bridge_* fixtures use (see the module's docstring)."""
    from bridge.testing import database

    url = database.configured_url(request.config.getoption("--bridge-database-url"))
    if url is not None:
        yield url
        return
    server = database.embedded_server(tmp_path_factory.mktemp("bridge-pg"))
    if server is None:
        pytest.skip(database.NO_DATABASE)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def _bridge_session(bridge_server_url: str) -> Iterator[tuple[str, str]]:
    """(URL, prefix) of the run's tables: a database of its own with them in ``public``, or
    the given database with them in a schema of the run's own."""
    from bridge.testing import database

    url = database.create_database(bridge_server_url)
    if url is not None:
        try:
            database.install(url, "public")
            yield url, "public"
        finally:
            database.drop_database(bridge_server_url, url)
        return
    prefix = database.new_prefix()
    database.install(bridge_server_url, prefix)
    try:
        yield bridge_server_url, prefix
    finally:
        database.drop(bridge_server_url, prefix)


@pytest.fixture(scope="session")
def bridge_database_url(_bridge_session: tuple[str, str]) -> str:
    """The test database's URL: give it to the code under test."""
    return _bridge_session[0]


@pytest.fixture
def bridge_prefix(request: pytest.FixtureRequest, bridge_database_url: str) -> Iterator[str]:
    """A schema with the shared tables, empty when the test starts (see --bridge-isolation)."""
    from bridge.testing import database

    if request.config.getoption("--bridge-isolation") == "schema":
        prefix = database.new_prefix()
        database.install(bridge_database_url, prefix)
        yield prefix
        database.drop(bridge_database_url, prefix)
        return
    prefix = request.getfixturevalue("_bridge_session")[1]
    database.reset(bridge_database_url, prefix)
    yield prefix


@pytest.fixture
def bridge_db(bridge_database_url: str, bridge_prefix: str) -> BridgeDatabase:
    """The test's database and schema, with the bridge.testing helpers bound to them."""
    from bridge.testing.database import BridgeDatabase

    return BridgeDatabase(bridge_database_url, bridge_prefix)


@pytest.fixture
def bridge_conn(bridge_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test database, closed after the test."""
    import psycopg

    with psycopg.connect(bridge_database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def bridge_node(
    bridge_database_url: str, bridge_prefix: str
) -> Iterator[Callable[..., NodeHandle]]:
    """``bridge_node(queues, workers=[modules], workflows=[...], **NodeConfig fields)`` starts
    a real node on the test's schema in a thread of its own; every node started is stopped
    when the test ends."""
    from bridge.testing.node import start_node

    started: list[NodeHandle] = []

    def start(queues: Any = (), **options: Any) -> NodeHandle:
        handle = start_node(bridge_database_url, bridge_prefix, queues, **options)
        started.append(handle)
        return handle

    yield start
    for handle in reversed(started):
        handle.stop()


@pytest.fixture(autouse=True)
def _bridge_mode(request: pytest.FixtureRequest) -> Iterator[None]:
    """Applies ``@pytest.mark.bridge_mode(name)``; nothing at all without the marker."""
    marker = request.node.get_closest_marker("bridge_mode")
    if marker is None:
        yield
        return
    from bridge.testing.modes import mode

    with mode(*marker.args, **marker.kwargs):
        yield
