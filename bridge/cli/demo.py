"""``bridge demo``: the whole loop on one database in a few seconds (``demo_run`` does it)."""

from __future__ import annotations

import click

from bridge.cli.context import CliContext, pass_ctx
from bridge.cli.output import fail


@click.command("demo")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the jobs.")
@pass_ctx
def demo(ctx: CliContext, timeout: float) -> None:
    """Install the schema, enqueue sample jobs, run a Python worker on them, show the rows."""
    # Imported here: the demo loads the node and its workers, which --help must not pay for.
    from bridge.cli.demo_run import run_demo

    resolved = ctx.resolve()
    click.echo(f"database: {resolved.display} ({resolved.source})")
    rows = run_demo(resolved.url, ctx.prefix, timeout)
    pending = [
        r
        for r in rows
        if r["queue"] == "demo" and r["state"] not in ("completed", "cancelled", "discarded")
    ]
    if pending:
        raise fail(f"{len(pending)} demo jobs did not finish in {timeout}s")
