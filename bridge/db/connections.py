"""Connections to the database and the quoted schema prefix every query is written with.

A failed connect is re-raised as one line that says what to do (:func:`connection_failure`),
never with the password, so every caller reports it the same way. The prefix is always a
quoted identifier, never spliced in as text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from bridge.db.failures import connection_failure

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
