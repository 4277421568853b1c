"""Every shape HephaestusOban leaves an instance stuck in, healed by ``bridge workflows repair``
(the installed script, from a scratch directory) and by the workflow lifeline of a running node,
with the fixture's HephaestusOban workers doing the rest as the genuine ones do.

- **Failed step** (golden ``failing-step`` s1a): ``FailLinear``'s Boom fails on its only
  attempt, its ExecuteStepWorker is discarded and the FailureHandler never fires; the instance
  stays ``running``. Repair enqueues the advance the handler would have (golden job 3); the
  fixture's AdvanceWorker finds the discarded job and fails the instance, as the genuine one did.
- **A chain that loses a second advance**: ``Order``'s Validate result, then Charge's and
  Reserve's, are each left unprocessed the way the genuine race leaves them: an AdvanceWorker is
  *executing* (the test plays it with a row) when the step job inserts its advance, so the
  insert is deduplicated against it, and it ends without having read the result. The fixture is
  drained one job at a time so the interleaving is exact. One pass heals the first loss only;
  repair must pass again once the instance settles, and the lifeline tick again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.registry import Registry
from bridge.jobs.plugins.peer import Peer
from bridge.workflows.model.serializer import from_row
from bridge.workflows.run.lifeline import WorkflowLifeline
from bridge.workflows.run.runner import ADVANCE_WORKER, advance_job
from interop_tests.fixture import ElixirFixture
from interop_tests.support import golden_lines
from interop_tests.workflow_support import (
    CONFIG_KEY,
    FAIL_LINEAR,
    HEPHAESTUS_QUEUE,
    ORDER,
    WORKFLOWS,
    db_instance_row,
    db_step_results,
    hephaestus_jobs,
    load_jsonl,
    serve_hephaestus,
    start_elixir_workflow,
    wait_status,
)
from tests.jobs.support import running_node
from tests.support.cli import ROOT, bridge_script, run_bridge

SCENARIO_KEY = "Elixir.Realstack.Heph"  # failing-step's runner config key
FIELDS = ("worker", "queue", "args", "meta", "tags", "max_attempts", "priority")
AWAIT_SHIPMENT = "Elixir.RealStack.Steps.AwaitShipment"


def _q(template: str, prefix: str) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


def _fields(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job[k] for k in FIELDS}


def _bridge_args(database_url: str, schema: str, *args: str) -> list[str]:
    return ["--database-url", database_url, "--prefix", schema, "workflows", "repair", *args]


# -- a failed step ------------------------------------------------------------------------------


def _failed_linear(fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str) -> str:
    """Golden s1a: Boom's only attempt fails, its job is discarded, the instance stays running."""
    serve_hephaestus(fx, limit=1, config_key=SCENARIO_KEY)
    instance_id = start_elixir_workflow(
        fx, FAIL_LINEAR, {"input": "linear"}, value="s1", config_key=SCENARIO_KEY
    )
    fx.call("wait_idle", queues=[HEPHAESTUS_QUEUE], timeout_ms=10_000)
    jobs = hephaestus_jobs(fx, instance_id)
    assert [(j["worker"], j["state"]) for j in jobs][-1] == (
        "HephaestusOban.ExecuteStepWorker",
        "discarded",
    )
    assert db_instance_row(conn, schema, instance_id)["status"] == "running"
    return instance_id


def _assert_failed_as_genuine(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str, instance_id: str
) -> None:
    """The final row is the genuine one; the added job is FailureHandler's (golden job 3)."""
    fx.call("wait_idle", queues=[HEPHAESTUS_QUEUE], timeout_ms=10_000)
    golden_jobs = [
        j
        for j in golden_lines("failing-step/s1_oban_jobs.jsonl")
        if j["args"]["instance_id"] == instance_id
    ]
    golden_row = next(
        r for r in load_jsonl("failing-step/s1_workflow_instances.jsonl") if r["id"] == instance_id
    )
    row = db_instance_row(conn, schema, instance_id)
    assert (row["status"], row["state"]) == (golden_row["status"], golden_row["state"])
    jobs = hephaestus_jobs(fx, instance_id)
    assert len(jobs) == 3
    assert _fields(jobs[2]) == _fields(golden_jobs[2])
    # It cancels itself (the instance's pending jobs, itself included); the pkill races its own
    # completion ack, as in test_workflows_elixir.
    assert jobs[2]["state"] in ("cancelled", "completed")


