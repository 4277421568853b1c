"""What ``bridge worker`` (and every command that imports user modules) checks before it starts
anything: the operator's modules import, the database answers, the schema is the one needed.

Each check fails with one line and its own exit status, so a node that cannot work never starts
half-way: no producer claims a job it cannot run, no pool times out after 30 s hiding the cause.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bridge.cli.output import (
    EXIT_INTERRUPTED,
    EXIT_SCHEMA,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    fail,
)
from bridge.db import redact_url, scrub

log = logging.getLogger("bridge.cli")

APP_DIR_ENV = "BRIDGE_APP_DIR"
APP_DIR_HINT = "run from the directory that holds it, or pass --app-dir"
SCHEMA_ADVICE = "run `bridge schema install` or the Elixir migrations"
MAX_LISTED = 12  # differences listed when start-up refuses; `bridge schema verify` has them all

# -- user modules ---------------------------------------------------------------------------------


def app_dir_option(fn: Any) -> Any:
    """``--app-dir DIR`` (repeatable; ``$BRIDGE_APP_DIR``, ``:``-separated like PYTHONPATH)."""
    return click.option(
        "--app-dir",
        "app_dirs",
        multiple=True,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        envvar=APP_DIR_ENV,
        help="Directory to import your modules from, before the current one (repeatable) "
        f"[env {APP_DIR_ENV}].",
    )(fn)


def use_app_dirs(app_dirs: Sequence[str | Path] = ()) -> None:
    """Put ``app_dirs`` and then the current directory first on ``sys.path``.

    The installed ``bridge`` script, unlike ``python -m``, does not put the working directory
    on the import path; ``celery -A``, ``uvicorn`` and ``flask --app`` all do, and users expect
    ``bridge worker --workers myapp.workers`` run beside ``myapp/`` to work the same way."""
    wanted = [str(Path(d).resolve()) for d in app_dirs] + [os.getcwd()]
    for entry in reversed(wanted):
        while entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    importlib.invalidate_caches()


def import_user_module(
    name: str, app_dirs: Sequence[str | Path] = (), *, kind: str = "worker"
) -> ModuleType:
    """Import the module the operator named (``--workers``, ``--workflows``, settings), from
    ``app_dirs`` and the current directory first.

    A module that cannot be imported stops the command: ``Error: cannot import <kind> module
    'x': <error> (<where or what to do>)``, exit status 2, before anything has started."""
    use_app_dirs(app_dirs)
    try:
        return importlib.import_module(name)
    except SyntaxError as exc:
        where = f"{_shown_path(exc.filename)}, line {exc.lineno}" if exc.filename else ""
        detail = f"SyntaxError: {exc.msg}" + (f" ({where})" if where else "")
        raise fail(f"cannot import {kind} module {name!r}: {detail}", EXIT_USAGE) from exc
    except Exception as exc:
        first = _first_line(str(exc))
        detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise fail(
            f"cannot import {kind} module {name!r}: {detail} ({_import_hint(name, exc)})",
            EXIT_USAGE,
        ) from exc


def import_user_modules(
    names: Sequence[str], app_dirs: Sequence[str | Path] = (), *, kind: str = "worker"
) -> list[ModuleType]:
    return [import_user_module(name, app_dirs, kind=kind) for name in names]


def _import_hint(name: str, exc: Exception) -> str:
    """Where the error was raised, or what to do when the module itself was not found."""
    missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    if missing is not None and (name == missing or name.startswith(missing + ".")):
        if "." not in missing:  # the top package is nowhere on the path
            return APP_DIR_HINT
        package, _, module = missing.rpartition(".")
        parent = sys.modules.get(package)
        found = f" at {_shown_path(_module_dir(parent))}" if parent is not None else ""
        return f"package {package!r}{found} has no module {module!r}"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ")
    ]
    if frames:
        return f"raised at {_shown_path(frames[-1].filename)}:{frames[-1].lineno}"
    return APP_DIR_HINT


def _module_dir(module: ModuleType) -> str:
    paths = list(getattr(module, "__path__", []))
    return paths[0] if paths else str(getattr(module, "__file__", "?"))


def _shown_path(path: str) -> str:
    """Relative to the current directory when under it: the path the operator would type."""
    try:
        relative = Path(path).resolve().relative_to(Path.cwd())
    except (ValueError, OSError):
        return path
    return str(relative)


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""


# -- the database ---------------------------------------------------------------------------------

# A server that answered with FATAL refused us for good (role, password, database, pg_hba)
# unless it said one of these, which waiting does fix.
_TRANSIENT_FATAL = (
    "starting up",
    "shutting down",
    "in recovery",
    "too many",  # "too many connections", "sorry, too many clients already"
    "not yet accepting",
)


def where(url: str) -> str:
    """``host:port`` (or the socket directory) of a URL, for messages; never the password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return redact_url(url)
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    return f"{host}:{port}"


def connection_cause(exc: BaseException, url: str) -> str:
    """The reason in libpq's words, without the preamble: ``connection refused``."""
    # Only a quoted token that is the URL's password is masked (bridge.db.scrub): replacing
    # every occurrence of its characters turned "Connection refused" into "C***necti***".
    text = scrub(str(exc), url)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in lines:
        if "failed: " in line:
            cause = line.rsplit("failed: ", 1)[1].strip()
            break
    else:
        cause = lines[0] if lines else type(exc).__name__
    cause = cause.removeprefix("FATAL:").strip()
    if len(cause) > 1 and cause[0].isupper() and cause[1].islower():
        cause = cause[0].lower() + cause[1:]
    return cause


