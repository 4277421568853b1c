"""Batched job bodies (``coalesce=True``) must leave exactly the rows that the same jobs leave
one at a time: the batching is a speed change only, invisible to Oban tools and to Elixir.

The equality tests drive two sets of identical instances side by side through the same jobs,
claimed and acknowledged by hand so the order is fixed: side ``a`` through the batch bodies,
side ``b`` through the one-job bodies; then every instance, step-result and job row of the two
sides must be equal, ids and clocks aside.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from bridge.jobs.client.job import Job
from bridge.jobs.client.outcome import Cancel
from bridge.workflows import DONE, Context, Instance, StepOk, Workflow, step
from bridge.workflows.model.definition import UnknownWorkflowError
from bridge.workflows.model.engine import StepResult
from bridge.workflows.run.runner import (
    ADVANCE_WORKER,
    BATCH_APPLICATION_NAME,
    EXECUTE_STEP_WORKER,
    WorkflowRunner,
)
from bridge.workflows.store.coalesce import AsyncCoalescer
from tests.workflows.run.test_runner import serving, status_is, wait_for_instance


@step(name="Elixir.Batch.Steps.One", events=["ok"])
def one(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"n": context.initial["n"] + 1}, {"one": True})


@step(name="Elixir.Batch.Steps.Two", events=["ok"])
def two(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"n": context.steps["one"]["n"] * 10})


@step(name="Elixir.Batch.Steps.Left", events=["ok"])
def left(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"side": "left"})


@step(name="Elixir.Batch.Steps.Right", events=["ok"])
def right(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"side": "right"})


@step(name="Elixir.Batch.Steps.Join", events=["ok"])
def join(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"joined": sorted(context.steps)})


LINE = Workflow(
    name="Elixir.Batch.Flows.Line",
    start=one,
    transitions=[(one, "ok", two), (two, "ok", DONE)],
    tags=["batch"],
    metadata={"team": "py"},
    atoms=["n"],
)
FORK = Workflow(
    name="Elixir.Batch.Flows.Fork",
    start=one,
    transitions=[
        (one, "ok", [left, right]),
        (left, "ok", join),
        (right, "ok", join),
        (join, "ok", DONE),
    ],
    atoms=["n", "side", "joined"],
)
FLOWS = (LINE, FORK)
SIDES = ("a", "b")


@pytest.fixture
def runner(database_url: str, oban_prefix: str) -> Iterator[WorkflowRunner]:
    made = WorkflowRunner(database_url, FLOWS, prefix=oban_prefix, config_key="batch")
    yield made
    made.close()


def _q(text: str, prefix: str) -> sql.Composed:
    return sql.SQL(text).format(prefix=sql.Identifier(prefix))


def claim(conn: psycopg.Connection[Any], prefix: str, side: str) -> list[Job]:
    """What a node's claim does to the side's available jobs, in id order."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            _q(
                "UPDATE {prefix}.oban_jobs SET state = 'executing', attempt = attempt + 1,"
                " attempted_at = timezone('UTC', now()) WHERE state = 'available'"
                " AND args->>'instance_id' LIKE %s RETURNING *",
                prefix,
            ),
            (f"{side}-%",),
        )
        rows = cur.fetchall()
    return sorted((Job.from_row(row) for row in rows), key=lambda j: j.id or 0)


def ack(conn: psycopg.Connection[Any], prefix: str, jobs: list[Job]) -> None:
    conn.execute(
        _q(
            "UPDATE {prefix}.oban_jobs SET state = 'completed',"
            " completed_at = timezone('UTC', now()) WHERE id = ANY(%s)",
            prefix,
        ),
        ([j.id for j in jobs],),
    )


def in_batch(runner: WorkflowRunner, body: Any, items: list[Any]) -> list[Any]:
    """Run a batch body (``runner._advance_batch`` …) as a drain would: on a connection of its
    own, on an event loop."""

    async def go() -> list[Any]:
        conn = await runner._aopen()
        try:
            return list(await body(conn, items))
        finally:
            await conn.close()

    return asyncio.run(go())