def test_repair_command_fails_an_instance_whose_step_failed(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str, database_url: str, tmp_path: Path
) -> None:
    instance_id = _failed_linear(fx, conn, schema)
    started = time.monotonic()
    done = run_bridge(*_bridge_args(database_url, schema, "--grace", "0"), cwd=tmp_path)
    took = time.monotonic() - started
    assert (done.returncode, done.stderr) == (0, ""), done
    assert (
        done.stdout.splitlines()[-1] == "1 stuck instance(s), 1 advance(s) enqueued in 2 pass(es)"
    )
    [job] = [j for j in hephaestus_jobs(fx, instance_id) if j["worker"] == ADVANCE_WORKER][1:]
    assert done.stdout.splitlines() == [
        f"pass 1: enqueued job {job['id']} {instance_id} [running; step boom discarded]"
        " (elixir, queue hephaestus)",
        "1 stuck instance(s), 1 advance(s) enqueued in 2 pass(es)",
    ]
    _assert_failed_as_genuine(fx, conn, schema, instance_id)
    print(f"repair command, failed step: {took:.2f} s from start to exit (2 passes)")


async def test_the_lifeline_fails_an_instance_whose_step_failed(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str, database_url: str
) -> None:
    instance_id = _failed_linear(fx, conn, schema)
    plugins = [Peer(), WorkflowLifeline(grace=0.5, interval=0.2)]
    started = time.monotonic()
    async with running_node(database_url, schema, {}, Registry(), plugins=plugins):
        status = await asyncio.to_thread(wait_status, fx, instance_id, "failed", timeout_ms=15_000)
    assert status == "failed", "the lifeline never healed the failed step"
    print(
        f"lifeline (grace 0.5 s, interval 0.2 s), failed step: {time.monotonic() - started:.2f} s"
    )
    _assert_failed_as_genuine(fx, conn, schema, instance_id)


# -- a chain that loses a second advance --------------------------------------------------------


