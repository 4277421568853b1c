"""``bridge doctor``: every interop hazard a live shared database shows, each with its fix.

The checks live in :mod:`bridge.doctor`; this module turns options into a call and the report
into lines (or one JSON document) and an exit status: 0 nothing found (notes at most), 1 an
error or a warning, 5 the shared schema missing or different, as for every command.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import psycopg

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.nodes import listen, wait_option
from bridge.cli.output import EXIT_FAILED, EXIT_SCHEMA, bad_parameter, echo_json
from bridge.cli.startup import app_dir_option

DOCTOR_WAIT = 2.0

EPILOG = (
    "Checks: the schema (bridge schema verify, and the migration versions); the clock of the "
    "database against this host's (over 1 s is a warning); a NOTIFY round trip on "
    "<prefix>.oban_doctor (2 s); the live nodes, from sonar pings, gossip check-ins and "
    "oban_peers heard while listening: a queue served by both languages, available or "
    "retryable jobs no live node of their worker's language serves, jobs executing on a node "
    "not heard alive; workflow instances stuck as `bridge workflows repair` finds them; "
    "delegated-step jobs discarded without their failure policy; Python-owned workflows an "
    "Elixir node needs a declaration for (checked against the rows with --workflows). "
    "Each finding is one line: 'error|warning|note: what; fix: what to do', then a summary "
    "line. Exit status: 0 nothing found but notes, 1 an error or a warning, 5 the schema "
    "missing or different (bridge --help-exit-codes)."
)


@click.command("doctor", epilog=EPILOG)
@wait_option(DOCTOR_WAIT, "sonar pings and gossip check-ins (nodes ping every 15 s)")
@click.option(
    "--workflows",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="Module defining the Python workflows whose generated Elixir declarations the "
    "instance rows are checked against (repeatable).",
)
@app_dir_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"prefix", "findings": [{check, severity, what, fix, details}], "counts", '
    '"facts", "exit_status"} instead of lines (the exit status is the same).',
)
@pass_ctx
def doctor_command(
    ctx: CliContext,
    wait: float,
    modules: tuple[str, ...],
    app_dirs: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Name every interop hazard on the shared database, each with its fix.

    Reads only: it listens for the live nodes, reads the schema, jobs and workflow rows, and
    sends one NOTIFY to itself."""
    from bridge.doctor import examine

    definitions = _workflows(modules, app_dirs) if modules else None

    @contextmanager
    def opened() -> Iterator[psycopg.Connection[Any]]:
        with connect(ctx) as conn:
            yield conn

    with listen(wait, "sonar pings and check-ins"):
        report = examine(
            opened, ctx.prefix, wait=wait, workflow_defs=definitions, workflow_modules=modules
        )
    if as_json:
        echo_json(report.to_dict(), lenient=True)
    else:
        for finding in report.findings:
            click.echo(finding.line())
        click.echo(report.summary())
    status = report.exit_status
    assert status in (0, EXIT_FAILED, EXIT_SCHEMA)
    if status:
        raise SystemExit(status)


def _workflows(modules: tuple[str, ...], app_dirs: tuple[Path, ...]) -> list[Any]:
    from bridge.cli.startup import import_user_modules
    from bridge.workflows.model.definition import WorkflowError
    from bridge.workflows.serving import load_workflows

    import_user_modules(modules, app_dirs, kind="workflows")
    try:
        return list(load_workflows(modules))
    except WorkflowError as exc:
        raise bad_parameter(str(exc), "--workflows") from exc