def run_round(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], side: str, batched: bool
) -> list[Any]:
    """Claim the side's available jobs and run them: through the batch bodies or one by one."""
    jobs = claim(conn, runner.prefix, side)
    advances = [j for j in jobs if j.worker == ADVANCE_WORKER]
    steps = [j for j in jobs if j.worker == EXECUTE_STEP_WORKER]
    assert len(advances) + len(steps) == len(jobs)
    outcomes: list[Any] = []
    if batched:
        outcomes += in_batch(runner, runner._advance_batch, advances) if advances else []
        items = [(j.args["instance_id"], j.args["step_ref"]) for j in steps]
        checks = in_batch(runner, runner._precheck_batch, items) if items else []
        records: list[tuple[Job, StepResult]] = []
        for job, check in zip(steps, checks, strict=True):
            assert not isinstance(check, Exception), check
            instance, ran, _ = check
            assert not ran
            result = runner._execute_body(job, instance, job.args["step_ref"])
            assert isinstance(result, StepResult)
            records.append((job, result))
        outcomes += in_batch(runner, runner._record_batch, records) if records else []
    else:
        outcomes += [runner._advance_one(j) for j in advances]
        for job in steps:
            instance, ran = runner._precheck_one(job.args["instance_id"], job.args["step_ref"])
            result = runner._execute_body(job, instance, job.args["step_ref"])
            assert isinstance(result, StepResult)
            outcomes.append(runner._record_one(job, result, resume=False))
    ack(conn, runner.prefix, jobs)
    return outcomes


def side_rows(conn: psycopg.Connection[Any], prefix: str, side: str) -> dict[str, Any]:
    """The side's rows with ids, uuids and clocks left out and the side letter folded."""

    def fold(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(f"{side}-", "x-")
        if isinstance(value, list):
            return [fold(v) for v in value]
        if isinstance(value, dict):
            return {fold(k): fold(v) for k, v in value.items()}
        return value

    like = (f"{side}-%",)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            _q(
                "SELECT id, workflow, status, state, workflow_version"
                " FROM {prefix}.workflow_instances WHERE id LIKE %s ORDER BY id",
                prefix,
            ),
            like,
        )
        instances = [fold(r) for r in cur.fetchall()]
        cur.execute(
            _q(
                "SELECT instance_id, step_ref, event, context_updates, metadata_updates,"
                " processed, workflow_version FROM {prefix}.hephaestus_step_results"
                " WHERE instance_id LIKE %s",
                prefix,
            ),
            like,
        )
        results = Counter(repr(sorted(fold(r).items())) for r in cur.fetchall())
        cur.execute(
            _q(
                "SELECT state::text, queue, worker, args, meta, tags, max_attempts, priority,"
                " attempt, errors FROM {prefix}.oban_jobs WHERE args->>'instance_id' LIKE %s",
                prefix,
            ),
            like,
        )
        jobs = Counter(repr(sorted(fold(r).items())) for r in cur.fetchall())
    return {"instances": instances, "results": results, "jobs": jobs}


def start_both(runner: WorkflowRunner, conn: psycopg.Connection[Any], count: int) -> None:
    for side in SIDES:
        for k in range(count):
            runner.start(conn, LINE, {"n": k}, id=f"{side}-line-{k}")
            runner.start(conn, FORK, {"n": k}, id=f"{side}-fork-{k}")


