"""Database resolution, connections and the schema prefix.

Every command and test finds its database the same way, in one place, so that an operator can
predict which PostgreSQL a process talks to: ``--database-url`` > ``BRIDGE_DATABASE_URL`` >
``DATABASE_URL`` > an embedded PostgreSQL (the ``pgserver`` package) in a local data directory.
Passwords are masked wherever a URL is shown (:func:`redact_url`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

log = logging.getLogger("bridge.db")

DEFAULT_PREFIX = "public"
DEFAULT_EMBEDDED_DIR = Path(".bridge") / "pgdata"
EMBEDDED_DIR_ENV = "BRIDGE_EMBEDDED_DIR"
URL_ENV_VARS = ("BRIDGE_DATABASE_URL", "DATABASE_URL")


class DatabaseConfigError(RuntimeError):
    """The database could not be resolved or reached; the message never holds a password."""


@dataclass(frozen=True)
class ResolvedDatabase:
    """Where a database URL came from, so the one log line can say so."""

    url: str
    source: str  # "option", an environment variable's name, or "embedded"

    @property
    def display(self) -> str:
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """Mask the password of a URL or libpq key/value string for logs and errors."""
    if "://" in url:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        userinfo = netloc[0].split(":", 1)[0] + ":***"
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[1]}"))
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", url)


def resolve_database_url(explicit: str | None = None, *, embedded: bool = True) -> ResolvedDatabase:
    """Pick the database: explicit option, then environment, then the embedded server."""
    if explicit:
        return ResolvedDatabase(explicit, "option")
    for name in URL_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return ResolvedDatabase(value, name)
    if not embedded:
        raise DatabaseConfigError(
            "no database URL: pass --database-url or set BRIDGE_DATABASE_URL / DATABASE_URL"
        )
    return ResolvedDatabase(start_embedded(), "embedded")


_embedded_servers: dict[str, Any] = {}


def start_embedded(data_dir: Path | None = None) -> str:
    """Start (or reuse) an embedded PostgreSQL and return its URL.

    The server outlives this process (``cleanup_mode=None``) so that a worker and a later
    ``bridge jobs`` command see the same data; ``pgserver`` reuses a running server in the same
    directory.
    """
    directory = (data_dir or Path(os.environ.get(EMBEDDED_DIR_ENV, DEFAULT_EMBEDDED_DIR))).resolve()
    key = str(directory)
    if key not in _embedded_servers:
        try:
            import pgserver
        except ImportError as exc:  # pragma: no cover - declared dependency
            raise DatabaseConfigError("the embedded database needs the 'pgserver' package") from exc
        directory.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(directory, cleanup_mode=None)  # type: ignore[attr-defined]
        _embedded_servers[key] = server
        log.info("using embedded PostgreSQL in %s (no database URL given)", directory)
    url: str = _embedded_servers[key].get_uri()
    return url


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
    """Open a sync connection; connection errors are re-raised without the password."""
    try:
        return psycopg.connect(url, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseConfigError(
            f"cannot connect to {redact_url(url)}: {_strip_secrets(str(exc), url)}"
        ) from None


async def connect_async(
    url: str, *, autocommit: bool = False, **kwargs: Any
) -> psycopg.AsyncConnection[Any]:
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseConfigError(
            f"cannot connect to {redact_url(url)}: {_strip_secrets(str(exc), url)}"
        ) from None


def _strip_secrets(message: str, url: str) -> str:
    password = urlsplit(url).password if "://" in url else None
    if password:
        message = message.replace(password, "***")
    return message.strip().splitlines()[0] if message.strip() else message


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
