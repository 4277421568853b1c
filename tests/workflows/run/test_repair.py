"""The workflow lifeline and ``repair`` on real PostgreSQL, against rows the genuine stack wrote.

The stuck state is HephaestusOban's own defect, rebuilt from golden ``async-step-in-fanout`` s2d
rows: NormalSlow's result is written, but the AdvanceWorker that should apply it (golden job 10)
was deduplicated against an advance already executing, so it is missing; every job has ended
and the instance stays ``running`` with one unprocessed result. Repair must write golden job 10,
and nothing for instances that are healthy, finished, failed or merely fresh.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.registry import Registry
from bridge.jobs.node import Node, NodeConfig
from bridge.wire.phash2 import phash2
from bridge.wire.timefmt import utc_now
from bridge.workflows import DONE, Context, Instance, StepOk, Workflow, advance, step
from bridge.workflows.model.engine import StepResult
from bridge.workflows.run.repair import Repair, find_stuck, owner_of, repair
from bridge.workflows.run.runner import ADVANCE_WORKER, WorkflowRunner, advance_job
from bridge.workflows.serving import WorkflowServing, serve_workflows
from bridge.workflows.store.instances import insert_result, load_instance, save_instance
from tests.workflows import load_jsonl
from tests.workflows.run.test_runner import jobs_json, status_is, wait_for_instance

S2D = "async-step-in-fanout/s2d_"
STUCK_ID = "asyncfirst::s2d"
LOST_JOB_ID = 10  # the AdvanceWorker NormalSlow's result got in the genuine run
STUCK_AT = "2026-11-23T01:14:31.319882Z"  # snapshot: running, NormalSlow active
NORMAL_SLOW = "Elixir.Realstack.Steps.NormalSlow"
SHAPE = ("worker", "queue", "args", "meta", "tags", "max_attempts", "priority", "errors")


def golden_jobs() -> list[dict[str, Any]]:
    return load_jsonl(S2D + "oban_jobs.jsonl")


def _q(template: str, prefix: str) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


def put_instance(conn: psycopg.Connection[Any], prefix: str, row: dict[str, Any]) -> None:
    conn.execute(
        _q(
            "INSERT INTO {prefix}.workflow_instances"
            " (id, workflow, status, state, workflow_version, inserted_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            prefix,
        ),
        (
            row["id"],
            row["workflow"],
            row["status"],
            Jsonb(row["state"]),
            row["workflow_version"],
            row["inserted_at"],
            row["updated_at"],
        ),
    )


def put_result(
    conn: psycopg.Connection[Any], prefix: str, row: dict[str, Any], **changes: Any
) -> None:
    row = {**row, **changes}
    conn.execute(
        _q(
            "INSERT INTO {prefix}.hephaestus_step_results (id, instance_id, step_ref, event,"
            " context_updates, metadata_updates, processed, workflow_version, inserted_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            prefix,
        ),
        (
            row["id"],
            row["instance_id"],
            row["step_ref"],
            row["event"],
            Jsonb(row["context_updates"]),
            Jsonb(row["metadata_updates"]),
            row["processed"],
            row["workflow_version"],
            row["inserted_at"],
        ),
    )


def put_job(
    conn: psycopg.Connection[Any], prefix: str, row: dict[str, Any], **changes: Any
) -> None:
    """A golden job row as it was (a fresh id: the sequence is this schema's)."""
    row = {**row, **changes}
    conn.execute(
        _q(
            "INSERT INTO {prefix}.oban_jobs (state, queue, worker, args, errors, attempt,"
            " max_attempts, inserted_at, scheduled_at, attempted_at, completed_at, attempted_by,"
            " discarded_at, priority, tags, meta, cancelled_at)"
            " VALUES (%s::{prefix}.oban_job_state, %s, %s, %s, %s::jsonb[], %s, %s, %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s, %s)",
            prefix,
        ),
        (
            row["state"],
            row["queue"],
            row["worker"],
            Jsonb(row["args"]),
            [json.dumps(e) for e in row["errors"]],
            row["attempt"],
            row["max_attempts"],
            row["inserted_at"],
            row["scheduled_at"],
            row["attempted_at"],
            row["completed_at"],
            row["attempted_by"],
            row["discarded_at"],
            row["priority"],
            row["tags"],
            Jsonb(row["meta"]),
            row["cancelled_at"],
        ),
    )


def build_stuck_s2d(
    conn: psycopg.Connection[Any], prefix: str, *, instance_id: str = STUCK_ID
) -> None:
    """The genuine defect in rows: s2d at ``STUCK_AT``, NormalSlow's result written, its
    advance lost, every job ended."""
    snapshot = next(s for s in load_jsonl(S2D + "snapshots.jsonl") if s["at"] == STUCK_AT)
    put_instance(conn, prefix, {**snapshot["instance"], "id": instance_id})
    results = load_jsonl(S2D + "hephaestus_step_results.jsonl")
    for row in results[:4]:  # Pass, AsyncWait x2 (processed), NormalSlow (not)
        fresh = {"id": _uuid(row["id"], instance_id), "instance_id": instance_id}
        put_result(conn, prefix, row, processed=row["step_ref"] != NORMAL_SLOW, **fresh)
    for job in golden_jobs()[: LOST_JOB_ID - 1]:  # jobs 1-9, all ended
        args = {**job["args"], "instance_id": instance_id}
        meta = {**job["meta"], "instance_id": instance_id}
        put_job(conn, prefix, job, state="completed", args=args, meta=meta)


def _uuid(golden: str, instance_id: str) -> str:
    if instance_id == STUCK_ID:
        return golden
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, instance_id + golden))