class Chain:
    """``Order`` driven one job at a time, losing an advance whenever the test says so."""

    def __init__(self, fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str) -> None:
        self.fx, self.conn, self.schema = fx, conn, schema
        fx.call("workflow.runner", config_key=CONFIG_KEY)  # registered, queue not started
        self.id = start_elixir_workflow(fx, ORDER, {"items": 3, "customer": "c-9"}, value="s3")

    def run_one(self) -> None:
        """``Oban.drain_queue(queue: :hephaestus, with_limit: 1)``: the next job, exactly one."""
        counts = self.fx.call("drain_queue", queue=HEPHAESTUS_QUEUE, with_limit=1)
        assert counts["success"] == 1, counts

    def run_all(self) -> None:
        self.fx.call("drain_queue", queue=HEPHAESTUS_QUEUE, with_recursion=True)

    def advances(self) -> list[dict[str, Any]]:
        return [j for j in hephaestus_jobs(self.fx, self.id) if j["worker"] == ADVANCE_WORKER]

    def lose(self, steps: int) -> None:
        """Run the next ``steps`` step jobs while an AdvanceWorker is executing (a row the test
        plays): each step's AdvanceWorker insert is deduplicated against it; then it ends."""
        instance = from_row(db_instance_row(self.conn, self.schema, self.id), WORKFLOWS)
        blocker = advance_job(ORDER, instance, queue=HEPHAESTUS_QUEUE, config_key=CONFIG_KEY)
        [row] = insert_all(self.conn, [blocker], prefix=self.schema)
        self._set(row.id, "executing")
        before = len(self.advances())
        for _ in range(steps):
            self.run_one()
        assert len(self.advances()) == before, "a step's advance was not deduplicated"
        self._set(row.id, "completed")

    def wait_for_advances(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` advances exist, none of them still being inserted (a repair's
        unique insert keeps its row ``suspended`` until no concurrent insert can conflict)."""
        deadline = time.monotonic() + timeout
        while len(self.advances()) < count or any(
            a["state"] == "suspended" for a in self.advances()
        ):
            assert time.monotonic() < deadline, f"no advance number {count} was enqueued"
            time.sleep(0.05)

    def _set(self, job_id: int | None, state: str) -> None:
        self.conn.execute(
            _q(
                "UPDATE {prefix}.oban_jobs SET state = %s::text::{prefix}.oban_job_state,"
                " attempt = 1, attempted_at = timezone('UTC', now()),"
                " attempted_by = ARRAY['vm', 'played-advance'] WHERE id = %s",
                self.schema,
            ),
            (state, job_id),
        )

    def stick(self) -> None:
        """Lose Validate's advance."""
        self.run_one()  # the start's advance: Validate's step job
        self.lose(1)  # Validate's result stranded

    def follow(self) -> None:
        """After the first heal, lose Charge's and Reserve's advance; after the second, run the
        rest (the instance then waits on AwaitShipment)."""
        self.wait_for_advances(3)  # start, blocker, the first heal
        self.run_one()  # the heal: Charge's and Reserve's step jobs
        self.lose(2)  # both results stranded
        self.wait_for_advances(5)  # ... blocker, the second heal
        self.run_all()

    def assert_waiting_on_shipment(self) -> None:
        row = db_instance_row(self.conn, self.schema, self.id)
        assert (row["status"], row["state"]["current_step"]) == ("waiting", AWAIT_SHIPMENT)
        assert [r["processed"] for r in db_step_results(self.conn, self.schema, self.id)] == [
            True
        ] * 4  # Validate, Charge, Reserve, AwaitShipment's __async__


def test_repair_command_passes_again_when_the_chain_loses_a_second_advance(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str, database_url: str, tmp_path: Path
) -> None:
    chain = Chain(fx, conn, schema)
    chain.stick()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BRIDGE_DATABASE_URL")}
    assert ROOT not in tmp_path.resolve().parents
    command = subprocess.Popen(
        [bridge_script(), *_bridge_args(database_url, schema, "--grace", "0")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        chain.follow()
        out, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate()
    assert (command.returncode, err) == (0, "")
    heals = [a["id"] for a in chain.advances()[2::2]]  # start, blocker, heal, blocker, heal, ...
    assert out.splitlines() == [
        f"pass 1: enqueued job {heals[0]} {chain.id} [running; pending validate]"
        " (elixir, queue hephaestus)",
        f"pass 2: enqueued job {heals[1]} {chain.id} [running; pending charge, reserve]"
        " (elixir, queue hephaestus)",
        "1 stuck instance(s), 2 advance(s) enqueued in 3 pass(es)",
    ]
    chain.assert_waiting_on_shipment()


async def test_the_lifeline_heals_a_chain_that_loses_a_second_advance(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str, database_url: str
) -> None:
    chain = Chain(fx, conn, schema)
    plugins = [Peer(), WorkflowLifeline(grace=0.2, interval=0.1)]
    async with running_node(database_url, schema, {}, Registry(), plugins=plugins):
        await asyncio.to_thread(chain.stick)
        await asyncio.to_thread(chain.follow)
        await asyncio.sleep(0.5)  # more ticks: nothing more to heal
    advances = chain.advances()
    assert len(advances) == 5 + 1  # and AwaitShipment's own advance
    assert [a["meta"].get("step") for a in advances[2:5:2]] == ["validate", "reserve"]
    chain.assert_waiting_on_shipment()
