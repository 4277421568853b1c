"""Count the SQL a benchmark process sends, without changing what it sends.

pg_stat_statements cannot be loaded on a server we may not restart (it needs
``shared_preload_libraries``), so statements are counted on the client: every ``execute``,
``executemany`` and ``copy`` of psycopg's sync and async cursors (``Connection.execute`` goes
through a cursor) and every transaction command psycopg issues itself (``BEGIN``, ``COMMIT``,
``SAVEPOINT`` … from ``conn.transaction()``). Each call is noted as it is made, with the raw query
object; turning queries into readable labels happens after the run, off the clock.

Transactions are also counted here, as a cross-check of the server's ``xact_commit``: a
statement sent while its connection is idle (autocommit, no open transaction) is one
transaction; a ``BEGIN`` starts one.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg._connection_base import BaseConnection

ORIGIN_NODE = "node"  # the node's async connections: claim, ack, stager, peers, notifier
ORIGIN_RUNNER = "runner"  # sync connections: the runner's pool, used by the job bodies
ORIGIN_CLIENT = "client"  # the benchmark's own connection that calls runner.start


@dataclass
class Note:
    origin: str
    kind: str  # "statement" or "tx" (a transaction command psycopg sends itself)
    query: Any
    standalone: bool  # sent on an idle connection: a transaction of its own


@dataclass
class SqlCounter:
    """Notes every statement while ``enabled``; connections in ``ignored`` are never noted."""

    enabled: bool = False
    ignored: set[int] = field(default_factory=set)
    clients: set[int] = field(default_factory=set)
    runners: set[int] = field(default_factory=set)  # the runner's async batch connections
    notes: list[Note] = field(default_factory=list)
    threads: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, conn: Any, kind: str, query: Any) -> None:
        if not self.enabled or id(conn) in self.ignored:
            return
        if id(conn) in self.clients:
            origin = ORIGIN_CLIENT
        elif id(conn) in self.runners:
            origin = ORIGIN_RUNNER
        elif isinstance(conn, psycopg.AsyncConnection):
            origin = ORIGIN_NODE
        else:
            origin = ORIGIN_RUNNER
        idle = conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
        # list.append is atomic under the GIL; the notes are read only after the run.
        self.notes.append(Note(origin, kind, query, idle))

    def summary(self) -> dict[str, Any]:
        """Totals per origin and kind, and the most frequent statements, as plain JSON."""
        statements: Counter[str] = Counter()
        tx_commands: Counter[str] = Counter()
        transactions: Counter[str] = Counter()
        labels: Counter[str] = Counter()
        for note in self.notes:
            text = label(note.query)
            # BEGIN/COMMIT a batch sends itself in a pipeline count as psycopg's own do.
            if note.kind == "tx" or text in ("BEGIN", "COMMIT", "ROLLBACK"):
                tx_commands[note.origin] += 1
                if text.startswith("BEGIN"):
                    transactions[note.origin] += 1
            else:
                statements[note.origin] += 1
                labels[f"{note.origin}: {text}"] += 1
                if note.standalone:
                    transactions[note.origin] += 1
        return {
            "statements": dict(statements),
            "tx_commands": dict(tx_commands),
            "transactions": dict(transactions),
            "top": labels.most_common(40),
        }


COUNTER = SqlCounter()

_SPACE = re.compile(r"\s+")
_LITERALS = re.compile(r"'[^']*'")
_KEYS = re.compile(r"\(\s*-?\d+::bigint\)")  # the runner's BEGIN + lock carries its key inline


def label(query: Any) -> str:
    """A short, stable name for a statement: its text with literals and spacing folded."""
    if isinstance(query, sql.Composable):
        try:
            text = query.as_string(None)
        except Exception:  # a Composed that needs a live connection to render
            text = repr(query)
    elif isinstance(query, bytes | bytearray | memoryview):
        text = bytes(query).decode("utf-8", "replace")
    else:
        text = str(query)
    text = _KEYS.sub("(…)", _LITERALS.sub("'…'", _SPACE.sub(" ", text).strip()))
    text = text.replace('"public".', "").replace('"', "")
    return text[:200]


def _wrap(original: Callable[..., Any], kind: str, conn_of: Callable[[Any], Any]) -> Any:
    def wrapper(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTER.note(conn_of(self), kind, query)
        return original(self, query, *args, **kwargs)

    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapper


_INSTALLED: list[tuple[type, str, Any]] = []


def install() -> SqlCounter:
    """Patch psycopg's cursors and connections in this process (idempotent)."""
    if _INSTALLED:
        return COUNTER
    targets: Iterable[tuple[type, str, str, Callable[[Any], Any]]] = (
        (psycopg.Cursor, "execute", "statement", lambda cur: cur.connection),
        (psycopg.Cursor, "executemany", "statement", lambda cur: cur.connection),
        (psycopg.Cursor, "copy", "statement", lambda cur: cur.connection),
        (psycopg.AsyncCursor, "execute", "statement", lambda cur: cur.connection),
        (psycopg.AsyncCursor, "executemany", "statement", lambda cur: cur.connection),
        (psycopg.AsyncCursor, "copy", "statement", lambda cur: cur.connection),
        (BaseConnection, "_exec_command", "tx", lambda conn: conn),
    )
    for cls, name, kind, conn_of in targets:
        original = cls.__dict__[name]
        _INSTALLED.append((cls, name, original))
        setattr(cls, name, _wrap(original, kind, conn_of))
    return COUNTER
