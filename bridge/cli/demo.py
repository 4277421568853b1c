"""``bridge demo``: the whole loop on one database in a few seconds (``demo_run`` does it).

The one command that uses the embedded PostgreSQL without being asked: a first run has no
database yet, and the demo's rows are throwaway. It says so, and at the end says that the
server is still running, where its data is, how to connect and how to stop it.
"""

from __future__ import annotations

import shlex

import click

from bridge import db
from bridge.cli.context import CliContext, pass_ctx
from bridge.cli.embedded import stop_command_for
from bridge.cli.output import fail

EMBEDDED_SOURCES = ("embedded", "--embedded", db.EMBEDDED_ENV)


@click.command("demo")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the jobs.")
@pass_ctx
def demo(ctx: CliContext, timeout: float) -> None:
    """Install the schema, enqueue sample jobs, run a Python worker on them, show the rows.

    With no database URL it uses (and starts) the embedded PostgreSQL in ./.bridge/pgdata and
    leaves it running; `bridge embedded stop` stops it."""
    # Imported here: the demo loads the node and its workers, which --help must not pay for.
    from bridge.cli.demo_run import run_demo

    resolved = ctx.resolve(fallback_embedded=True)
    click.echo(f"database: {resolved.display} ({resolved.origin})")
    rows = run_demo(resolved.url, ctx.prefix, timeout)
    if resolved.source in EMBEDDED_SOURCES:
        _still_running(resolved)
    pending = [
        r
        for r in rows
        if r["queue"] == "demo" and r["state"] not in ("completed", "cancelled", "discarded")
    ]
    if pending:
        raise fail(f"{len(pending)} demo jobs did not finish in {timeout}s")


def _still_running(resolved: db.ResolvedDatabase) -> None:
    directory = db.embedded_dir()
    stop = stop_command_for(directory)
    if stop == "bridge embedded stop":
        look, here = "bridge --embedded jobs list", " (from this directory)"
    else:
        look = f"{db.EMBEDDED_DIR_ENV}={shlex.quote(str(directory))} bridge --embedded jobs list"
        here = ""
    click.echo(
        f"\nThe embedded PostgreSQL is still running, its data in {directory}.\n"
        f"  connect:  psql '{resolved.display}'\n"
        f"  look:     {look}{here}\n"
        f"  stop:     {stop}{here}"
    )
