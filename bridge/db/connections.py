"""Connections to the database and the quoted schema prefix every query is written with.

A failed connect is re-raised as one line that says what to do (:func:`connection_failure`),
never with the password, so every caller reports it the same way. The prefix is always a
quoted identifier, never spliced in as text.

Every connection opened here reads ``json`` and ``jsonb`` as Jason does
(:func:`read_json_as_jason`): psycopg's default loader is the standard library's ``json.loads``,
which raises RecursionError for values nested past ~1,000 levels and ValueError for integers
past 4,300 digits, both of which an Elixir app writes and reads without trouble.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

from bridge.db.failures import connection_failure
from bridge.wire import jsonfmt

DEFAULT_PREFIX = "public"


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


JsonContext = (
    psycopg.Connection[Any]
    | psycopg.AsyncConnection[Any]
    | psycopg.Cursor[Any]
    | psycopg.AsyncCursor[Any]
)


def read_json_as_jason(context: JsonContext) -> None:
    """Make ``context`` decode ``json``/``jsonb`` with :func:`bridge.wire.jsonfmt.loads`: any
    depth, integers of any length, and only :class:`~bridge.wire.jsonfmt.JSONDecodeError` for
    what Jason refuses too (a number beyond a double, a lone surrogate in a ``json`` column).

    The loader is registered on the connection rather than every row fetched as text and
    decoded by hand, so each of the many statements that read JSON (claims excepted: they need
    per-row failures, see ``Job.from_text_row``) is covered by this one place, for every
    connection bridge opens (:func:`connect`, :func:`connect_async`, :class:`LazyPool`, a node's
    pool through :func:`configure_pool_connection`). A function that takes a caller's own
    connection registers it on its cursor instead, so that connection is never altered.
    """
    set_json_loads(jsonfmt.loads, context)


async def configure_pool_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """``configure=`` of an async pool: :func:`read_json_as_jason` on each new connection."""
    read_json_as_jason(conn)


def connect(url: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a sync connection reading JSON as Jason does (:func:`read_json_as_jason`); a failure
    is re-raised as one line that says what to do (:func:`connection_failure`), without the
    password."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, **kwargs)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        raise connection_failure(exc, url) from exc
    read_json_as_jason(conn)
    return conn


async def connect_async(
    url: str, *, autocommit: bool = False, **kwargs: Any
) -> psycopg.AsyncConnection[Any]:
    """The async :func:`connect`."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=autocommit, **kwargs)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        raise connection_failure(exc, url) from exc
    read_json_as_jason(conn)
    return conn


class LazyPool:
    """A small autocommit pool of sync connections, opened on first use.

    Workflow runners and delegation hosts are built where a node is configured, often in
    processes that only start or inspect instances; opening connections there would cost every
    such process a pool it never uses. The first use is usually several job threads at once, so
    opening is done under a lock: without it each opened a pool, and all but one were dropped
    unclosed, holding their connections until garbage collection.
    """

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = max(2, size)
        self._pool: ConnectionPool[Any] | None = None
        self._opening = threading.Lock()

    def _opened(self) -> ConnectionPool[Any]:
        with self._opening:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.size,
                    kwargs={"autocommit": True},
                    configure=read_json_as_jason,
                    open=True,
                )
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._opened().connection() as conn:
            yield conn

    def close(self) -> None:
        with self._opening:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
