"""Operator actions on jobs and queues, with Oban's semantics (``Oban.cancel_all_jobs``,
``retry_all_jobs``, ``delete_all_jobs``, ``pause_queue`` & co. on the Basic engine).

They are plain functions on a sync connection so the CLI, scripts and tests share them; signals
are NOTIFYs in Oban's payload shape, so Elixir nodes obey them exactly as they obey each other.

Reading for people (``list_job_rows``, ``get_job_row``) never fails on a row the database holds:
an Elixir app may store integers beyond 64 bits, JSON nested thousands of levels deep, odd
``errors`` elements or ``infinity`` timestamps, and a read command must still show every row.
Reading for programs (``list_jobs``, ``get_job``) decodes JSON as Jason does (any depth, any
integer) and raises :class:`UndecodableJobError`, naming the job, for a value no Python object
holds (a timestamp outside the years 1 to 9999).
Who is running is :mod:`bridge.jobs.client.cluster`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.jobs import queries
from bridge.jobs.client.job import JOB_COLUMNS, Job, UndecodableJobError, UndecodableRowError
from bridge.wire import jsonfmt, notify
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


def _where(flt: JobFilter) -> tuple[sql.Composable, dict[str, Any]]:
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
    return (sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("TRUE")), params


def _job(row: dict[str, Any]) -> Job:
    try:
        return Job.from_text_row(row)
    except UndecodableRowError as exc:
        raise UndecodableJobError(exc) from None


def list_jobs(conn: psycopg.Connection[Any], prefix: str, flt: JobFilter) -> list[Job]:
    """Jobs as :class:`Job` objects, newest first (for programs; see ``list_job_rows``).

    The row comes as text and is decoded by ``Job.from_text_row`` (JSON as Jason reads it, on
    the caller's connection too), so a value that cannot be held raises
    :class:`UndecodableJobError` naming its job rather than the driver's error."""
    where, params = _where(flt)
    query = sql.SQL(
        "SELECT {} FROM {}.oban_jobs AS j WHERE {} ORDER BY j.id DESC LIMIT %(limit)s"
    ).format(queries.JOB_AS_TEXT, sql.Identifier(prefix), where)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [_job(row) for row in cur.fetchall()]


def get_job(conn: psycopg.Connection[Any], prefix: str, job_id: int) -> Job | None:
    """One job as :func:`list_jobs` reads it, or ``None``."""
    if not _is_bigint(job_id):
        return None
    query = sql.SQL("SELECT {} FROM {}.oban_jobs AS j WHERE j.id = %s").format(
        queries.JOB_AS_TEXT, sql.Identifier(prefix)
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, (job_id,))
        row = cur.fetchone()
    return _job(row) if row else None


# -- reading rows for people, whatever they hold ---------------------------------------------------


@dataclass(frozen=True)
class Undecodable:
    """A stored JSON value this reader cannot turn into Python: shown marked, never fatal.

    ``text`` is the value as PostgreSQL prints it, so nothing is hidden from a program."""

    reason: str
    text: str | None = None

    def __str__(self) -> str:
        return f"<undecodable: {self.reason}>"

    def to_json(self) -> dict[str, Any]:
        return {"undecodable": self.reason, "text": self.text}


def json_depth(text: str) -> int:
    """How deeply a JSON document nests, without parsing it (brackets inside strings skipped)."""
    return jsonfmt.depth(text)


def decode_json(text: str | None) -> Any:
    """jsonb text -> Python, or an :class:`Undecodable` saying why not (never raises).

    Read as Jason reads it (:func:`bridge.wire.jsonfmt.loads`: any depth, integers of any
    length), so a command shows what an Elixir node would read; ``jsonfmt.dumps`` prints it
    again at any depth and length."""
    if text is None:
        return None
    try:
        return jsonfmt.loads(text)
    except jsonfmt.JSONDecodeError as exc:
        return Undecodable(str(exc), text)


def _job_row(raw: dict[str, Any]) -> dict[str, Any]:
    row = dict(raw)
    row["args"] = decode_json(raw["args"])
    row["meta"] = decode_json(raw["meta"])
    row["errors"] = [decode_json(entry) for entry in raw["errors"] or []]
    return {name: row.get(name) for name in JOB_COLUMNS}


def list_job_rows(
    conn: psycopg.Connection[Any], prefix: str, flt: JobFilter
) -> list[dict[str, Any]]:
    """Rows newest first, keyed as ``Job.to_dict`` (``row_to_json``'s values), each readable
    whatever it holds; a JSON value that cannot be decoded is an :class:`Undecodable`."""
    where, params = _where(flt)
    query = sql.SQL(
        "SELECT {} FROM {}.oban_jobs AS j WHERE {} ORDER BY j.id DESC LIMIT %(limit)s"
    ).format(queries.JOB_AS_TEXT, sql.Identifier(prefix), where)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [_job_row(row) for row in cur.fetchall()]


def get_job_row(conn: psycopg.Connection[Any], prefix: str, job_id: int) -> dict[str, Any] | None:
    """One row as ``list_job_rows`` reads it, or ``None``."""
    if not _is_bigint(job_id):
        return None
    query = sql.SQL("SELECT {} FROM {}.oban_jobs AS j WHERE j.id = %s").format(
        queries.JOB_AS_TEXT, sql.Identifier(prefix)
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, (job_id,))
        row = cur.fetchone()
    return _job_row(row) if row else None


def _is_bigint(value: int) -> bool:
    return -(2**63) <= value < 2**63


# -- actions on jobs -------------------------------------------------------------------------------


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


ACTIONS = ("retry", "cancel", "delete")

_LOCK_STATES = "SELECT id, state::text FROM {prefix}.oban_jobs WHERE id = ANY(%(ids)s) FOR UPDATE"


@dataclass(frozen=True)
class ActionOutcome:
    """What an action did to each id asked for: done, left alone (with the state that does not
    allow it), or no such job."""

    action: str
    done: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)