def snapshot(conn: psycopg.Connection[Any], prefix: str) -> list[Any]:
    tables = ("oban_jobs", "workflow_instances", "hephaestus_step_results")
    return [
        conn.execute(
            _q(f"SELECT json_agg(t ORDER BY t::text) FROM {{prefix}}.{table} t", prefix)
        ).fetchone()
        for table in tables
    ]


def shape(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job[k] for k in SHAPE}


# -- Elixir-owned -------------------------------------------------------------------------------


def test_repair_writes_the_advance_job_the_genuine_stack_lost(
    conn: psycopg.Connection[Any], oban_prefix: str, database_url: str
) -> None:
    build_stuck_s2d(conn, oban_prefix)
    assert [s.id for s in find_stuck(conn, oban_prefix)] == [STUCK_ID]

    before = snapshot(conn, oban_prefix)
    planned = repair(conn, oban_prefix, dry_run=True)
    assert snapshot(conn, oban_prefix) == before  # a dry run writes nothing
    assert [(r.instance_id, r.action, r.owner) for r in planned] == [
        (STUCK_ID, "would enqueue", "elixir")
    ]

    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"{oban_prefix}.oban_insert")))
        done = repair(conn, oban_prefix)
        heard = [json.loads(n.payload) for n in listener.notifies(timeout=1.0, stop_after=1)]
    assert heard == [{"queue": "hephaestus"}]  # Elixir nodes start it at once, as Oban's insert
    assert [(r.instance_id, r.action, r.owner, r.queue) for r in done] == [
        (STUCK_ID, "enqueued", "elixir", "hephaestus")
    ]
    jobs = jobs_json(database_url, oban_prefix, STUCK_ID)
    assert len(jobs) == LOST_JOB_ID
    new = jobs[-1]
    golden = golden_jobs()[LOST_JOB_ID - 1]
    assert golden["worker"] == ADVANCE_WORKER and golden["meta"]["step"] == "normal_slow"
    assert shape(new) == shape(golden)
    assert (new["state"], new["attempt"], new["attempted_by"]) == ("available", 0, None)
    assert new.keys() == golden.keys()
    assert planned[0].job is not None and shape(planned[0].job.to_dict()) == shape(golden)

    # Healed: the advance is there now, so nothing is stuck and a second run writes nothing.
    after = snapshot(conn, oban_prefix)
    assert find_stuck(conn, oban_prefix) == []
    assert repair(conn, oban_prefix) == []
    assert snapshot(conn, oban_prefix) == after


