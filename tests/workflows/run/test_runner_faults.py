"""The runner where HephaestusOban goes wrong: permanently failing steps, and many workflows
at once (upstream leaves some ``running`` for ever with an unprocessed step result)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bridge.jobs.client.job import Job
from bridge.workflows import (
    DONE,
    Context,
    Instance,
    RetryConfig,
    StepError,
    StepOk,
    Workflow,
    step,
)
from bridge.workflows.run import recording
from bridge.workflows.run.runner import ADVANCE_WORKER, EXECUTE_STEP_WORKER, WorkflowRunner
from tests.workflows.run.test_runner import (
    fetch_all,
    jobs_json,
    results_json,
    serving,
    status_is,
    wait_for_instance,
)

RELEASE_SLOW = threading.Event()
BOOM_CALLS: list[str] = []


@step(name="Elixir.Py.Steps.Start", events=["ok"])
def start_step(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok")


@step(name="Elixir.Py.Steps.Boom", events=["ok"], retry=RetryConfig(max_attempts=1))
def boom(instance: Instance, config: Any, context: Context) -> StepError:
    BOOM_CALLS.append(instance.id)
    return StepError("boom")


@step(name="Elixir.Py.Steps.Crash", events=["ok"], retry=RetryConfig(max_attempts=1))
def crash(instance: Instance, config: Any, context: Context) -> StepOk:
    raise RuntimeError("crashed")


@step(name="Elixir.Py.Steps.Held", events=["ok"])
def held(instance: Instance, config: Any, context: Context) -> StepOk:
    RELEASE_SLOW.wait(10)
    return StepOk("ok", {"held": True})


@step(name="Elixir.Py.Steps.Join", events=["ok"])
def join(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok")


@step(name="Elixir.Py.Steps.Left", events=["ok"])
def left(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"v": 1})


@step(name="Elixir.Py.Steps.Right", events=["ok"])
def right(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"v": 2})


FAIL_LINEAR = Workflow(
    name="Elixir.Py.Flows.FailLinear", start=boom, transitions=[(boom, "ok", DONE)]
)
CRASH_LINEAR = Workflow(
    name="Elixir.Py.Flows.CrashLinear", start=crash, transitions=[(crash, "ok", DONE)]
)
FAIL_FANOUT = Workflow(
    name="Elixir.Py.Flows.FailFanout",
    start=start_step,
    transitions=[
        (start_step, "ok", [boom, held]),
        (boom, "ok", join),
        (held, "ok", join),
        (join, "ok", DONE),
    ],
    atoms=["held"],
)
SMALL = Workflow(
    name="Elixir.Py.Flows.Small",
    start=start_step,
    transitions=[
        (start_step, "ok", [left, right]),
        (left, "ok", join),
        (right, "ok", join),
        (join, "ok", DONE),
    ],
    atoms=["n", "v"],
)

PENDING = ("available", "scheduled", "executing", "retryable")


FLOWS = [FAIL_LINEAR, CRASH_LINEAR, FAIL_FANOUT, SMALL]


@pytest.fixture(params=[True, False], ids=["inline-advance", "advance-jobs"])
def runner(
    database_url: str, oban_prefix: str, request: pytest.FixtureRequest
) -> Iterator[WorkflowRunner]:
    """Each fault test runs with step jobs applying their own results (the default) and with
    HephaestusOban's advance jobs."""
    made = WorkflowRunner(
        database_url, FLOWS, prefix=oban_prefix, pool_size=12, inline_advance=request.param
    )
    yield made
    made.close()


@pytest.fixture
def advance_jobs_runner(database_url: str, oban_prefix: str) -> Iterator[WorkflowRunner]:
    """For the races between recorders and AdvanceWorker jobs, which exist only without inline
    advance."""
    made = WorkflowRunner(
        database_url, FLOWS, prefix=oban_prefix, pool_size=12, inline_advance=False
    )
    yield made
    made.close()


@pytest.mark.parametrize(("workflow", "error"), [(FAIL_LINEAR, "boom"), (CRASH_LINEAR, "crashed")])
async def test_exhausted_step_fails_a_linear_workflow(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], workflow: Workflow, error: str
) -> None:
    BOOM_CALLS.clear()
    async with serving(runner) as node:
        runner.start(conn, workflow, {}, id="lin")
        row = await wait_for_instance(runner.url, runner.prefix, "lin", status_is("failed"))
        await node.drain()
    assert row["state"]["current_step"] is None
    jobs = jobs_json(runner.url, runner.prefix, "lin")
    step_jobs = [j for j in jobs if j["worker"] == EXECUTE_STEP_WORKER]
    assert [j["state"] for j in step_jobs] == ["discarded"]
    assert error in step_jobs[0]["errors"][0]["error"]
    assert not [j for j in jobs if j["state"] in PENDING]
    expected_runs = ["lin"] if workflow is FAIL_LINEAR else []
    assert expected_runs == BOOM_CALLS  # one attempt, one run