def _refused_for_good(exc: psycopg.OperationalError) -> bool:
    """The server answered and said no (libpq reports no SQLSTATE for a failed connect)."""
    text = str(exc)
    return "FATAL:" in text and not any(phrase in text for phrase in _TRANSIENT_FATAL)


def wait_for_database(url: str, wait: float, *, option: str = "--wait-for-database") -> None:
    """Return once a connection to ``url`` succeeds, retrying with backoff (0.5 s doubling to
    5 s) for at most ``wait`` seconds.

    Each wait is one log line with its cause; giving up, or a refusal that waiting cannot fix
    (authentication, unknown database), is ``Error: …`` with exit status 4. Ctrl-C stops it at
    once with status 130: the wait happens before any signal handler of the node exists."""
    started = time.monotonic()
    delay = 0.5
    place = where(url)
    try:
        while True:
            remaining = wait - (time.monotonic() - started)
            try:
                # libpq's own timeout is whole seconds, at least 2.
                psycopg.connect(url, connect_timeout=max(2, min(10, int(remaining) or 2))).close()
                return
            except psycopg.OperationalError as exc:
                cause = connection_cause(exc, url)
                if _refused_for_good(exc):
                    raise fail(
                        f"database {place} refused the connection: {cause}", EXIT_UNREACHABLE
                    ) from None
            remaining = wait - (time.monotonic() - started)
            if remaining <= 0:
                waited = time.monotonic() - started
                raise fail(
                    f"database {place} unreachable ({cause}); gave up after {waited:.0f} s "
                    f"({option} {wait:g})",
                    EXIT_UNREACHABLE,
                )
            pause = min(delay, remaining)
            log.warning(
                "database %s unreachable (%s); retrying in %.1f s (gives up after %g s; %s)",
                place,
                cause,
                pause,
                wait,
                option,
            )
            time.sleep(pause)
            delay = min(delay * 2, 5.0)
    except KeyboardInterrupt:
        raise fail(f"interrupted while waiting for database {place}", EXIT_INTERRUPTED) from None


# -- the schema -----------------------------------------------------------------------------------


def check_schema(url: str, prefix: str, *, workflows: bool) -> None:
    """Refuse to start on a schema bridge cannot use: exit 5, the blocking differences listed.

    A node serving only jobs needs only Oban's objects; one serving workflows or delegated steps
    needs the workflow tables too. When the database role may not run the full comparison (it
    builds the expected schema in a scratch schema, rolled back), the check falls back to
    whether ``oban_jobs`` exists and says so."""
    from bridge import schema
    from bridge.schema.ddl import load_objects

    oban_objects = {obj.name for obj in load_objects() if obj.source.startswith("01_")}
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            report = schema.verify(conn, prefix)
        except psycopg.Error as exc:
            log.warning(
                'cannot verify schema "%s" (%s); checking only that its oban_jobs exists',
                prefix,
                _first_line(str(exc)),
            )
            if not _table_exists(conn, prefix, "oban_jobs"):
                raise fail(
                    f'schema "{prefix}" has no oban_jobs table: {SCHEMA_ADVICE}', EXIT_SCHEMA
                ) from None
            return
    blocking = [
        difference
        for difference in report.differences
        if difference.blocking
        and (workflows or _object_of(difference.subject) in oban_objects | {prefix})
    ]
    if not blocking:
        return
    listed = [f"  {difference}" for difference in blocking[:MAX_LISTED]]
    if len(blocking) > MAX_LISTED:
        listed.append(f"  … and {len(blocking) - MAX_LISTED} more")
    raise fail(
        f'schema "{prefix}" is not what this node needs: {SCHEMA_ADVICE} '
        "(`bridge schema verify` shows every difference)\n" + "\n".join(listed),
        EXIT_SCHEMA,
    )


def wait_until_ready(
    url: str, wait: float, prefix: str, *, workflows: bool, option: str = "--wait-for-database"
) -> None:
    """:func:`wait_for_database`, then :func:`check_schema`, within one budget of ``wait``
    seconds. A server that goes away between the two — a restart that began just after the
    first connection, whose new connections are refused with "the database system is shutting
    down" — is waited for again instead of ending the node with exit status 4."""
    deadline = time.monotonic() + wait
    while True:
        wait_for_database(url, max(0.0, deadline - time.monotonic()), option=option)
        try:
            check_schema(url, prefix, workflows=workflows)
            return
        except psycopg.OperationalError as exc:
            if _refused_for_good(exc) or time.monotonic() >= deadline:
                raise
            log.warning(
                "database %s went away during the start-up checks (%s); waiting for it again",
                where(url),
                connection_cause(exc, url),
            )


def _object_of(subject: str) -> str:
    """``"column oban_jobs.state"`` -> ``"oban_jobs"``; ``"schema x"`` -> ``"x"``."""
    return subject.split(" ", 1)[-1].split(".", 1)[0]


def _table_exists(conn: psycopg.Connection[Any], prefix: str, table: str) -> bool:
    from bridge.db import quote_ident

    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{quote_ident(prefix)}.{quote_ident(table)}",)
    ).fetchone()
    return bool(row and row[0])
