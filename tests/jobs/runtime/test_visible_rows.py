"""What a reader of the table sees while and after a real node runs jobs, on real PostgreSQL.

Recorded output goes into ``meta`` only when the row's meta is a JSON object: merged into
anything else, jsonb's ``||`` would turn it into an array holding the recorded object.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, Registry, insert_all, worker
from bridge.wire.recorded import decode_recorded
from tests.jobs.support import job_row, running_node, wait_for_state

Conn = psycopg.Connection[tuple[object, ...]]
RECORDER = "v.Recorder"


def recording_registry() -> Registry:
    registry = Registry()

    @worker(name=RECORDER, queue="v", recorded=True, registry=registry)
    def recorder(job: Job) -> dict[str, int]:
        return {"answer": 42}

    return registry


def set_meta(conn: Conn, prefix: str, job_id: int, meta_json: str) -> None:
    conn.execute(
        sql.SQL("UPDATE {}.oban_jobs SET meta = %s::jsonb WHERE id = %s").format(
            sql.Identifier(prefix)
        ),
        (meta_json, job_id),
    )


@pytest.mark.parametrize(
    ("meta_json", "kind"),
    [("[1, 2]", "array"), ('"text"', "string"), ("7", "number"), ("true", "boolean")],
)
async def test_recorded_output_leaves_a_meta_that_is_not_an_object_as_written(
    conn: Conn,
    oban_prefix: str,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    meta_json: str,
    kind: str,
) -> None:
    odd, plain = insert_all(
        conn, [Job.new(RECORDER, queue="v", meta={"k": 1}) for _ in range(2)], prefix=oban_prefix
    )
    assert odd.id is not None and plain.id is not None
    set_meta(conn, oban_prefix, odd.id, meta_json)
    caplog.set_level(logging.WARNING, logger="bridge.jobs")
    async with running_node(database_url, oban_prefix, {"v": 2}, recording_registry()):
        for job_id in (odd.id, plain.id):
            await wait_for_state(database_url, oban_prefix, job_id, {"completed"})
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT meta::text FROM {}.oban_jobs WHERE id = %s").format(
                sql.Identifier(oban_prefix)
            ),
            (odd.id,),
        )
        row = cur.fetchone()
    assert row is not None
    assert row[0] == conn.execute("SELECT %s::jsonb::text", (meta_json,)).fetchone()[0]  # type: ignore[index]
    message = (
        f"job {odd.id} ({RECORDER}): output not recorded: its meta is a JSON {kind}, not an object"
    )
    assert message in caplog.messages
    # An object meta still gets the two keys, next to its own.
    meta: dict[str, Any] = job_row(database_url, oban_prefix, plain.id)["meta"]
    assert meta["k"] == 1 and meta["recorded"] is True
    assert decode_recorded(meta) == {"answer": 42}


async def test_recorded_output_leaves_a_json_null_meta_as_written(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    """A JSON ``null`` meta reads like an empty one on the Python side, so the outcome's own
    statement decides: only an object meta takes the recorded keys (``null || {…}`` would make
    an array)."""
    (job,) = insert_all(conn, [Job.new(RECORDER, queue="v")], prefix=oban_prefix)
    assert job.id is not None
    set_meta(conn, oban_prefix, job.id, "null")
    async with running_node(database_url, oban_prefix, {"v": 1}, recording_registry()):
        await wait_for_state(database_url, oban_prefix, job.id, {"completed"})
    row = conn.execute(
        sql.SQL("SELECT meta::text FROM {}.oban_jobs WHERE id = %s").format(
            sql.Identifier(oban_prefix)
        ),
        (job.id,),
    ).fetchone()
    assert row is not None and row[0] == "null"
