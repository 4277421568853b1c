"""Inline advance (the default): a step job applies its own result in the transaction that
writes it. The instance and step-result rows must be the ones HephaestusOban's two jobs leave,
column for column (ids and clocks aside), batched or one job at a time; only the AdvanceWorker
jobs that step results would have queued are missing. Repair must see nothing stuck in an
inline run, and the failure path (a discarded step job) must fail the instance as the advance
does.

Four sides of identical instances run the same jobs, claimed and acknowledged by hand so the
order is fixed: ``a`` inline in batches that read each instance first, ``b`` inline one job at
a time, ``c`` with advance jobs (HephaestusOban's job rows) one job at a time, ``d`` inline in
batches from the batched pre-checks' reads (one round trip for an instance unchanged since).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from bridge.jobs.client.job import Job
from bridge.wire.phash2 import phash2
from bridge.workflows.model.engine import StepResult
from bridge.workflows.run import inline
from bridge.workflows.run.inline import Seen
from bridge.workflows.run.repair import find_stuck
from bridge.workflows.run.runner import ADVANCE_WORKER, EXECUTE_STEP_WORKER, WorkflowRunner
from tests.workflows.run.test_runner_batches import (
    FLOWS,
    FORK,
    LINE,
    _q,
    ack,
    claim,
    in_batch,
    left,
    one,
    right,
    side_rows,
    two,
)

INLINE_BATCHED, INLINE_ONE, ADVANCE_JOBS, INLINE_UNCHANGED = "a", "b", "c", "d"
SIDES = (INLINE_BATCHED, INLINE_ONE, ADVANCE_JOBS, INLINE_UNCHANGED)
BATCHED = (INLINE_BATCHED, INLINE_UNCHANGED)


@pytest.fixture
def runner(database_url: str, oban_prefix: str) -> Iterator[WorkflowRunner]:
    made = WorkflowRunner(database_url, FLOWS, prefix=oban_prefix, config_key="batch")
    yield made
    made.close()


def _results(
    runner: WorkflowRunner, steps: list[Job], side: str = INLINE_BATCHED
) -> list[tuple[Job, StepResult, Seen | None]]:
    """Each step job's pre-check and body, as the job runs them before writing its result; on
    side ``d`` the pre-checks are one batch and each item carries its read."""
    since = runner._inline_applies
    asked = [(job.args["instance_id"], job.args["step_ref"]) for job in steps]
    if side == INLINE_UNCHANGED:
        reads = in_batch(runner, runner._precheck_batch, asked) if asked else []
    else:
        reads = [(*runner._precheck_one(*ask), None) for ask in asked]
    done = []
    for job, (instance, ran, xmin) in zip(steps, reads, strict=True):
        assert not ran
        result = runner._execute_body(job, instance, job.args["step_ref"])
        assert isinstance(result, StepResult)
        done.append((job, result, None if xmin is None else Seen(instance, xmin, since)))
    return done


@pytest.fixture
def unchanged_writes(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The instances each one-round-trip write wrote (to show that path ran)."""
    written: list[set[str]] = []
    real = inline.apply_if_unchanged

    async def counted(*args: Any, **kwargs: Any) -> set[str]:
        answer = await real(*args, **kwargs)
        written.append(answer)
        return answer

    monkeypatch.setattr(inline, "apply_if_unchanged", counted)
    return written


def run_round(runner: WorkflowRunner, conn: psycopg.Connection[Any], side: str) -> list[Any]:
    """Claim the side's available jobs and run them the side's way; returns their outcomes."""
    jobs = claim(conn, runner.prefix, side)
    advances = [j for j in jobs if j.worker == ADVANCE_WORKER]
    steps = _results(runner, [j for j in jobs if j.worker == EXECUTE_STEP_WORKER], side)
    outcomes: list[Any] = []
    if side in BATCHED:
        outcomes += in_batch(runner, runner._advance_batch, advances) if advances else []
        outcomes += in_batch(runner, runner._apply_batch, steps) if steps else []
    elif side == INLINE_ONE:
        outcomes += [runner._advance_one(j) for j in advances]
        outcomes += [runner._apply_one(j, r) for j, r, _ in steps]
    else:
        outcomes += [runner._advance_one(j) for j in advances]
        outcomes += [runner._record_one(j, r, resume=False) for j, r, _ in steps]
    ack(conn, runner.prefix, jobs)
    ran = advances + [j for j, _, _ in steps]
    return [(j.worker, o) for j, o in zip(ran, outcomes, strict=True)]


