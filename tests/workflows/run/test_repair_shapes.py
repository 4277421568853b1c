"""Every stuck shape repair heals, on real PostgreSQL, and that it writes nothing else.

- A failed step that never failed its instance, Elixir-owned: golden ``failing-step`` s1a rows
  (``Boom``'s ExecuteStepWorker discarded, the instance ``running``, no live job); repair must
  write the advance HephaestusOban's FailureHandler would have (golden job 3, which the capture
  got by invoking the handler by hand).
- The same for a Python-owned instance whose step job the job lifeline discarded on its last
  attempt (its node died): the runner's own advance, which fails the instance.
- A chain that sticks again after its first repair: :func:`repair_until_clear` passes until one
  finds nothing (the test plays the node, job by job, so the interleaving is exact).
- A mix of healthy, finished and stuck instances: every row but the new advances is unchanged.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry
from bridge.jobs.node import Node, NodeConfig
from bridge.jobs.plugins.lifeline import Lifeline
from bridge.jobs.plugins.peer import Peer
from bridge.workflows.run.repair import FAILED_STEP, LOST_ADVANCE, find_stuck, repair
from bridge.workflows.run.repair_passes import RepairRun, repair_until_clear
from bridge.workflows.run.runner import (
    ADVANCE_WORKER,
    EXECUTE_STEP_WORKER,
    RESUME_WORKER,
    WorkflowRunner,
    advance_job,
)
from bridge.workflows.serving import WorkflowServing, serve_workflows
from bridge.workflows.store.instances import load_instance
from tests.workflows import load_jsonl
from tests.workflows.run.test_repair import (
    HEAL,
    STUCK_ID,
    build_stuck_python,
    build_stuck_s2d,
    first,
    put_instance,
    put_job,
    second,
)
from tests.workflows.run.test_runner import (
    fetch_all,
    instance_json,
    jobs_json,
    wait_for_instance,
)

BOOM = "Elixir.Realstack.Steps.Boom"
S1A_RUNNING_AT = "2026-11-23T01:06:41.062753Z"  # snapshot: running, Boom's job discarded
FIELDS = ("worker", "queue", "args", "meta", "tags", "max_attempts", "priority")


def failing_step_jobs() -> list[dict[str, Any]]:
    return load_jsonl("failing-step/s1_oban_jobs.jsonl")


def _q(template: str, prefix: str) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


def build_failed_s1a(conn: psycopg.Connection[Any], prefix: str, instance_id: str) -> None:
    """Golden s1a once Boom's job was discarded: the instance ``running``, its first advance
    completed, the step job discarded (11 days before this test was written: past any grace)."""
    snap = next(
        s for s in load_jsonl("failing-step/s1a_snapshots.jsonl") if s["at"] == S1A_RUNNING_AT
    )
    put_instance(conn, prefix, {**snap["instance"], "id": instance_id})
    for job in failing_step_jobs()[:2]:
        args = {**job["args"], "instance_id": instance_id}
        put_job(conn, prefix, job, args=args, meta={**job["meta"], "instance_id": instance_id})


def fields(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job[k] for k in FIELDS}


def _jobs(runner: WorkflowRunner, instance_id: str, worker: str) -> list[Job]:
    """The instance's jobs of ``worker`` as a node would hand them to the runner (attempt 1)."""
    rows = fetch_all(
        runner.url,
        "SELECT row_to_json(j) FROM {prefix}.oban_jobs j"
        " WHERE args->>'instance_id' = %s AND worker = %s ORDER BY id",
        runner.prefix,
        (instance_id, worker),
    )
    jobs = []
    for (row,) in rows:
        job = Job(worker=row["worker"], args=row["args"], meta=row["meta"], id=row["id"])
        job.attempt, job.max_attempts, job.state = 1, row["max_attempts"], row["state"]
        jobs.append(job)
    return jobs


def _set(conn: psycopg.Connection[Any], prefix: str, job_id: int | None, state: str) -> None:
    conn.execute(
        _q(
            "UPDATE {prefix}.oban_jobs SET state = %s::text::{prefix}.oban_job_state,"
            " attempt = greatest(attempt, 1) WHERE id = %s",
            prefix,
        ),
        (state, job_id),
    )


