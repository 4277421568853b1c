"""The failed step whose evidence a Pruner deleted: reported by repair and the lifeline, never
healed, nothing written (real PostgreSQL).

Oban's Pruner deletes discarded and completed jobs after ``max_age`` (60 s by default), less than
the lifeline's default grace + interval. Once a failed step's discarded ExecuteStepWorker is gone
the instance is ``running`` with an active step that has neither a result nor any job. Neither
owner's advance would bring it where the discard would have (failed): the genuine AdvanceWorker
runs the step again (``interop_tests/test_workflows_pruned_step.py``), the Python runner's does
nothing (shown here). So repair lists it as skipped with what to do, and touches nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry
from bridge.jobs.plugins.peer import Peer
from bridge.jobs.plugins.pruner import Pruner
from bridge.workflows.model.instance import Instance
from bridge.workflows.run.lifeline import WorkflowLifeline, pruner_conflicts
from bridge.workflows.run.repair import (
    FAILED_STEP,
    GONE_REASON,
    JOB_GONE,
    describe,
    find_stuck,
    repair,
)
from bridge.workflows.run.repair_passes import repair_until_clear
from bridge.workflows.run.runner import (
    ADVANCE_WORKER,
    EXECUTE_STEP_WORKER,
    WorkflowRunner,
    advance_job,
)
from tests.jobs.support import running_node
from tests.workflows.run.test_repair import HEAL, first
from tests.workflows.run.test_repair_shapes import _jobs, _q, _set, all_rows, build_discarded_python

GONE_ID = "py-pruned"


@pytest.fixture
def runner(database_url: str, oban_prefix: str) -> Iterator[WorkflowRunner]:
    made = WorkflowRunner(database_url, [HEAL], prefix=oban_prefix)
    yield made
    made.close()


def prune(conn: psycopg.Connection[Any], prefix: str) -> list[int]:
    """What a Pruner with ``max_age`` 0 deletes: every completed, cancelled and discarded job."""
    rows = conn.execute(
        _q(
            "DELETE FROM {prefix}.oban_jobs WHERE state IN ('completed', 'cancelled', 'discarded')"
            " RETURNING id",
            prefix,
        )
    ).fetchall()
    return [r[0] for r in rows]


def build_pruned(runner: WorkflowRunner, conn: psycopg.Connection[Any]) -> None:
    """A Python-owned instance whose First step job was discarded on its last attempt (its node
    died), then pruned with the completed advance before any repair saw it."""
    build_discarded_python(runner, conn, GONE_ID)
    assert len(prune(conn, runner.prefix)) == 2


def test_repair_reports_the_pruned_shape_and_writes_nothing(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    prefix = runner.prefix
    build_pruned(runner, conn)
    # Not this shape: a step job still queued; a discarded one still there (the failed step).
    runner.start(conn, HEAL, {}, id="py-stepping")
    (advance,) = _jobs(runner, "py-stepping", ADVANCE_WORKER)
    runner.perform_advance(advance)
    _set(conn, prefix, advance.id, "completed")
    build_discarded_python(runner, conn, "py-failed")
    before = all_rows(conn, prefix)

    found = find_stuck(conn, prefix, grace=0)
    assert sorted((s.id, s.kind, s.failed_step) for s in found) == [
        ("py-failed", FAILED_STEP, first.name),
        (GONE_ID, JOB_GONE, first.name),
    ]
    # The grace counts from the instance's last write.
    assert [s.id for s in find_stuck(conn, prefix, grace=3600)] == ["py-failed"]

    done = repair(conn, prefix, grace=0, dry_run=True, runners=[runner])
    gone = next(r for r in done if r.instance_id == GONE_ID)
    assert (gone.action, gone.kind, gone.reason, gone.job) == (
        "skipped",
        JOB_GONE,
        GONE_REASON,
        None,
    )
    assert describe([gone]) == [
        f"skipped {GONE_ID} [running; step first has no job and no result]: {GONE_REASON}"
    ]
    assert gone.to_dict()["kind"] == "step job gone"
    conn.execute(
        _q("DELETE FROM {prefix}.oban_jobs WHERE args->>'instance_id' = 'py-failed'", prefix)
    )
    conn.execute(_q("DELETE FROM {prefix}.workflow_instances WHERE id = 'py-failed'", prefix))
    before = all_rows(conn, prefix)
    run = repair_until_clear(conn, prefix, grace=0, runners=[runner])
    assert [(r.instance_id, r.action) for _, r in run.repairs] == [(GONE_ID, "skipped")]
    assert (len(run.passes), run.stuck, run.enqueued) == (1, 1, 0)
    assert all_rows(conn, prefix) == before


def test_the_python_runners_own_advance_would_not_heal_it(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    """Why repair does not enqueue it: the runner's advance queues only newly activated steps,
    so it finds nothing to apply and nothing to queue, and the instance stays as it was."""
    build_pruned(runner, conn)
    instance = all_rows(conn, runner.prefix)["workflow_instances"]
    (heal,) = insert_all(conn, [_advance_for(runner, GONE_ID)], prefix=runner.prefix)
    heal.attempt, heal.max_attempts = 1, 20
    runner.perform_advance(heal)
    after = all_rows(conn, runner.prefix)
    assert after["workflow_instances"] == instance
    assert [j["worker"] for j in after["oban_jobs"]] == [ADVANCE_WORKER]
    assert not any(j["worker"] == EXECUTE_STEP_WORKER for j in after["oban_jobs"])


def _advance_for(runner: WorkflowRunner, instance_id: str) -> Job:
    """The advance repair would have enqueued for a Python-owned instance (the runner's own)."""
    instance = Instance(id=instance_id, workflow=HEAL.name, workflow_version=1)
    return advance_job(HEAL, instance, queue=runner.queue, config_key=runner.config_key)


async def test_the_lifeline_reports_it_and_writes_nothing(
    runner: WorkflowRunner,
    conn: psycopg.Connection[Any],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    build_pruned(runner, conn)
    before = all_rows(conn, runner.prefix)
    lifeline = WorkflowLifeline(grace=0.0, interval=0.1, runners=[runner])
    caplog.set_level(logging.WARNING, logger="bridge.workflows.lifeline")
    async with running_node(
        database_url, runner.prefix, {}, Registry(), plugins=[Peer(), lifeline]
    ):
        for _ in range(200):
            lines = [r.getMessage() for r in caplog.records]
            if len(lines) >= 3:
                break
            await asyncio.sleep(0.05)
    line = f"workflow lifeline: skipped {GONE_ID} [running; step first has no job and no result]: "
    assert lines[:3] == [line + GONE_REASON] * 3  # every tick, nothing more
    assert all_rows(conn, runner.prefix) == before


def test_a_pruner_that_outruns_the_lifeline_is_named_at_start() -> None:
    assert pruner_conflicts([Peer(), Pruner(max_age=120.0)], grace=60.0, interval=30.0) == []
    assert pruner_conflicts([Pruner(max_age=60.0)], grace=60.0, interval=30.0) == [
        "the pruner deletes discarded jobs after 60 s, not more than the lifeline's grace + "
        "interval (90 s): a failed step's discarded job may be pruned before the lifeline sees "
        "it, leaving its instance running (then reported, never healed); prune after more than "
        "90 s (--prune-after)"
    ]


async def test_the_lifeline_says_so_on_a_node_with_such_a_pruner(
    database_url: str, oban_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.workflows.lifeline")
    plugins = [Peer(), Pruner(max_age=60.0), WorkflowLifeline(grace=60.0, interval=30.0)]
    async with running_node(database_url, oban_prefix, {}, Registry(), plugins=plugins):
        pass
    assert [r.getMessage() for r in caplog.records][:1] == [
        "workflow lifeline: " + pruner_conflicts(plugins, grace=60.0, interval=30.0)[0]
    ]
