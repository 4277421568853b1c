"""Operator actions on jobs and queues, with Oban's semantics (``Oban.cancel_all_jobs``,
``retry_all_jobs``, ``delete_all_jobs``, ``pause_queue`` & co. on the Basic engine).

They are plain functions on a sync connection so the CLI, scripts and tests share them; signals
are NOTIFYs in Oban's payload shape, so Elixir nodes obey them exactly as they obey each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.jobs import queries
from bridge.jobs.client.job import Job
from bridge.wire import notify
from bridge.wire.timefmt import utc_now

STATES = (
    "available",
    "suspended",
    "scheduled",
    "executing",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
)

CANCEL = """
UPDATE {prefix}.oban_jobs AS j SET state = 'cancelled', cancelled_at = %(now)s
FROM (SELECT id, state FROM {prefix}.oban_jobs
      WHERE id = ANY(%(ids)s) AND state NOT IN ('cancelled', 'completed', 'discarded')) AS x
WHERE j.id = x.id
RETURNING j.id, x.state::text
"""

RETRY = """
UPDATE {prefix}.oban_jobs AS j
SET state = 'available', max_attempts = GREATEST(j.max_attempts, j.attempt + 1),
    scheduled_at = %(now)s, completed_at = NULL, cancelled_at = NULL, discarded_at = NULL
WHERE j.id = ANY(%(ids)s) AND j.state NOT IN ('available', 'executing')
RETURNING j.id, j.queue
"""

DELETE = """
DELETE FROM {prefix}.oban_jobs WHERE id = ANY(%(ids)s) AND state <> 'executing' RETURNING id
"""


@dataclass(frozen=True)
class JobFilter:
    states: tuple[str, ...] = ()
    queue: str | None = None
    worker: str | None = None
    limit: int = 50


def list_jobs(conn: psycopg.Connection[Any], prefix: str, flt: JobFilter) -> list[Job]:
    clauses: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": flt.limit}
    for state in flt.states:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; one of {', '.join(STATES)}")
    if flt.states:
        clauses.append(sql.SQL("state::text = ANY(%(states)s)"))
        params["states"] = list(flt.states)
    if flt.queue:
        clauses.append(sql.SQL("queue = %(queue)s"))
        params["queue"] = flt.queue
    if flt.worker:
        clauses.append(sql.SQL("worker = %(worker)s"))
        params["worker"] = flt.worker
    where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("TRUE")
    query = sql.SQL(
        "SELECT *, state::text AS state FROM {}.oban_jobs WHERE {} ORDER BY id DESC LIMIT %(limit)s"
    ).format(sql.Identifier(prefix), where)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [Job.from_row(row) for row in cur.fetchall()]


def get_job(conn: psycopg.Connection[Any], prefix: str, job_id: int) -> Job | None:
    query = sql.SQL("SELECT *, state::text AS state FROM {}.oban_jobs WHERE id = %s").format(
        sql.Identifier(prefix)
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, (job_id,))
        row = cur.fetchone()
    return Job.from_row(row) if row else None


def cancel_jobs(conn: psycopg.Connection[Any], prefix: str, ids: list[int]) -> list[int]:
    """Cancel unfinished jobs; executing ones also get a ``pkill`` so their node stops them."""
    with conn.transaction():
        rows = conn.execute(
            queries.render(CANCEL, prefix), {"ids": ids, "now": utc_now()}
        ).fetchall()
        for job_id, old_state in rows:
            if old_state == "executing":
                # Exactly Oban.cancel_job's signal: no ident, so every node obeys it.
                _notify(conn, prefix, "signal", {"action": "pkill", "job_id": job_id})
    return [row[0] for row in rows]


def retry_jobs(conn: psycopg.Connection[Any], prefix: str, ids: list[int]) -> list[int]:
    with conn.transaction():
        rows = conn.execute(
            queries.render(RETRY, prefix), {"ids": ids, "now": utc_now()}
        ).fetchall()
        for queue in sorted({row[1] for row in rows}):
            _notify(conn, prefix, "insert", {"queue": queue})
    return [row[0] for row in rows]


def delete_jobs(conn: psycopg.Connection[Any], prefix: str, ids: list[int]) -> list[int]:
    with conn.transaction():
        rows = conn.execute(queries.render(DELETE, prefix), {"ids": ids}).fetchall()
    return [row[0] for row in rows]


def signal_payload(
    action: str,
    queue: str,
    *,
    node: str | None = None,
    instance: str = "Oban",
    limit: int | None = None,
) -> dict[str, Any]:
    """A queue signal as ``Oban.pause_queue/2`` & co. build it: ident ``any`` unless a node is
    named, then ``"<instance>.<node>"`` (and a targeted scale also carries ``node``)."""
    if action not in ("pause", "resume", "scale", "start", "stop"):
        raise ValueError(f"unknown queue action {action!r}")
    payload: dict[str, Any] = {
        "action": action,
        "queue": queue,
        "ident": f"{instance}.{node}" if node else "any",
    }
    if action in ("scale", "start"):
        if limit is None or limit < 1:
            raise ValueError(f"{action} needs a limit >= 1")
        payload["limit"] = limit
    if action == "scale" and node:
        payload["node"] = node
    return payload


def send_signal(conn: psycopg.Connection[Any], prefix: str, payload: dict[str, Any]) -> None:
    with conn.transaction():
        _notify(conn, prefix, "signal", payload)


def _notify(
    conn: psycopg.Connection[Any], prefix: str, channel: str, payload: dict[str, Any]
) -> None:
    conn.execute(
        queries.NOTIFY,
        {"channel": notify.channel(prefix, channel), "payload": notify.encode(payload)},
    )
