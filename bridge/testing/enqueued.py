"""Asserting on enqueued jobs against the real ``oban_jobs`` table.

``all_enqueued``, ``assert_enqueued`` and ``refute_enqueued`` as ``Oban.Testing`` has them:
jobs in the states a job waits in (``available``, ``scheduled``, ``suspended``), newest first,
matched by :mod:`bridge.testing.matching`. Unlike Oban, ``state=`` replaces that set (Oban ANDs
it, so only those three ever match), so a test can also look for ``completed`` jobs. Each takes a
connection (its transaction is read as it stands) or a URL, and a prefix. With ``timeout``
(seconds), assert waits for a match and refute watches for one, as Oban's timeout forms do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from bridge.db import DEFAULT_PREFIX
from bridge.jobs import queries
from bridge.jobs.client.job import Job, UndecodableRowError
from bridge.testing import matching
from bridge.wire.timefmt import utc_now

# Oban.Testing polls every 10 ms while it waits.
POLL_SECONDS = 0.01

Source = psycopg.Connection[Any] | str
AsyncSource = psycopg.AsyncConnection[Any] | str


def _query(prefix: str) -> sql.Composed:
    return sql.SQL(
        "SELECT {columns} FROM {prefix}.oban_jobs AS j"
        " WHERE j.state::text = ANY(%(states)s) ORDER BY j.id DESC"
    ).format(columns=queries.JOB_AS_TEXT, prefix=sql.Identifier(prefix))


def _decode(rows: Sequence[dict[str, Any]]) -> list[Job]:
    jobs = []
    for row in rows:
        try:
            jobs.append(Job.from_text_row(row))
        except UndecodableRowError as exc:  # shown with the columns that did decode
            jobs.append(exc.job)
    return jobs


def _rows(source: Source, prefix: str, states: Sequence[str]) -> list[Job]:
    from psycopg.rows import dict_row

    params = {"states": list(states)}
    if isinstance(source, str):
        with psycopg.connect(source, autocommit=True) as conn:
            cursor = conn.cursor(row_factory=dict_row)
            return _decode(cursor.execute(_query(prefix), params).fetchall())
    cursor = source.cursor(row_factory=dict_row)
    return _decode(cursor.execute(_query(prefix), params).fetchall())


async def _rows_async(source: AsyncSource, prefix: str, states: Sequence[str]) -> list[Job]:
    from psycopg.rows import dict_row

    params = {"states": list(states)}
    if isinstance(source, str):
        async with await psycopg.AsyncConnection.connect(source, autocommit=True) as conn:
            cursor = conn.cursor(row_factory=dict_row)
            return _decode(await (await cursor.execute(_query(prefix), params)).fetchall())
    cursor = source.cursor(row_factory=dict_row)
    return _decode(await (await cursor.execute(_query(prefix), params)).fetchall())


class _Ask:
    """One call's filters, normalised once."""

    def __init__(self, filters: dict[str, Any], delta: float) -> None:
        state = filters.pop("state", None)
        scheduled_in = filters.pop("scheduled_in", None)
        if scheduled_in is not None:
            seconds = (
                scheduled_in.total_seconds()
                if isinstance(scheduled_in, timedelta)
                else (scheduled_in)
            )
            filters["scheduled_at"] = utc_now() + timedelta(seconds=seconds)
        self.states = matching.states_of(state)
        self.filters = matching.normalise_filters(filters)
        self.delta = delta

    def matches(self, jobs: Sequence[Job]) -> list[Job]:
        return [job for job in jobs if not matching.differences(job, self.filters, self.delta)]


def all_enqueued(
    source: Source, *, prefix: str = DEFAULT_PREFIX, delta: float = 1.0, **filters: Any
) -> list[Job]:
    """The enqueued jobs matching ``filters`` (worker, queue, args, meta, tags, priority,
    scheduled_at or scheduled_in, state, ...), newest first."""
    ask = _Ask(filters, delta)
    return ask.matches(_rows(source, prefix, ask.states))


def assert_enqueued(
    source: Source,
    *,
    prefix: str = DEFAULT_PREFIX,
    delta: float = 1.0,
    timeout: float = 0,
    **filters: Any,
) -> Job:
    """The newest job matching ``filters``; an AssertionError listing the nearest jobs when
    none does (within ``timeout`` seconds)."""
    ask = _Ask(filters, delta)
    deadline = time.monotonic() + timeout
    while True:
        jobs = _rows(source, prefix, ask.states)
        found = ask.matches(jobs)
        if found:
            return found[0]
        if time.monotonic() >= deadline:
            raise AssertionError(
                matching.absent_message(ask.filters, delta, ask.states, prefix, jobs, timeout)
            )
        time.sleep(POLL_SECONDS)


def refute_enqueued(
    source: Source,
    *,
    prefix: str = DEFAULT_PREFIX,
    delta: float = 1.0,
    timeout: float = 0,
    **filters: Any,
) -> None:
    """An AssertionError listing the matching jobs if any job matches ``filters`` (now, or at
    any point within ``timeout`` seconds)."""
    ask = _Ask(filters, delta)
    deadline = time.monotonic() + timeout
    while True:
        found = ask.matches(_rows(source, prefix, ask.states))
        if found:
            raise AssertionError(
                matching.present_message(ask.filters, delta, ask.states, prefix, found, timeout)
            )
        if time.monotonic() >= deadline:
            return
        time.sleep(POLL_SECONDS)


async def all_enqueued_async(
    source: AsyncSource, *, prefix: str = DEFAULT_PREFIX, delta: float = 1.0, **filters: Any
) -> list[Job]:
    """The async twin of :func:`all_enqueued`."""
    ask = _Ask(filters, delta)
    return ask.matches(await _rows_async(source, prefix, ask.states))


async def assert_enqueued_async(
    source: AsyncSource,
    *,
    prefix: str = DEFAULT_PREFIX,
    delta: float = 1.0,
    timeout: float = 0,
    **filters: Any,
) -> Job:
    """The async twin of :func:`assert_enqueued`."""
    ask = _Ask(filters, delta)
    deadline = time.monotonic() + timeout
    while True:
        jobs = await _rows_async(source, prefix, ask.states)
        found = ask.matches(jobs)
        if found:
            return found[0]
        if time.monotonic() >= deadline:
            raise AssertionError(
                matching.absent_message(ask.filters, delta, ask.states, prefix, jobs, timeout)
            )
        await asyncio.sleep(POLL_SECONDS)


async def refute_enqueued_async(
    source: AsyncSource,
    *,
    prefix: str = DEFAULT_PREFIX,
    delta: float = 1.0,
    timeout: float = 0,
    **filters: Any,
) -> None:
    """The async twin of :func:`refute_enqueued`."""
    ask = _Ask(filters, delta)
    deadline = time.monotonic() + timeout
    while True:
        found = ask.matches(await _rows_async(source, prefix, ask.states))
        if found:
            raise AssertionError(
                matching.present_message(ask.filters, delta, ask.states, prefix, found, timeout)
            )
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(POLL_SECONDS)
