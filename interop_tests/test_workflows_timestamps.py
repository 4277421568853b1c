"""``workflow_instances.inserted_at``/``updated_at`` in each column type an Elixir migration's
``timestamps()`` makes: ``timestamp(0)`` (the default), ``timestamp`` (a Repo with
``migration_timestamps: [type: :utc_datetime_usec]``) and ``timestamptz`` (``type:
:timestamptz``), each in a schema of its own.

The Python runner writes instances (running, waiting, completed) from a session whose time zone
is not UTC; the fixture loads them through its HephaestusEcto path (``Repo.get`` of the
``timestamps()`` record, ``Fixture.EctoTimestamps``: Postgrex's decoders and Ecto's
``:naive_datetime`` load) and must see what it sees of an instance the Elixir side wrote in the
same variant: whole-second UTC wall times. In ``timestamptz`` the Elixir side cannot write its
own instances at all (Postgrex refuses the ``NaiveDateTime`` Ecto dumps), and bridge's
``schema verify`` says so.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import schema as bridge_schema
from bridge.workflows.run.runner import WorkflowRunner
from interop_tests.cold_flows import DECLARED
from interop_tests.fixture import CommandFailed, ElixirFixture
from interop_tests.workflow_support import (
    ORDER,
    db_instance_row,
    load_in_vm,
    serve_hephaestus,
    start_elixir_workflow,
    wait_status,
)
from tests.workflows.run.test_runner import serving, status_is, wait_for_instance

VARIANTS = ("timestamp(0)", "timestamp", "timestamptz")
ZONE = "Asia/Kolkata"  # half an hour off: a wall time read in the wrong zone shows
WHOLE_SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest, conn: psycopg.Connection[Any], schema: str) -> str:
    """This test's schema with the instance timestamps in one variant (the table is empty)."""
    column_type: str = request.param
    conn.execute(
        sql.SQL(
            "ALTER TABLE {}.workflow_instances ALTER COLUMN inserted_at TYPE {t},"
            " ALTER COLUMN updated_at TYPE {t}"
        ).format(sql.Identifier(schema), t=sql.SQL(column_type))
    )
    return column_type


@pytest.fixture
def runner(database_url: str, schema: str) -> Iterator[WorkflowRunner]:
    url = psycopg.conninfo.make_conninfo(database_url, options=f"-c TimeZone={ZONE}")
    made = WorkflowRunner(url, [DECLARED], prefix=schema, config_key="stamps")
    yield made
    made.close()


def _db_now(conn: psycopg.Connection[Any]) -> datetime:
    (now,) = conn.execute("SELECT date_trunc('second', clock_timestamp())").fetchone() or (None,)
    assert isinstance(now, datetime)
    return now.astimezone(UTC).replace(tzinfo=None)


def _as_utc_wall_time(value: datetime) -> datetime:
    """A column value as Ecto's ``:naive_datetime`` means it: a UTC wall time."""
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _as_ecto_loads(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str, instance_id: str
) -> dict[str, Any]:
    """The VM's record and instance of the row, checked against the row bridge reads."""
    record = fx.call("ecto.record", instance_id=instance_id)
    assert record["loaded"] is True, record
    loaded = load_in_vm(fx, instance_id)
    assert loaded["loaded"] is True, loaded
    row = db_instance_row(conn, schema, instance_id)
    for column in ("inserted_at", "updated_at"):
        stored = _as_utc_wall_time(row[column])
        assert stored.microsecond == 0, (column, row[column])
        assert WHOLE_SECOND.fullmatch(record[column]), record
        assert datetime.fromisoformat(record[column]) == stored, (column, record, row[column])
    assert record["inserted_at"] <= record["updated_at"]
    assert (record["status"], loaded["instance"]["status"]) == (row["status"], row["status"])
    return record


async def _until_step_retryable(
    conn: psycopg.Connection[Any], schema: str, instance_id: str, timeout: float = 20.0
) -> None:
    query = sql.SQL(
        "SELECT 1 FROM {}.oban_jobs WHERE worker = 'HephaestusOban.ExecuteStepWorker'"
        " AND state = 'retryable' AND args->>'instance_id' = %s"
    ).format(sql.Identifier(schema))
    deadline = asyncio.get_running_loop().time() + timeout
    while conn.execute(query, (instance_id,)).fetchone() is None:
        assert asyncio.get_running_loop().time() < deadline, "the failing step never failed"
        await asyncio.sleep(0.05)


