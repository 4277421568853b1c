"""The ``bridge`` command line.

The database is resolved lazily, only by commands that need one, so ``bridge schema show`` and
``--help`` never start an embedded server.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import click

from bridge import schema
from bridge.db import DEFAULT_PREFIX, DatabaseConfigError, ResolvedDatabase, resolve_database_url


@dataclass
class CliContext:
    database_url: str | None
    prefix: str
    _resolved: ResolvedDatabase | None = field(default=None, init=False)

    def resolve(self) -> ResolvedDatabase:
        if self._resolved is None:
            try:
                self._resolved = resolve_database_url(self.database_url)
            except DatabaseConfigError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._resolved

    @property
    def url(self) -> str:
        return self.resolve().url


pass_ctx = click.make_pass_decorator(CliContext)


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
    level = logging.WARNING - 10 * min(verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = CliContext(database_url, prefix)


@main.group("schema")
def schema_group() -> None:
    """Install, verify or print the shared tables (oban_jobs, workflow tables)."""


@schema_group.command("install")
@pass_ctx
def schema_install(ctx: CliContext) -> None:
    """Create whatever is missing; never alter or drop existing objects."""
    from bridge.db import connect

    with connect(ctx.url, autocommit=True) as conn:
        try:
            report = schema.install(conn, ctx.prefix)
        except schema.SchemaInstallError as exc:
            raise click.ClickException(str(exc)) from exc
    if not report.created:
        click.echo(f"schema {ctx.prefix!r}: nothing to do, every object exists")
    for item in report.created:
        click.echo(f"created {item}")


@schema_group.command("verify")
@pass_ctx
def schema_verify(ctx: CliContext) -> None:
    """Compare the live database with what bridge needs; exit 1 on any mismatch."""
    from bridge.db import connect

    with connect(ctx.url, autocommit=True) as conn:
        report = schema.verify(conn, ctx.prefix)
    for difference in report.differences:
        click.echo(str(difference))
    if report.compatible:
        click.echo(f"schema {ctx.prefix!r} is compatible")
    else:
        click.echo(f"schema {ctx.prefix!r} is NOT compatible", err=True)
        sys.exit(1)


@schema_group.command("show")
@pass_ctx
def schema_show(ctx: CliContext) -> None:
    """Print the SQL that `install` would run on an empty database."""
    click.echo(schema.render_all(ctx.prefix))
