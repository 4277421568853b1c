"""Which database a command uses, by one rule an operator can predict.

Every command and test finds its database the same way, here (the README's "Which
database"):

1. ``--database-url URL`` or ``--embedded`` (not both);
2. ``BRIDGE_DATABASE_URL`` or ``BRIDGE_EMBEDDED=1`` (not both);
3. ``DATABASE_URL``;
4. none: the command refuses (:class:`NoDatabaseError`). Only ``bridge demo`` falls back to
   the embedded server, because running on a throwaway database is what a demo is for.

Two choices at the same level are refused (:class:`DatabaseChoiceError`) rather than guessed
between. URLs are validated when resolved, so a malformed one is named, with where it came
from, before anything connects.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bridge.db.embedded import _shown_dir, embedded_dir, start_embedded
from bridge.db.errors import URL_SHAPE, DatabaseChoiceError, NoDatabaseError
from bridge.db.masking import _first_line, redact_url, scrub

EMBEDDED_ENV = "BRIDGE_EMBEDDED"
URL_ENV_VARS = ("BRIDGE_DATABASE_URL", "DATABASE_URL")


@dataclass(frozen=True)
class ResolvedDatabase:
    """A database URL and where it came from, so the one line that names it can say so."""

    url: str
    source: str  # "--database-url", an environment variable's name, "--embedded", "embedded"

    @property
    def display(self) -> str:
        return redact_url(self.url)

    @property
    def origin(self) -> str:
        """``from --database-url``, ``from $DATABASE_URL``, ``embedded (…)``: for one line."""
        if self.source == "embedded":
            return "embedded: no database URL given"
        if self.source == "--embedded":
            return "embedded: --embedded"
        if self.source == EMBEDDED_ENV:
            return f"embedded: ${EMBEDDED_ENV}"
        if self.source.startswith("--"):
            return f"from {self.source}"
        return f"from ${self.source}"


def resolve_database_url(
    explicit: str | None = None,
    *,
    embedded: bool = False,
    fallback_embedded: bool = False,
    start: Callable[[], str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResolvedDatabase:
    """Pick the database by the rule in this module's docstring.

    ``embedded`` is the ``--embedded`` flag, ``fallback_embedded`` lets a command (the demo)
    use the embedded server when nothing else is given, and ``start`` starts it and returns its
    URL (the command line passes one that announces it; default :func:`start_embedded`)."""
    env = os.environ if environ is None else environ

    def embedded_url(source: str) -> ResolvedDatabase:
        url = start() if start is not None else start_embedded().url_or_fail()
        return ResolvedDatabase(url, source)

    if explicit and embedded:
        raise DatabaseChoiceError("--database-url and --embedded both given: pass one of them")
    if explicit:
        return ResolvedDatabase(validate_url(explicit, "--database-url"), "--database-url")
    if embedded:
        return embedded_url("--embedded")
    bridge_url = env.get(URL_ENV_VARS[0])
    env_embedded = _flag(env.get(EMBEDDED_ENV))
    if bridge_url and env_embedded:
        raise DatabaseChoiceError(
            f"{URL_ENV_VARS[0]} and {EMBEDDED_ENV}=1 are both set: unset one of them"
        )
    if bridge_url:
        return ResolvedDatabase(validate_url(bridge_url, URL_ENV_VARS[0]), URL_ENV_VARS[0])
    if env_embedded:
        return embedded_url(EMBEDDED_ENV)
    url = env.get(URL_ENV_VARS[1])
    if url:
        return ResolvedDatabase(validate_url(url, URL_ENV_VARS[1]), URL_ENV_VARS[1])
    if fallback_embedded:
        return embedded_url("embedded")
    raise NoDatabaseError(
        "no database given: pass --database-url URL or set BRIDGE_DATABASE_URL "
        "(or DATABASE_URL); for a local trial add --embedded (an embedded PostgreSQL in "
        f"{_shown_dir(embedded_dir(environ=env), env)})"
    )


def validate_url(url: str, source: str) -> str:
    """``url`` if libpq can parse it; else :class:`NoDatabaseError` naming where it came from."""
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise NoDatabaseError(
            f"malformed database URL from {source}: {_first_line(scrub(str(exc), url))}; "
            f"expected {URL_SHAPE}"
        ) from None
    return url


def _flag(value: str | None) -> bool:
    if value is None or value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    raise DatabaseChoiceError(f"{EMBEDDED_ENV} must be 1 or 0, got {value!r}")
