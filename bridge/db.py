"""Which database, connections to it, and what a failure to reach it means.

Every command and test finds its database the same way, here, by one rule an operator can
predict (the README's "Which database"):

1. ``--database-url URL`` or ``--embedded`` (not both);
2. ``BRIDGE_DATABASE_URL`` or ``BRIDGE_EMBEDDED=1`` (not both);
3. ``DATABASE_URL``;
4. none: the command refuses (:class:`NoDatabaseError`). Only ``bridge demo`` falls back to
   the embedded server, because running on a throwaway database is what a demo is for.

The embedded PostgreSQL (the optional ``pgserver`` package, the ``embedded`` extra) is never
started unasked: a worker with a forgotten URL must not quietly write to a private database
nobody else reads. Once started it keeps running, so that a worker and a later ``bridge jobs``
see the same rows; :func:`embedded_status` and :func:`stop_embedded` let the user see and stop
it. URLs are validated when resolved, so a malformed one is named before anything connects.
Only a URL's password field (or a ``password=`` pair) is ever masked (:func:`redact_url`,
:func:`scrub`): the rest of a message stays as libpq wrote it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

log = logging.getLogger("bridge.db")

DEFAULT_PREFIX = "public"
DEFAULT_EMBEDDED_DIR = Path(".bridge") / "pgdata"
EMBEDDED_DIR_ENV = "BRIDGE_EMBEDDED_DIR"
EMBEDDED_ENV = "BRIDGE_EMBEDDED"
URL_ENV_VARS = ("BRIDGE_DATABASE_URL", "DATABASE_URL")
URL_SHAPE = "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
EMBEDDED_EXTRA = (
    "the embedded PostgreSQL needs the 'embedded' extra: pip install 'oban-bridge[embedded]'"
)

# -- errors ------------------------------------------------------------------------------------


class DatabaseConfigError(RuntimeError):
    """The database could not be resolved or reached; the message never holds a password."""


class NoDatabaseError(DatabaseConfigError):
    """No database given, a malformed URL, or the embedded server asked for but not installed."""


class DatabaseChoiceError(DatabaseConfigError):
    """Two ways of choosing the database at the same level: refusing beats guessing."""


class DatabaseUnreachableError(DatabaseConfigError):
    """Connecting failed (nothing listening, unknown host, timeout, authentication, unknown
    database or role), or the embedded server did not start."""


# -- which database ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedDatabase:
    """A database URL and where it came from, so the one line that names it can say so."""

    url: str
    source: str  # "--database-url", an environment variable's name, "--embedded", "embedded"

    @property
    def display(self) -> str:
        return redact_url(self.url)

    @property
    def origin(self) -> str:
        """``from --database-url``, ``from $DATABASE_URL``, ``embedded (…)``: for one line."""
        if self.source == "embedded":
            return "embedded: no database URL given"
        if self.source == "--embedded":
            return "embedded: --embedded"
        if self.source == EMBEDDED_ENV:
            return f"embedded: ${EMBEDDED_ENV}"
        if self.source.startswith("--"):
            return f"from {self.source}"
        return f"from ${self.source}"


def resolve_database_url(
    explicit: str | None = None,
    *,
    embedded: bool = False,
    fallback_embedded: bool = False,
    start: Callable[[], str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResolvedDatabase:
    """Pick the database by the rule in this module's docstring.

    ``embedded`` is the ``--embedded`` flag, ``fallback_embedded`` lets a command (the demo)
    use the embedded server when nothing else is given, and ``start`` starts it and returns its
    URL (the command line passes one that announces it; default :func:`start_embedded`)."""
    env = os.environ if environ is None else environ

    def embedded_url(source: str) -> ResolvedDatabase:
        url = start() if start is not None else start_embedded().url_or_fail()
        return ResolvedDatabase(url, source)

    if explicit and embedded:
        raise DatabaseChoiceError("--database-url and --embedded both given: pass one of them")
    if explicit:
        return ResolvedDatabase(validate_url(explicit, "--database-url"), "--database-url")
    if embedded:
        return embedded_url("--embedded")
    bridge_url = env.get(URL_ENV_VARS[0])
    env_embedded = _flag(env.get(EMBEDDED_ENV))
    if bridge_url and env_embedded:
        raise DatabaseChoiceError(
            f"{URL_ENV_VARS[0]} and {EMBEDDED_ENV}=1 are both set: unset one of them"
        )
    if bridge_url:
        return ResolvedDatabase(validate_url(bridge_url, URL_ENV_VARS[0]), URL_ENV_VARS[0])
    if env_embedded:
        return embedded_url(EMBEDDED_ENV)
    url = env.get(URL_ENV_VARS[1])
    if url:
        return ResolvedDatabase(validate_url(url, URL_ENV_VARS[1]), URL_ENV_VARS[1])
    if fallback_embedded:
        return embedded_url("embedded")
    raise NoDatabaseError(
        "no database given: pass --database-url URL or set BRIDGE_DATABASE_URL "
        "(or DATABASE_URL); for a local trial add --embedded (an embedded PostgreSQL in "
        f"{_shown_dir(embedded_dir(environ=env), env)})"
    )


def validate_url(url: str, source: str) -> str:
    """``url`` if libpq can parse it; else :class:`NoDatabaseError` naming where it came from."""
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise NoDatabaseError(
            f"malformed database URL from {source}: {_first_line(scrub(str(exc), url))}; "
            f"expected {URL_SHAPE}"
        ) from None
    return url


def _flag(value: str | None) -> bool:
    if value is None or value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    raise DatabaseChoiceError(f"{EMBEDDED_ENV} must be 1 or 0, got {value!r}")


# -- secrets -----------------------------------------------------------------------------------

_URL_IN_TEXT = re.compile(r"postgres(?:ql)?://[^\s\"'<>]+")
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)")
_QUERY_PASSWORD = re.compile(r"((?:^|[?&])password=)[^&#]*")


def redact_url(url: str) -> str:
    """Mask the password field of a URL (and a ``password`` query parameter) or the
    ``password=`` value of a libpq key/value string, leaving everything else as written.

    An empty password (``postgres:@host``) is not a secret and is left alone."""
    if "://" not in url:
        return _KV_PASSWORD.sub(r"\1***", url)
    scheme, _, rest = url.partition("://")
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            authority = f"{user}:***@{hosts}"
    path, question, query = tail.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        masked = _QUERY_PASSWORD.sub(r"\g<1>***", query)
        tail = f"{path}?{masked}{hash_}{fragment}"
    return f"{scheme}://{authority}{tail}"


def scrub(message: str, url: str | None = None) -> str:
    """``message`` with every URL's password field and ``password=`` value masked, and, when
    ``url`` is given, a quoted token that is exactly its password (libpq quotes a malformed
    one: ``invalid percent-encoded token: "s3cr%zz"``). Nothing else is touched: the password
    ``on`` leaves ``Connection refused`` as it is."""
    message = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), message)
    message = _KV_PASSWORD.sub(r"\1***", message)
    for secret in _passwords(url):
        message = message.replace(f'"{secret}"', '"***"')
    return message


def _passwords(url: str | None) -> set[str]:
    """The password of ``url`` as written and decoded, as urllib and as libpq read it."""
    if not url:
        return set()
    found: set[str] = set()
    if "://" in url:
        rest = url.partition("://")[2]
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        for userinfo in (authority.rpartition("@")[0], authority.partition("@")[0]):
            password = userinfo.partition(":")[2]
            found.update({password, unquote(password)})
    with suppress(psycopg.Error):
        found.add(str(conninfo_to_dict(url).get("password") or ""))
    found.discard("")
    return found


def _first_line(message: str) -> str:
    stripped = message.strip()
    return stripped.splitlines()[0] if stripped else stripped


# -- what a failure means ----------------------------------------------------------------------

_WHERE = re.compile(r'connection to server (?:at "([^"]+)", port (\d+)|on socket "([^"]+)")')


def connection_failure(exc: BaseException, url: str) -> DatabaseConfigError:
    """One line for a failed connect: what went wrong at which URL and what to do.

    :class:`NoDatabaseError` when the URL itself is at fault (a bad port or option value),
    else :class:`DatabaseUnreachableError`."""
    text = scrub(str(exc), url)
    lowered = text.lower()
    place = _where(text)
    target = f"cannot connect to {redact_url(url)}"
    if isinstance(exc, psycopg.ProgrammingError) or re.search(
        r"invalid (?:integer |\w+ )?value|invalid connection option", lowered
    ):
        detail = _first_line(text).removeprefix("connection is bad: ")
        return NoDatabaseError(f"malformed database URL: {detail}; expected {URL_SHAPE}")
    reason = _connect_reason(text, lowered, place)
    return DatabaseUnreachableError(f"{target}: {reason}")


def _connect_reason(text: str, lowered: str, place: str) -> str:
    if m := re.search(r'password authentication failed for user "([^"]*)"', text):
        return f'password authentication failed for user "{m[1]}": check the password in the URL'
    if "no password supplied" in lowered:
        return (
            "the server wants a password and none was given: put it in the URL "
            f"({URL_SHAPE}) or in ~/.pgpass"
        )
    if m := re.search(r'database "([^"]*)" does not exist', text):
        return (
            f'database "{m[1]}" does not exist: create it with createdb {m[1]} '
            "or fix the database name in the URL"
        )
    if m := re.search(r'role "([^"]*)" does not exist', text):
        return (
            f'role "{m[1]}" does not exist: create it with createuser {m[1]} '
            "or fix the user in the URL"
        )
    if "no pg_hba.conf entry" in lowered:
        return (
            "the server's pg_hba.conf does not let this host, user or database in: ask its "
            "administrator for an entry, or fix the URL"
        )
    if "connection refused" in lowered or (
        "on socket" in lowered and "no such file or directory" in lowered
    ):
        refused = " (connection refused)" if "connection refused" in lowered else ""
        return (
            f"nothing is listening {place}{refused}: start PostgreSQL there or "
            "fix the host and port in the URL"
        )
    if m := re.search(r"failed to resolve host '([^']*)'", text) or re.search(
        r'could not translate host name "([^"]*)"', text
    ):
        return f'host "{m[1]}" not found: fix the host in the URL'
    if "timeout expired" in lowered or "couldn't get a connection" in lowered:
        return (
            f"no answer {place} (timed out): check the host, the port and the network "
            "(connect_timeout=SECONDS in the URL waits longer)"
        )
    if "pool initialization incomplete" in lowered:
        return "no connection could be opened in time: check the host, the port and the network"
    detail = _first_line(text)
    for noise in ("connection failed: ", "connection is bad: "):
        detail = detail.removeprefix(noise)
    return re.sub(
        r"connection to server (?:at \"[^\"]+\", port \d+|on socket \"[^\"]+\") "
        r"failed: (?:FATAL:\s+)?",
        "",
        detail,
    )


def _where(text: str) -> str:
    m = _WHERE.search(text)
    if m is None:
        return "there"
    if m[3]:
        return f"on socket {m[3]}"
    return f"on {m[1]} port {m[2]}"


def is_connect_failure(exc: BaseException) -> bool:
    """An error raised while opening a connection (by psycopg or a pool), not while using one."""
    if isinstance(exc, psycopg.errors.ConnectionTimeout):
        return True
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError) or exc.sqlstate is not None:
        return isinstance(exc, psycopg.errors.CannotConnectNow)
    text = str(exc).lower()
    return text.startswith(("connection failed:", "connection is bad:", "failed to resolve host"))


def is_connection_lost(exc: BaseException) -> bool:
    """The server went away while a connection was in use (terminated, crashed, shut down,
    network gone): the command's effects stop at its last committed statement.

    Besides the server's own shutdown errors, that is any client-side ``OperationalError``
    (libpq's: no SQLSTATE) raised after connecting: ``server closed the connection
    unexpectedly``, ``consuming input failed``, ``the connection is closed``…"""
    if isinstance(
        exc,
        psycopg.errors.AdminShutdown
        | psycopg.errors.CrashShutdown
        | psycopg.errors.DatabaseDropped,
    ):
        return True
    if isinstance(exc, psycopg.InterfaceError):
        return "connection is closed" in str(exc).lower()
    if not isinstance(exc, psycopg.OperationalError) or isinstance(exc, PoolClosed):
        return False
    return exc.sqlstate is None and not is_connect_failure(exc)


def missing_schema_object(exc: BaseException) -> tuple[str | None, str, str] | None:
    """``(schema, object, kind)`` when ``exc`` says a shared table, type or schema is missing
    (``relation "s.oban_jobs" does not exist``), else ``None``; ``schema`` is ``None`` when the
    message does not qualify the name."""
    if not isinstance(
        exc,
        psycopg.errors.UndefinedTable
        | psycopg.errors.InvalidSchemaName
        | psycopg.errors.UndefinedObject,
    ):
        return None
    primary = exc.diag.message_primary or _first_line(str(exc))
    m = re.search(r'(relation|type|schema) "([^"]+)" does not exist', primary)
    if m is None:
        return None
    kind, name = m[1], m[2]
    if kind == "schema":
        return name, "", "schema"
    schema, dot, obj = name.rpartition(".")
    return (schema if dot else None), obj, ("table" if kind == "relation" else kind)


# -- the embedded server -----------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedServer:
    """What ``postmaster.pid`` in an embedded data directory says, checked against the
    process table (a file left by a crash names a pid that is gone or reused)."""

    data_dir: Path
    pid: int | None = None
    port: int | None = None
    socket_dir: Path | None = None
    host: str | None = None
    status: str | None = None  # PostgreSQL's own word: "starting", "ready", "stopping"

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def url(self) -> str | None:
        """The URL to connect with (user ``postgres``, trust authentication, no password)."""
        if not self.running:
            return None
        if self.socket_dir is not None:
            port = f"&port={self.port}" if self.port not in (None, 5432) else ""
            return f"postgresql://postgres@/postgres?host={quote(str(self.socket_dir))}{port}"
        if self.host and self.port:
            host = "127.0.0.1" if self.host in ("*", "0.0.0.0", "localhost") else self.host
            return f"postgresql://postgres@{host}:{self.port}/postgres"
        return None

    def url_or_fail(self) -> str:
        if self.url is None:
            raise DatabaseUnreachableError(f"the embedded PostgreSQL in {self.data_dir} has no URL")
        return self.url

    def as_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "data_dir": str(self.data_dir),
            "pid": self.pid,
            "port": self.port,
            "socket_dir": None if self.socket_dir is None else str(self.socket_dir),
            "status": self.status,
            "url": self.url,
        }


def embedded_dir(
    data_dir: Path | str | None = None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """The embedded data directory: ``data_dir``, else ``$BRIDGE_EMBEDDED_DIR``, else
    ``./.bridge/pgdata`` of the current directory; absolute, as PostgreSQL records it."""
    env = os.environ if environ is None else environ
    chosen = data_dir or env.get(EMBEDDED_DIR_ENV) or DEFAULT_EMBEDDED_DIR
    return Path(chosen).expanduser().resolve()


def _shown_dir(directory: Path, env: Mapping[str, str]) -> str:
    return str(directory) if env.get(EMBEDDED_DIR_ENV) else f"./{DEFAULT_EMBEDDED_DIR}"


def embedded_status(data_dir: Path | str | None = None) -> EmbeddedServer:
    """Whether an embedded PostgreSQL runs in ``data_dir``, and where to reach it. Reads files
    only: it starts nothing and needs no ``pgserver``."""
    directory = embedded_dir(data_dir)
    try:
        lines = [line.strip() for line in (directory / "postmaster.pid").read_text().splitlines()]
    except (FileNotFoundError, NotADirectoryError):
        return EmbeddedServer(directory)
    if not lines or not lines[0].isdigit() or not _is_postmaster(int(lines[0])):
        return EmbeddedServer(directory)

    def line(index: int) -> str:
        return lines[index] if len(lines) > index else ""

    return EmbeddedServer(
        data_dir=directory,
        pid=int(lines[0]),
        port=int(line(3)) if line(3).isdigit() else None,
        socket_dir=Path(line(4)) if line(4) else None,
        host=line(5) or None,
        status=line(7) or None,
    )


def _is_postmaster(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's (pgserver runs PostgreSQL as its own user under root)
    try:
        executable = os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        # Gone or a zombie where there is a /proc; elsewhere the pid file has to be trusted.
        return not Path("/proc/self").exists()
    except OSError:
        return True  # another user's process: /proc does not say, the pid file does
    return Path(executable).name in ("postgres", "postmaster")


def embedded_system_user() -> tuple[str, bool] | None:
    """``(user, exists)`` when pgserver will run PostgreSQL as another system user: under root
    (PostgreSQL refuses to run as root) it uses the user ``pgserver``, creating it with
    ``useradd`` when missing, makes it own the data directory and adds read and search
    permission for everyone on every directory above it. ``None`` when not root."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam("pgserver")
    except KeyError:
        return "pgserver", False
    return "pgserver", True


def import_pgserver() -> Any:
    """The ``pgserver`` module, or :class:`NoDatabaseError` saying how to install it."""
    try:
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime directory when imported; without
            # XDG_RUNTIME_DIR (root, containers, cron) platformdirs warns about its /tmp
            # fallback on every start, which is fine for the lock file pgserver keeps there.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR", category=UserWarning)
            import pgserver
    except ImportError as exc:
        raise NoDatabaseError(EMBEDDED_EXTRA) from exc
    return pgserver


def start_embedded(data_dir: Path | str | None = None) -> EmbeddedServer:
    """Start the embedded PostgreSQL in ``data_dir`` (or find it running) and return it.

    It outlives this process (``cleanup_mode=None``) so that a worker and a later command see
    the same data; :func:`stop_embedded` stops it."""
    directory = embedded_dir(data_dir)
    server = embedded_status(directory)
    if server.running:
        return server
    pgserver = import_pgserver()
    directory.parent.mkdir(parents=True, exist_ok=True)
    log.debug("starting an embedded PostgreSQL in %s", directory)
    try:
        pgserver.get_server(directory, cleanup_mode=None)
    except Exception as exc:
        raise DatabaseUnreachableError(
            f"the embedded PostgreSQL in {directory} did not start "
            f"({type(exc).__name__}: {_first_line(str(exc))}): see {directory / 'log'}"
        ) from exc
    server = embedded_status(directory)
    if not server.running:
        raise DatabaseUnreachableError(
            f"the embedded PostgreSQL in {directory} did not start: see {directory / 'log'}"
        )
    return server


def stop_embedded(data_dir: Path | str | None = None, *, timeout: float = 30.0) -> EmbeddedServer:
    """Stop the embedded PostgreSQL in ``data_dir`` with PostgreSQL's fast shutdown (what
    ``pg_ctl stop`` sends: SIGINT) and wait for it; return what ran (not running: nothing did).
    The data stays."""
    server = embedded_status(data_dir)
    if server.pid is None:
        return server
    try:
        os.kill(server.pid, signal.SIGINT)
    except ProcessLookupError:
        return server
    deadline = time.monotonic() + timeout
    while _is_postmaster(server.pid):
        if time.monotonic() > deadline:
            raise DatabaseConfigError(
                f"the embedded PostgreSQL in {server.data_dir} (pid {server.pid}) did not stop "
                f"within {timeout:g}s: see {server.data_dir / 'log'}"
            )
        time.sleep(0.1)
    return server


# -- connections -------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL's quote_ident does, always.

    Used for schema prefixes in SQL text that must also render without a connection
    (``bridge schema show``).
    """
    if not name or "\x00" in name:
        raise ValueError(f"invalid identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def prefix_ident(prefix: str) -> sql.Identifier:
    return sql.Identifier(prefix)


def connect(url: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a sync connection; a failure is re-raised as one line that says what to do
    (:func:`connection_failure`), without the password."""
    try:
        return psycopg.connect(url, autocommit=autocommit, **kwargs)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        raise connection_failure(exc, url) from exc


async def connect_async(
    url: str, *, autocommit: bool = False, **kwargs: Any
) -> psycopg.AsyncConnection[Any]:
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=autocommit, **kwargs)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        raise connection_failure(exc, url) from exc


class LazyPool:
    """A small autocommit pool of sync connections, opened on first use.

    Workflow runners and delegation hosts are built where a node is configured, often in
    processes that only start or inspect instances; opening connections there would cost every
    such process a pool it never uses.
    """

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = max(2, size)
        self._pool: ConnectionPool[Any] | None = None

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._pool is None:
            self._pool = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self.size,
                kwargs={"autocommit": True},
                open=True,
            )
        with self._pool.connection() as conn:
            yield conn

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
