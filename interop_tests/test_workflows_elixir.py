"""The fixture's Hephaestus half against the golden rows and the Python workflow library.

Elixir workflows run in the VM (HephaestusOban's workers over HephaestusEcto's storage, as the
genuine stack); Python reads, writes and completes their rows. Golden rows:
``tests/data/golden/workflows/`` (``../shared/golden/``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import psycopg
import pytest

from bridge.workflows import WAIT
from bridge.workflows.model.engine import (
    advance,
    apply_step_results,
    execute_step,
    new_instance,
    step_result,
)
from bridge.workflows.model.serializer import (
    KnownNames,
    UnloadableStateError,
    engine_context_keys,
    from_row,
    to_row,
    to_state,
    unloadable_names,
)
from bridge.workflows.run.runner import resume_job
from bridge.workflows.store.instances import insert_instance, results_for, save_instance
from interop_tests.fixture import ElixirFixture
from interop_tests.support import golden_json, golden_lines
from interop_tests.workflow_support import (
    ASYNC_FANOUT,
    CONFIG_KEY,
    FAIL_FANOUT,
    FAIL_LINEAR,
    ORDER,
    TIMED,
    WORKFLOWS,
    complete_from_outside,
    db_instance_row,
    db_step_results,
    elixir_instance_row,
    elixir_step_results,
    hephaestus_jobs,
    load_in_vm,
    load_json,
    load_jsonl,
    serve_hephaestus,
    start_elixir_workflow,
    wait_status,
)

SCENARIO_KEY = "Elixir.Realstack.Heph"  # the second capture's runner config key
ASYNC_WAIT = "Elixir.Realstack.Steps.AsyncWait"
S3A_UPDATES = {
    "external_ref": "py-123",
    "amount_cents": 4200,
    "source": "python",
    "nested_info": {"items": [1, 2, 3]},
}
S3B_UPDATES = {"external_ref": "py-456", "zz_python_only_key_q7": "value"}
UNKNOWN_KEY = "zz_python_only_key_q7"

JOB_FIELDS = ("worker", "queue", "state", "args", "meta", "tags", "max_attempts", "priority")
RESULT_FIELDS = ("step_ref", "event", "context_updates", "metadata_updates", "processed")


def _multiset(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> Counter[str]:
    return Counter(json.dumps([row[f] for f in fields], sort_keys=True) for row in rows)


def _join_races(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Charge and Reserve finish together: which one's AdvanceWorker insert survives (the other
    is deduplicated against it) is a race, so their ``meta.step`` is compared as either."""
    out = []
    for job in jobs:
        if job["meta"].get("step") in ("charge", "reserve"):
            job = {**job, "meta": {**job["meta"], "step": "charge|reserve"}}
        out.append(job)
    return out


def snapshot_lines(name: str) -> list[dict[str, Any]]:
    return [s for s in load_jsonl(name) if s.get("instance")]


def _golden_row(name: str, instance_id: str) -> dict[str, Any]:
    [row] = [r for r in load_jsonl(name) if r.get("id") == instance_id]
    return dict(row)