async def test_exhausted_step_fails_a_fanout_and_cancels_its_siblings(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    RELEASE_SLOW.clear()
    try:
        async with serving(runner) as node:
            runner.start(conn, FAIL_FANOUT, {}, id="fan")
            row = await wait_for_instance(runner.url, runner.prefix, "fan", status_is("failed"))
            # The held sibling was still executing: its job is cancelled (pkill) at once.
            jobs = jobs_json(runner.url, runner.prefix, "fan")
            held_job = next(j for j in jobs if j["args"].get("step_ref") == held.name)
            assert held_job["state"] == "cancelled"
            RELEASE_SLOW.set()
            await node.drain()
            await asyncio.sleep(0.3)  # the released thread tries to record its result
    finally:
        RELEASE_SLOW.set()
    assert row["state"]["active_steps"] == [boom.name, held.name]
    jobs = jobs_json(runner.url, runner.prefix, "fan")
    assert not [j for j in jobs if j["state"] in PENDING]
    assert join.name not in [j["args"].get("step_ref") for j in jobs]
    results = results_json(runner.url, runner.prefix, "fan")
    # Only Start's result: the held step finished after the failure and was not recorded.
    assert [(r["step_ref"], r["processed"]) for r in results] == [(start_step.name, True)]
    final = fetch_all(
        runner.url, "SELECT status FROM {prefix}.workflow_instances WHERE id = 'fan'", runner.prefix
    )
    assert final == [("failed",)]


async def test_cancel_fails_the_instance_and_cancels_its_jobs(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    runner.start(conn, SMALL, {}, id="c-1")
    cancelled = runner.cancel(conn, "c-1")
    assert len(cancelled) == 1
    assert jobs_json(runner.url, runner.prefix, "c-1")[0]["state"] == "cancelled"
    status = fetch_all(
        runner.url, "SELECT status FROM {prefix}.workflow_instances WHERE id='c-1'", runner.prefix
    )
    assert status == [("failed",)]


async def test_200_concurrent_fanout_workflows_all_finish(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    count = 200
    with conn.transaction():
        for n in range(count):
            runner.start(conn, SMALL, {"n": n}, id=f"small-{n}")
    async with serving(runner, concurrency=10) as node:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while True:
            rows = fetch_all(
                runner.url,
                "SELECT status, count(*) FROM {prefix}.workflow_instances GROUP BY status",
                runner.prefix,
            )
            if dict(rows).get("completed") == count:
                break
            pending = fetch_all(
                runner.url,
                "SELECT count(*) FROM {prefix}.oban_jobs WHERE state::text = ANY(%s)",
                runner.prefix,
                (list(PENDING),),
            )[0][0]
            assert pending or loop.time() < deadline - 110, f"stuck with no jobs: {rows}"
            assert loop.time() < deadline, f"not finished: {rows}"
            await asyncio.sleep(0.2)
        await node.drain()
    unprocessed = fetch_all(
        runner.url,
        "SELECT count(*) FROM {prefix}.hephaestus_step_results WHERE NOT processed",
        runner.prefix,
    )
    assert unprocessed == [(0,)]
    per_step = fetch_all(
        runner.url,
        "SELECT args->>'instance_id', args->>'step_ref', count(*) FROM {prefix}.oban_jobs"
        " WHERE worker = %s GROUP BY 1, 2 HAVING count(*) > 1",
        runner.prefix,
        (EXECUTE_STEP_WORKER,),
    )
    assert per_step == []  # no step was queued (or run) twice
    states = fetch_all(
        runner.url, "SELECT DISTINCT state::text FROM {prefix}.oban_jobs", runner.prefix
    )
    assert states == [("completed",)]


def _jobs(runner: WorkflowRunner, instance_id: str, worker: str) -> list[Job]:
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


def _set_state(runner: WorkflowRunner, job: Job, state: str) -> None:
    fetch_all(
        runner.url,
        "UPDATE {prefix}.oban_jobs SET state = %s::text::"
        + f'"{runner.prefix}".oban_job_state WHERE id = %s RETURNING id',
        runner.prefix,
        (state, job.id),
    )


def test_a_result_written_while_an_advance_executes_gets_its_own_advance(
    advance_jobs_runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    """Upstream dedupes the advance against an *executing* one that has already read its
    results, and the new result stays unprocessed for ever. The job bodies are called directly
    so the interleaving is exact."""
    runner = advance_jobs_runner
    runner.start(conn, SMALL, {}, id="race")
    (first_advance,) = _jobs(runner, "race", ADVANCE_WORKER)
    _set_state(runner, first_advance, "executing")  # claimed, and it has read its results
    assert runner.perform_advance(first_advance) is None
    (start_job,) = _jobs(runner, "race", EXECUTE_STEP_WORKER)
    assert runner.perform_execute_step(start_job) is None
    # The first advance is still 'executing' (its ack not written): a second one is queued.
    advances = _jobs(runner, "race", ADVANCE_WORKER)
    assert [a.state for a in advances] == ["executing", "available"]
    assert runner.perform_advance(advances[1]) is None
    _set_state(runner, advances[1], "completed")
    branch_jobs = _jobs(runner, "race", EXECUTE_STEP_WORKER)[1:]
    assert sorted(j.args["step_ref"] for j in branch_jobs) == [left.name, right.name]
    # Two results while no advance has started: one unstarted advance applies both.
    for job in branch_jobs:
        runner.perform_execute_step(job)
    advances = _jobs(runner, "race", ADVANCE_WORKER)
    assert [a.state for a in advances] == ["executing", "completed", "available"]
    runner.perform_advance(advances[2])
    instance = fetch_all(
        runner.url, "SELECT state FROM {prefix}.workflow_instances WHERE id='race'", runner.prefix
    )[0][0]
    assert instance["active_steps"] == [join.name]
    assert [r["processed"] for r in results_json(runner.url, runner.prefix, "race")] == [True] * 3
    # Running a step job again (a duplicate delivery) neither runs nor records anything.
    assert runner.perform_execute_step(branch_jobs[0]) is None
    assert len(results_json(runner.url, runner.prefix, "race")) == 3


def test_sibling_recorders_share_the_lock_and_both_may_queue_an_advance(
    advance_jobs_runner: WorkflowRunner,
    conn: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two sibling steps record at once (the lock is shared between recorders): each checks
    for an unstarted advance before the other commits, so both queue one. The first advance
    applies both results, the second finds nothing pending and writes nothing. (One job at a
    time, as without coalescing: together they would share one transaction.)"""
    runner = advance_jobs_runner
    runner.coalesce = False
    runner.start(conn, SMALL, {}, id="pair")
    (advance,) = _jobs(runner, "pair", ADVANCE_WORKER)
    runner.perform_advance(advance)
    _set_state(runner, advance, "completed")
    (start_job,) = _jobs(runner, "pair", EXECUTE_STEP_WORKER)
    runner.perform_execute_step(start_job)
    (_, advance) = _jobs(runner, "pair", ADVANCE_WORKER)
    runner.perform_advance(advance)
    _set_state(runner, advance, "completed")
    left_job, right_job = sorted(
        _jobs(runner, "pair", EXECUTE_STEP_WORKER)[1:], key=lambda j: j.args["step_ref"]
    )
    assert left_job.args["step_ref"] == left.name

    queued, release = threading.Event(), threading.Event()
    original = recording.insert_result_and_job

    def record_then_hold(*args: Any, **kwargs: Any) -> bool:
        recorded = original(*args, **kwargs)
        if threading.current_thread().name == "left-recorder":
            queued.set()
            release.wait(20)
        return recorded

    monkeypatch.setattr(recording, "insert_result_and_job", record_then_hold)
    left_thread = threading.Thread(
        target=runner.perform_execute_step, args=(left_job,), name="left-recorder"
    )
    right_thread = threading.Thread(target=runner.perform_execute_step, args=(right_job,))
    try:
        left_thread.start()
        assert queued.wait(10)
        # Left holds the instance lock, uncommitted, with its advance queued: right records
        # meanwhile (an exclusive lock would make it wait for left's commit).
        right_thread.start()
        right_thread.join(10)
        assert not right_thread.is_alive(), "the second recorder waited for the first"
    finally:
        release.set()
        left_thread.join(10)
        right_thread.join(10)
    first_advance, second_advance = _jobs(runner, "pair", ADVANCE_WORKER)[2:]
    # Left's advance was inserted first (its id is lower), right's committed first.
    assert [first_advance.meta["step"], second_advance.meta["step"]] == ["left", "right"]
    assert [r["processed"] for r in results_json(runner.url, runner.prefix, "pair")] == [
        True,
        False,
        False,
    ]
    runner.perform_advance(first_advance)
    before = instance_state(runner, "pair")
    jobs_before = len(_jobs(runner, "pair", EXECUTE_STEP_WORKER))
    runner.perform_advance(second_advance)
    assert instance_state(runner, "pair") == before  # nothing to apply, nothing written
    assert before[1]["active_steps"] == [join.name]
    assert [r["processed"] for r in results_json(runner.url, runner.prefix, "pair")] == [True] * 3
    join_jobs = _jobs(runner, "pair", EXECUTE_STEP_WORKER)[3:]
    assert len(_jobs(runner, "pair", EXECUTE_STEP_WORKER)) == jobs_before
    assert [j.args["step_ref"] for j in join_jobs] == [join.name]


def instance_state(runner: WorkflowRunner, instance_id: str) -> tuple[Any, ...]:
    return tuple(
        fetch_all(
            runner.url,
            "SELECT status, state, updated_at FROM {prefix}.workflow_instances WHERE id = %s",
            runner.prefix,
            (instance_id,),
        )[0]
    )
