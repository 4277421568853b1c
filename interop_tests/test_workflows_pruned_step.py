"""The failed step whose discarded job a Pruner deleted, with the fixture's HephaestusOban.

Golden ``failing-step`` s1a: ``FailLinear``'s Boom fails on its only attempt, its
ExecuteStepWorker is discarded and FailureHandler never fires (Oban 2.23). Oban's Pruner deletes
discarded and completed jobs after ``max_age`` (60 s by default), less than the lifeline's
default grace + interval; the test plays the Pruner by deleting them. What is left: a ``running``
instance whose active step has no result and no job.

- What the owner's own job does then: the genuine AdvanceWorker (``detect_discarded_steps``
  finds nothing, ``Engine.advance/1`` returns the running instance unchanged) enqueues an
  ExecuteStepWorker for every active step, so Boom runs again with a fresh budget instead of the
  instance failing; after that run fails the instance is as stuck as before.
- So ``bridge workflows repair`` (the installed script, from a scratch directory) and the
  lifeline report the instance as skipped with what to do, and write nothing.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry
from bridge.jobs.plugins.peer import Peer
from bridge.workflows.run.lifeline import WorkflowLifeline
from bridge.workflows.run.repair import GONE_REASON
from bridge.workflows.run.runner import ADVANCE_WORKER, EXECUTE_STEP_WORKER
from interop_tests.fixture import ElixirFixture
from interop_tests.support import golden_lines
from interop_tests.workflow_support import (
    FAIL_LINEAR,
    HEPHAESTUS_QUEUE,
    db_instance_row,
    hephaestus_jobs,
    serve_hephaestus,
    start_elixir_workflow,
)
from tests.jobs.support import running_node
from tests.support.cli import run_bridge

SCENARIO_KEY = "Elixir.Realstack.Heph"  # failing-step's runner config key
TABLES = ("oban_jobs", "workflow_instances", "hephaestus_step_results")


def _q(template: str, prefix: str) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


def all_rows(conn: psycopg.Connection[Any], prefix: str) -> dict[str, list[Any]]:
    return {
        table: [
            r[0]
            for r in conn.execute(
                _q(f"SELECT row_to_json(t) FROM {{prefix}}.{table} t ORDER BY t::text", prefix)
            ).fetchall()
        ]
        for table in TABLES
    }


def pruned_failed_linear(fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str) -> str:
    """Golden s1a, then every finished job of the instance deleted as the Pruner deletes them."""
    serve_hephaestus(fx, limit=1, config_key=SCENARIO_KEY)
    instance_id = start_elixir_workflow(
        fx, FAIL_LINEAR, {"input": "linear"}, value="s1", config_key=SCENARIO_KEY
    )
    fx.call("wait_idle", queues=[HEPHAESTUS_QUEUE], timeout_ms=10_000)
    jobs = hephaestus_jobs(fx, instance_id)
    assert [(j["worker"], j["state"]) for j in jobs] == [
        (ADVANCE_WORKER, "completed"),
        (EXECUTE_STEP_WORKER, "discarded"),
    ]
    pruned = conn.execute(
        _q(
            "DELETE FROM {prefix}.oban_jobs WHERE state IN ('completed', 'cancelled', 'discarded')"
            " AND args->>'instance_id' = %s RETURNING id",
            schema,
        ),
        (instance_id,),
    ).fetchall()
    assert len(pruned) == 2
    assert db_instance_row(conn, schema, instance_id)["status"] == "running"
    return instance_id


def test_the_genuine_advance_runs_the_failed_step_again_instead_of_failing_the_instance(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    """Why repair does not enqueue it: FailureHandler's own advance (golden job 3), enqueued
    once the discard is gone, re-runs Boom; the instance stays running."""
    instance_id = pruned_failed_linear(fx, conn, schema)
    handlers = next(
        j
        for j in golden_lines("failing-step/s1_oban_jobs.jsonl")
        if j["worker"] == ADVANCE_WORKER and "workflow_version" not in j["args"]
    )
    args = {**handlers["args"], "instance_id": instance_id}
    meta = {**handlers["meta"], "instance_id": instance_id}
    job = Job.new(ADVANCE_WORKER, args, queue=HEPHAESTUS_QUEUE, max_attempts=20, meta=meta)
    insert_all(conn, [job], prefix=schema)
    fx.call("wait_idle", queues=[HEPHAESTUS_QUEUE], timeout_ms=10_000)
    jobs = hephaestus_jobs(fx, instance_id)
    assert [(j["worker"], j["state"]) for j in jobs] == [
        (ADVANCE_WORKER, "completed"),
        (EXECUTE_STEP_WORKER, "discarded"),  # Boom ran again, with its one attempt
    ]
    assert jobs[1]["args"]["step_ref"] == FAIL_LINEAR.start_step
    assert db_instance_row(conn, schema, instance_id)["status"] == "running"


def test_repair_command_reports_it_and_writes_nothing(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str, database_url: str, tmp_path: Path
) -> None:
    instance_id = pruned_failed_linear(fx, conn, schema)
    before = all_rows(conn, schema)
    args = ["--database-url", database_url, "--prefix", schema, "workflows", "repair"]
    done = run_bridge(*args, "--grace", "0", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, ""), done
    assert done.stdout.splitlines() == [
        f"pass 1: skipped {instance_id} [running; step boom has no job and no result]: "
        + GONE_REASON,
        "1 stuck instance(s), 0 advance(s) enqueued in 1 pass(es)",
    ]
    assert all_rows(conn, schema) == before


async def test_the_lifeline_reports_it_and_writes_nothing(
    fx: ElixirFixture,
    conn: psycopg.Connection[Any],
    schema: str,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    instance_id = pruned_failed_linear(fx, conn, schema)
    before = all_rows(conn, schema)
    caplog.set_level(logging.WARNING, logger="bridge.workflows.lifeline")
    plugins = [Peer(), WorkflowLifeline(grace=0.0, interval=0.1)]
    lines: list[str] = []
    async with running_node(database_url, schema, {}, Registry(), plugins=plugins):
        for _ in range(200):
            lines = [r.getMessage() for r in caplog.records]
            if len(lines) >= 3:
                break
            await asyncio.sleep(0.05)
    line = (
        f"workflow lifeline: skipped {instance_id} [running; step boom has no job and no result]"
        f": {GONE_REASON}"
    )
    assert lines[:3] == [line] * 3
    assert all_rows(conn, schema) == before
    await asyncio.to_thread(fx.call, "wait_idle", queues=[HEPHAESTUS_QUEUE], timeout_ms=5_000)
    assert all_rows(conn, schema) == before
