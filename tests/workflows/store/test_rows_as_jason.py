"""Instance and result rows on a caller's own psycopg connection: JSON read (and written back)
as Jason does, what no Python object holds as a typed error naming the instance, and the
database's clock, to the second, in every column type the Elixir migration can produce.

On the old code: RecursionError/ValueError loading a state nested 2,000 levels or holding a
5,000-digit integer (and saving it again); psycopg's DataError or a bare ValueError for a
result stamped ``infinity``; instances stamped with the host's clock to the microsecond.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from bridge.wire import jsonfmt
from bridge.workflows.model.engine import StepResult, advance, new_instance
from bridge.workflows.model.serializer import to_row
from bridge.workflows.store.instances import (
    UndecodableRowError,
    insert_instance,
    insert_result,
    load_and_take_pending,
    load_instance,
    results_for,
    save_instance,
    take_pending,
    taken_results,
)
from tests.workflows import ORDER, validate

Conn = psycopg.Connection[Any]
REGISTRY = {ORDER.name: ORDER}
DEEP = 2_000
LONG = 10**5_000


def deep_value(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def table(prefix: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(prefix), sql.Identifier(name))


def stored_instance(conn: Conn, prefix: str, instance_id: str) -> Any:
    query = sql.SQL("SELECT state::text, inserted_at, updated_at FROM {} WHERE id = %s")
    return conn.execute(
        query.format(table(prefix, "workflow_instances")), (instance_id,)
    ).fetchone()


def test_a_deep_and_long_state_loads_and_saves_as_jason_reads_it(
    conn: Conn, oban_prefix: str
) -> None:
    instance = new_instance(ORDER, {"order_id": "o-1"}, id="order::deep")
    insert_instance(conn, oban_prefix, to_row(instance))
    # What an Elixir app may have put in the context: 2,000 levels, a 5,000-digit integer.
    conn.execute(
        sql.SQL(
            "UPDATE {} SET state = jsonb_set(state, '{{context,initial}}',"
            " jsonb_build_object('order_id', 'o-1', 'deep', %s::jsonb, 'n', %s::numeric))"
            " WHERE id = %s"
        ).format(table(oban_prefix, "workflow_instances")),
        (jsonfmt.dumps(deep_value(DEEP)), "1" + "0" * 5_000, instance.id),
    )
    loaded = load_instance(conn, oban_prefix, instance.id, REGISTRY)
    initial = loaded.context.initial
    assert initial["n"] == LONG
    assert jsonfmt.dumps(initial["deep"]) == jsonfmt.dumps(deep_value(DEEP))
    before = stored_instance(conn, oban_prefix, instance.id)[0]
    save_instance(conn, oban_prefix, advance(ORDER, loaded))
    after = load_instance(conn, oban_prefix, instance.id, REGISTRY)
    assert after.context.initial["n"] == LONG and after.status == "running"
    stored = jsonfmt.loads(stored_instance(conn, oban_prefix, instance.id)[0])
    initial_text = jsonfmt.dumps(jsonfmt.loads(before)["context"]["initial"], sort_keys=True)
    assert jsonfmt.dumps(stored["context"]["initial"], sort_keys=True) == initial_text


def test_a_result_no_python_object_holds_is_a_typed_error_naming_the_instance(
    conn: Conn, oban_prefix: str
) -> None:
    instance = new_instance(ORDER, {"order_id": "o-1"}, id="order::infinite")
    insert_instance(conn, oban_prefix, to_row(instance))
    result = StepResult(validate.name, "valid", {"deep": deep_value(DEEP), "n": LONG}, {})
    assert insert_result(conn, oban_prefix, instance.id, result, 1)
    (read,) = results_for(conn, oban_prefix, instance.id, pending=True)
    assert read.context_updates["n"] == LONG
    conn.execute(
        sql.SQL("UPDATE {} SET inserted_at = 'infinity'").format(
            table(oban_prefix, "hephaestus_step_results")
        )
    )
    message = f"workflow instance {instance.id!r}: its results cannot be read: "
    with pytest.raises(UndecodableRowError, match=f"^{message}"):
        results_for(conn, oban_prefix, instance.id, pending=True)
    with conn.transaction(force_rollback=True), pytest.raises(UndecodableRowError):
        take_pending(conn, oban_prefix, instance.id)
    with (
        conn.transaction(force_rollback=True),
        pytest.raises(UndecodableRowError) as caught,
    ):
        load_and_take_pending(conn, oban_prefix, instance.id, REGISTRY, "true", {})
    assert str(caught.value).startswith(f"workflow instance {instance.id!r}: result ")
    assert "inserted_at is infinity, outside years 1 to 9999" in str(caught.value)


def database_second(conn: Conn) -> Any:
    row = conn.execute("SELECT date_trunc('second', timezone('UTC', now()))").fetchone()
    assert row is not None
    return row[0]


@pytest.mark.parametrize(
    "column_type", ["timestamp(0) without time zone", "timestamp without time zone", "timestamptz"]
)
def test_instances_are_stamped_with_the_databases_clock_to_the_second(
    conn: Conn, oban_prefix: str, column_type: str
) -> None:
    """HephaestusEcto's ``timestamps()`` hold whole seconds of UTC (Ecto truncates); bridge
    writes the same from the database's clock, in any session time zone and column type."""
    instances = table(oban_prefix, "workflow_instances")
    if column_type != "timestamp(0) without time zone":
        conn.execute(
            sql.SQL(
                "ALTER TABLE {t} ALTER COLUMN inserted_at TYPE {c} USING inserted_at AT TIME ZONE"
                " 'UTC', ALTER COLUMN updated_at TYPE {c} USING updated_at AT TIME ZONE 'UTC'"
            ).format(t=instances, c=sql.SQL(column_type))
            if column_type == "timestamptz"
            else sql.SQL(
                "ALTER TABLE {t} ALTER COLUMN inserted_at TYPE {c},"
                " ALTER COLUMN updated_at TYPE {c}"
            ).format(t=instances, c=sql.SQL(column_type))
        )
    utc = "timezone('UTC', {})" if column_type == "timestamptz" else "{}"
    as_utc = sql.SQL(
        "SELECT "
        + utc.format("inserted_at")
        + ", "
        + utc.format("updated_at")
        + " FROM {} WHERE id = %s"
    ).format(instances)
    instance = new_instance(ORDER, {"order_id": "o-1"}, id=f"order::clock-{len(column_type)}")
    with conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'Asia/Kathmandu'")  # UTC+05:45: no whole hours
        started = database_second(conn)
        conn.execute("SELECT pg_sleep(0.01)")
        insert_instance(conn, oban_prefix, to_row(instance))
        assert conn.execute(as_utc, (instance.id,)).fetchone() == (started, started)
    loaded = load_instance(conn, oban_prefix, instance.id, REGISTRY)
    with conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'America/St_Johns'")  # UTC-03:30 or -02:30
        saved = database_second(conn)
        conn.execute("SELECT pg_sleep(0.01)")
        save_instance(conn, oban_prefix, advance(ORDER, loaded))
        assert conn.execute(as_utc, (instance.id,)).fetchone() == (started, saved)


timestamp_texts = (
    st.text(max_size=30)
    | st.datetimes().map(lambda moment: moment.isoformat())
    | st.sampled_from(["infinity", "-infinity", "10000-01-01T00:00:00", "0044-03-15T12:00:00 BC"])
)


@settings(max_examples=300, deadline=None)
@given(timestamp_texts)
def test_taken_results_is_a_result_or_a_typed_error(text: str) -> None:
    """Whatever ``inserted_at`` text the advance's jsonb_agg returns: a result, or an error
    naming the instance and the result; never a bare ValueError."""
    row = {
        "id": "r-1",
        "step_ref": "Elixir.A",
        "event": "done",
        "context_updates": {},
        "metadata_updates": {},
        "inserted_at": text,
    }
    try:
        (result,) = taken_results([row], "i-1")
    except UndecodableRowError as exc:
        assert str(exc).startswith("workflow instance 'i-1': result r-1 (Elixir.A) cannot be read")
    else:
        assert result.inserted_at.isoformat()