def test_batches_write_the_rows_one_job_at_a_time_writes(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    start_both(runner, conn, 4)
    rounds = 0
    while True:
        outcomes_a = run_round(runner, conn, "a", batched=True)
        outcomes_b = run_round(runner, conn, "b", batched=False)
        assert outcomes_a == outcomes_b
        if not outcomes_a:
            break
        rounds += 1
        assert rounds < 20
    assert rounds == 9  # start, one, advance, left+right, advance, join, advance, done, advance
    a, b = side_rows(conn, runner.prefix, "a"), side_rows(conn, runner.prefix, "b")
    assert [i["status"] for i in a["instances"]] == ["completed"] * 8
    assert a["instances"] == b["instances"]
    assert a["results"] == b["results"]
    assert a["jobs"] == b["jobs"]
    # The fork's two siblings were recorded in one batch and queued one advance between them,
    # as one-at-a-time recording does (the second finds the first's advance unstarted).
    forks = [i for i in a["instances"] if "fork" in i["id"]]
    assert all(i["state"]["context"]["steps"]["join"]["joined"] for i in forks)


def test_a_batch_skips_duplicates_and_inactive_steps_as_one_at_a_time_does(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    """A step job delivered twice in one batch, and a stale job for a step no longer active:
    neither writes a result nor an advance, exactly as when each runs alone."""
    for side in SIDES:
        runner.start(conn, LINE, {"n": 1}, id=f"{side}-line-0")
    for side, batched in (("a", True), ("b", False)):
        run_round(runner, conn, side, batched)  # the start advance: `one` becomes active
        (step_job,) = claim(conn, runner.prefix, side)
        instance, _ = runner._precheck_one(step_job.args["instance_id"], "Elixir.Batch.Steps.One")
        result = runner._execute_body(step_job, instance, "Elixir.Batch.Steps.One")
        assert isinstance(result, StepResult)
        stale = StepResult("Elixir.Batch.Steps.Two", "ok", {"n": -1}, {})
        items = [(step_job, result), (step_job, result), (step_job, stale)]
        if batched:
            assert in_batch(runner, runner._record_batch, items) == [True, False, False]
        else:
            recorded = [runner._record_one(j, r, resume=False) for j, r in items]
            assert recorded == [True, False, False]
        ack(conn, runner.prefix, [step_job])
    a, b = side_rows(conn, runner.prefix, "a"), side_rows(conn, runner.prefix, "b")
    assert a == b
    assert sum(a["results"].values()) == 1


def test_a_recorder_queues_no_advance_while_one_waits_unstarted(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    """A fork's left sibling records and queues an advance; before that advance starts, the
    right sibling records in a batch of its own: it must find the advance unstarted and queue
    none, as HephaestusOban's (and the one-job recorder's) guard does."""
    for side in SIDES:
        runner.start(conn, FORK, {"n": 1}, id=f"{side}-fork-0")
    for side, batched in (("a", True), ("b", False)):
        run_round(runner, conn, side, batched)  # start advance: `one` active
        run_round(runner, conn, side, batched)  # `one` runs and records
        run_round(runner, conn, side, batched)  # advance: left and right active
        siblings = claim(conn, runner.prefix, side)
        assert sorted(j.args["step_ref"] for j in siblings) == [left.name, right.name]
        for job in siblings:  # one after the other, each a batch of one... or of two items
            instance, _ = runner._precheck_one(job.args["instance_id"], job.args["step_ref"])
            result = runner._execute_body(job, instance, job.args["step_ref"])
            assert isinstance(result, StepResult)
            extra = (job, StepResult(job.args["step_ref"], "ok", {}, {}))  # a duplicate
            if batched:
                assert in_batch(runner, runner._record_batch, [(job, result), extra]) == [
                    True,
                    False,
                ]
            else:
                assert runner._record_one(job, result, resume=False) is True
                assert runner._record_one(*extra, resume=False) is False
        ack(conn, runner.prefix, siblings)
        unstarted = conn.execute(
            _q(
                "SELECT count(*) FROM {prefix}.oban_jobs WHERE worker = %s"
                " AND state = 'available' AND args->>'instance_id' = %s",
                runner.prefix,
            ),
            (ADVANCE_WORKER, f"{side}-fork-0"),
        ).fetchone()
        assert unstarted == (1,)
    assert side_rows(conn, runner.prefix, "a") == side_rows(conn, runner.prefix, "b")


def test_a_bad_row_fails_only_its_own_job(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    """One instance whose row names a workflow this runner does not know: in a record batch its
    item alone gets the error; in an advance batch the batch is retried one job at a time, so
    the others advance and the bad one fails as it would alone."""
    for k in range(3):
        runner.start(conn, LINE, {"n": k}, id=f"a-line-{k}")
    conn.execute(
        _q(
            "UPDATE {prefix}.workflow_instances SET workflow = 'Elixir.Batch.Flows.Nope'"
            " WHERE id = 'a-line-1'",
            runner.prefix,
        )
    )
    advances = claim(conn, runner.prefix, "a")
    outcomes = in_batch(runner, runner._advance_batch, advances)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], UnknownWorkflowError)
    ack(conn, runner.prefix, advances)
    steps = claim(conn, runner.prefix, "a")
    assert sorted(j.args["instance_id"] for j in steps) == ["a-line-0", "a-line-2"]
    good = steps[0]
    instance, _ = runner._precheck_one(good.args["instance_id"], "Elixir.Batch.Steps.One")
    result = runner._execute_body(good, instance, "Elixir.Batch.Steps.One")
    assert isinstance(result, StepResult)
    bad = Job.new(
        EXECUTE_STEP_WORKER,
        {**good.args, "instance_id": "a-line-1"},
        queue=runner.queue,
    )
    recorded = in_batch(runner, runner._record_batch, [(bad, result), (good, result)])
    assert isinstance(recorded[0], UnknownWorkflowError)
    assert recorded[1] is True
    count = conn.execute(
        _q(
            "SELECT instance_id, count(*) FROM {prefix}.hephaestus_step_results"
            " GROUP BY instance_id ORDER BY 1",
            runner.prefix,
        )
    ).fetchall()
    assert count == [(good.args["instance_id"], 1)]


def test_an_advance_batch_cancels_jobs_of_missing_instances_as_one_job_does(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    runner.start(conn, LINE, {"n": 1}, id="a-line-0")
    (advance,) = claim(conn, runner.prefix, "a")
    ghost = Job.new(ADVANCE_WORKER, {**advance.args, "instance_id": "a-ghost"}, queue="q")
    alone = runner._advance_one(ghost)
    batched = in_batch(runner, runner._advance_batch, [ghost, advance, ghost])
    assert isinstance(alone, Cancel)
    assert batched[1] is None
    assert batched[0] == batched[2] == alone


@pytest.mark.parametrize("inline", [True, False], ids=["inline-advance", "advance-jobs"])
async def test_many_workflows_on_a_node_complete_in_shared_batches(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], inline: bool
) -> None:
    """On a real node at concurrency 20 the job bodies do share batches, and every instance
    completes with one result per step, none left unprocessed, no job left pending."""
    runner.inline_advance = inline
    with conn.transaction():
        for k in range(60):
            runner.start(conn, LINE, {"n": k}, id=f"a-line-{k}")
        for k in range(5):
            runner.start(conn, FORK, {"n": k}, id=f"a-fork-{k}")
    async with serving(runner, concurrency=20) as node:
        for k in range(60):
            await wait_for_instance(
                runner.url, runner.prefix, f"a-line-{k}", status_is("completed")
            )
        for k in range(5):
            await wait_for_instance(
                runner.url, runner.prefix, f"a-fork-{k}", status_is("completed")
            )
        await node.drain()
    used: list[AsyncCoalescer[Any, Any, Any]] = [
        runner._async_advances,  # with inline advance: the starts' advances only
        runner._async_inline if inline else runner._async_recorders,
        runner._async_prechecks,
    ]
    assert all(c.items > c.batches > 0 for c in used), [(c.items, c.batches) for c in used]
    unused = runner._async_recorders if inline else runner._async_inline
    assert unused.batches == 0
    rows = conn.execute(
        _q(
            "SELECT count(*), count(*) FILTER (WHERE NOT processed),"
            " count(DISTINCT (instance_id, step_ref)) FROM {prefix}.hephaestus_step_results",
            runner.prefix,
        )
    ).fetchone()
    assert rows == (60 * 3 + 5 * 5, 0, 60 * 3 + 5 * 5)
    pending = conn.execute(
        _q(
            "SELECT count(*) FROM {prefix}.oban_jobs WHERE state <> 'completed'",
            runner.prefix,
        )
    ).fetchone()
    assert pending == (0,)


@pytest.mark.parametrize("inline", [True, False], ids=["inline-advance", "advance-jobs"])
async def test_batches_go_on_when_the_server_closes_their_connections(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], inline: bool
) -> None:
    """The server terminates the batch drains' connections again and again while 40 workflows
    run: a batch in flight fails over to one job at a time, the next batch opens a new
    connection, and every instance completes with one result per step and no job failed."""
    runner.inline_advance = inline
    per_workflow = 4 if inline else 7  # the start's advance, three steps (and their advances)
    with conn.transaction():
        for k in range(40):
            runner.start(conn, LINE, {"n": k}, id=f"a-line-{k}")
    killed = 0
    async with serving(runner, concurrency=10) as node:
        for _ in range(8):
            await asyncio.sleep(0.1)
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()",
                (BATCH_APPLICATION_NAME,),
            ).fetchall()
            killed += len(rows)
        for k in range(40):
            instance_id = f"a-line-{k}"
            await wait_for_instance(runner.url, runner.prefix, instance_id, status_is("completed"))
        await node.drain()
    assert killed >= 3, "no batch connection was open to be closed"
    results = conn.execute(
        _q(
            "SELECT count(*), count(DISTINCT (instance_id, step_ref)) FROM"
            " {prefix}.hephaestus_step_results",
            runner.prefix,
        )
    ).fetchone()
    assert results == (40 * 3, 40 * 3)
    jobs = conn.execute(
        _q(
            "SELECT state::text, count(*), sum(attempt) FROM {prefix}.oban_jobs GROUP BY 1",
            runner.prefix,
        )
    ).fetchall()
    assert [(state, count) for state, count, _ in jobs] == [("completed", 40 * per_workflow)]
    errors = conn.execute(
        _q("SELECT worker, errors FROM {prefix}.oban_jobs WHERE attempt > 1", runner.prefix)
    ).fetchall()
    assert jobs[0][2] == 40 * per_workflow, errors  # every job ran once: no error, no retry


async def test_without_coalescing_the_node_runs_a_transaction_a_job(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any]
) -> None:
    plain = WorkflowRunner(
        database_url, FLOWS, prefix=oban_prefix, config_key="batch", coalesce=False
    )
    try:
        plain.start(conn, FORK, {"n": 1}, id="a-fork-0")
        async with serving(plain, concurrency=5):
            row = await wait_for_instance(
                plain.url, plain.prefix, "a-fork-0", status_is("completed")
            )
        assert row["state"]["context"]["steps"]["join"]["joined"]
        used: list[AsyncCoalescer[Any, Any, Any]] = [
            plain._async_advances,
            plain._async_recorders,
            plain._async_prechecks,
            plain._async_inline,
        ]
        assert [c.batches for c in used] == [0, 0, 0, 0]
    finally:
        plain.close()