@pytest.fixture
def runner(database_url: str, oban_prefix: str) -> Iterator[WorkflowRunner]:
    made = WorkflowRunner(database_url, [HEAL], prefix=oban_prefix)
    yield made
    made.close()


def build_discarded_python(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], instance_id: str, *, age: str = "1 hour"
) -> Job:
    """A Python-owned instance running First, whose step job the job lifeline discarded on its
    last attempt (its node died during it) ``age`` ago: nothing failed the instance."""
    runner.start(conn, HEAL, {}, id=instance_id)
    (advance,) = _jobs(runner, instance_id, ADVANCE_WORKER)
    runner.perform_advance(advance)
    _set(conn, runner.prefix, advance.id, "completed")
    (step_job,) = _jobs(runner, instance_id, EXECUTE_STEP_WORKER)
    conn.execute(
        _q(
            "UPDATE {prefix}.oban_jobs SET state = 'discarded', attempt = max_attempts,"
            " discarded_at = timezone('UTC', now()) - %s::interval WHERE id = %s",
            runner.prefix,
        ),
        (age, step_job.id),
    )
    return step_job


# -- a failed step ------------------------------------------------------------------------------


def test_a_failed_elixir_step_gets_the_advance_failure_handler_would_enqueue(
    conn: psycopg.Connection[Any], oban_prefix: str, database_url: str
) -> None:
    instance_id = "faillinear::s1"
    build_failed_s1a(conn, oban_prefix, instance_id)
    [stuck] = find_stuck(conn, oban_prefix)
    assert (stuck.id, stuck.kind, stuck.failed_step, stuck.pending_steps) == (
        instance_id,
        FAILED_STEP,
        BOOM,
        (),
    )
    before = jobs_json(database_url, oban_prefix, instance_id)
    [planned] = repair(conn, oban_prefix, dry_run=True)
    assert jobs_json(database_url, oban_prefix, instance_id) == before

    [done] = repair(conn, oban_prefix)
    assert (done.action, done.owner, done.queue, done.kind) == (
        "enqueued",
        "elixir",
        "hephaestus",
        FAILED_STEP,
    )
    new = jobs_json(database_url, oban_prefix, instance_id)[-1]
    handlers = failing_step_jobs()[2]  # FailureHandler.handle_event/4's AdvanceWorker
    assert "workflow_version" not in handlers["args"]
    assert fields(new) == fields(handlers)
    assert (new["state"], new["attempt"]) == ("available", 0)
    assert planned.job is not None and fields(planned.job.to_dict()) == fields(handlers)
    # Its advance is live now: nothing is stuck, a second run writes nothing.
    assert find_stuck(conn, oban_prefix, grace=0) == []
    assert repair(conn, oban_prefix, grace=0) == []


def test_a_python_step_job_discarded_on_its_last_attempt_is_failed_by_the_runners_advance(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], database_url: str
) -> None:
    prefix = runner.prefix
    build_discarded_python(runner, conn, "lost-step")
    [planned] = repair(conn, prefix, dry_run=True)  # from the rows, no runner
    [done] = repair(conn, prefix, runners=[runner])
    assert (done.action, done.owner, done.queue, done.kind, done.failed_step) == (
        "enqueued",
        "python",
        "bridge_workflows",
        FAILED_STEP,
        first.name,
    )
    instance = load_instance(conn, prefix, "lost-step", runner.workflows)
    expected = advance_job(
        HEAL, instance, queue=runner.queue, config_key=runner.config_key, step_ref=first.name
    )
    assert done.job is not None and planned.job is not None
    assert fields(done.job.to_dict()) == fields(expected.to_dict())
    assert fields(planned.job.to_dict()) == fields(expected.to_dict())

    # The runner's advance sees the discarded step job and fails the instance.
    [*_, advance] = _jobs(runner, "lost-step", ADVANCE_WORKER)
    assert advance.id == done.job.id
    runner.perform_advance(advance)
    row = instance_json(database_url, prefix, "lost-step")
    assert (row["status"], row["state"]["current_step"]) == ("failed", None)
    _set(conn, prefix, advance.id, "completed")
    assert repair(conn, prefix, grace=0, runners=[runner]) == []


