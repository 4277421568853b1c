"""The ``bridge`` group itself: the options every command shares, and logging."""

from __future__ import annotations

import logging

import click

from bridge.cli.context import CliContext
from bridge.db import DEFAULT_PREFIX


@click.group()
@click.option(
    "--database-url",
    metavar="URL",
    help="PostgreSQL URL. Default: $BRIDGE_DATABASE_URL, $DATABASE_URL, else an embedded server "
    "in ./.bridge/pgdata.",
)
@click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    envvar="BRIDGE_PREFIX",
    show_default=True,
    help="Oban schema prefix (a PostgreSQL schema).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="oban-bridge")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, prefix: str, verbose: int) -> None:
    """Python workers and workflows in an Elixir Oban/Hephaestus system."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Which database a command uses is always announced (one line, password masked).
    logging.getLogger("bridge.db").setLevel(min(level, logging.INFO))
    ctx.obj = CliContext(database_url, prefix)
