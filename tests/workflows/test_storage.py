"""Step-result rows as HephaestusOban's insert leaves them, on real PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from bridge.workflows.engine import StepResult, new_instance
from bridge.workflows.serializer import to_row
from bridge.workflows.storage import insert_instance, insert_result
from tests.workflows import ORDER, validate


def test_inserted_at_is_the_column_default_in_the_session_time_zone(
    conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    """HephaestusOban never sets ``inserted_at``: the column default ``now()`` applies, in the
    writing session's time zone. Python's row must get the same value as an Elixir row written
    in the same transaction, or mixed results would be applied out of order on a server whose
    time zone is not UTC."""
    table = sql.SQL("{}.hephaestus_step_results").format(sql.Identifier(oban_prefix))
    with conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'Pacific/Kiritimati'")  # UTC+14: far from UTC
        instance = new_instance(ORDER, {"order_id": "o-1", "items": []}, id="order::tz")
        insert_instance(conn, oban_prefix, to_row(instance))
        ours = StepResult(validate.name, "valid", {"ok": True}, {})
        assert insert_result(conn, oban_prefix, instance.id, ours, 1)
        conn.execute(  # the INSERT Ecto sends for HephaestusOban.StepResults.insert/7
            sql.SQL(
                "INSERT INTO {} (instance_id, step_ref, event, context_updates,"
                " metadata_updates, workflow_version) VALUES (%s, %s, %s, '{{}}', '{{}}', 1)"
            ).format(table),
            (instance.id, "Elixir.RealStack.Steps.Charge", "charged"),
        )
        rows = conn.execute(
            sql.SQL(
                "SELECT step_ref, inserted_at, localtimestamp FROM {} ORDER BY step_ref"
            ).format(table)
        ).fetchall()
    (_, elixir_at, local), (_, python_at, _) = rows
    assert python_at == elixir_at == local