def test_a_failed_step_with_a_live_job_or_within_the_grace_is_left_alone(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    """A live job of any worker will still run an advance that notices the discard itself (a
    FailFanout sibling still running, a timer scheduled); a fresh discard may be retried by
    hand. Only the last one here is stuck."""
    prefix = runner.prefix
    build_discarded_python(runner, conn, "sibling-running")
    (step_job,) = _jobs(runner, "sibling-running", EXECUTE_STEP_WORKER)
    args = {**step_job.args, "step_ref": second.name}
    [sibling] = insert_all(conn, [Job.new(EXECUTE_STEP_WORKER, args)], prefix=prefix)
    _set(conn, prefix, sibling.id, "executing")
    build_discarded_python(runner, conn, "timer-scheduled")
    timer = Job.new(RESUME_WORKER, {"instance_id": "timer-scheduled"}, schedule_in=3600)
    insert_all(conn, [timer], prefix=prefix)
    build_discarded_python(runner, conn, "fresh", age="1 second")
    build_discarded_python(runner, conn, "stuck")
    assert [(s.id, s.kind) for s in find_stuck(conn, prefix)] == [("stuck", FAILED_STEP)]
    assert sorted(s.id for s in find_stuck(conn, prefix, grace=0)) == ["fresh", "stuck"]
    assert [s.id for s in find_stuck(conn, prefix, settled=["fresh"])] == ["stuck", "fresh"]


# -- a chain that sticks again ------------------------------------------------------------------


def test_repair_passes_until_a_chain_that_sticks_again_is_clear(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], database_url: str
) -> None:
    """Pass 1 heals First's lost advance; the chain moves on and Second's advance is lost too;
    pass 2 (the grace waived: the instance has settled) heals that; pass 3 finds nothing. The
    test plays the node: it runs each job the passes enqueue, and loses the second advance the
    way HephaestusOban does (an advance that ran without seeing the result)."""
    runner.inline_advance = False  # the advance lost is a job: HephaestusOban's job rows
    prefix = runner.prefix
    build_stuck_python(runner, conn, "twice")
    outcome: list[RepairRun] = []

    def run() -> None:
        with psycopg.connect(database_url, autocommit=True) as own:
            outcome.append(
                repair_until_clear(
                    own, prefix, grace=1800, runners=[runner], settle_timeout=30, poll=0.05
                )
            )

    loop = threading.Thread(target=run)
    loop.start()
    try:
        first_fix = _wait_for_advance(runner, "twice", 2)  # the start's advance, then ours
        runner.perform_advance(first_fix)  # applies First: Second's step job is queued
        _set(conn, prefix, first_fix.id, "completed")
        (_, second_job) = _jobs(runner, "twice", EXECUTE_STEP_WORKER)
        runner.perform_execute_step(second_job)  # Second's result and its advance
        lost = _jobs(runner, "twice", ADVANCE_WORKER)[-1]
        _set(conn, prefix, lost.id, "completed")  # ran, having read its results too early
        _set(conn, prefix, second_job.id, "completed")
        _wait_for_advance(runner, "twice", 4)
        _run_the_rest(runner, conn, "twice")
    finally:
        loop.join(timeout=60)
    [result] = outcome
    assert [[(r.instance_id, r.kind, r.action) for r in p] for p in result.passes] == [
        [("twice", LOST_ADVANCE, "enqueued")],
        [("twice", LOST_ADVANCE, "enqueued")],
        [],
    ]
    assert (result.stuck, result.enqueued, result.unsettled, result.stopped_at_limit) == (
        1,
        2,
        (),
        False,
    )
    assert [r.pending_steps for p in result.passes for r in p] == [(first.name,), (second.name,)]
    row = instance_json(database_url, prefix, "twice")
    assert row["status"] == "completed"


def _run_the_rest(runner: WorkflowRunner, conn: psycopg.Connection[Any], instance_id: str) -> None:
    """Run the instance's available jobs, oldest first, until none is left (a node's work)."""
    perform = {
        ADVANCE_WORKER: runner.perform_advance,
        EXECUTE_STEP_WORKER: runner.perform_execute_step,
    }
    while True:
        ready = [
            job
            for worker in perform
            for job in _jobs(runner, instance_id, worker)
            if job.state == "available"
        ]
        if not ready:
            return
        job = min(ready, key=lambda j: j.id or 0)
        perform[job.worker](job)
        _set(conn, runner.prefix, job.id, "completed")


