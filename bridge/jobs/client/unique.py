"""Unique jobs: Oban's semantics (``Oban.Job`` options, the Basic engine's conflict query), plus
a protocol that keeps a Python insert and a concurrent Elixir insert from both running.

What Oban decides, mirrored exactly: ``fields`` (default ``args, queue, worker``; ``meta`` may be
added), ``keys`` (restrict args/meta to those keys, compared with ``@>``; without keys the maps
must be equal, ``@>`` and ``<@``; an empty restriction matches only empty maps, ``<@``),
``period`` in seconds (default 60, or ``"infinity"``) against ``inserted_at`` or
``scheduled_at``, ``states`` (a group — ``successful`` by default, ``all``, ``incomplete``,
``scheduled`` — or a list). On conflict the existing job comes back marked ``conflict``, after
``replace`` has updated the fields listed for its state.

Why more is needed: Oban serialises its own unique inserts with
``pg_try_advisory_xact_lock(phash2(prefix) + phash2([keys, states, <Ecto dynamic>]))``; the last
term holds closures and source locations, so no other language can take the same lock. See
``docs/uniqueness.md`` for the protocol and exactly what it guarantees.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from bridge.jobs import queries
from bridge.wire import jsonfmt

STATES = (
    "suspended",
    "scheduled",
    "available",
    "executing",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
)
STATE_GROUPS = {
    "all": STATES,
    "incomplete": ("suspended", "available", "scheduled", "executing", "retryable"),
    "scheduled": ("scheduled",),
    "successful": ("suspended", "available", "scheduled", "executing", "retryable", "completed"),
}
FIELDS = ("args", "queue", "worker", "meta")
TIMESTAMPS = ("inserted_at", "scheduled_at")
TIME_UNITS = {
    "second": 1,
    "seconds": 1,
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
    "week": 604800,
    "weeks": 604800,
}
REPLACEABLE = (
    "args",
    "max_attempts",
    "meta",
    "priority",
    "queue",
    "scheduled_at",
    "tags",
    "worker",
)


class UniqueOptionsError(ValueError):
    """Options Oban's ``Job.new/2`` would reject; the message follows Oban's wording."""


@dataclass(frozen=True)
class UniqueOptions:
    fields: tuple[str, ...] = ("args", "queue", "worker")
    keys: tuple[str, ...] = ()
    period: int | None = 60  # seconds; None is :infinity
    states: tuple[str, ...] = STATE_GROUPS["successful"]
    timestamp: str = "inserted_at"
    replace: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: Any) -> UniqueOptions | None:
        """From ``True`` (period infinity, as Oban's ``unique: true``), ``None``/``False``, a
        dict of options, or an instance."""
        if spec is None or spec is False:
            return None
        if isinstance(spec, UniqueOptions):
            return spec
        if spec is True:
            return cls(period=None)
        if not isinstance(spec, dict):
            raise UniqueOptionsError("invalid unique options")
        unknown = set(spec) - {"fields", "keys", "period", "states", "timestamp", "replace"}
        if unknown:
            raise UniqueOptionsError(f"unknown option, {sorted(unknown)[0]}")
        fields = tuple(spec.get("fields", cls.fields))
        if not fields or not all(f in FIELDS for f in fields):
            raise UniqueOptionsError(f"expected :fields {list(fields)} to overlap {list(FIELDS)}")
        keys = tuple(str(k) for k in spec.get("keys", ()))
        states_spec = spec.get("states", "successful")
        if isinstance(states_spec, str):
            if states_spec not in STATE_GROUPS:
                raise UniqueOptionsError(
                    f"expected :states {states_spec} to be one of {sorted(STATE_GROUPS)}"
                )
            states = STATE_GROUPS[states_spec]
        else:
            states = tuple(states_spec)
            if not states or not all(s in STATES for s in states):
                raise UniqueOptionsError(f"expected :states {list(states)} to overlap {STATES}")
        timestamp = spec.get("timestamp", "inserted_at")
        if timestamp not in TIMESTAMPS:
            raise UniqueOptionsError(f"expected :timestamp to be one of {list(TIMESTAMPS)}")
        replace: dict[str, tuple[str, ...]] = {}
        for state, names in dict(spec.get("replace", {})).items():
            if state not in STATES or not all(n in REPLACEABLE for n in names):
                raise UniqueOptionsError(f"invalid replace option for {state!r}: {names!r}")
            replace[state] = tuple(names)
        return cls(fields, keys, cast_period(spec.get("period", 60)), states, timestamp, replace)


def cast_period(period: Any) -> int | None:
    if period in ("infinity", float("inf")):
        return None
    if isinstance(period, tuple) and len(period) == 2:
        amount, unit = period
        if not (isinstance(amount, int) and amount > 0 and unit in TIME_UNITS):
            raise UniqueOptionsError(
                f"expected :period to be positive and unit to be in {list(TIME_UNITS)}"
            )
        return amount * TIME_UNITS[unit]
    if isinstance(period, bool) or not isinstance(period, int) or period <= 0:
        raise UniqueOptionsError("expected :period to be a positive integer")
    return period


def restricted(value: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k in keys} if keys else value


def conflict_query(
    prefix: str,
    options: UniqueOptions,
    job: Any,
    now: datetime,
    *,
    exclude_id: int | None = None,
    limit: int = 1,
) -> tuple[sql.Composed, dict[str, Any]]:
    """The Basic engine's lookup of an existing duplicate: same predicate, ``LIMIT 1``.

    With ``exclude_id`` (the post-commit check of our own row) rows held ``suspended`` by
    another bridge inserter count too, and all matches come back in id order.
    """
    states = list(options.states)
    if exclude_id is not None and "suspended" not in states:
        states.append("suspended")
    clauses: list[sql.Composable] = [sql.SQL("state::text = ANY(%(states)s)")]
    params: dict[str, Any] = {"states": states, "limit": limit}
    if exclude_id is not None:
        clauses.append(sql.SQL("id <> %(exclude_id)s"))
        params["exclude_id"] = exclude_id
    if options.period is not None:
        clauses.append(sql.SQL("{} >= %(since)s").format(sql.Identifier(options.timestamp)))
        params["since"] = now - timedelta(seconds=options.period)
    for name in options.fields:
        if name in ("args", "meta"):
            value = restricted(getattr(job, name), options.keys)
            params[name] = jsonfmt.dumps(value)
            column = sql.Identifier(name)
            if not value:
                clauses.append(sql.SQL("{} <@ %({})s::jsonb").format(column, sql.SQL(name)))
            elif not options.keys:
                clauses.append(
                    sql.SQL("{c} @> %({n})s::jsonb AND {c} <@ %({n})s::jsonb").format(
                        c=column, n=sql.SQL(name)
                    )
                )
            else:
                clauses.append(sql.SQL("{} @> %({})s::jsonb").format(column, sql.SQL(name)))
        else:
            clauses.append(sql.SQL("{} = %({})s").format(sql.Identifier(name), sql.SQL(name)))
            params[name] = getattr(job, name)
    query = sql.SQL("SELECT {} FROM {}.oban_jobs AS j WHERE {} ORDER BY id LIMIT %(limit)s").format(
        queries.JOB_AS_TEXT, sql.Identifier(prefix), sql.SQL(" AND ").join(clauses)
    )
    return query, params


def replace_update(
    prefix: str, options: UniqueOptions, existing_state: str, job: Any
) -> tuple[sql.Composed, dict[str, Any]] | None:
    """``replace``: overwrite the listed fields of the existing job, per its state."""
    names = options.replace.get(existing_state, ())
    if not names:
        return None
    sets: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for name in names:
        value = getattr(job, name)
        if name in ("args", "meta"):
            value = jsonfmt.dumps(value)
            sets.append(sql.SQL("{} = %({})s::jsonb").format(sql.Identifier(name), sql.SQL(name)))
        else:
            sets.append(sql.SQL("{} = %({})s").format(sql.Identifier(name), sql.SQL(name)))
        params[name] = value
    query = sql.SQL("UPDATE {}.oban_jobs AS j SET {} WHERE j.id = %(id)s RETURNING {}").format(
        sql.Identifier(prefix), sql.SQL(", ").join(sets), queries.JOB_AS_TEXT
    )
    return query, params


def lock_key(prefix: str, options: UniqueOptions, job: Any) -> int:
    """Our own advisory-lock key for one unique identity (Python inserters serialise on it).

    A stable 63-bit hash of the prefix, the options and the compared values; it is not Oban's
    key (which cannot be computed outside the BEAM), so the cross-language part of the protocol
    does not rely on it.
    """
    identity = {
        "prefix": prefix,
        "fields": options.fields,
        "keys": options.keys,
        "states": options.states,
        "values": {
            name: restricted(getattr(job, name), options.keys)
            if name in ("args", "meta")
            else getattr(job, name)
            for name in options.fields
        },
    }
    digest = hashlib.blake2b(jsonfmt.dumps(identity, sort_keys=True).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)
