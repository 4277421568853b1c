"""The jobs of a dead node process: Oban's crash entry, the acker's conditional write."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from bridge import Job, insert_all
from bridge.jobs.runtime.crashed import crash_acks, crash_text, exit_reason, fail_crashed_jobs
from bridge.wire.timefmt import utc_now

Conn = psycopg.Connection[tuple[Any, ...]]


def test_exit_reasons_print_as_elixir_prints_an_exit() -> None:
    assert exit_reason(-signal.SIGKILL) == "killed"
    assert exit_reason(-signal.SIGSEGV) == "{:signal, :sigsegv}"
    assert exit_reason(3) == "{:exit_status, 3}"
    assert crash_text(-9) == "** (Oban.CrashError) ** (exit) killed"


def test_an_attempt_left_retries_with_backoff_the_last_one_discards() -> None:
    now = datetime(2026, 12, 4, 12, 0, 0)
    rows = [(1, "w.A", 1, 3, ["n-1", "u"]), (2, "w.B", 3, 3, ["n-1", "u"])]
    retried, discarded = crash_acks(rows, 3, now)
    assert retried.state == "retryable" and retried.scheduled_at is not None
    assert retried.scheduled_at > now
    assert retried.error == {
        "attempt": 1,
        "at": "2026-12-04T12:00:00.000000Z",
        "error": "** (Oban.CrashError) ** (exit) {:exit_status, 3}",
    }
    assert (retried.attempt, retried.attempted_by) == (1, ["n-1", "u"])
    assert discarded.state == "discarded" and discarded.discarded_at == now


def _claim(conn: Conn, prefix: str, job_id: int, node: str, attempted_at: datetime) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {}.oban_jobs SET state = 'executing', attempt = 1, attempted_at = %s,"
            " attempted_by = ARRAY[%s, 'uuid-1'] WHERE id = %s"
        ).format(sql.Identifier(prefix)),
        (attempted_at, node, job_id),
    )


def test_only_the_dead_nodes_jobs_of_its_lifetime_are_failed(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    jobs = insert_all(conn, [Job.new("w.A", {"i": i}) for i in range(4)], prefix=oban_prefix)
    ids = [job.id or 0 for job in jobs]
    started = utc_now()
    _claim(conn, oban_prefix, ids[0], "host-1", started + timedelta(seconds=1))
    _claim(conn, oban_prefix, ids[1], "host-2", started + timedelta(seconds=1))  # alive
    _claim(conn, oban_prefix, ids[2], "host-1", started - timedelta(hours=1))  # before it lived
    failed = fail_crashed_jobs(database_url, oban_prefix, "host-1", started, -signal.SIGKILL)
    assert [ack.id for ack in failed] == [ids[0]]
    states = dict(
        conn.execute(
            sql.SQL("SELECT id, state::text FROM {}.oban_jobs").format(sql.Identifier(oban_prefix))
        ).fetchall()
    )
    assert [states[i] for i in ids] == ["retryable", "executing", "executing", "available"]
    [errors] = conn.execute(
        sql.SQL("SELECT errors FROM {}.oban_jobs WHERE id = %s").format(
            sql.Identifier(oban_prefix)
        ),
        (ids[0],),
    ).fetchone() or [None]
    assert [e["error"] for e in errors] == ["** (Oban.CrashError) ** (exit) killed"]
