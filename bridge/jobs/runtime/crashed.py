"""The jobs of a node process that died: failed at once with Oban's crash entry.

When a job's process crashes inside Oban, the executor wraps the exit in ``Oban.CrashError``
(``Exception.format_banner(:exit, reason)``) and the attempt errors like any exception: retried
with backoff, or discarded once its attempts are used up. A bridge node process that dies (an
``os._exit`` or a segfault in a body, the OOM killer) leaves its jobs ``executing`` instead, for
a lifeline to make available again much later and without an entry. Under ``bridge worker
--processes`` the supervisor knows the moment a child died and the node name it ran under, so
it settles those jobs at once, before the replacement (same node name) claims anything: each
gets ``** (Oban.CrashError) ** (exit) <reason>`` and Oban's default backoff (the supervisor
never imports the operator's modules, so a worker's own backoff is not known here).

The write is the acker's own statement (``ACK_JOBS``): it applies only to a row still in the
attempt the dead node claimed, so a job rescued or finished meanwhile is left alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from bridge.jobs import queries
from bridge.jobs.client.job import Job
from bridge.jobs.runtime.acker import ack_params
from bridge.jobs.runtime.executor import Ack, error_ack
from bridge.jobs.runtime.exits import crash_text, exit_reason
from bridge.wire import errors as wire_errors
from bridge.wire.timefmt import utc_now

__all__ = ["crash_acks", "crash_text", "exit_reason", "fail_crashed_jobs"]

CONNECT_TIMEOUT = 10  # seconds

ORPHANS = """
SELECT id, worker, attempt, max_attempts, attempted_by
FROM {prefix}.oban_jobs
WHERE state = 'executing' AND attempted_by[1] = %(node)s AND attempted_at >= %(since)s
ORDER BY id
"""


def crash_acks(rows: list[tuple[Any, ...]], returncode: int, now: datetime) -> list[Ack]:
    """The outcome of each job a dead node was running (``ORPHANS`` rows); pure."""
    acks = []
    for job_id, worker, attempt, max_attempts, attempted_by in rows:
        job = Job(worker=worker, id=job_id, attempt=attempt, max_attempts=max_attempts)
        entry = wire_errors.entry(attempt, now, crash_text(returncode))
        ack = error_ack(job, None, entry, now)
        ack.attempt = attempt
        ack.attempted_by = list(attempted_by)
        ack.worker = worker
        acks.append(ack)
    return acks


def fail_crashed_jobs(
    url: str, prefix: str, node: str, since: datetime, returncode: int
) -> list[Ack]:
    """Error every job ``node`` left executing since ``since`` (when the dead process started):
    call only once that process is reaped and before another runs under ``node``."""
    now = utc_now()
    # Bounded: the supervisor waits on this before it replaces the node; a database that does
    # not answer leaves the jobs to a lifeline instead.
    with psycopg.connect(url, autocommit=False, connect_timeout=CONNECT_TIMEOUT) as conn:
        rows = conn.execute(
            queries.render(ORPHANS, prefix), {"node": node, "since": since}
        ).fetchall()
        acks = crash_acks(rows, returncode, now)
        if acks:
            applied = conn.execute(
                queries.render(queries.ACK_JOBS, prefix), ack_params(acks)
            ).fetchall()
            done = {job_id for job_id, _ in applied}
            acks = [ack for ack in acks if ack.id in done]
        conn.commit()
    return acks
