"""What a psycopg failure means: could not connect, connection lost, or shared schema missing.

libpq says what went wrong in free text; the command line needs a class of failure (each has
its own exit status) and one line that says what to do. Classifying here, in one place, keeps
the wording the same for every command and keeps the password out of it (:func:`scrub`).
"""

from __future__ import annotations

import re

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout

from bridge.db.errors import (
    URL_SHAPE,
    DatabaseConfigError,
    DatabaseUnreachableError,
    NoDatabaseError,
)
from bridge.db.masking import _first_line, redact_url, scrub

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
