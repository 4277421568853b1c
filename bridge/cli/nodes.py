"""``bridge nodes``: the live nodes of both languages on the shared database."""

from __future__ import annotations

import click


@click.group("nodes", invoke_without_command=True)
def nodes_group() -> None:
    """Live nodes, Elixir and Python: leadership, queues served, limits, paused or not."""
