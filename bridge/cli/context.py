"""What every command shares: the database, resolved once and only on first use, and the
schema prefix.

Resolving lazily is what keeps ``bridge --help`` and ``bridge schema show`` from ever starting an
embedded server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import click
import psycopg

from bridge import db
from bridge.cli.output import fail


@dataclass
class CliContext:
    """The root group's ``--database-url`` and ``--prefix``, handed to commands by ``pass_ctx``."""

    database_url: str | None
    prefix: str
    _resolved: db.ResolvedDatabase | None = field(default=None, init=False)

    def resolve(self) -> db.ResolvedDatabase:
        if self._resolved is None:
            try:
                self._resolved = db.resolve_database_url(self.database_url)
            except db.DatabaseConfigError as exc:
                raise fail(str(exc)) from exc
        return self._resolved

    @property
    def url(self) -> str:
        return self.resolve().url


pass_ctx = click.make_pass_decorator(CliContext)


def connect(ctx: CliContext) -> psycopg.Connection[Any]:
    """The autocommit connection every command opens the same way (a ``with`` closes it)."""
    return db.connect(ctx.url, autocommit=True)
