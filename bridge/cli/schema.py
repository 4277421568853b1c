"""``bridge schema install|verify|show``: the shared tables (oban_jobs, workflow tables).

``install`` checks its own work: after creating what was missing it verifies the schema, so an
existing schema that differs from what bridge needs is reported (exit status 5), never passed
over as "nothing to do".
"""

from __future__ import annotations

from typing import Any

import click
import psycopg

from bridge import schema
from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import EXIT_SCHEMA, EXIT_USAGE, echo_json, exit_failed, fail
from bridge.schema import shown

JSON_HELP = "Print the result as one JSON document (the exit status is the same)."


def _checked_prefix(ctx: CliContext) -> str:
    """The prefix, or a usage error if PostgreSQL cannot hold it as a schema name as given."""
    problem = schema.prefix_problem(ctx.prefix)
    if problem is not None:
        raise fail(f"--prefix: {problem}", EXIT_USAGE)
    return ctx.prefix


def _report_json(
    prefix: str, verified: schema.VerifyReport, created: list[str] | None = None
) -> dict[str, Any]:
    document: dict[str, Any] = {"prefix": prefix}
    if created is not None:
        document["created"] = created
    document["compatible"] = verified.compatible
    document["differences"] = [d.to_dict() for d in verified.differences]
    return document


def _count(items: list[Any], noun: str, as_json: bool) -> str:
    """``3 differences above`` (``in the JSON`` when the list went to stdout as JSON)."""
    plural = noun if len(items) == 1 else noun + ("es" if noun.endswith("h") else "s")
    return f"{len(items)} {plural} {'in the JSON' if as_json else 'above'}"


@click.group("schema")
def schema_group() -> None:
    """Install, verify or print the shared tables (oban_jobs, workflow tables)."""


@schema_group.command("install")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def schema_install(ctx: CliContext, as_json: bool) -> None:
    """Create whatever is missing, then verify; never alter or drop existing objects.

    Exit status 5 if the schema differs from what bridge needs (the differences are listed):
    fix those with the Elixir migrations."""
    prefix = _checked_prefix(ctx)
    blocked: schema.SchemaInstallError | None = None
    with connect(ctx) as conn:
        try:
            created = schema.install(conn, prefix).created
        except schema.SchemaInstallError as exc:
            blocked, created = exc, []  # rolled back: nothing was created
        verified = schema.verify(conn, prefix)
    objects = [item for item in created if item != f"schema {prefix}"]
    if as_json:
        echo_json(_report_json(prefix, verified, created))
    else:
        if len(objects) < len(created):
            click.echo(f"created schema {shown(prefix)}")
        for item in objects:
            click.echo(f"created {item}")
    if blocked is not None and (verified.compatible or not verified.exists):
        raise fail(str(blocked), EXIT_SCHEMA)  # the differences do not explain it
    if not verified.compatible:
        if not as_json:
            for difference in verified.mismatches:
                click.echo(str(difference))
        raise fail(
            f"schema {shown(prefix)} exists but differs from what bridge needs "
            f"({_count(verified.mismatches, 'difference', as_json)}): "
            "fix it with the Elixir migrations",
            EXIT_SCHEMA,
        )
    if not as_json and not created:
        click.echo(f"schema {shown(prefix)}: nothing to do, every object exists")


@schema_group.command("verify")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def schema_verify(ctx: CliContext, as_json: bool) -> None:
    """Compare the live database with what bridge needs; exit 1 on any mismatch.

    Each difference is one line: MISMATCH (bridge would read or write wrongly) or note
    (harmless: a newer migration, an Ecto setting)."""
    prefix = _checked_prefix(ctx)
    with connect(ctx) as conn:
        try:
            report = schema.verify(conn, prefix)
        except psycopg.errors.InsufficientPrivilege as exc:
            # The comparison builds the expected schema in a scratch schema (rolled back): a
            # least-privilege role, the usual worker's, may not. Say so rather than "unexpected".
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise fail(
                f"schema {shown(prefix)} was not compared with what bridge needs ({reason}): "
                "the comparison builds the expected schema in a scratch schema, which needs "
                "CREATE on the database; run `bridge schema verify` as a role that has it (a "
                "worker started as this role checks only that oban_jobs exists)"
            ) from None
    if as_json:
        echo_json(_report_json(prefix, report))
    else:
        for difference in report.differences:
            click.echo(str(difference))
    if not report.exists:
        exit_failed(
            f"schema {shown(prefix)} is NOT compatible: it does not exist; create it with "
            "`bridge schema install` or the Elixir migrations"
        )
    if not report.compatible:
        exit_failed(
            f"schema {shown(prefix)} is NOT compatible "
            f"({_count(report.mismatches, 'mismatch', as_json)}): fix it with the Elixir migrations"
        )
    if not as_json:
        click.echo(f"schema {shown(prefix)} is compatible")


@schema_group.command("show")
@pass_ctx
def schema_show(ctx: CliContext) -> None:
    """Print the SQL that `install` would run on an empty database (for psql -f)."""
    click.echo(schema.render_all(_checked_prefix(ctx)))
