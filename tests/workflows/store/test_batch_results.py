"""The batch twin of ``results_for``: one instance's unreadable result fails that instance
alone (``store.UndecodableRowError`` naming it, as the single path), the others' results are
read as ``results_for`` reads them."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge.workflows.model.engine import StepResult, new_instance
from bridge.workflows.model.serializer import to_row
from bridge.workflows.store.batch import results_of, results_or_raise
from bridge.workflows.store.instances import (
    UndecodableRowError,
    insert_instance,
    insert_result,
    results_for,
)
from tests.workflows import ORDER, validate

Conn = psycopg.Connection[Any]


@pytest.mark.parametrize("stamp", ["infinity", "-infinity", "10000-01-01 00:00:00"])
async def test_one_unreadable_result_fails_only_its_instance(
    conn: Conn, database_url: str, oban_prefix: str, stamp: str
) -> None:
    ids = ["order::ok1", "order::bad", "order::ok2", "order::none"]
    for instance_id in ids:
        insert_instance(conn, oban_prefix, to_row(new_instance(ORDER, {}, id=instance_id)))
    for instance_id in ids[:3]:
        result = StepResult(validate.name, "valid", {"n": 10**5_000, "at": instance_id}, {})
        assert insert_result(conn, oban_prefix, instance_id, result, 1)
    conn.execute(
        sql.SQL(
            "UPDATE {}.hephaestus_step_results SET inserted_at = %s WHERE instance_id = %s"
        ).format(sql.Identifier(oban_prefix)),
        (stamp, "order::bad"),
    )
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
        every = await results_of(aconn, oban_prefix, ids)
    assert list(every) == ids
    for instance_id in ("order::ok1", "order::ok2", "order::none"):
        read = results_or_raise(every, instance_id)
        assert read == results_for(conn, oban_prefix, instance_id, pending=False)
    assert [r.context_updates["at"] for r in results_or_raise(every, "order::ok1")] == [
        "order::ok1"
    ]
    with pytest.raises(UndecodableRowError) as caught:
        results_or_raise(every, "order::bad")
    assert caught.value.instance_id == "order::bad"
    assert str(caught.value).startswith("workflow instance 'order::bad': result ")
