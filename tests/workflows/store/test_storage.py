"""Step-result rows as HephaestusOban's insert leaves them, on real PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge.workflows.model.engine import StepResult, new_instance
from bridge.workflows.model.serializer import to_row
from bridge.workflows.store.instances import (
    InstanceNotFoundError,
    insert_instance,
    insert_result,
    insert_result_and_job,
    load_activity,
    load_and_take_pending,
    load_instance,
    mark_processed,
    results_for,
    save_instance_and_job,
    take_pending,
)
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


def test_take_pending_reads_and_marks_what_results_for_and_mark_processed_would(
    conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    """The advance's one-statement read-and-mark: the same rows, in the same order (inserted_at,
    then id), ending in the same state as the two statements it replaces."""
    table = sql.SQL("{}.hephaestus_step_results").format(sql.Identifier(oban_prefix))
    instance = new_instance(ORDER, {"order_id": "o-1", "items": []}, id="order::take")
    insert_instance(conn, oban_prefix, to_row(instance))
    done = StepResult("Elixir.Done.Before", "ok", {}, {})
    assert insert_result(conn, oban_prefix, instance.id, done, 1)
    mark_processed(
        conn, oban_prefix, [r.id for r in results_for(conn, oban_prefix, instance.id, pending=True)]
    )
    with conn.transaction():  # one transaction: the same inserted_at, so id breaks the tie
        for n in range(6):
            step = StepResult(f"Elixir.Step.S{n}", "ok", {"n": n}, {"m": n})
            assert insert_result(conn, oban_prefix, instance.id, step, 1)
    conn.execute(  # and one later, written first in id order would not matter
        sql.SQL(
            "UPDATE {} SET inserted_at = inserted_at + interval '1 second'"
            " WHERE step_ref = 'Elixir.Step.S0'"
        ).format(table)
    )
    expected = results_for(conn, oban_prefix, instance.id, pending=True)
    assert len(expected) == 6 and expected[-1].step_ref == "Elixir.Step.S0"
    with conn.transaction():
        taken = take_pending(conn, oban_prefix, instance.id)
    assert [
        (r.id, r.step_ref, r.event, r.context_updates, r.metadata_updates, r.inserted_at)
        for r in taken
    ] == [
        (r.id, r.step_ref, r.event, r.context_updates, r.metadata_updates, r.inserted_at)
        for r in expected
    ]
    assert results_for(conn, oban_prefix, instance.id, pending=True) == []
    assert len(results_for(conn, oban_prefix, instance.id, pending=False)) == 7
    assert take_pending(conn, oban_prefix, instance.id) == []


def test_load_activity_reads_what_load_instance_reads_of_the_activity(
    conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    """The recorder's light read: id, workflow, status, version and active steps as the full
    load gives them, validated the same way; nothing else (context stays empty)."""
    from dataclasses import replace

    from bridge.workflows import UnknownStepError
    from bridge.workflows.model.engine import advance
    from bridge.workflows.store.instances import save_instance

    registry = {ORDER.name: ORDER}
    started = advance(ORDER, new_instance(ORDER, {"order_id": "o-1"}, id="order::light"))
    insert_instance(conn, oban_prefix, to_row(started))
    full = load_instance(conn, oban_prefix, started.id, registry)
    light = load_activity(conn, oban_prefix, started.id, registry)
    assert full.active_steps == {validate.name} and full.context.initial
    fields = ("id", "workflow", "status", "workflow_version", "active_steps")
    assert [getattr(light, f) for f in fields] == [getattr(full, f) for f in fields]
    assert not light.context.initial
    table = sql.SQL("{}.workflow_instances").format(sql.Identifier(oban_prefix))
    conn.execute(
        sql.SQL(
            "UPDATE {} SET state = jsonb_set(state, '{{active_steps}}', '[\"Elixir.Nope\"]')"
        ).format(table)
    )
    with pytest.raises(UnknownStepError):
        load_activity(conn, oban_prefix, started.id, registry)
    save_instance(conn, oban_prefix, replace(full, active_steps=frozenset()))
    assert load_activity(conn, oban_prefix, started.id, registry).active_steps == frozenset()


def test_load_and_take_pending_is_load_and_take_pending_in_one_statement(
    conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    """The advance's first read: the instance as load_instance gives it, the flag, and the
    pending results as results_for gives them (same values and order), now marked."""
    registry = {ORDER.name: ORDER}
    instance = new_instance(ORDER, {"order_id": "o-1", "items": []}, id="order::both")
    insert_instance(conn, oban_prefix, to_row(instance))
    with conn.transaction():
        for n in range(4):
            step = StepResult(f"Elixir.Step.S{n}", "ok", {"n": n, "f": 1.5, "s": "é"}, {"m": n})
            assert insert_result(conn, oban_prefix, instance.id, step, 1)
    expected = results_for(conn, oban_prefix, instance.id, pending=True)
    with conn.transaction():
        loaded, flag, pending = load_and_take_pending(
            conn, oban_prefix, instance.id, registry, "%(yes)s::boolean", {"yes": True}
        )
    assert loaded == load_instance(conn, oban_prefix, instance.id, registry)
    assert flag is True
    assert [
        (r.id, r.step_ref, r.event, r.context_updates, r.metadata_updates) for r in pending
    ] == [(r.id, r.step_ref, r.event, r.context_updates, r.metadata_updates) for r in expected]
    assert [r.inserted_at for r in pending] == [r.inserted_at for r in expected]
    assert results_for(conn, oban_prefix, instance.id, pending=True) == []
    with pytest.raises(InstanceNotFoundError):
        load_and_take_pending(conn, oban_prefix, "order::none", registry, "true", {})


def test_insert_result_and_job_writes_both_rows_or_only_what_is_due(
    conn: psycopg.Connection[Any], oban_prefix: str, database_url: str
) -> None:
    """The recorder's statement: the result row as insert_result writes it and, only if it was
    written and the guard finds nothing, the job row as insert_one_unless writes it, with its
    notification; a second result for the step (unprocessed one exists) writes neither."""
    from bridge.jobs.client.enqueue import insert_one_unless
    from bridge.jobs.client.job import Job

    jobs = sql.SQL("SELECT row_to_json(j) FROM {}.oban_jobs j ORDER BY id").format(
        sql.Identifier(oban_prefix)
    )
    guard = "SELECT 1 FROM {prefix}.oban_jobs WHERE queue = %(guard_queue)s"
    instance = new_instance(ORDER, {"order_id": "o-1", "items": []}, id="order::rj")
    insert_instance(conn, oban_prefix, to_row(instance))
    ok = StepResult(validate.name, "valid", {"ok": True}, {"m": 1})

    def job() -> Job:
        return Job.new("W", {"instance_id": instance.id}, queue="q", tags=["t"], meta={"x": 1})

    listener = psycopg.connect(database_url, autocommit=True)
    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"{oban_prefix}.oban_insert")))
    try:
        with conn.transaction():
            assert insert_result_and_job(
                conn, oban_prefix, instance.id, ok, 1, job(), guard, {"guard_queue": "q"}
            )
        got = [n.payload for n in listener.notifies(timeout=0.5, stop_after=5)]
    finally:
        listener.close()
    assert got == ['{"queue":"q"}']
    (first,) = results_for(conn, oban_prefix, instance.id, pending=True)
    assert (first.step_ref, first.event, first.context_updates, first.metadata_updates) == (
        validate.name,
        "valid",
        {"ok": True},
        {"m": 1},
    )
    # An unprocessed result for the step exists: neither row.
    assert not insert_result_and_job(
        conn, oban_prefix, instance.id, ok, 1, job(), "SELECT 1 WHERE false", {}
    )
    assert len(conn.execute(jobs).fetchall()) == 1
    # The result is new but the guard finds a job: the result only.
    mark_processed(conn, oban_prefix, [first.id])
    assert insert_result_and_job(
        conn, oban_prefix, instance.id, ok, 1, job(), guard, {"guard_queue": "q"}
    )
    assert len(results_for(conn, oban_prefix, instance.id, pending=False)) == 2
    assert len(conn.execute(jobs).fetchall()) == 1
    # The job row is the one insert_one_unless writes.
    insert_one_unless(conn, job(), "SELECT 1 WHERE false", {}, prefix=oban_prefix)
    ours, theirs = (row for (row,) in conn.execute(jobs).fetchall())
    volatile = {"id", "inserted_at", "scheduled_at"}
    assert {k: v for k, v in ours.items() if k not in volatile} == {
        k: v for k, v in theirs.items() if k not in volatile
    }


def test_save_instance_and_job_writes_what_save_instance_and_insert_all_write(
    conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    from bridge.jobs.client.enqueue import insert_all
    from bridge.jobs.client.job import Job
    from bridge.workflows.model.engine import advance
    from bridge.workflows.store.instances import save_instance

    registry = {ORDER.name: ORDER}
    rows = sql.SQL(
        "SELECT (SELECT row_to_json(i) FROM {}.workflow_instances i WHERE id = %s),"
        " (SELECT row_to_json(j) FROM {}.oban_jobs j ORDER BY id DESC LIMIT 1)"
    ).format(sql.Identifier(oban_prefix), sql.Identifier(oban_prefix))
    written = []
    for n, combined in enumerate((True, False)):
        instance = new_instance(ORDER, {"order_id": "o-1"}, id=f"order::save-{n}")
        insert_instance(conn, oban_prefix, to_row(instance))
        started = advance(ORDER, load_instance(conn, oban_prefix, instance.id, registry))
        job = Job.new("W", {"i": 1}, queue="q", tags=["t"], meta={"m": 1})
        with conn.transaction():
            if combined:
                save_instance_and_job(conn, oban_prefix, started, job)
            else:
                save_instance(conn, oban_prefix, started)
                insert_all(conn, [job], prefix=oban_prefix)
        assert load_instance(conn, oban_prefix, instance.id, registry) == started
        written.append(conn.execute(rows, (instance.id,)).fetchone())
    volatile = {"id", "inserted_at", "scheduled_at", "updated_at"}
    (ours_i, ours_j), (theirs_i, theirs_j) = written
    assert ours_i["status"] == "running"
    assert {k: v for k, v in ours_i.items() if k not in volatile} == {
        k: v for k, v in theirs_i.items() if k not in volatile
    }
    assert {k: v for k, v in ours_j.items() if k not in volatile} == {
        k: v for k, v in theirs_j.items() if k not in volatile
    }
