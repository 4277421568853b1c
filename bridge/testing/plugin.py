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
- ``bridge_elixir_app``: the user's Elixir app (``--bridge-elixir-app PATH`` or ``elixir_app``
  in ``[tool.bridge.testing]``), started with ``mix run --no-halt`` on the test database
  (``DATABASE_URL``, ``OBAN_PREFIX``) once its ``oban_peers`` row is there; one run per session
  (per test under ``--bridge-isolation=schema``), stopped with SIGTERM, its log added to the
  report of a failing test (:mod:`bridge.testing.elixir`).

Marker ``@pytest.mark.bridge_mode("inline")`` runs the test in a testing mode
(:func:`bridge.testing.mode`). This module imports only pytest and the standard library;
everything else is imported by the fixtures that need it, so ``pytest --help`` starts nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

    from bridge.testing.database import BridgeDatabase
    from bridge.testing.elixir import ElixirApp, ElixirAppConfig
    from bridge.testing.node import NodeHandle

ISOLATIONS = ("reset", "schema")

# Where bridge_elixir_app leaves the running app and its log offset for the report hook.
_APP_KEY = pytest.StashKey[tuple["ElixirApp", int]]()


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
    group.addoption(
        "--bridge-elixir-app",
        default=None,
        metavar="PATH",
        help="the Elixir app (Mix project) bridge_elixir_app starts on the test database "
        "(else elixir_app in [tool.bridge.testing] of pyproject.toml); it reads DATABASE_URL "
        "and OBAN_PREFIX.",
    )
    group.addoption(
        "--bridge-elixir-command",
        default=None,
        metavar="CMD",
        help="the command that starts it, in its directory (default: mix run --no-halt; "
        "else elixir_command in [tool.bridge.testing]), e.g. a release's 'bin/my_app start'.",
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


@pytest.fixture(scope="session")
def _bridge_elixir_config(request: pytest.FixtureRequest) -> ElixirAppConfig:
    """The app's config from the options and ``[tool.bridge.testing]``; the test fails, saying
    how to give one, when there is none."""
    from bridge.testing import elixir

    config = request.config
    pyproject = (
        config.inipath
        if config.inipath and config.inipath.name == "pyproject.toml"
        else config.rootpath / "pyproject.toml"
    )
    try:
        found = elixir.load_config(
            config.getoption("--bridge-elixir-app"),
            config.getoption("--bridge-elixir-command"),
            pyproject,
            config.invocation_params.dir,
        )
    except elixir.ElixirAppError as exc:
        pytest.fail(str(exc), pytrace=False)
    if found is None:
        pytest.fail(elixir.NOT_CONFIGURED, pytrace=False)
    return found


def _start_app(config: ElixirAppConfig, url: str, prefix: str, log_dir: Any) -> ElixirApp:
    from bridge.testing import elixir

    try:
        return elixir.start_app(config, url, prefix, log_dir)
    except elixir.ElixirAppError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def _bridge_elixir_session(
    _bridge_elixir_config: ElixirAppConfig,
    _bridge_session: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ElixirApp]:
    """The app on the session's tables (--bridge-isolation=reset), started on first use."""
    url, prefix = _bridge_session
    app = _start_app(_bridge_elixir_config, url, prefix, tmp_path_factory.mktemp("bridge-elixir"))
    yield app
    app.stop()


@pytest.fixture
def bridge_elixir_app(
    request: pytest.FixtureRequest,
    _bridge_elixir_config: ElixirAppConfig,
    bridge_database_url: str,
    bridge_prefix: str,
    tmp_path: Any,
) -> Iterator[ElixirApp]:
    """The user's Elixir app running on the test's database and schema (see the module's
    docstring); a failing test's report gets what it logged during the test."""
    if request.config.getoption("--bridge-isolation") == "schema":
        app = _start_app(_bridge_elixir_config, bridge_database_url, bridge_prefix, tmp_path)
        request.node.stash[_APP_KEY] = (app, 0)
        try:
            yield app
        finally:
            app.stop()
        return
    app = request.getfixturevalue("_bridge_elixir_session")
    request.node.stash[_APP_KEY] = (app, app.log_offset())
    from bridge.testing.elixir import ElixirAppError

    try:
        app.check()
    except ElixirAppError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield app


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test that used bridge_elixir_app gets the app's log of the test as a section."""
    report = yield
    found = item.stash.get(_APP_KEY, None)
    if found is not None and report.failed and report.when in ("setup", "call"):
        app, offset = found
        text = app.log_tail(since=offset) or "    (nothing logged during the test)"
        report.sections.append((f"Captured Elixir app log ({app.log_path})", text))
    return report


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