def _until(check: Any, what: str, limit: float = 10.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _assert_python_round_trip(row: dict[str, Any]) -> None:
    """Python loads the stored row and serialises the very same state back."""
    instance = from_row(row, WORKFLOWS)
    assert to_state(instance) == row["state"]
    again = to_row(instance)
    assert (again.id, again.workflow, again.status, again.workflow_version) == (
        row["id"],
        row["workflow"],
        row["status"],
        row["workflow_version"],
    )
    assert again.state == row["state"]


def _wait_waiting_and_idle(fx: ElixirFixture, instance_id: str) -> None:
    # The async step runs twice (upstream): its sibling's result wakes the waiting instance.
    # At queue limit 1 the order is the capture's (s3a: eight jobs) and no result is stranded
    # by a deduplicated AdvanceWorker insert, which at higher concurrency can leave the
    # instance running for good (the genuine defect, kept by the fixture).
    wait_status(fx, instance_id, "waiting")
    fx.call("wait_idle", queues=["hephaestus"], timeout_ms=10_000)
    assert wait_status(fx, instance_id, "waiting") == "waiting"


# -- (a) an Elixir workflow, end to end ---------------------------------------------------------


def test_elixir_fanout_workflow_with_async_join_writes_the_golden_rows(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    serve_hephaestus(fx, limit=1)
    instance_id = start_elixir_workflow(
        fx, ORDER, {"items": 3, "customer": "c-9"}, instance_id="order::o-1"
    )
    wait_status(fx, instance_id, "waiting")
    waiting = elixir_instance_row(fx, instance_id)
    assert waiting is not None
    assert waiting["state"]["current_step"] == "Elixir.RealStack.Steps.AwaitShipment"
    _assert_python_round_trip(db_instance_row(conn, schema, instance_id))

    fx.call("workflow.resume", instance_id=instance_id, event="shipped")
    wait_status(fx, instance_id, "completed")
    fx.call("wait_idle", queues=["hephaestus"], timeout_ms=10_000)

    # The instance row: the golden one, but for the timestamps.
    [golden] = load_json("elixir-workflow-instance.json")
    row = elixir_instance_row(fx, instance_id)
    assert row is not None
    assert set(row) == set(golden)
    for column in ("id", "workflow", "status", "workflow_version", "state"):
        assert row[column] == golden[column], column
    stored = db_instance_row(conn, schema, instance_id)
    for column in ("inserted_at", "updated_at"):
        assert isinstance(stored[column], datetime) and stored[column].microsecond == 0

    # The step results: the golden ones (Charge and Reserve race, so compared as a multiset).
    golden_results = load_json("elixir-step-results.json")
    results = elixir_step_results(fx, instance_id)
    assert [set(r) for r in results] == [set(r) for r in golden_results]
    assert _multiset(results, RESULT_FIELDS) == _multiset(golden_results, RESULT_FIELDS)
    assert all(uuid.UUID(r["id"]).version == 4 for r in results)
    assert [r["step_ref"] for r in results][-3:] == [r["step_ref"] for r in golden_results][-3:]

    # The jobs: same workers, args, meta, tags, attempts as the genuine stack's.
    golden_jobs = [
        j for j in golden_json("elixir-jobs.json") if j["worker"].startswith("HephaestusOban.")
    ]
    jobs = hephaestus_jobs(fx, instance_id)
    assert _multiset(_join_races(jobs), JOB_FIELDS) == _multiset(
        _join_races(golden_jobs), JOB_FIELDS
    )

    # Python reads all of it and writes back the same state.
    _assert_python_round_trip(stored)
    python_results = results_for(conn, schema, instance_id, pending=False)
    assert sorted((r.step_ref, r.event) for r in python_results) == sorted(
        (r["step_ref"], r["event"]) for r in golden_results
    )


# -- (b) Python-written rows load (and run) in the VM ------------------------------------------


def _assert_vm_loads_as_python_wrote(fx: ElixirFixture, instance: Any) -> None:
    loaded = load_in_vm(fx, instance.id)
    assert loaded["loaded"] is True, loaded
    vm = loaded["instance"]
    assert vm["state"] == to_state(instance)
    assert (vm["workflow"], vm["status"], vm["workflow_version"]) == (
        instance.workflow,
        instance.status,
        instance.workflow_version,
    )


def test_python_engine_rows_load_in_the_vm_and_the_vm_finishes_the_workflow(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    instance = new_instance(ORDER, {"items": 3, "customer": "c-9"}, id="order::py1")
    insert_instance(conn, schema, to_row(instance))
    _assert_vm_loads_as_python_wrote(fx, instance)

    # The Python engine advances it stage by stage; the VM loads every intermediate row.
    instance = advance(ORDER, instance)
    stages = 0
    while instance.status == "running" and instance.active_steps:
        results = [
            result
            for name in sorted(instance.active_steps)
            if (result := step_result(name, execute_step(ORDER, instance, name))) is not None
        ]
        instance = advance(ORDER, apply_step_results(ORDER, instance, results))
        save_instance(conn, schema, instance)
        _assert_vm_loads_as_python_wrote(fx, instance)
        stages += 1
    assert stages == 3
    assert instance.status == "waiting"
    assert instance.current_step == "Elixir.RealStack.Steps.AwaitShipment"

    # Handed to the Elixir side: its resume finishes the workflow the Python engine began.
    serve_hephaestus(fx, limit=1)
    fx.call("workflow.resume", instance_id=instance.id, event="shipped")
    wait_status(fx, instance.id, "completed")
    fx.call("wait_idle", queues=["hephaestus"], timeout_ms=10_000)
    [golden] = load_json("elixir-workflow-instance.json")
    final = db_instance_row(conn, schema, instance.id)
    assert final["state"] == golden["state"]
    _assert_python_round_trip(final)


# -- (c) the outside door: Python completes a waiting Elixir step ------------------------------


def test_outside_door_from_python_completes_a_waiting_elixir_step(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    serve_hephaestus(fx, limit=1, config_key=SCENARIO_KEY)
    instance_id = start_elixir_workflow(
        fx, ASYNC_FANOUT, {"order_id": 7}, value="s3a", config_key=SCENARIO_KEY
    )
    assert instance_id == "asyncfanout::s3a"
    _wait_waiting_and_idle(fx, instance_id)
    golden_jobs = golden_lines("external-step-completion/s3_oban_jobs.jsonl")
    golden_before = [j for j in golden_jobs if j["args"]["instance_id"] == instance_id][:8]
    assert _multiset(hephaestus_jobs(fx, instance_id), JOB_FIELDS) == _multiset(
        golden_before, JOB_FIELDS
    )

    door = complete_from_outside(
        conn,
        schema,
        ASYNC_FANOUT,
        instance_id,
        ASYNC_WAIT,
        "resumed",
        S3A_UPDATES,
        config_key=SCENARIO_KEY,
    )
    [golden_door] = [j for j in golden_jobs if j["id"] == 9]  # the psql process's job
    for field in ("worker", "queue", "args", "meta", "tags", "max_attempts"):
        assert door[field] == golden_door[field], field

    wait_status(fx, instance_id, "completed")
    fx.call("wait_idle", queues=["hephaestus"], timeout_ms=10_000)
    golden = _golden_row("external-step-completion/s3_workflow_instances.jsonl", instance_id)
    final = db_instance_row(conn, schema, instance_id)
    assert final["state"] == golden["state"]
    assert final["state"]["context"]["steps"]["async_wait"] == S3A_UPDATES
    _assert_python_round_trip(final)
    pending = [r for r in db_step_results(conn, schema, instance_id) if not r["processed"]]
    assert pending == []


# -- (d) a key that is not an atom bricks the Elixir instance; Python refuses to write it ------


def test_unknown_key_bricks_the_elixir_instance_and_python_refuses_to_write_it(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    serve_hephaestus(fx, limit=1, config_key=SCENARIO_KEY)
    instance_id = start_elixir_workflow(
        fx, ASYNC_FANOUT, {"order_id": 8}, value="s3b", config_key=SCENARIO_KEY
    )
    _wait_waiting_and_idle(fx, instance_id)
    assert fx.call("workflow.atoms", names=[UNKNOWN_KEY, "external_ref"])["existing"] == [
        "external_ref"
    ]

    # Python's check refuses, and writes nothing.
    results_before = db_step_results(conn, schema, instance_id)
    jobs_before = hephaestus_jobs(fx, instance_id)
    with pytest.raises(UnloadableStateError) as refused:
        complete_from_outside(
            conn, schema, ASYNC_FANOUT, instance_id, ASYNC_WAIT, "resumed", S3B_UPDATES,
            config_key=SCENARIO_KEY,
        )  # fmt: skip
    assert [p.name for p in refused.value.problems] == [UNKNOWN_KEY]
    assert db_step_results(conn, schema, instance_id) == results_before
    assert hephaestus_jobs(fx, instance_id) == jobs_before

    # Written anyway (as s3b's psql did): the advance applies it, every later job crashes.
    complete_from_outside(
        conn, schema, ASYNC_FANOUT, instance_id, ASYNC_WAIT, "resumed", S3B_UPDATES,
        config_key=SCENARIO_KEY, check=False,
    )  # fmt: skip

    def crashed_join() -> dict[str, Any] | None:
        for job in hephaestus_jobs(fx, instance_id):
            if job["args"].get("step_ref") == "Elixir.Realstack.Steps.Join" and job["errors"]:
                return job
        return None

    join = _until(crashed_join, "the Join step job to crash")
    assert join["state"] == "retryable"
    error = join["errors"][0]["error"]
    golden_jobs = golden_lines("external-step-completion/s3_oban_jobs.jsonl")
    [golden_join] = [j for j in golden_jobs if j["id"] == 21]
    golden_error = golden_join["errors"][0]["error"]
    assert error.splitlines()[:3] == golden_error.splitlines()[:3]
    assert UNKNOWN_KEY in error

    loaded = load_in_vm(fx, instance_id)
    assert loaded["loaded"] is False
    assert loaded["type"] == "ArgumentError"
    assert "not an already existing atom" in loaded["error"]

    # Python still reads the row, and names exactly the key the VM cannot load.
    row = db_instance_row(conn, schema, instance_id)
    known = KnownNames.for_workflow(ASYNC_FANOUT).with_atoms(engine_context_keys(ASYNC_FANOUT))
    problems = unloadable_names(row["state"], known)
    assert [(p.path, p.name) for p in problems] == [
        (f"state.context.steps.async_wait.{UNKNOWN_KEY}", UNKNOWN_KEY)
    ]


# -- upstream defects the fixture keeps --------------------------------------------------------


def test_a_failing_linear_step_leaves_the_elixir_instance_running(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    serve_hephaestus(fx, limit=1, config_key=SCENARIO_KEY)
    instance_id = start_elixir_workflow(
        fx, FAIL_LINEAR, {"input": "linear"}, value="s1", config_key=SCENARIO_KEY
    )
    fx.call("wait_idle", queues=["hephaestus"], timeout_ms=10_000)
    golden_jobs = [
        j
        for j in golden_lines("failing-step/s1_oban_jobs.jsonl")
        if j["args"]["instance_id"] == instance_id
    ]
    jobs = hephaestus_jobs(fx, instance_id)
    assert [(j["worker"], j["state"], j["max_attempts"]) for j in jobs] == [
        (j["worker"], j["state"], j["max_attempts"]) for j in golden_jobs[:2]
    ]
    assert jobs[1]["errors"][0]["error"] == golden_jobs[1]["errors"][0]["error"]

    # Nothing tells the workflow: it stays running, as in the capture before phase 1c.
    snapshots = [s["instance"] for s in snapshot_lines("failing-step/s1a_snapshots.jsonl")]
    last_running = [s for s in snapshots if s["status"] == "running"][-1]
    row = db_instance_row(conn, schema, instance_id)
    assert (row["status"], row["state"]) == ("running", last_running["state"])

    # Phase 1c: the FailureHandler invoked by hand fails the instance and cancels itself.
    fx.call("workflow.failure_handler", job_id=jobs[1]["id"])
    wait_status(fx, instance_id, "failed")
    fx.call("wait_idle", queues=["hephaestus"], timeout_ms=10_000)
    golden = _golden_row("failing-step/s1_workflow_instances.jsonl", instance_id)
    row = db_instance_row(conn, schema, instance_id)
    assert (row["status"], row["state"]) == (golden["status"], golden["state"])
    handler_job = hephaestus_jobs(fx, instance_id)[2]
    for field in ("worker", "args", "meta", "tags"):
        assert handler_job[field] == golden_jobs[2][field], field
    # It cancels itself; the pkill races its completion ack (see the fan-out test below).
    assert golden_jobs[2]["state"] == "cancelled"
    assert handler_job["state"] in ("cancelled", "completed")
    if handler_job["state"] == "cancelled":
        assert handler_job["errors"][0]["error"] == golden_jobs[2]["errors"][0]["error"]


def test_a_failing_fanout_step_fails_the_instance_when_a_sibling_advances(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    serve_hephaestus(fx, limit=1, config_key=SCENARIO_KEY)
    instance_id = start_elixir_workflow(
        fx, FAIL_FANOUT, {"sleep_ms": 300}, value="s1", config_key=SCENARIO_KEY
    )
    wait_status(fx, instance_id, "failed")
    fx.call("wait_idle", queues=["hephaestus"], timeout_ms=10_000)
    golden_jobs = [
        j
        for j in golden_lines("failing-step/s1_oban_jobs.jsonl")
        if j["args"]["instance_id"] == instance_id
    ]
    jobs = hephaestus_jobs(fx, instance_id)
    # The AdvanceWorker that noticed the discarded step cancels itself; its pkill races its own
    # completion ack (Oban's complete_job has no state guard either). The capture saw the pkill
    # win; here either may.
    noticing, golden_noticing = jobs[-1], golden_jobs[-1]
    assert golden_noticing["state"] == "cancelled"
    assert noticing["state"] in ("cancelled", "completed")
    if noticing["state"] == "cancelled":
        assert noticing["errors"][0]["error"] == golden_noticing["errors"][0]["error"]
    assert _multiset(jobs[:-1], JOB_FIELDS) == _multiset(golden_jobs[:-1], JOB_FIELDS)
    assert _multiset([{**noticing, "state": "-"}], JOB_FIELDS) == _multiset(
        [{**golden_noticing, "state": "-"}], JOB_FIELDS
    )
    row = db_instance_row(conn, schema, instance_id)
    assert row["status"] == "failed" and row["state"]["current_step"] is None


def test_a_runner_not_registered_under_the_jobs_config_key_crashes_every_advance(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    key = "Elixir.Unregistered.Heph"
    fx.call("start_queue", queue="hephaestus", limit=1)
    instance_id = fx.call(
        "workflow.start",
        workflow=FAIL_LINEAR.name,
        context={"input": "linear"},
        value="s0",
        config_key=key,
        register=False,
    )["instance_id"]

    def crashed() -> list[dict[str, Any]]:
        return [j for j in hephaestus_jobs(fx, instance_id) if j["errors"]]

    [job] = _until(crashed, "the AdvanceWorker to crash")
    assert (job["worker"], job["state"]) == ("HephaestusOban.AdvanceWorker", "retryable")
    [golden] = golden_lines("runner-config-key/s0_oban_jobs.jsonl")[:1]
    ours = job["errors"][0]["error"].splitlines()[:5]
    theirs = golden["errors"][0]["error"].replace("Elixir.Realstack.Heph", key).splitlines()[:5]
    assert ours == theirs
    assert db_instance_row(conn, schema, instance_id)["status"] == "pending"


def test_timer_resume_with_step_config_tags_metadata_and_version(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    serve_hephaestus(fx, limit=1)
    instance_id = start_elixir_workflow(fx, TIMED, {"order_id": 3}, value="t1")
    fx.call("workflow.start", workflow=TIMED.name, context={}, value="t2", version=2)
    wait_status(fx, instance_id, "waiting")
    fx.call("wait_idle", queues=["hephaestus"], timeout_ms=10_000)
    row = db_instance_row(conn, schema, instance_id)
    assert row["state"]["current_step"] == WAIT.name
    assert row["state"]["step_configs"] == {WAIT.name: {"duration": 1, "unit": "second"}}
    _assert_python_round_trip(row)

    # schedule_resume's ResumeWorker is the job the Python runner builds for the same timer.
    job_id = fx.call(
        "workflow.schedule_resume", instance_id=instance_id, step=WAIT.name, delay_ms=50
    )["job_id"]
    [timer] = [j for j in hephaestus_jobs(fx, instance_id) if j["id"] == job_id]
    instance = from_row(row, WORKFLOWS)
    # With several runner configs registered in this VM (an earlier test adds SCENARIO_KEY's),
    # Runner.schedule_resume takes the first :persistent_term config whose storage finds the
    # instance, as upstream's load_instance_config does (term order, not registration order);
    # which one is not what this test checks, so the Python job is built with the same key.
    chosen = timer["args"]["config_key"]
    assert chosen in {CONFIG_KEY, SCENARIO_KEY}
    python = resume_job(
        TIMED, instance, WAIT.name, "timeout", queue="hephaestus", config_key=chosen
    )
    assert timer["state"] == "scheduled"
    assert (timer["worker"], timer["args"], timer["meta"], timer["tags"]) == (
        python.worker,
        python.args,
        python.meta,
        python.tags,
    )
    assert timer["meta"]["team"] == "interop" and timer["tags"] == ["timed", "fixture"]

    _until(lambda: fx.call("stage")["staged"], "the timer to come due")
    wait_status(fx, instance_id, "completed")
    fx.call("wait_idle", queues=["hephaestus"], timeout_ms=10_000)
    final = db_instance_row(conn, schema, instance_id)
    assert final["workflow_version"] == 1
    assert final["state"]["context"]["steps"] == {"pass": {"pass": True}, "wait": {}, "done": {}}
    _assert_python_round_trip(final)
    for job in hephaestus_jobs(fx, instance_id):
        assert job["meta"]["workflow_version"] == 2  # the module's __version__/0
        assert job["args"]["workflow_version"] == 1  # the instance's
    assert db_instance_row(conn, schema, "timed::t2")["workflow_version"] == 2


def test_python_written_timer_row_with_step_config_loads_and_resumes_in_the_vm(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    instance = advance(TIMED, new_instance(TIMED, {"order_id": 4}, id="timed::py2"))
    [result] = [
        r
        for name in sorted(instance.active_steps)
        if (r := step_result(name, execute_step(TIMED, instance, name))) is not None
    ]
    instance = advance(TIMED, apply_step_results(TIMED, instance, [result]))
    [wait_result] = [
        r
        for name in sorted(instance.active_steps)
        if (r := step_result(name, execute_step(TIMED, instance, name))) is not None
    ]
    instance = advance(TIMED, apply_step_results(TIMED, instance, [wait_result]))
    assert (instance.status, instance.current_step) == ("waiting", WAIT.name)
    assert instance.workflow_version == 2
    insert_instance(conn, schema, to_row(instance))
    _assert_vm_loads_as_python_wrote(fx, instance)

    serve_hephaestus(fx, limit=1)
    fx.call("workflow.schedule_resume", instance_id=instance.id, step=WAIT.name, delay_ms=20)
    _until(lambda: fx.call("stage")["staged"], "the timer to come due")
    wait_status(fx, instance.id, "completed")
    fx.call("wait_idle", queues=["hephaestus"], timeout_ms=10_000)
    final = db_instance_row(conn, schema, instance.id)
    assert final["workflow_version"] == 2
    assert final["state"]["step_configs"] == {}
    assert final["state"]["context"]["steps"] == {"pass": {"pass": True}, "wait": {}, "done": {}}
    for job in hephaestus_jobs(fx, instance.id):
        assert job["args"]["workflow_version"] == 2