def without_result_advances(jobs: Counter[str]) -> Counter[str]:
    """The job rows less the AdvanceWorkers a step's result queued (their meta names a step)."""
    return Counter(
        {row: n for row, n in jobs.items() if ADVANCE_WORKER not in row or "'step'" not in row}
    )


def test_inline_rows_are_the_two_job_rows_less_the_result_advances(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], unchanged_writes: list[set[str]]
) -> None:
    for side in SIDES:
        for k in range(3):
            runner.start(conn, LINE, {"n": k}, id=f"{side}-line-{k}")
            runner.start(conn, FORK, {"n": k}, id=f"{side}-fork-{k}")
    rounds = {side: 0 for side in SIDES}
    for side in SIDES:
        while run_round(runner, conn, side):
            rounds[side] += 1
            # Between any two transitions nothing looks stuck to repair, grace or not.
            assert find_stuck(conn, runner.prefix, grace=0) == []
    # start, one, left+right, join, done (inline); each result's advance adds a round.
    assert rounds == {INLINE_BATCHED: 5, INLINE_ONE: 5, ADVANCE_JOBS: 9, INLINE_UNCHANGED: 5}
    rows = {side: side_rows(conn, runner.prefix, side) for side in SIDES}
    assert [i["status"] for i in rows["a"]["instances"]] == ["completed"] * 6
    assert rows["a"]["instances"] == rows["b"]["instances"] == rows["c"]["instances"]
    assert rows["a"]["results"] == rows["b"]["results"] == rows["c"]["results"]
    assert rows["a"]["jobs"] == rows["b"]["jobs"]
    assert rows["d"] == rows["a"]
    # Side d wrote every step result in one round trip, none left to the read path: its 4
    # rounds of step jobs touch 6, 6, 6 and 3 instances (the fork's siblings in one write,
    # the lines done a round before the forks).
    assert [len(w) for w in unchanged_writes] == [6, 6, 6, 3]
    assert rows["a"]["jobs"] == without_result_advances(rows["c"]["jobs"])
    advances_a = sum(n for row, n in rows["a"]["jobs"].items() if ADVANCE_WORKER in row)
    advances_c = sum(n for row, n in rows["c"]["jobs"].items() if ADVANCE_WORKER in row)
    assert (advances_a, advances_c) == (6, 6 + 3 * 3 + 3 * 4)


