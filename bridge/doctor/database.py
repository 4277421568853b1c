"""The database seen from this host: its clock against ours, and whether notifications make
the round trip.

Oban schedules, rescues and prunes by the database's clock, while bridge stamps some rows and
measures its timeouts with the host's; a skew of seconds makes a job look late or a lease look
expired. Every node, Elixir or Python, is woken by NOTIFY on ``<prefix>.oban_*`` channels; behind
a pooler that does not carry LISTEN (PgBouncer in transaction mode) nothing arrives and nodes
fall back to polling, or miss signals altogether.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import psycopg
from psycopg import sql

from bridge.doctor.findings import Finding
from bridge.jobs import queries
from bridge.wire import notify

CLOCK_SKEW_LIMIT = 1.0  # seconds
ROUND_TRIP_WAIT = 2.0  # seconds
# pg_notification_queue_usage() past this: a listener that stopped reading is filling it, and
# at 1.0 every NOTIFY (every insert) fails.
QUEUE_USAGE_LIMIT = 0.5
# The channel the round trip uses: in the prefix's namespace, heard by no Oban node.
TEST_CHANNEL = "doctor"


def clock_skew(conn: psycopg.Connection[Any]) -> tuple[float, float]:
    """(database clock minus this host's, uncertainty) in seconds: the database's
    ``clock_timestamp()`` against the middle of the query's round trip, ± half of it."""
    before = time.time()
    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    after = time.time()
    assert row is not None
    return float(row[0]) - (before + after) / 2, (after - before) / 2


def skew_findings(
    skew: float, uncertainty: float, limit: float = CLOCK_SKEW_LIMIT
) -> list[Finding]:
    """A warning when the clocks differ by more than ``limit`` beyond the measuring error; pure."""
    if abs(skew) - uncertainty <= limit:
        return []
    ahead = "ahead of" if skew > 0 else "behind"
    return [
        Finding(
            "clock",
            "warning",
            f"the database clock is {abs(skew):.1f} s {ahead} this host's (limit {limit:g} s)",
            "synchronise both machines' clocks (NTP, chrony): scheduled jobs, leases and "
            "rescues compare times written by each",
            {"skew_seconds": round(skew, 3), "uncertainty_seconds": round(uncertainty, 3)},
        )
    ]


def round_trip(
    listener: psycopg.Connection[Any],
    sender: psycopg.Connection[Any],
    prefix: str,
    wait: float = ROUND_TRIP_WAIT,
) -> float | None:
    """Seconds a NOTIFY took from ``sender`` to ``listener`` on ``<prefix>.oban_doctor``, or
    None when it did not arrive within ``wait``. Both in autocommit mode; the payload carries a
    random token so another doctor's message is not taken for ours."""
    channel = notify.channel(prefix, TEST_CHANNEL)
    token = secrets.token_hex(8)
    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    try:
        start = time.monotonic()
        payload = json.dumps({"doctor": token})
        sender.execute(queries.NOTIFY, {"channel": channel, "payload": payload})
        deadline = start + wait
        while (left := deadline - time.monotonic()) > 0:
            for note in listener.notifies(timeout=left):
                if note.channel == channel and token in note.payload:
                    return time.monotonic() - start
        return None
    finally:
        listener.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))


def queue_usage(conn: psycopg.Connection[Any]) -> float:
    """The share of the server's notification queue in use (0.0-1.0)."""
    row = conn.execute("SELECT pg_notification_queue_usage()").fetchone()
    assert row is not None
    return float(row[0])


def notify_findings(
    prefix: str, heard_after: float | None, usage: float, wait: float = ROUND_TRIP_WAIT
) -> list[Finding]:
    """An error when the round trip failed, a warning when the queue fills; pure."""
    channel = notify.channel(prefix, TEST_CHANNEL)
    found = []
    if heard_after is None:
        found.append(
            Finding(
                "notifications",
                "error",
                f"a NOTIFY on {channel!r} was not heard back within {wait:g} s: nodes on this "
                "database are not woken by inserts and miss queue signals",
                "connect nodes to PostgreSQL directly or through a pooler in session mode "
                "(PgBouncer's transaction mode does not carry LISTEN)",
                {"channel": channel},
            )
        )
    if usage > QUEUE_USAGE_LIMIT:
        found.append(
            Finding(
                "notifications",
                "warning",
                f"the server's notification queue is {usage:.0%} full: a session that "
                "LISTENs and no longer reads holds it, and when it is full every insert fails",
                "find the session with pg_stat_activity (a LISTENing backend idle in a "
                "transaction) and end it",
                {"queue_usage": usage},
            )
        )
    return found