def _wait_for_advance(runner: WorkflowRunner, instance_id: str, count: int) -> Job:
    for _ in range(600):
        advances = _jobs(runner, instance_id, ADVANCE_WORKER)
        if len(advances) >= count:
            return advances[count - 1]
        threading.Event().wait(0.05)
    raise AssertionError(f"repair never enqueued advance number {count}")


def test_the_passes_stop_when_the_healed_instances_do_not_settle(
    conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    build_stuck_s2d(conn, oban_prefix)  # its advance goes to hephaestus: nobody runs it here
    result = repair_until_clear(conn, oban_prefix, settle_timeout=0.2, poll=0.05)
    assert (len(result.passes), result.enqueued, result.unsettled) == (1, 1, (STUCK_ID,))
    once = repair_until_clear(conn, oban_prefix, max_passes=1)
    assert (len(once.passes), once.enqueued, once.stopped_at_limit) == (1, 0, False)


# -- nothing else is touched --------------------------------------------------------------------


def all_rows(conn: psycopg.Connection[Any], prefix: str) -> dict[str, list[Any]]:
    """Every row of the three tables, as JSON, by table."""
    return {
        table: [
            r[0]
            for r in conn.execute(
                _q(f"SELECT row_to_json(t) FROM {{prefix}}.{table} t ORDER BY t::text", prefix)
            ).fetchall()
        ]
        for table in ("oban_jobs", "workflow_instances", "hephaestus_step_results")
    }


def test_repair_writes_one_advance_per_stuck_instance_and_nothing_else(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    prefix = runner.prefix
    # Stuck, one of each shape and owner.
    build_stuck_s2d(conn, prefix)
    build_failed_s1a(conn, prefix, "faillinear::stuck")
    build_stuck_python(runner, conn, "py-lost")
    build_discarded_python(runner, conn, "py-failed")
    # Healthy: running with its advance queued, running with a step executing, waiting on a
    # timer, fresh; finished with leftovers (the genuine final rows of both captures).
    runner.start(conn, HEAL, {}, id="py-queued")
    runner.start(conn, HEAL, {}, id="py-stepping")
    (advance,) = _jobs(runner, "py-stepping", ADVANCE_WORKER)
    runner.perform_advance(advance)  # First's step job is queued
    _set(conn, prefix, advance.id, "completed")
    build_discarded_python(runner, conn, "py-timer")
    timer = Job.new(RESUME_WORKER, {"instance_id": "py-timer"}, schedule_in=3600)
    insert_all(conn, [timer], prefix=prefix)
    build_discarded_python(runner, conn, "py-fresh", age="0 seconds")
    for row in load_jsonl("failing-step/s1_workflow_instances.jsonl"):
        put_instance(conn, prefix, {**row, "id": row["id"] + "-final"})
        for job in failing_step_jobs():
            if job["args"]["instance_id"] == row["id"]:
                iid = row["id"] + "-final"
                args = {**job["args"], "instance_id": iid}
                put_job(conn, prefix, job, args=args, meta={**job["meta"], "instance_id": iid})
    before = all_rows(conn, prefix)

    done = repair(conn, prefix, runners=[runner])
    stuck = {STUCK_ID, "faillinear::stuck", "py-lost", "py-failed"}
    assert sorted((r.instance_id, r.kind, r.action) for r in done) == sorted(
        [
            (STUCK_ID, LOST_ADVANCE, "enqueued"),
            ("faillinear::stuck", FAILED_STEP, "enqueued"),
            ("py-lost", LOST_ADVANCE, "enqueued"),
            ("py-failed", FAILED_STEP, "enqueued"),
        ]
    )
    after = all_rows(conn, prefix)
    assert after["workflow_instances"] == before["workflow_instances"]
    assert after["hephaestus_step_results"] == before["hephaestus_step_results"]
    new_ids = {r.job.id for r in done if r.job is not None}
    kept = [j for j in after["oban_jobs"] if j["id"] not in new_ids]
    assert kept == before["oban_jobs"]
    added = [j for j in after["oban_jobs"] if j["id"] in new_ids]
    assert sorted(j["args"]["instance_id"] for j in added) == sorted(stuck)
    assert {(j["worker"], j["state"]) for j in added} == {(ADVANCE_WORKER, "available")}


# -- on a node ----------------------------------------------------------------------------------


async def test_a_node_fails_a_python_instance_whose_step_node_died_on_its_last_attempt(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], database_url: str
) -> None:
    """First's step job is left ``executing`` on its last attempt by a node that died: the job
    lifeline discards it (the runner never saw the failure), then the workflow lifeline enqueues
    the runner's advance, which fails the instance."""
    prefix = runner.prefix
    runner.start(conn, HEAL, {}, id="py-died")
    (advance,) = _jobs(runner, "py-died", ADVANCE_WORKER)
    runner.perform_advance(advance)
    _set(conn, prefix, advance.id, "completed")
    (step_job,) = _jobs(runner, "py-died", EXECUTE_STEP_WORKER)
    conn.execute(
        _q(
            "UPDATE {prefix}.oban_jobs SET state = 'executing', attempt = max_attempts,"
            " attempted_at = timezone('UTC', now()) - interval '1 hour',"
            " attempted_by = ARRAY['dead-node', 'gone'] WHERE id = %s",
            prefix,
        ),
        (step_job.id,),
    )
    config = NodeConfig(
        url=database_url,
        queues={},
        prefix=prefix,
        registry=Registry(),
        poll_interval=0.2,
        plugins=[Peer(), Lifeline(rescue_after=60, interval=0.2)],
    )
    config.shutdown_grace = 2.0
    serving = WorkflowServing(concurrency=2, repair_grace=0.5, repair_interval=0.2)
    served = serve_workflows(config, [HEAL], serving)
    node = Node(config)
    started = time.monotonic()
    await node.start()
    try:
        row = await wait_for_instance(
            database_url, prefix, "py-died", lambda r: r["status"] == "failed", timeout=20
        )
    finally:
        await node.stop()
        served.close()
    print(
        f"node: step job discarded and instance failed {time.monotonic() - started:.2f} s"
        " after the node started"
    )
    assert row["state"]["current_step"] is None
    states = {j["worker"]: j["state"] for j in jobs_json(database_url, prefix, "py-died")}
    assert states[EXECUTE_STEP_WORKER] == "discarded"
    advances = [
        j for j in jobs_json(database_url, prefix, "py-died") if j["worker"] == ADVANCE_WORKER
    ]
    assert [a["meta"].get("step") for a in advances] == [None, "first"]


async def test_the_lifeline_heals_a_second_loss_without_waiting_for_the_grace(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], database_url: str
) -> None:
    """The lifeline remembers what it healed: once the instance has settled, a result that
    stuck again is healed at the next tick although it is much younger than the grace."""
    from bridge.workflows.run.lifeline import WorkflowLifeline

    runner.inline_advance = False  # the advance lost is a job: HephaestusOban's job rows
    prefix = runner.prefix
    build_stuck_python(runner, conn, "again")  # First's result an hour old
    lifeline = WorkflowLifeline(grace=1800, interval=0.1, runners=[runner])
    config = NodeConfig(
        url=database_url,
        queues={},
        prefix=prefix,
        registry=Registry(),
        plugins=[Peer(), lifeline],
    )
    node = Node(config)
    await node.start()
    try:
        first_fix = await asyncio.to_thread(_wait_for_advance, runner, "again", 2)
        runner.perform_advance(first_fix)
        _set(conn, prefix, first_fix.id, "completed")
        (_, second_job) = _jobs(runner, "again", EXECUTE_STEP_WORKER)
        runner.perform_execute_step(second_job)  # Second's result, seconds old, and its advance
        _set(conn, prefix, _jobs(runner, "again", ADVANCE_WORKER)[-1].id, "completed")  # lost
        _set(conn, prefix, second_job.id, "completed")
        second_fix = await asyncio.to_thread(_wait_for_advance, runner, "again", 4)
    finally:
        await node.stop()
    assert second_fix.meta["step"] == "second"
