"""What every command shares: the database, resolved once and only on first use, and the
schema prefix.

Resolving lazily is what keeps ``bridge --help`` and ``bridge schema show`` from ever needing
a database; resolving by one rule (:func:`bridge.db.resolve_database_url`) is what makes a
command without a database refuse in one line instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import click
import psycopg

from bridge import db
from bridge.cli.embedded import open_embedded
from bridge.cli.output import database_error


@dataclass
class CliContext:
    """The root group's ``--database-url``, ``--embedded`` and ``--prefix``, handed to
    commands by ``pass_ctx``."""

    database_url: str | None
    prefix: str
    embedded: bool = False
    _resolved: db.ResolvedDatabase | None = field(default=None, init=False)

    def resolve(self, *, fallback_embedded: bool = False) -> db.ResolvedDatabase:
        """The database this command uses; ``fallback_embedded`` (the demo) starts the embedded
        server when none is given instead of refusing."""
        if self._resolved is None:
            try:
                self._resolved = db.resolve_database_url(
                    self.database_url,
                    embedded=self.embedded,
                    fallback_embedded=fallback_embedded,
                    start=open_embedded,
                )
            except db.DatabaseConfigError as exc:
                raise _as_command_error(exc) from exc
        return self._resolved

    @property
    def resolved(self) -> db.ResolvedDatabase | None:
        """The database if one was resolved already (error messages name it), else ``None``."""
        return self._resolved

    @property
    def url(self) -> str:
        return self.resolve().url


pass_ctx = click.make_pass_decorator(CliContext)


def connect(ctx: CliContext) -> psycopg.Connection[Any]:
    """The autocommit connection every command opens the same way (a ``with`` closes it).

    A failure is one line saying what is wrong and what to do, with its own exit status."""
    url = ctx.url
    try:
        return db.connect(url, autocommit=True)
    except db.DatabaseConfigError as exc:
        raise _as_command_error(exc) from exc


def _as_command_error(exc: db.DatabaseConfigError) -> click.ClickException:
    error = database_error(exc)
    assert error is not None  # every DatabaseConfigError has its line and status
    return error