def test_inline_refuses_duplicates_and_inactive_steps_as_the_recorder_does(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    """A step job delivered twice, and a stale result for a step no longer active: one result
    is written and applied, the rest refused, batched or not; the rows are the recorder's."""
    for side in SIDES:
        runner.start(conn, LINE, {"n": 1}, id=f"{side}-line-0")
        run_round(runner, conn, side)  # the start's advance: `one` becomes active
        (step_job,) = claim(conn, runner.prefix, side)
        [(_, result, seen)] = _results(runner, [step_job], side)
        stale = StepResult(left.name, "ok", {"n": -1}, {})  # a step this workflow never activates
        items = [(step_job, result, seen), (step_job, result, seen), (step_job, stale, seen)]
        if side in BATCHED:
            written = in_batch(runner, runner._apply_batch, items)
        elif side == INLINE_ONE:
            written = [runner._apply_one(j, r) for j, r, _ in items]
        else:
            written = [runner._record_one(j, r, resume=False) for j, r, _ in items]
            ack(conn, runner.prefix, [step_job])
            run_round(runner, conn, side)  # the advance the result queued
        assert written == [True, False, False]
        ack(conn, runner.prefix, [step_job])
    rows = {side: side_rows(conn, runner.prefix, side) for side in SIDES}
    assert rows["a"]["instances"] == rows["b"]["instances"] == rows["c"]["instances"]
    assert rows["a"]["results"] == rows["b"]["results"] == rows["c"]["results"]
    assert sum(rows["a"]["results"].values()) == 1
    assert rows["a"]["jobs"] == rows["b"]["jobs"] == without_result_advances(rows["c"]["jobs"])
    assert rows["d"] == rows["a"]


def _to_siblings(runner: WorkflowRunner, conn: psycopg.Connection[Any], side: str) -> list[Job]:
    """Run a fork until its two siblings' step jobs are claimed; returns them, left first."""
    runner.start(conn, FORK, {"n": 1}, id=f"{side}-fork-0")
    while True:
        jobs = claim(conn, runner.prefix, side)
        if sorted(j.args.get("step_ref", "") for j in jobs) == [left.name, right.name]:
            return sorted(jobs, key=lambda j: j.args["step_ref"])
        advances = [j for j in jobs if j.worker == ADVANCE_WORKER]
        steps = _results(runner, [j for j in jobs if j.worker == EXECUTE_STEP_WORKER])
        for job in advances:
            runner._advance_one(job)
        for job, result, _ in steps:
            if side == ADVANCE_JOBS:
                runner._record_one(job, result, resume=False)
            else:
                runner._apply_one(job, result)
        ack(conn, runner.prefix, jobs)


def test_a_discarded_sibling_fails_the_instance_in_the_inline_transition(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    """Left's step job was discarded (its node died on its last attempt); right's result is
    written and the instance failed in right's own transaction, as right's advance would."""
    for side in SIDES:
        left_job, right_job = _to_siblings(runner, conn, side)
        conn.execute(
            _q("UPDATE {prefix}.oban_jobs SET state = 'discarded' WHERE id = %s", runner.prefix),
            (left_job.id,),
        )
        [item] = _results(runner, [right_job], side)
        result = item[1]
        if side in BATCHED:
            assert in_batch(runner, runner._apply_batch, [item]) == [True]
        elif side == INLINE_ONE:
            assert runner._apply_one(right_job, result) is True
        else:
            assert runner._record_one(right_job, result, resume=False) is True
            ack(conn, runner.prefix, [right_job])
            run_round(runner, conn, side)
        ack(conn, runner.prefix, [right_job])
    rows = {side: side_rows(conn, runner.prefix, side) for side in SIDES}
    assert [i["status"] for i in rows["a"]["instances"]] == ["failed"]
    assert rows["a"]["instances"] == rows["b"]["instances"] == rows["c"]["instances"]
    assert rows["a"]["results"] == rows["b"]["results"] == rows["c"]["results"]
    assert rows["a"]["jobs"] == rows["b"]["jobs"] == without_result_advances(rows["c"]["jobs"])
    assert rows["d"] == rows["a"]


def test_an_inline_transition_applies_a_result_a_two_job_node_recorded(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    """Nodes of both modes on one queue: left recorded by a node without inline advance (its
    advance queued), right applied inline, which applies left's pending result too; the queued
    advance then finds nothing to do. The instance and results end as with advance jobs only."""
    for side in (INLINE_ONE, ADVANCE_JOBS):
        left_job, right_job = _to_siblings(runner, conn, side)
        steps = [item[:2] for item in _results(runner, [left_job, right_job])]
        assert runner._record_one(*steps[0], resume=False) is True
        if side == INLINE_ONE:
            assert runner._apply_one(*steps[1]) is True
        else:
            assert runner._record_one(*steps[1], resume=False) is True
        ack(conn, runner.prefix, [left_job, right_job])
        while run_round(runner, conn, side):
            pass
    inline, two = (side_rows(conn, runner.prefix, side) for side in (INLINE_ONE, ADVANCE_JOBS))
    assert [i["status"] for i in inline["instances"]] == ["completed"]
    assert inline["instances"] == two["instances"]
    assert inline["results"] == two["results"]
    # Left's advance is there (and completed, having found nothing), right's is not.
    assert without_result_advances(inline["jobs"]) == without_result_advances(two["jobs"])


def test_a_held_instance_lock_does_not_hold_up_the_rest_of_the_batch(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], database_url: str
) -> None:
    """Another transaction holds one instance's lock (a frozen node's batch): the batch applies
    the other instance's result and commits at once; the held instance's job waits on its own
    and is applied once the lock is released, with the rows of an unhindered run."""
    for side in SIDES:
        for k in range(2):
            runner.start(conn, LINE, {"n": k}, id=f"{side}-line-{k}")
        run_round(runner, conn, side)  # the start advances: `one` active in both
    steps = {side: _results(runner, claim(conn, runner.prefix, side), side) for side in SIDES}
    for side in (INLINE_ONE, ADVANCE_JOBS):
        for job, result, _ in steps[side]:
            if side == INLINE_ONE:
                runner._apply_one(job, result)
            else:
                runner._record_one(job, result, resume=False)
        ack(conn, runner.prefix, [job for job, _, _ in steps[side]])
    run_round(runner, conn, ADVANCE_JOBS)  # the results' advances
    for side in BATCHED:  # read path first, then the one-round-trip path
        holder = psycopg.connect(database_url, autocommit=True)
        with ThreadPoolExecutor(1) as pool:
            try:
                holder.execute("BEGIN")
                holder.execute("SELECT pg_advisory_xact_lock(%s)", (phash2(f"{side}-line-0"),))
                batch = pool.submit(in_batch, runner, runner._apply_batch, steps[side])
                assert _wait_for_active(conn, runner.prefix, f"{side}-line-1", two.name)
                assert not batch.done()  # line-0's job waits for the lock, alone
                assert _active(conn, runner.prefix, f"{side}-line-0") == [one.name]
            finally:
                holder.close()  # releases the lock (and lets a failed run's batch end)
            assert batch.result(timeout=30) == [True, True]
        ack(conn, runner.prefix, [job for job, _, _ in steps[side]])
    rows = {side: side_rows(conn, runner.prefix, side) for side in SIDES}
    assert rows["a"]["instances"] == rows["b"]["instances"] == rows["c"]["instances"]
    assert rows["a"]["results"] == rows["b"]["results"] == rows["c"]["results"]
    assert rows["a"]["jobs"] == rows["b"]["jobs"] == without_result_advances(rows["c"]["jobs"])
    assert rows["d"] == rows["a"]


def _active(conn: psycopg.Connection[Any], prefix: str, instance_id: str) -> Any:
    row = conn.execute(
        _q("SELECT state->'active_steps' FROM {prefix}.workflow_instances WHERE id = %s", prefix),
        (instance_id,),
    ).fetchone()
    return None if row is None else row[0]


def _wait_for_active(
    conn: psycopg.Connection[Any], prefix: str, instance_id: str, step: str
) -> bool:
    """Whether the instance shows ``step`` as its only active step within 10 s."""
    for _ in range(200):
        if _active(conn, prefix, instance_id) == [step]:
            return True
        threading.Event().wait(0.05)
    return False


def test_an_instance_changed_since_the_pre_check_is_read_again(
    runner: WorkflowRunner,
    conn: psycopg.Connection[Any],
    database_url: str,
    oban_prefix: str,
    unchanged_writes: list[set[str]],
) -> None:
    """Both siblings' pre-checks read the fork in one version; another node then applies left's
    result. Right's batch must not write from its stale read (left active, left's result
    missing): the row version differs, so the batch reads the instance again and applies right
    over left's transition, ending with the rows of advance jobs."""
    other = WorkflowRunner(database_url, FLOWS, prefix=oban_prefix, config_key="batch")
    try:
        for side in (INLINE_UNCHANGED, ADVANCE_JOBS):
            left_job, right_job = _to_siblings(runner, conn, side)
            left_item, right_item = _results(runner, [left_job, right_job], side)
            if side == INLINE_UNCHANGED:
                assert other._apply_one(*left_item[:2]) is True
                assert in_batch(runner, runner._apply_batch, [right_item]) == [True]
            else:
                assert runner._record_one(*left_item[:2], resume=False) is True
                assert runner._record_one(*right_item[:2], resume=False) is True
            ack(conn, runner.prefix, [left_job, right_job])
            while run_round(runner, conn, side):
                pass
    finally:
        other.close()
    assert unchanged_writes[0] == set()  # right's one-round-trip write found the row changed
    unchanged, two = (side_rows(conn, runner.prefix, s) for s in (INLINE_UNCHANGED, ADVANCE_JOBS))
    assert [i["status"] for i in unchanged["instances"]] == ["completed"]
    assert unchanged["instances"] == two["instances"]
    assert unchanged["results"] == two["results"]
    assert unchanged["jobs"] == without_result_advances(two["jobs"])