def _between(record: dict[str, Any], before: datetime, after: datetime) -> None:
    for column in ("inserted_at", "updated_at"):
        assert before <= datetime.fromisoformat(record[column]) <= after, (record, before, after)


async def test_python_written_instances_load_in_the_vm_as_its_own_in_every_column_type(
    fx: ElixirFixture,
    conn: psycopg.Connection[Any],
    schema: str,
    variant: str,
    runner: WorkflowRunner,
) -> None:
    before = _db_now(conn)
    ids = {mode: f"zq::ts-{mode}" for mode in ("flaky", "wait")}
    for mode, instance_id in ids.items():
        runner.start(conn, DECLARED, {"mode_zq": mode}, id=instance_id)
    async with serving(runner):
        await wait_for_instance(runner.url, schema, ids["wait"], status_is("waiting"))
        # The flaky step's job waits for its retry: the instance stays running.
        await _until_step_retryable(conn, schema, ids["flaky"])
        running = _as_ecto_loads(fx, conn, schema, ids["flaky"])
        waiting = _as_ecto_loads(fx, conn, schema, ids["wait"])
        runner.resume(conn, ids["wait"], "arrived_zq")
        await wait_for_instance(runner.url, schema, ids["wait"], status_is("completed"))
    completed = _as_ecto_loads(fx, conn, schema, ids["wait"])
    after = _db_now(conn)
    assert [r["status"] for r in (running, waiting, completed)] == [
        "running",
        "waiting",
        "completed",
    ]
    for record in (running, waiting, completed):
        _between(record, before, after)
    assert completed["inserted_at"] == waiting["inserted_at"]

    # The Elixir side's own instance in the same variant.
    serve_hephaestus(fx, limit=1)
    if variant == "timestamptz":
        with pytest.raises(CommandFailed) as refused:
            start_elixir_workflow(fx, ORDER, {"items": 3, "customer": "c-9"}, value="tsex")
        assert refused.value.type == "DBConnection.EncodeError"
        assert "Postgrex expected %DateTime{}, got ~N[" in str(refused.value)
        assert fx.call("ecto.record", instance_id="order::tsex")["type"] == "not_found"
        return
    elixir_id = start_elixir_workflow(fx, ORDER, {"items": 3, "customer": "c-9"}, value="tsex")
    wait_status(fx, elixir_id, "waiting")
    elixir_waiting = _as_ecto_loads(fx, conn, schema, elixir_id)
    fx.call("workflow.resume", instance_id=elixir_id, event="shipped")
    wait_status(fx, elixir_id, "completed")
    fx.call("wait_idle", queues=["hephaestus"], timeout_ms=10_000)
    elixir_completed = _as_ecto_loads(fx, conn, schema, elixir_id)
    for record in (elixir_waiting, elixir_completed):
        _between(record, before, _db_now(conn))
    assert elixir_completed["inserted_at"] == elixir_waiting["inserted_at"]


def test_an_infinite_instance_timestamp_fails_the_vm_load_as_postgrex_does(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str, variant: str
) -> None:
    """What the VM does with a value neither side writes: Postgrex refuses ``infinity``."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.workflow_instances (id, workflow, status, state, workflow_version,"
            " inserted_at, updated_at) VALUES ('order::inf', %s, 'waiting', %s, 1, 'infinity',"
            " 'infinity')"
        ).format(sql.Identifier(schema)),
        (ORDER.name, psycopg.types.json.Jsonb({})),
    )
    record = fx.call("ecto.record", instance_id="order::inf")
    assert (record["loaded"], record["type"]) == (False, "ArgumentError")
    assert record["error"].startswith('got "infinity" from PostgreSQL.')


def test_schema_verify_notes_each_variant_and_says_timestamptz_is_not_usable(
    conn: psycopg.Connection[Any], schema: str, variant: str
) -> None:
    report = bridge_schema.verify(conn, schema)
    notes = [d for d in report.differences if d.subject.startswith("column workflow_instances.")]
    if variant == "timestamp(0)":
        assert notes == []
        return
    assert [(d.subject, d.blocking) for d in notes] == [
        ("column workflow_instances.inserted_at", False),
        ("column workflow_instances.updated_at", False),
    ]
    for note in notes:
        usable = "HephaestusEcto 0.3.0 cannot write" not in note.message
        assert usable is (variant != "timestamptz"), note.message
