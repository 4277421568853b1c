"""``bridge queues pause|resume|scale|start|stop``: Oban signals that every node obeys, Elixir
and Python alike (``bridge.jobs.client.admin``)."""

from __future__ import annotations

from typing import Any

import click

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import bad_parameter


@click.group("queues")
def queues_group() -> None:
    """Signal queues on every node, Elixir and Python (pause/resume/scale/start/stop)."""


def _signal_command(action: str) -> Any:
    @queues_group.command(action)
    @click.argument("queue")
    @click.option("--node", default=None, help="Only this node (ident <instance>.<node>).")
    @click.option(
        "--instance",
        default="Oban",
        show_default=True,
        help="Oban instance name used in a targeted ident.",
    )
    @click.option("--limit", type=int, default=None, help="For scale/start.")
    @pass_ctx
    def command(
        ctx: CliContext, queue: str, node: str | None, instance: str, limit: int | None
    ) -> None:
        from bridge.jobs.client import admin as ops

        try:
            payload = ops.signal_payload(action, queue, node=node, instance=instance, limit=limit)
        except ValueError as exc:
            raise bad_parameter(str(exc)) from exc
        with connect(ctx) as conn:
            ops.send_signal(conn, ctx.prefix, payload)
        click.echo(f"sent {payload}")

    command.__doc__ = f"Send a {action} signal for QUEUE ('*' for all, pause/resume only)."
    return command


for _action in ("pause", "resume", "scale", "start", "stop"):
    _signal_command(_action)
