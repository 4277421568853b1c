"""``bridge schema install|verify|show``: the shared tables (oban_jobs, workflow tables)."""

from __future__ import annotations

import click

from bridge import schema
from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import exit_failed, fail


@click.group("schema")
def schema_group() -> None:
    """Install, verify or print the shared tables (oban_jobs, workflow tables)."""


@schema_group.command("install")
@pass_ctx
def schema_install(ctx: CliContext) -> None:
    """Create whatever is missing; never alter or drop existing objects."""
    with connect(ctx) as conn:
        try:
            report = schema.install(conn, ctx.prefix)
        except schema.SchemaInstallError as exc:
            raise fail(str(exc)) from exc
    if not report.created:
        click.echo(f"schema {ctx.prefix!r}: nothing to do, every object exists")
    for item in report.created:
        click.echo(f"created {item}")


@schema_group.command("verify")
@pass_ctx
def schema_verify(ctx: CliContext) -> None:
    """Compare the live database with what bridge needs; exit 1 on any mismatch."""
    with connect(ctx) as conn:
        report = schema.verify(conn, ctx.prefix)
    for difference in report.differences:
        click.echo(str(difference))
    if not report.compatible:
        exit_failed(f"schema {ctx.prefix!r} is NOT compatible")
    click.echo(f"schema {ctx.prefix!r} is compatible")


@schema_group.command("show")
@pass_ctx
def schema_show(ctx: CliContext) -> None:
    """Print the SQL that `install` would run on an empty database."""
    click.echo(schema.render_all(ctx.prefix))
