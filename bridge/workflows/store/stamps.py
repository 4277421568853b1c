"""The SQL that stamps an instance's ``inserted_at``/``updated_at``: the database's clock,
truncated to the second, in the column type the Elixir migration produced.

HephaestusEcto's schema declares ``timestamps()`` (Ecto's ``:naive_datetime``): Ecto autogenerates
``NaiveDateTime.utc_now()`` truncated to the second on the *app host's* clock, and dumps it as a
UTC wall time. bridge writes the same value (whole seconds, UTC) but from the database's clock,
as Oban's inserts do and the delegation door already does: the one clock every Python node
shares, and the one repair's staleness checks compare with. Which clock is the only difference.

The migration's ``timestamps()`` column is ``timestamp(0)`` by default, ``timestamp`` (with
microseconds) under ``migration_timestamps: [type: :utc_datetime_usec]`` and ``timestamptz``
under ``type: :timestamptz``. A UTC wall time needs a different expression for the last: a
``timestamp`` value assigned to a ``timestamptz`` column (and the reverse) is converted through
the session's ``TimeZone``, so the column's type is read from the catalog once per database and
prefix. Whole seconds, so ``timestamp(0)`` never rounds (PostgreSQL rounds, Ecto truncates) and
a microsecond column holds what Ecto's truncated value would.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

# The UTC wall time of the transaction's start, to the second, for a column without a zone.
NAIVE_STAMP = "date_trunc('second', timezone('UTC', now()))"
# The same instant for a timestamptz column (a whole second in every zone PostgreSQL knows).
ZONED_STAMP = "date_trunc('second', now())"

_COLUMN_TYPE = """
SELECT a.atttypid = 'timestamptz'::regtype
FROM pg_attribute a
WHERE a.attrelid = to_regclass(%(table)s) AND a.attname = 'updated_at' AND NOT a.attisdropped
"""

_KNOWN: dict[tuple[str, str, str, str], str] = {}


def _key(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], prefix: str) -> Any:
    info = conn.info
    return (info.host, str(info.port), info.dbname, prefix)


def _table(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], prefix: str) -> str:
    # The name goes in as a value (to_regclass parses it), never as SQL text.
    return sql.SQL("{}.workflow_instances").format(sql.Identifier(prefix)).as_string(conn)


def _stamp(zoned: Any) -> str:
    return ZONED_STAMP if zoned is True else NAIVE_STAMP


def instance_stamp(conn: psycopg.Connection[Any], prefix: str) -> str:
    """The SQL expression for ``inserted_at``/``updated_at`` of ``prefix``'s instances."""
    key = _key(conn, prefix)
    stamp = _KNOWN.get(key)
    if stamp is None:
        row = conn.execute(_COLUMN_TYPE, {"table": _table(conn, prefix)}).fetchone()
        stamp = _stamp(row[0] if row else None)
        if row is not None:  # no table yet: not remembered, it may be created either way
            _KNOWN[key] = stamp
    return stamp


async def instance_stamp_async(conn: psycopg.AsyncConnection[Any], prefix: str) -> str:
    """:func:`instance_stamp` on an async connection."""
    key = _key(conn, prefix)
    stamp = _KNOWN.get(key)
    if stamp is None:
        cur = await conn.execute(_COLUMN_TYPE, {"table": _table(conn, prefix)})
        row = await cur.fetchone()
        stamp = _stamp(row[0] if row else None)
        if row is not None:
            _KNOWN[key] = stamp
    return stamp
