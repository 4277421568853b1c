"""``bridge embedded …``: see, connect to and stop the embedded PostgreSQL of a directory."""

from __future__ import annotations

import click


@click.group("embedded")
def embedded_group() -> None:
    """The embedded PostgreSQL that `bridge demo` (or --embedded) starts in ./.bridge/pgdata."""
