"""The ``bridge`` group itself: the options every command shares, logging, and the one place
where any failure becomes one line.

:class:`BridgeGroup` is the safety net under every command: whatever a command does not turn
into its own ``Error: …`` line (a database that cannot be reached, a missing table, a
connection lost half-way, Ctrl-C, a bug) is turned into one here, with its exit status
(``output.EXIT_*``), the password never shown; ``-v`` adds the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

import click

from bridge.cli.context import CliContext
from bridge.cli.output import (
    EXIT_DATABASE_LOST,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_DATABASE,
    EXIT_SCHEMA,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    database_error,
    fail,
    unexpected,
)
from bridge.db import DEFAULT_PREFIX, scrub

EPILOG = """\b
Which database: --database-url URL or --embedded (not both), else
$BRIDGE_DATABASE_URL or BRIDGE_EMBEDDED=1 (not both), else $DATABASE_URL;
with none of them a command refuses (exit 3), except `bridge demo`, which
starts the embedded PostgreSQL (./.bridge/pgdata, or $BRIDGE_EMBEDDED_DIR).
An embedded server keeps running: see `bridge embedded status|url|stop`.

\b
Exit statuses: 0 ok, 1 failed (or a check said no), 2 bad usage, 3 no
database given or a malformed URL, 4 database unreachable (refused,
unknown host, timeout, authentication, unknown database or role), 5 shared
schema missing or different, 6 database lost while the command ran,
130 interrupted. -v prints the traceback of a failure.
"""


class BridgeGroup(click.Group):
    """``click.Group`` whose ``invoke`` turns every exception a command lets through into one
    ``Error: …`` line and a distinct exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as exc:
            if exc.__cause__ is not None:
                _traceback(ctx, exc.__cause__)
            raise
        except KeyboardInterrupt:
            raise fail("interrupted", EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # `bridge jobs list | head`: the reader left, which is not the command's failure.
            # Python's own flush at exit would fail again: point stdout at nothing first.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(1) from None
        except Exception as exc:
            _traceback(ctx, exc)
            state = ctx.find_object(CliContext)
            resolved = state.resolved if state is not None else None
            url = resolved.url if resolved is not None else None
            prefix = state.prefix if state is not None else None
            error = database_error(exc, url=url, prefix=prefix)
            if error is None:
                error = unexpected(exc, url=url, verbose=_verbose(ctx))
            raise error from exc


def _verbose(ctx: click.Context) -> bool:
    return bool(ctx.params.get("verbose"))


def _traceback(ctx: click.Context, exc: BaseException) -> None:
    """With ``-v``, the traceback of ``exc`` on stderr (passwords masked) above its one line."""
    if not _verbose(ctx):
        return
    state = ctx.find_object(CliContext)
    resolved = state.resolved if state is not None else None
    text = "".join(traceback.format_exception(exc))
    click.echo(scrub(text, resolved.url if resolved is not None else None).rstrip(), err=True)


@click.group(cls=BridgeGroup, epilog=EPILOG)
@click.option(
    "--database-url",
    metavar="URL",
    help="PostgreSQL URL. Default: $BRIDGE_DATABASE_URL, else $DATABASE_URL.",
)
@click.option(
    "--embedded",
    is_flag=True,
    help="Use an embedded PostgreSQL in ./.bridge/pgdata ($BRIDGE_EMBEDDED_DIR), started if "
    "needed and left running, for local trials (also BRIDGE_EMBEDDED=1; needs the 'embedded' "
    "extra).",
)
@click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    envvar="BRIDGE_PREFIX",
    show_default=True,
    callback=lambda _ctx, _param, value: _checked_prefix(value),
    help="Oban schema prefix (a PostgreSQL schema; at most 51 bytes, no '%').",
)
@click.option(
    "-v", "--verbose", count=True, help="More logging (-vv for debug); tracebacks on failure."
)
@click.version_option(package_name="oban-bridge")
@click.option(
    "--help-exit-codes",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _print_exit_codes(ctx) if value else None,
    help="List the exit statuses and exit.",
)
@click.pass_context
def main(
    ctx: click.Context, database_url: str | None, embedded: bool, prefix: str, verbose: int
) -> None:
    """Python workers and workflows in an Elixir Oban/Hephaestus system."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Which database a command uses is always announced (one line, password masked).
    logging.getLogger("bridge.db").setLevel(min(level, logging.INFO))
    ctx.obj = CliContext(database_url, prefix, embedded)


def _checked_prefix(value: str) -> str:
    """Refuse a prefix no command could use, once, before any command runs: a name past 51
    bytes makes every insert fail on its notification channel, a '%' every parameterised
    query (``bridge.schema.prefix_problem``)."""
    from bridge.schema import prefix_problem

    problem = prefix_problem(value)
    if problem is not None:
        raise fail(f"--prefix: {problem}", EXIT_USAGE)
    return value


EXIT_CODES = (
    (0, "done"),
    (EXIT_FAILED, "the command ran and could not do what was asked, or a check said no"),
    (EXIT_USAGE, "bad options or arguments"),
    (EXIT_NO_DATABASE, "no database given, or a malformed database URL"),
    (EXIT_UNREACHABLE, "the database could not be reached or refused the connection"),
    (EXIT_SCHEMA, "the shared schema is missing or differs from what bridge needs"),
    (EXIT_DATABASE_LOST, "the connection to the database was lost while the command ran"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)


def _print_exit_codes(ctx: click.Context) -> None:
    for status, meaning in EXIT_CODES:
        click.echo(f"{status:>4}  {meaning}")
    ctx.exit(0)
