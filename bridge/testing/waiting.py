"""Waiting for the other language: a job or a workflow instance reaching a state.

A cross-language test hands work over the database (a Python insert an Elixir node runs, an
Elixir insert a Python node runs) and then waits for the row to say it is done. These helpers
poll the real tables, as ``Oban.Testing``'s timeout forms do, and fail with what the row says
when it does not get there: the state it is in and its last error, or the nearest jobs.

A job given by id that reaches another final state (``completed``, ``discarded``,
``cancelled``) fails at once, since it will not move again; a job given by filters is waited
for until the timeout, since another matching job may still come.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.db import DEFAULT_PREFIX
from bridge.jobs import queries
from bridge.jobs.client.job import Job, UndecodableRowError
from bridge.testing import enqueued, matching
from bridge.testing.workflows import WorkflowState
from bridge.wire import jsonfmt

ALL_STATES = (
    "available",
    "scheduled",
    "suspended",
    "executing",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
)
FINAL_STATES = ("completed", "discarded", "cancelled")
FINAL_STATUSES = ("completed", "failed")

# A cross-language hop is an insert NOTIFY and a claim: well under a second here; 10 s leaves
# room for a loaded CI machine and a stager tick (Oban stages every second).
DEFAULT_TIMEOUT = 10.0
POLL_SECONDS = 0.02

Source = psycopg.Connection[Any] | str
AsyncSource = psycopg.AsyncConnection[Any] | str


# Jobs ------------------------------------------------------------------------------------------


def _job_query(prefix: str) -> sql.Composed:
    return sql.SQL("SELECT {columns} FROM {prefix}.oban_jobs AS j WHERE j.id = %s").format(
        columns=queries.JOB_AS_TEXT, prefix=sql.Identifier(prefix)
    )


def _decode(row: dict[str, Any] | None) -> Job | None:
    if row is None:
        return None
    try:
        return Job.from_text_row(row)
    except UndecodableRowError as exc:
        return exc.job


def _job_by_id(source: Source, prefix: str, job_id: int) -> Job | None:
    if isinstance(source, str):
        with psycopg.connect(source, autocommit=True) as conn:
            return _job_by_id(conn, prefix, job_id)
    cursor = source.cursor(row_factory=dict_row)
    return _decode(cursor.execute(_job_query(prefix), (job_id,)).fetchone())


async def _job_by_id_async(source: AsyncSource, prefix: str, job_id: int) -> Job | None:
    if isinstance(source, str):
        async with await psycopg.AsyncConnection.connect(source, autocommit=True) as conn:
            return await _job_by_id_async(conn, prefix, job_id)
    cursor = source.cursor(row_factory=dict_row)
    return _decode(await (await cursor.execute(_job_query(prefix), (job_id,))).fetchone())


def _job_id(job: int | Job) -> int:
    job_id = job.id if isinstance(job, Job) else job
    if not isinstance(job_id, int):
        raise TypeError(f"wait_for_job wants a job id or an inserted Job, got {job!r}")
    return job_id


def _last_error(job: Job) -> str:
    if not job.errors:
        return ""
    text = str(job.errors[-1].get("error", "")).strip().splitlines()
    return f"; last error (attempt {job.errors[-1].get('attempt')}): {text[0] if text else ''}"


def _id_verdict(
    job: Job | None, job_id: int, states: Sequence[str], prefix: str, timeout: float, over: bool
) -> str | None:
    """Why waiting for job ``job_id`` failed, or None while it may still get there."""
    where = f"{prefix}.oban_jobs"
    wanted = " or ".join(states)
    if job is None:
        return (
            f"job {job_id} is not in {where} (waited {timeout:g}s for {wanted})" if over else None
        )
    if job.state in FINAL_STATES and job.state not in states:
        return (
            f"job {job_id} is {job.state}, a final state, expected {wanted}: "
            f"{matching.describe_job(job)}, attempt {job.attempt}/{job.max_attempts}"
            f"{_last_error(job)}"
        )
    if over:
        return (
            f"job {job_id} is still {job.state} after {timeout:g}s, expected {wanted}: "
            f"{matching.describe_job(job)}, attempt {job.attempt}/{job.max_attempts}"
            f"{_last_error(job)}"
        )
    return None


def _filters_message(
    source_jobs: Sequence[Job],
    filters: dict[str, Any],
    states: Sequence[str],
    prefix: str,
    delta: float,
    timeout: float,
) -> str:
    """No job matching ``filters`` reached ``states``: the ones that match in another state,
    with their last error, else the nearest jobs of any state."""
    asked = matching.normalise_filters(filters)
    found = [job for job in source_jobs if not matching.differences(job, asked, delta)]
    head = (
        f"Expected a job matching:\n    {matching.describe_filters(asked, delta)}\n"
        f"to be {' or '.join(states)} within {timeout:g}s (in {prefix}.oban_jobs)."
    )
    if found:
        lines = [head, f"The {len(found)} matching it are in other states:"]
        for job in found[: matching.NEAREST]:
            lines.append(f"    {matching.describe_job(job)}{_last_error(job)}")
        return "\n".join(lines)
    nearest = matching.absent_message(asked, delta, ALL_STATES, prefix, source_jobs, timeout)
    return head + "\n" + nearest.split("\n", 3)[3]


def wait_for_job(
    source: Source,
    job: int | Job | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    state: str | Sequence[str] = "completed",
    timeout: float = DEFAULT_TIMEOUT,
    delta: float = 1.0,
    **filters: Any,
) -> Job:
    """Wait until job ``job`` (an id or an inserted :class:`Job`), or the newest job matching
    ``filters`` (as :func:`~bridge.testing.assert_enqueued` takes them), is in ``state``
    (``completed`` unless said); return it. An AssertionError says where it got instead."""
    states = matching.states_of(state)
    deadline = time.monotonic() + timeout
    if job is not None:
        if filters:
            raise TypeError("wait_for_job takes a job or filters, not both")
        job_id = _job_id(job)
        while True:
            row = _job_by_id(source, prefix, job_id)
            if row is not None and row.state in states:
                return row
            over = time.monotonic() >= deadline
            failed = _id_verdict(row, job_id, states, prefix, timeout, over)
            if failed:
                raise AssertionError(failed)
            time.sleep(POLL_SECONDS)
    while True:
        jobs = enqueued.all_enqueued(source, prefix=prefix, delta=delta, state=states, **filters)
        if jobs:
            return jobs[0]
        if time.monotonic() >= deadline:
            every = enqueued.all_enqueued(source, prefix=prefix, state=ALL_STATES)
            raise AssertionError(_filters_message(every, filters, states, prefix, delta, timeout))
        time.sleep(POLL_SECONDS)


async def wait_for_job_async(
    source: AsyncSource,
    job: int | Job | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    state: str | Sequence[str] = "completed",
    timeout: float = DEFAULT_TIMEOUT,
    delta: float = 1.0,
    **filters: Any,
) -> Job:
    """The async twin of :func:`wait_for_job`."""
    states = matching.states_of(state)
    deadline = time.monotonic() + timeout
    if job is not None:
        if filters:
            raise TypeError("wait_for_job_async takes a job or filters, not both")
        job_id = _job_id(job)
        while True:
            row = await _job_by_id_async(source, prefix, job_id)
            if row is not None and row.state in states:
                return row
            over = time.monotonic() >= deadline
            failed = _id_verdict(row, job_id, states, prefix, timeout, over)
            if failed:
                raise AssertionError(failed)
            await asyncio.sleep(POLL_SECONDS)
    while True:
        jobs = await enqueued.all_enqueued_async(
            source, prefix=prefix, delta=delta, state=states, **filters
        )
        if jobs:
            return jobs[0]
        if time.monotonic() >= deadline:
            every = await enqueued.all_enqueued_async(source, prefix=prefix, state=ALL_STATES)
            raise AssertionError(_filters_message(every, filters, states, prefix, delta, timeout))
        await asyncio.sleep(POLL_SECONDS)


# Workflow instances ----------------------------------------------------------------------------


def _instance_query(prefix: str) -> sql.Composed:
    return sql.SQL(
        "SELECT id, workflow, status, state::text FROM {prefix}.workflow_instances WHERE id = %s"
    ).format(prefix=sql.Identifier(prefix))


def _instance(row: Sequence[Any] | None) -> WorkflowState | None:
    if row is None:
        return None
    state = jsonfmt.loads(row[3]) if row[3] is not None else {}
    return WorkflowState(
        id=row[0],
        workflow=row[1],
        status=row[2],
        current_step=state.get("current_step"),
        context=state.get("context") or {},
        active_steps=frozenset(state.get("active_steps") or ()),
        completed_steps=frozenset(state.get("completed_steps") or ()),
    )


def _read_instance(source: Source, prefix: str, instance_id: str) -> WorkflowState | None:
    if isinstance(source, str):
        with psycopg.connect(source, autocommit=True) as conn:
            return _read_instance(conn, prefix, instance_id)
    return _instance(source.execute(_instance_query(prefix), (instance_id,)).fetchone())


async def _read_instance_async(
    source: AsyncSource, prefix: str, instance_id: str
) -> WorkflowState | None:
    if isinstance(source, str):
        async with await psycopg.AsyncConnection.connect(source, autocommit=True) as conn:
            return await _read_instance_async(conn, prefix, instance_id)
    cursor = await source.execute(_instance_query(prefix), (instance_id,))
    return _instance(await cursor.fetchone())


def _instance_verdict(
    found: WorkflowState | None,
    instance_id: str,
    statuses: Sequence[str],
    prefix: str,
    timeout: float,
    over: bool,
) -> str | None:
    where = f"{prefix}.workflow_instances"
    wanted = " or ".join(statuses)
    if found is None:
        if over:
            return f"no workflow instance {instance_id!r} in {where} after {timeout:g}s"
        return None
    shown = (
        f"workflow instance {instance_id!r} ({found.workflow}) is {found.status}"
        f"{', a final status' if found.status in FINAL_STATUSES else ''}, expected {wanted}; "
        f"current step {found.current_step}, active {sorted(found.active_steps)}, "
        f"completed {sorted(found.completed_steps)}"
    )
    if found.status in FINAL_STATUSES and found.status not in statuses:
        return shown
    if over:
        return f"after {timeout:g}s {shown}"
    return None


def wait_for_instance(
    source: Source,
    instance_id: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    status: str | Sequence[str] = "completed",
    timeout: float = DEFAULT_TIMEOUT,
) -> WorkflowState:
    """Wait until workflow instance ``instance_id`` (Python- or Elixir-owned) has ``status``
    (``completed`` unless said) and return it; an instance that ended otherwise fails at once."""
    statuses = (status,) if isinstance(status, str) else tuple(status)
    deadline = time.monotonic() + timeout
    while True:
        found = _read_instance(source, prefix, instance_id)
        if found is not None and found.status in statuses:
            return found
        over = time.monotonic() >= deadline
        failed = _instance_verdict(found, instance_id, statuses, prefix, timeout, over)
        if failed:
            raise AssertionError(failed)
        time.sleep(POLL_SECONDS)


async def wait_for_instance_async(
    source: AsyncSource,
    instance_id: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    status: str | Sequence[str] = "completed",
    timeout: float = DEFAULT_TIMEOUT,
) -> WorkflowState:
    """The async twin of :func:`wait_for_instance`."""
    statuses = (status,) if isinstance(status, str) else tuple(status)
    deadline = time.monotonic() + timeout
    while True:
        found = await _read_instance_async(source, prefix, instance_id)
        if found is not None and found.status in statuses:
            return found
        over = time.monotonic() >= deadline
        failed = _instance_verdict(found, instance_id, statuses, prefix, timeout, over)
        if failed:
            raise AssertionError(failed)
        await asyncio.sleep(POLL_SECONDS)