def test_healthy_finished_failed_and_fresh_instances_are_left_alone(
    conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    # The genuine final s2d rows: completed, one stale unprocessed NormalSlow result.
    final = load_jsonl(S2D + "workflow_instances.jsonl")[0]
    put_instance(conn, oban_prefix, final)
    for row in load_jsonl(S2D + "hephaestus_step_results.jsonl"):
        put_result(conn, oban_prefix, row)
    for job in golden_jobs():
        put_job(conn, oban_prefix, job)

    # Failed, with an unprocessed result.
    build_stuck_s2d(conn, oban_prefix, instance_id="asyncfirst::failed")
    conn.execute(
        _q("UPDATE {prefix}.workflow_instances SET status = 'failed' WHERE id = %s", oban_prefix),
        ("asyncfirst::failed",),
    )
    # Healthy: its advance is still waiting to run (and one that is executing).
    for state in ("available", "executing", "retryable", "scheduled"):
        iid = f"asyncfirst::{state}"
        build_stuck_s2d(conn, oban_prefix, instance_id=iid)
        lost = golden_jobs()[LOST_JOB_ID - 1]
        put_job(
            conn,
            oban_prefix,
            lost,
            state=state,
            args={**lost["args"], "instance_id": iid},
            meta={**lost["meta"], "instance_id": iid},
        )
    # Fresh: the result was written a moment ago (its advance may be committing with it).
    build_stuck_s2d(conn, oban_prefix, instance_id="asyncfirst::fresh")
    conn.execute(
        _q(
            "UPDATE {prefix}.hephaestus_step_results SET inserted_at = timezone('UTC', now())"
            " WHERE instance_id = %s",
            oban_prefix,
        ),
        ("asyncfirst::fresh",),
    )
    # A result for a step that is no longer active (an upstream duplicate run).
    build_stuck_s2d(conn, oban_prefix, instance_id="asyncfirst::stale")
    conn.execute(
        _q(
            "UPDATE {prefix}.workflow_instances"
            " SET state = jsonb_set(state, '{{active_steps}}', '[]') WHERE id = %s",
            oban_prefix,
        ),
        ("asyncfirst::stale",),
    )
    # And one that really is stuck.
    build_stuck_s2d(conn, oban_prefix, instance_id="asyncfirst::stuck")

    before = snapshot(conn, oban_prefix)
    assert [r.instance_id for r in repair(conn, oban_prefix, dry_run=True)] == ["asyncfirst::stuck"]
    assert snapshot(conn, oban_prefix) == before
    done = repair(conn, oban_prefix)
    assert [(r.instance_id, r.action) for r in done] == [("asyncfirst::stuck", "enqueued")]
    # The fresh one is stuck too once the grace period is over.
    later = repair(conn, oban_prefix, grace=0)
    assert [(r.instance_id, r.action) for r in later] == [("asyncfirst::fresh", "enqueued")]


def test_concurrent_repairs_enqueue_one_advance(
    database_url: str, conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    build_stuck_s2d(conn, oban_prefix)
    outcomes: list[list[Repair]] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        with psycopg.connect(database_url, autocommit=True) as own:
            barrier.wait()
            outcomes.append(repair(own, oban_prefix))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    live = [
        j
        for j in jobs_json(database_url, oban_prefix, STUCK_ID)
        if j["worker"] == ADVANCE_WORKER and j["state"] not in ("completed", "cancelled")
    ]
    assert len(live) == 1 and live[0]["state"] == "available"
    actions = sorted(r.action for found in outcomes for r in found)
    assert actions.count("enqueued") == 1


def test_repair_waits_for_an_advance_holding_the_instance_and_then_enqueues_nothing(
    database_url: str, conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    """An Elixir advance that applies the stuck result while repair is between its look and its
    insert: repair must see the result applied and leave no second advance, which would
    re-enqueue every active step."""
    build_stuck_s2d(conn, oban_prefix)
    outcome: list[list[Repair]] = []
    with psycopg.connect(database_url) as advance:  # plays AdvanceWorker's transaction
        advance.execute("SELECT pg_advisory_xact_lock(%s)", (phash2(STUCK_ID),))

        def run() -> None:
            with psycopg.connect(database_url, autocommit=True) as own:
                outcome.append(repair(own, oban_prefix, grace=0.0))

        worker = threading.Thread(target=run)
        worker.start()
        for _ in range(500):
            waiting = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND classid = 0 AND objid = %s AND objsubid = 1",
                (phash2(STUCK_ID),),
            ).fetchone()
            if waiting and waiting[0] == 1:
                break
            threading.Event().wait(0.01)
        else:
            pytest.fail("repair never waited for the instance's advisory key")
        advance.execute(
            _q(
                "UPDATE {prefix}.hephaestus_step_results SET processed = true"
                " WHERE instance_id = %s",
                oban_prefix,
            ),
            (STUCK_ID,),
        )
        advance.commit()
    worker.join(timeout=30)
    assert [(r.instance_id, r.action) for r in outcome[0]] == [(STUCK_ID, "already queued")]
    jobs = jobs_json(database_url, oban_prefix, STUCK_ID)
    assert len(jobs) == LOST_JOB_ID - 1  # jobs 1-9 as built, no advance added


def test_an_instance_without_jobs_is_reported_not_guessed(
    conn: psycopg.Connection[Any], oban_prefix: str
) -> None:
    build_stuck_s2d(conn, oban_prefix)
    conn.execute(_q("DELETE FROM {prefix}.oban_jobs", oban_prefix))  # pruned
    assert owner_of(conn, oban_prefix, STUCK_ID) is None
    before = snapshot(conn, oban_prefix)
    done = repair(conn, oban_prefix)
    assert [(r.action, r.reason) for r in done] == [("skipped", "no HephaestusOban jobs left")]
    assert snapshot(conn, oban_prefix) == before


# -- Python-owned -------------------------------------------------------------------------------


@step(name="Elixir.Py.Heal.First", events=["ok"])
def first(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"n": 1})


@step(name="Elixir.Py.Heal.Second", events=["ok"])
def second(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok", {"n": context.steps["first"]["n"] + 1})


HEAL = Workflow(
    name="Elixir.Py.Heal.Flow",
    start=first,
    transitions=[(first, "ok", second), (second, "ok", DONE)],
    tags=["heal"],
    metadata={"team": "py"},
    atoms=["n"],
)


@pytest.fixture
def runner(database_url: str, oban_prefix: str) -> Iterator[WorkflowRunner]:
    made = WorkflowRunner(database_url, [HEAL], prefix=oban_prefix)
    yield made
    made.close()


def build_stuck_python(runner: WorkflowRunner, conn: psycopg.Connection[Any], iid: str) -> None:
    """A Python-owned instance with First's result written an hour ago and no advance: its
    first advance ran (completed), First ran, and the advance for its result is gone."""
    runner.start(conn, HEAL, {}, id=iid)
    prefix = runner.prefix
    with conn.transaction():
        instance = load_instance(conn, prefix, iid, runner.workflows)
        save_instance(conn, prefix, advance(HEAL, instance))
        conn.execute(
            _q(
                "UPDATE {prefix}.oban_jobs SET state = 'completed', attempt = 1,"
                " completed_at = timezone('UTC', now()) WHERE args->>'instance_id' = %s",
                prefix,
            ),
            (iid,),
        )
        running = load_instance(conn, prefix, iid, runner.workflows)
        from bridge.workflows.run.runner import execute_step_job

        step_job = execute_step_job(
            HEAL, running, first.name, queue=runner.queue, config_key=runner.config_key
        )
        inserted = insert_all(conn, [step_job], prefix=prefix)[0]
        conn.execute(
            _q(
                "UPDATE {prefix}.oban_jobs SET state = 'completed', attempt = 1 WHERE id = %s",
                prefix,
            ),
            (inserted.id,),
        )
        insert_result(conn, prefix, iid, StepResult(first.name, "ok", {"n": 1}, {}), 1)
        conn.execute(
            _q(
                "UPDATE {prefix}.hephaestus_step_results"
                " SET inserted_at = inserted_at - interval '1 hour' WHERE instance_id = %s",
                prefix,
            ),
            (iid,),
        )


def test_repair_enqueues_the_python_runners_own_advance(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], database_url: str
) -> None:
    build_stuck_python(runner, conn, "heal-1")
    done = repair(conn, runner.prefix, runners=[runner])
    assert [(r.instance_id, r.action, r.owner, r.queue) for r in done] == [
        ("heal-1", "enqueued", "python", "bridge_workflows")
    ]
    instance = load_instance(conn, runner.prefix, "heal-1", runner.workflows)
    expected = advance_job(
        HEAL, instance, queue=runner.queue, config_key=runner.config_key, step_ref=first.name
    )
    new = jobs_json(database_url, runner.prefix, "heal-1")[-1]
    assert shape(new) == shape(expected.to_dict())
    assert new["meta"] == {
        "team": "py",
        "heph_workflow": "flow",
        "instance_id": "heal-1",
        "workflow_version": 1,
        "step": "first",
    }
    # Without the definition the rows give the same job.
    build_stuck_python(runner, conn, "heal-2")
    planned = repair(conn, runner.prefix, dry_run=True)
    assert [r.instance_id for r in planned] == ["heal-2"]
    assert planned[0].job is not None
    assert shape(planned[0].job.to_dict()) == {
        **shape(expected.to_dict()),
        "args": {**expected.args, "instance_id": "heal-2"},
        "meta": {**expected.meta, "instance_id": "heal-2"},
    }


@pytest.mark.parametrize("inline", [True, False], ids=["inline-advance", "advance-jobs"])
async def test_a_node_with_the_workflow_lifeline_heals_a_python_instance(
    runner: WorkflowRunner, conn: psycopg.Connection[Any], database_url: str, inline: bool
) -> None:
    """The lifeline's advance heals the instance; then, with inline advance (the default), the
    steps apply their own results and no further AdvanceWorker is written."""
    build_stuck_python(runner, conn, "heal-3")
    await asyncio.sleep(0)
    config = NodeConfig(
        url=database_url, queues={}, prefix=runner.prefix, registry=Registry(), poll_interval=0.2
    )
    config.shutdown_grace = 2.0
    serving = WorkflowServing(
        concurrency=4, repair_grace=30.0, repair_interval=0.2, inline_advance=inline
    )
    served = serve_workflows(config, [HEAL], serving)
    node = Node(config)
    await node.start()
    try:
        row = await wait_for_instance(
            database_url, runner.prefix, "heal-3", status_is("completed"), timeout=20
        )
        await node.drain()
    finally:
        await node.stop()
        served.close()
    assert row["state"]["context"]["steps"] == {"first": {"n": 1}, "second": {"n": 2}, "done": {}}
    advances = [
        j for j in jobs_json(database_url, runner.prefix, "heal-3") if j["worker"] == ADVANCE_WORKER
    ]
    steps = [a["meta"].get("step") for a in advances]
    assert steps == ([None, "first"] if inline else [None, "first", "second", "done"])


def test_grace_is_measured_against_the_result_age(
    runner: WorkflowRunner, conn: psycopg.Connection[Any]
) -> None:
    build_stuck_python(runner, conn, "heal-4")
    age = utc_now() - find_stuck(conn, runner.prefix)[0].oldest
    assert timedelta(minutes=59) < age < timedelta(minutes=61)
    assert find_stuck(conn, runner.prefix, grace=2 * 3600) == []
    assert isinstance(find_stuck(conn, runner.prefix, grace=0)[0].oldest, datetime)


async def test_a_lifeline_only_node_heals_an_elixir_instance(
    conn: psycopg.Connection[Any], oban_prefix: str, database_url: str
) -> None:
    """No Python workflows at all: the plugin alone enqueues the Elixir app's lost advance."""
    from bridge.jobs.plugins.peer import Peer
    from bridge.workflows.run.lifeline import WorkflowLifeline

    build_stuck_s2d(conn, oban_prefix)
    lifeline = WorkflowLifeline(grace=30.0, interval=0.1)
    config = NodeConfig(
        url=database_url,
        queues={},
        prefix=oban_prefix,
        registry=Registry(),
        plugins=[Peer(), lifeline],
    )
    node = Node(config)
    await node.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(jobs_json(database_url, oban_prefix, STUCK_ID)) < LOST_JOB_ID:
            assert loop.time() < deadline, "the lifeline never repaired the instance"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # more ticks: still one advance
    finally:
        await node.stop()
    jobs = jobs_json(database_url, oban_prefix, STUCK_ID)
    assert len(jobs) == LOST_JOB_ID
    assert shape(jobs[-1]) == shape(golden_jobs()[LOST_JOB_ID - 1])
