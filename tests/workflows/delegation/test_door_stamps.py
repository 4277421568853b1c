"""The door's failure path stamps ``updated_at`` as the workflow store does: the database's
clock to the second, the right instant in every column type an Elixir migration can produce,
whatever the session's time zone (``bridge/workflows/store/stamps.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from bridge.workflows.delegation.door import fail_elixir_instance
from bridge.workflows.delegation.protocol import DelegationArgs
from tests.workflows.delegation.test_delegation import args_for, q, waiting_instance

# A zone half an hour off any whole-hour zone, so a wall time read in the wrong zone shows.
ZONE = "Asia/Kolkata"


def _utc(value: datetime) -> datetime:
    """A column value as a UTC instant: a naive one is a UTC wall time (Ecto's convention)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@pytest.mark.parametrize("column_type", ["timestamp(0)", "timestamp", "timestamptz"])
def test_failing_an_instance_stamps_the_database_clock_in_any_column_type_and_zone(
    conn: psycopg.Connection[Any], oban_prefix: str, column_type: str
) -> None:
    for column in ("inserted_at", "updated_at"):
        q(
            conn,
            f"ALTER TABLE {{p}}.workflow_instances ALTER COLUMN {column} TYPE {column_type}",
            oban_prefix,
        )
    waiting_instance(conn, oban_prefix, "x::tz")
    (own,) = insert_all(
        conn,
        [Job.new("interop.render", {"instance_id": "x::tz"}, queue="python")],
        prefix=oban_prefix,
    )
    conn.execute(f"SET TimeZone = '{ZONE}'")
    try:
        (before,) = conn.execute("SELECT date_trunc('second', now())").fetchone() or (None,)
        with conn.transaction():
            result = fail_elixir_instance(
                conn, oban_prefix, DelegationArgs.parse(args_for("x::tz")), own_job=own.id or 0
            )
        (after,) = conn.execute("SELECT clock_timestamp()").fetchone() or (None,)
        [(stamped,)] = q(
            conn, "SELECT updated_at FROM {p}.workflow_instances WHERE id = 'x::tz'", oban_prefix
        )
    finally:
        conn.execute("RESET TimeZone")
    assert result.verdict == "failed"
    assert isinstance(before, datetime) and isinstance(after, datetime)
    assert _utc(stamped).microsecond == 0
    assert before.astimezone(UTC) <= _utc(stamped) <= after.astimezone(UTC)
