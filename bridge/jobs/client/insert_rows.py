"""What an insert writes, shared by plain and unique inserts (and by cron and the workflow
runner, which insert inside their own statements): the column values of the rows, the
``oban_insert`` notifications they send, and the transaction that holds both. Pure apart from
the transaction helpers, which only look at the connection's state."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from bridge.jobs.client.job import Job
from bridge.wire import jsonfmt, notify
from bridge.wire.timefmt import to_naive_utc


def insert_params(jobs: Sequence[Job], now: datetime | None = None) -> dict[str, list[Any]]:
    """Column arrays for INSERT_JOBS; pure, so the sync and async paths share it.

    ``now=None`` (what ``insert`` and ``insert_all`` pass) leaves ``inserted_at`` and an
    unscheduled job's ``scheduled_at`` NULL, which the statement turns into the database's
    ``timezone('UTC', now())``, as Oban leaves them to the columns' default; a caller whose own
    check relies on its clock (cron's slot) passes that clock instead."""
    params: dict[str, list[Any]] = {
        key: []
        for key in (
            "state",
            "queue",
            "worker",
            "args",
            "meta",
            "tags",
            "max_attempts",
            "priority",
            "inserted_at",
            "scheduled_at",
        )
    }
    for job in jobs:
        job.validate()
        params["state"].append(job.state)
        params["queue"].append(job.queue)
        params["worker"].append(job.worker)
        params["args"].append(jsonfmt.dumps(job.args))
        params["meta"].append(jsonfmt.dumps(job.meta))
        params["tags"].append(jsonfmt.dumps(job.tags))
        params["max_attempts"].append(job.max_attempts)
        params["priority"].append(job.priority)
        params["inserted_at"].append(now)
        # Naive UTC, whatever the caller built the Job with: bound in binary, an aware value
        # would be a timestamptz that PostgreSQL shifts into the session's time zone.
        params["scheduled_at"].append(to_naive_utc(job.scheduled_at) if job.scheduled_at else now)
    return params


def copy_rows(jobs: Sequence[Job], ids: Sequence[int], now: datetime) -> list[tuple[Any, ...]]:
    """Rows for COPY_JOBS, and fill in each Job as the database now holds it; pure. The jobs
    are validated by the caller, before it takes their ids; ``now`` is the database's clock,
    read with the ids (NEXT_JOB_IDS)."""
    rows = []
    for job, job_id in zip(jobs, ids, strict=True):
        job.id = job_id
        job.inserted_at = now
        job.scheduled_at = job.scheduled_at or now
        rows.append(
            (
                job_id,
                job.state,
                job.queue,
                job.worker,
                jsonfmt.dumps(job.args),
                jsonfmt.dumps(job.meta),
                job.tags,
                job.max_attempts,
                job.priority,
                now,
                job.scheduled_at,
            )
        )
    return rows


def insert_one_params(prefix: str, job: Job, now: datetime | None = None) -> dict[str, Any]:
    """Parameters for INSERT_JOB: one row's values and the notification it sends if available."""
    params = {key: values[0] for key, values in insert_params([job], now).items()}
    params["channel"] = notify.channel(prefix, "insert")
    params["payload"] = notify.encode({"queue": job.queue})
    return params


def insert_notifications(prefix: str, rows: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """One ``oban_insert`` per queue that got available jobs; scheduled ones wake nobody."""
    queues = sorted({row["queue"] for row in rows if row["state"] == "available"})
    channel = notify.channel(prefix, "insert")
    return [{"channel": channel, "payload": notify.encode({"queue": q})} for q in queues]


def atomic(conn: psycopg.Connection[Any]) -> AbstractContextManager[Any]:
    """Our own transaction only on an autocommit connection that is idle.

    Otherwise the caller owns the transaction (psycopg opens one implicitly on a
    non-autocommit connection): the jobs and the NOTIFY commit or roll back with the caller.
    """
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    return conn.transaction() if conn.autocommit and idle else nullcontext()


def atomic_async(conn: psycopg.AsyncConnection[Any]) -> AbstractAsyncContextManager[Any]:
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    return conn.transaction() if conn.autocommit and idle else nullcontext()