def apply_action(
    conn: psycopg.Connection[Any], prefix: str, action: str, ids: list[int]
) -> ActionOutcome:
    """``retry``, ``cancel`` or ``delete`` the jobs ``ids``, telling missing ids from ones whose
    state does not allow the action (rows are locked first, so the states reported are the ones
    the action saw)."""
    run = {"retry": retry_jobs, "cancel": cancel_jobs, "delete": delete_jobs}.get(action)
    if run is None:
        raise ValueError(f"unknown job action {action!r}; one of {', '.join(ACTIONS)}")
    wanted = list(dict.fromkeys(ids))
    present = [i for i in wanted if _is_bigint(i)]
    with conn.transaction():
        rows = conn.execute(queries.render(_LOCK_STATES, prefix), {"ids": present}).fetchall()
        states: dict[int, str] = {row[0]: row[1] for row in rows}
        done = set(run(conn, prefix, list(states))) if states else set()
    return ActionOutcome(
        action=action,
        done=[i for i in wanted if i in done],
        skipped=[(i, states[i]) for i in wanted if i in states and i not in done],
        missing=[i for i in wanted if i not in states],
    )


# -- queue signals ---------------------------------------------------------------------------------

SIGNAL_ACTIONS = ("pause", "resume", "scale", "start", "stop")


def signal_payload(
    action: str,
    queue: str,
    *,
    node: str | None = None,
    instance: str = "Oban",
    limit: int | None = None,
) -> dict[str, Any]:
    """A queue signal as ``Oban.pause_queue/2`` & co. build it: ident ``any`` unless a node is
    named, then ``"<instance>.<node>"`` (and a targeted scale also carries ``node``).

    ``"*"`` means every queue only for pause and resume (``Oban.pause_all_queues/2``,
    ``resume_all_queues/2``); any other action would name a queue called ``*``."""
    if action not in SIGNAL_ACTIONS:
        raise ValueError(f"unknown queue action {action!r}; one of {', '.join(SIGNAL_ACTIONS)}")
    if not queue:
        raise ValueError("the queue name is empty")
    if queue == "*" and action not in ("pause", "resume"):
        raise ValueError(
            f"'*' means every queue only for pause and resume; {action} takes one queue name"
        )
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
