"""The command line's one error and output layer.

Every failure a command reports and every JSON document it prints goes through here, so how
errors look (today click's ``Error: ...``) and how values are printed can change in one place.
The functions that build errors return them, to be raised where the failure is found
(``raise fail(...) from exc``), so a reader and mypy both see the command stop there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, time
from typing import Any, NoReturn
from uuid import UUID

import click
import orjson

from bridge.wire import jsonfmt

# -- errors ----------------------------------------------------------------------------------------


# Exit statuses, distinct so scripts and health checks can tell failures apart (documented in
# `bridge --help`). click uses 2 for usage errors.
EXIT_FAILED = 1  # the command ran and could not do what it was asked, or a check said no
EXIT_USAGE = 2  # bad options or arguments
EXIT_NO_DATABASE = 3  # no database given (or a malformed URL)
EXIT_UNREACHABLE = 4  # the database could not be reached or refused us (auth, unknown db)
EXIT_SCHEMA = 5  # the shared schema is missing or incompatible
EXIT_DATABASE_LOST = 6  # the database went away while the command ran
EXIT_INTERRUPTED = 130  # Ctrl-C


class CommandError(click.ClickException):
    """``Error: <message>`` on stderr and ``exit_code``: one line, no traceback (``-v`` adds
    it)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, status: int = EXIT_FAILED) -> click.ClickException:
    """The command could not do what it was asked: ``Error: <message>``, exit ``status``."""
    return CommandError(message, status)


def failure(exc: Exception) -> click.ClickException:
    """``fail`` for a library error whose type names what went wrong (``ResumeError: ...``)."""
    return fail(f"{type(exc).__name__}: {exc}")


def bad_parameter(message: str, hint: str | None = None) -> click.BadParameter:
    """A value given on the command line (or in the settings) is invalid: usage, exit status 2.

    ``hint`` names the option when click cannot tell which one it was (``--workflows``)."""
    return click.BadParameter(message, param_hint=hint)


def usage_error(message: str) -> click.UsageError:
    """The options do not fit together (one missing, two exclusive ones): exit status 2."""
    return click.UsageError(message)


def database_error(
    exc: BaseException, *, url: str | None = None, prefix: str | None = None
) -> CommandError | None:
    """The one line (and exit status) for a failure to choose, reach or use the database, or
    ``None`` when ``exc`` is not one: the root command turns every such exception into this
    line, whichever command raised it. ``url`` is the database in use (named in a failed
    connect, its password masked), ``prefix`` the schema a missing table is looked for in."""
    from bridge import db

    if isinstance(exc, db.DatabaseConfigError):
        for error_type, status in _config_status():
            if isinstance(exc, error_type):
                return CommandError(str(exc), status)
        return CommandError(str(exc), EXIT_FAILED)
    if db.is_connect_failure(exc):
        return database_error(db.connection_failure(exc, url or "the database"))
    if db.is_connection_lost(exc):
        return CommandError(
            "lost the connection to the database while the command ran "
            f"({_line(db.scrub(str(exc), url))}): check that the server is up, then run the "
            "command again",
            EXIT_DATABASE_LOST,
        )
    missing = db.missing_schema_object(exc)
    if missing is not None:
        schema, name, kind = missing
        schema = schema or prefix or db.DEFAULT_PREFIX
        what = "does not exist" if kind == "schema" else f"has no {name} {kind}"
        return CommandError(
            f'schema "{schema}" {what}: run `bridge schema install` or the Elixir migrations '
            "(or pass --prefix)",
            EXIT_SCHEMA,
        )
    import psycopg

    if isinstance(exc, psycopg.errors.UndefinedColumn | psycopg.errors.UndefinedFunction):
        return CommandError(
            f'schema "{prefix or db.DEFAULT_PREFIX}" is not what bridge needs '
            f"({_line(str(exc))}): run `bridge schema verify` to see what differs",
            EXIT_SCHEMA,
        )
    return None


def unexpected(
    exc: BaseException, *, url: str | None = None, verbose: bool = False
) -> CommandError:
    """``unexpected <Type>: <message>``, exit status 1, for what no command handled: a bug or
    a failure nobody foresaw, still one line (``-v`` prints the traceback above it)."""
    from bridge import db

    hint = "" if verbose else " (run with -v for the traceback)"
    message = _line(db.scrub(str(exc), url)) or "(no message)"
    return CommandError(f"unexpected {type(exc).__name__}: {message}{hint}", EXIT_FAILED)


def _line(message: str) -> str:
    stripped = message.strip()
    return stripped.splitlines()[0] if stripped else ""


def _config_status() -> tuple[tuple[type[BaseException], int], ...]:
    from bridge import db

    return (
        (db.DatabaseChoiceError, EXIT_USAGE),
        (db.NoDatabaseError, EXIT_NO_DATABASE),
        (db.DatabaseUnreachableError, EXIT_UNREACHABLE),
    )


def warn(message: str) -> None:
    """Something the user should know that does not stop the command: ``Warning: …`` on
    stderr."""
    click.echo(f"Warning: {message}", err=True)


def exit_failed(message: str) -> NoReturn:
    """A check ran and its answer is no: ``message`` on stderr as it is, exit status 1."""
    click.echo(message, err=True)
    sys.exit(1)


# -- JSON ------------------------------------------------------------------------------------------


