"""What an insert writes, shared by plain and unique inserts (and by cron and the workflow
runner, which insert inside their own statements): the column values of the rows, the
``oban_insert`` notifications they send, and the transaction that holds both. Pure apart from
the transaction helpers, which only look at the connection's state."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
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


def shallow_copies(jobs: Sequence[Job]) -> list[Job]:
    """A copy of each job to fill in and return, so that the caller's objects stay as they
    were: the fields shallowly copied, as ``dataclasses.replace`` copies them, in a fifth of
    its time. Pure."""
    copies = []
    for job in jobs:
        copied = job.__class__.__new__(job.__class__)
        copied.__dict__.update(vars(job))
        copies.append(copied)
    return copies


# Rows per piece of COPY data: PostgreSQL stores one piece while the next is being written.
COPY_CHUNK_ROWS = 100


def copy_data(
    copies: Sequence[Job], ids: Sequence[int], now: datetime, chunk_rows: int = COPY_CHUNK_ROWS
) -> Iterator[bytes]:
    """The COPY_JOBS data for ``copies`` (:func:`shallow_copies` of validated jobs), in COPY's
    text format (UTF-8), in pieces of ``chunk_rows`` rows, so that the database parses and
    stores one piece while the next is written (on another core). As it writes a job's line
    it fills in the copy as the database will hold it: its id, ``inserted_at`` = ``now``
    (the database's clock, read with the ids by NEXT_JOB_IDS) and ``scheduled_at`` (``now``
    when unscheduled; naive UTC, as the INSERT path binds it).

    Written here rather than by psycopg's ``write_row``, whose per-value adaptation cost
    about 2 µs of a job's 14 here: the same values, so the same rows, with the JSON as
    orjson's bytes and the fields that repeat from job to job escaped once per batch. A
    ``scheduled_at`` with a time zone is written as naive UTC (``write_row`` sent its wall
    time, which a ``timestamp`` column keeps, ignoring the offset)."""
    # Fields that repeat from job to job, escaped once per batch: state, queue and worker
    # (the head), tags, max_attempts, priority and inserted_at (the tail), scheduled_at.
    heads: dict[tuple[str, str, str], bytes] = {}
    tails: dict[tuple[tuple[str, ...], int, int], bytes] = {}
    stamps: dict[datetime, bytes] = {}
    stamp = copy_timestamp(now)
    lines: list[bytes] = []
    for job, job_id in zip(copies, ids, strict=True):
        job.id = job_id
        job.inserted_at = now
        if job.scheduled_at:
            job.scheduled_at = to_naive_utc(job.scheduled_at)
            scheduled = stamps.get(job.scheduled_at)
            if scheduled is None:
                scheduled = stamps[job.scheduled_at] = copy_timestamp(job.scheduled_at)
        else:
            job.scheduled_at = now
            scheduled = stamp
        head_key = (job.state, job.queue, job.worker)
        head = heads.get(head_key)
        if head is None:
            head = heads[head_key] = b"\t".join(copy_field(text) for text in head_key)
        tail_key = (tuple(job.tags), job.max_attempts, job.priority)
        tail = tails.get(tail_key)
        if tail is None:
            tags = copy_field(text_array(tail_key[0]))
            tail = tails[tail_key] = b"%s\t%d\t%d\t%s" % (tags, *tail_key[1:], stamp)
        lines.append(
            b"%d\t%s\t%s\t%s\t%s\t%s\n"
            % (
                job_id,
                head,
                copy_bytes(jsonfmt.dumpb(job.args)),
                copy_bytes(jsonfmt.dumpb(job.meta)),
                tail,
                scheduled,
            )
        )
        if len(lines) >= chunk_rows:
            yield b"".join(lines)
            lines.clear()
    if lines:
        yield b"".join(lines)


# COPY's text format: in a value, backslash, tab, newline and carriage return are escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_field(text: str) -> bytes:
    """A text value as one field of COPY's text format, UTF-8."""
    return text.translate(_COPY_ESCAPES).encode()


def copy_bytes(data: bytes) -> bytes:
    """UTF-8 text (JSON) as one field of COPY's text format. JSON from :mod:`bridge.wire.jsonfmt`
    holds no raw tab, newline or carriage return (every encoder there escapes control
    characters), so mostly only its backslashes are doubled; the rest is checked all the
    same, it costs next to nothing."""
    if b"\\" in data:
        data = data.replace(b"\\", b"\\\\")
    if b"\t" in data or b"\n" in data or b"\r" in data:
        data = data.replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return data


def text_array(items: Sequence[str]) -> str:
    """A ``text[]`` literal: every element quoted, so any text (commas, braces, quotes,
    spaces, the word NULL) is read back as it was."""
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"


def copy_timestamp(moment: datetime) -> bytes:
    """A naive timestamp as PostgreSQL reads it back to the microsecond (ISO 8601, a
    four-digit year, whatever the session's DateStyle)."""
    return moment.isoformat(" ").encode()


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


def owns_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether an insert on ``conn`` runs in a transaction of its own: only on an autocommit
    connection that is idle. Otherwise the caller owns the transaction (psycopg opens one
    implicitly on a non-autocommit connection): the jobs and the NOTIFY commit or roll back
    with the caller."""
    return conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE


def atomic(conn: psycopg.Connection[Any]) -> AbstractContextManager[Any]:
    """Our own transaction when :func:`owns_transaction`, else none."""
    return conn.transaction() if owns_transaction(conn) else nullcontext()


def atomic_async(conn: psycopg.AsyncConnection[Any]) -> AbstractAsyncContextManager[Any]:
    return conn.transaction() if owns_transaction(conn) else nullcontext()
