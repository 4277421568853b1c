"""Which jobs a test's filters match, and why the others do not: pure functions.

The rules are ``Oban.Testing``'s (2.23.1): ``args`` and ``meta`` match by containment, key by
key and recursively into objects, where the value ``"_"`` (Oban's ``:_``) matches any value of
a key that is present and a list matches only an equal list; every other field matches by
equality (``tags`` the whole list); a timestamp matches within ``delta`` seconds either side
(1 by default). The failure message lists the jobs that came nearest, each with what differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from bridge.jobs.client.job import Job

# Oban's wildcard: ``args: %{id: :_}`` matches any job whose args have an ``id``.
ANY = "_"

# "Enqueued" as Oban.Testing means it: the states a job waits in before it runs.
ENQUEUED_STATES = ("available", "scheduled", "suspended")

JSON_FIELDS = ("args", "meta")
TIMESTAMP_FIELDS = (
    "scheduled_at",
    "inserted_at",
    "attempted_at",
    "completed_at",
    "discarded_at",
    "cancelled_at",
)
EQUAL_FIELDS = ("worker", "queue", "priority", "tags", "max_attempts", "attempt")
FIELDS = (*EQUAL_FIELDS[:2], *JSON_FIELDS, *EQUAL_FIELDS[2:], *TIMESTAMP_FIELDS)

# How many of the nearest jobs a failure message lists.
NEAREST = 5


def contains(expected: Any, actual: Any, path: str = "") -> list[str]:
    """What in ``actual`` differs from ``expected`` (Oban's ``contains?``); [] when it holds."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return [f"{path or 'value'} is {_short(actual)}, not an object"]
        problems: list[str] = []
        for key, value in expected.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                problems.append(f"{where} is missing")
            elif value == ANY:
                continue
            else:
                problems.extend(contains(value, actual[key], where))
        return problems
    if _same(expected, actual):
        return []
    return [f"{path or 'value'} is {_short(actual)}, expected {_short(expected)}"]


def _same(expected: Any, actual: Any) -> bool:
    """Equality as Elixir's ``==`` sees decoded JSON: 1 == 1.0, but True is not 1."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, list | tuple) and isinstance(actual, list | tuple):
        return len(expected) == len(actual) and all(
            not contains(e, a) for e, a in zip(expected, actual, strict=True)
        )
    return bool(expected == actual)


def differences(job: Job, filters: Mapping[str, Any], delta: float = 1.0) -> list[str]:
    """Every way ``job`` fails ``filters`` (normalised by :func:`normalise_filters`)."""
    problems: list[str] = []
    for name, expected in filters.items():
        actual = getattr(job, name)
        if name in JSON_FIELDS:
            problems.extend(contains(expected, actual, name))
        elif name in TIMESTAMP_FIELDS:
            if actual is None or abs(actual - expected) > timedelta(seconds=delta):
                problems.append(
                    f"{name} is {_stamp(actual)}, expected {_stamp(expected)} ± {delta}s"
                )
        elif not _same(expected, actual):
            problems.append(f"{name} is {_short(actual)}, expected {_short(expected)}")
    return problems


def normalise_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """Check the names and put values in the form rows hold: a ``@worker`` class as its name,
    datetimes as naive UTC, tags as Oban stores them."""
    from bridge.jobs.client.job import normalise_tags
    from bridge.testing.perform import naive_utc, worker_spec

    out: dict[str, Any] = {}
    for name, value in filters.items():
        if name not in FIELDS:
            raise TypeError(f"cannot match jobs on {name!r}; the fields are {', '.join(FIELDS)}")
        if name == "worker" and not isinstance(value, str):
            value = worker_spec(value).name
        elif name in TIMESTAMP_FIELDS:
            if not isinstance(value, datetime):
                raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
            value = naive_utc(value)
        elif name == "tags":
            value = normalise_tags(list(value))
        elif name in JSON_FIELDS and not isinstance(value, Mapping):
            raise TypeError(f"{name} must be a dict to match by containment")
        out[name] = value
    return out


def states_of(state: str | Sequence[str] | None) -> tuple[str, ...]:
    """The states to look in: Oban's "enqueued" ones unless the test names others."""
    if state is None:
        return ENQUEUED_STATES
    return (state,) if isinstance(state, str) else tuple(state)


def describe_filters(filters: Mapping[str, Any], delta: float) -> str:
    parts = []
    for name, value in filters.items():
        shown = _stamp(value) + f" ± {delta}s" if isinstance(value, datetime) else _short(value)
        parts.append(f"{name}={shown}")
    return ", ".join(parts) or "(any job)"


def describe_job(job: Job) -> str:
    """One line for a job in a failure message."""
    text = (
        f"#{job.id} {job.state} {job.worker} queue={job.queue} args={_short(job.args)}"
        f" scheduled_at={_stamp(job.scheduled_at)}"
    )
    if job.meta:
        text += f" meta={_short(job.meta)}"
    if job.tags:
        text += f" tags={job.tags}"
    if job.priority:
        text += f" priority={job.priority}"
    return text


def nearest(
    jobs: Sequence[Job], filters: Mapping[str, Any], delta: float, limit: int = NEAREST
) -> list[tuple[Job, list[str]]]:
    """The ``limit`` jobs with the fewest differences, newest first among equals."""
    scored = [(job, differences(job, filters, delta)) for job in jobs]
    scored.sort(key=lambda item: (len(item[1]), -(item[0].id or 0)))
    return scored[:limit]


def absent_message(
    filters: Mapping[str, Any],
    delta: float,
    states: Sequence[str],
    prefix: str,
    jobs: Sequence[Job],
    within: float | None = None,
) -> str:
    """assert_enqueued's failure: what was asked, and the nearest jobs with what differs."""
    wait = f" within {within:g}s" if within else ""
    lines = [
        "Expected a job matching:",
        f"    {describe_filters(filters, delta)}",
        f"to be enqueued{wait} ({', '.join(states)} in {prefix}.oban_jobs).",
    ]
    if not jobs:
        lines.append(f"No job is {' or '.join(states)} in {prefix}.oban_jobs.")
        return "\n".join(lines)
    close = nearest(jobs, filters, delta)
    lines.append(f"Nearest of the {len(jobs)} there:")
    for job, problems in close:
        lines.append(f"    {describe_job(job)}")
        lines.append(f"        differs: {'; '.join(problems)}")
    return "\n".join(lines)


def present_message(
    filters: Mapping[str, Any],
    delta: float,
    states: Sequence[str],
    prefix: str,
    matches: Sequence[Job],
    within: float | None = None,
) -> str:
    """refute_enqueued's failure: what was asked, and the jobs that match it."""
    wait = f" within {within:g}s" if within else ""
    lines = [
        "Expected no job matching:",
        f"    {describe_filters(filters, delta)}",
        f"to be enqueued{wait} ({', '.join(states)} in {prefix}.oban_jobs); found {len(matches)}:",
    ]
    lines.extend(f"    {describe_job(job)}" for job in matches[:NEAREST])
    if len(matches) > NEAREST:
        lines.append(f"    ... and {len(matches) - NEAREST} more")
    return "\n".join(lines)


def _stamp(value: datetime | None) -> str:
    return "None" if value is None else value.isoformat(sep=" ", timespec="microseconds")


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