def json_text(value: Any, *, lenient: bool = False) -> str:
    """``value`` as compact JSON (orjson: datetimes as ISO 8601).

    ``lenient`` writes what orjson cannot encode as its ``str()`` instead of failing: the
    workflow commands print rows as stored, whatever their column types."""
    try:
        return orjson.dumps(value, default=str if lenient else None).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits and nesting past 254 levels, both of which a
        # jsonb column (and an Elixir app) holds happily; jsonfmt writes them at any depth and
        # length, as the standard library would.
        return jsonfmt.dumps(value, default=_lenient_default if lenient else _strict_default)


def _strict_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()  # as orjson writes them
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _lenient_default(value: Any) -> Any:
    try:
        return _strict_default(value)
    except TypeError:
        return str(value)


def echo_json(value: Any, *, lenient: bool = False) -> None:
    """Print ``value`` as one JSON document (what every ``--json`` option prints)."""
    click.echo(json_text(value, lenient=lenient))


# -- progress ------------------------------------------------------------------------------------


@contextmanager
def progress(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner with the elapsed time on stderr while a long command works, on a terminal only
    (piped or redirected, nothing is written). Yields ``update(text)`` to change its line."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda _text: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(message, total=None)
        yield lambda text: bar.update(task, description=text)


# -- tables --------------------------------------------------------------------------------------


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> None:
    """Print rows as a table (rich): on a terminal, fitted to its width with colour and a
    header rule; piped, plain aligned columns that never wrap or cut (``cut``/``grep`` work).

    Cells are shown with ``str()``; ``None`` is shown as ``-``. On a narrow terminal the widest
    columns give way first and are cut with an ellipsis; no column shrinks below its header."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    cells = [["-" if cell is None else str(cell) for cell in row] for row in rows]
    console = Console(soft_wrap=False, highlight=False)
    on_terminal = console.is_terminal
    widths = fit_widths(columns, cells, console.width if on_terminal else None, gap=3)
    if not on_terminal:
        console = Console(width=100_000, soft_wrap=False, highlight=False, color_system=None)
    grid = Table(
        title=title,
        box=box.SIMPLE_HEAD if on_terminal else None,
        show_edge=False,
        pad_edge=False,
        header_style="bold" if on_terminal else "",
    )
    for name, width in zip(columns, widths, strict=True):
        grid.add_column(name, no_wrap=True, overflow="ellipsis", width=width)
    for row in cells:
        grid.add_row(*(_cell(cell) for cell in row))
    if on_terminal:
        console.print(grid)
        return
    with console.capture() as captured:
        console.print(grid)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


# A column narrower than this is never cut (ids, states, counts stay whole).
_KEEP = 12


def fit_widths(
    columns: Sequence[str], cells: Sequence[Sequence[str]], width: int | None, *, gap: int = 3
) -> list[int]:
    """Each column's width: its widest cell, then, if the total (with ``gap`` between columns:
    rich's padding and rule) exceeds ``width``, the widest column shrunk one character at a
    time — never below its header or 12 characters — until it fits or nothing can shrink.
    ``width=None``: no limit. Pure, so it is tested without a terminal."""
    natural = [
        max([len(name), *(len(row[i]) for row in cells if i < len(row))])
        for i, name in enumerate(columns)
    ]
    if width is None:
        return natural
    floor = [min(n, max(len(name), _KEEP)) for n, name in zip(natural, columns, strict=True)]
    fitted = list(natural)
    budget = width - gap * (len(columns) - 1)
    while sum(fitted) > budget:
        shrinkable = [i for i in range(len(fitted)) if fitted[i] > floor[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: (fitted[i], i))
        fitted[widest] -= 1
    return fitted


def _cell(value: Any) -> str:
    from rich.markup import escape

    return escape(str(value))


# -- what rows may hold ----------------------------------------------------------------------------

UNDECODABLE_HELP = (
    'A value that cannot be decoded is printed as "<undecodable: reason>" (with --json, as '
    '{"undecodable": reason, "text": the value as PostgreSQL prints it}).'
)

# Control characters a row may hold (in a worker name, an error text) are shown escaped, so a
# row cannot move the cursor or recolour the terminal that lists it.
CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(32), 127)}
CONTROL_ESCAPES_BUT_TAB = {code: text for code, text in CONTROL_ESCAPES.items() if code != 9}


def printable(text: object) -> str:
    """``text`` with its control characters escaped (``\\x1b``): safe to print on a terminal."""
    return str(text).translate(CONTROL_ESCAPES)


# -- shared formatting -----------------------------------------------------------------------------


def last_error(errors: Sequence[Any]) -> str:
    """The first line of a job's latest error, or ``""``: one line per job in a listing. An
    entry that is not Oban's ``{"error": text, …}`` object is shown as JSON, never a crash."""
    if not errors:
        return ""
    entry = errors[-1]
    if isinstance(entry, dict) and isinstance(entry.get("error"), str):
        lines = entry["error"].splitlines()
        return lines[0] if lines else ""
    return json_text(entry, lenient=True)


def short_name(module: str | None) -> str:
    """The last segment of a module name (``Elixir.App.Steps.Greet`` -> ``Greet``), ``-`` if
    none: step names in listings stay readable."""
    if not module:
        return "-"
    return module.rsplit(".", 1)[-1]
