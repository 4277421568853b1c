"""Helpers for the workflow interop tests: driving the fixture's Hephaestus half, reading its rows,
and the Python mirrors of the fixture's workflows.

The fixture (``elixir_fixture/lib/fixture_workflows/``) defines the golden captures' workflows
under their genuine module names; their Python mirrors are the definitions in
``tests/workflows/__init__.py`` (re-exported here), so rows written on either side load on the
other. Every job of these workflows runs in queue ``hephaestus`` with the runner config key
``CONFIG_KEY`` (the first capture's, ``"golden"``) unless a test registers another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.jobs.client import enqueue
from bridge.workflows import DONE, WAIT, Unique, Workflow, registry
from bridge.workflows.model.engine import StepResult
from bridge.workflows.model.serializer import (
    KnownNames,
    ensure_loadable,
    from_row,
    unloadable_update,
)
from bridge.workflows.run.runner import advance_job
from bridge.workflows.store.instances import insert_result
from interop_tests.fixture import ElixirFixture
from tests.workflows import (
    ASYNC_FANOUT,
    ASYNC_FIRST,
    FAIL_FANOUT,
    FAIL_LINEAR,
    NORMAL_FIRST,
    ORDER,
    SCENARIO_ATOMS,
    WORKFLOWS,
    load_json,
    load_jsonl,
    pass_,
)

__all__ = [
    "ASYNC_FANOUT",
    "ASYNC_FIRST",
    "CONFIG_KEY",
    "FAIL_FANOUT",
    "FAIL_LINEAR",
    "HEPHAESTUS_QUEUE",
    "NORMAL_FIRST",
    "ORDER",
    "TIMED",
    "WORKFLOWS",
    "complete_from_outside",
    "db_instance_row",
    "db_step_results",
    "elixir_instance_row",
    "elixir_step_results",
    "hephaestus_jobs",
    "load_in_vm",
    "load_json",
    "load_jsonl",
    "serve_hephaestus",
    "start_elixir_workflow",
    "wait_status",
]

# FixtureFlows.Timed (elixir_fixture/lib/fixture_workflows/timed.ex): a step config, tags,
# metadata and version 2, which the captured workflows lack.
TIMED = Workflow(
    name="Elixir.FixtureFlows.Timed",
    unique=Unique(key="timed"),
    version=2,
    tags=["fixture"],
    metadata={"team": "interop"},
    start=pass_,
    transitions=[
        (pass_, "done", (WAIT, {"duration": 1, "unit": "second"})),
        (WAIT, "timeout", DONE),
    ],
    atoms=SCENARIO_ATOMS,
)

# Every workflow the fixture defines, by module string: the golden captures' and TIMED.
WORKFLOWS = registry(*WORKFLOWS.values(), TIMED)

CONFIG_KEY = "golden"
HEPHAESTUS_QUEUE = "hephaestus"
HEPHAESTUS_WORKERS = (
    "HephaestusOban.AdvanceWorker",
    "HephaestusOban.ExecuteStepWorker",
    "HephaestusOban.ResumeWorker",
)

Json = dict[str, Any]


# -- the fixture's side ------------------------------------------------------------------------


def serve_hephaestus(fx: ElixirFixture, *, limit: int = 10, config_key: str = CONFIG_KEY) -> None:
    """Register the fixture's HephaestusOban runner under ``config_key`` and run its queue.

    ``limit=1`` makes the genuine races deterministic (one job at a time, in id order): no
    result is stranded by a deduplicated AdvanceWorker insert, and fan-out siblings finish in
    the order their jobs were inserted."""
    fx.call("workflow.runner", config_key=config_key)
    fx.call("start_queue", queue=HEPHAESTUS_QUEUE, limit=limit)


def start_elixir_workflow(
    fx: ElixirFixture,
    workflow: Workflow,
    context: Mapping[str, Any],
    *,
    value: str | None = None,
    instance_id: str | None = None,
    config_key: str = CONFIG_KEY,
) -> str:
    """``HephaestusOban.Runner.start_instance/3`` in the VM; the id is the business key
    ``<key>::<value>`` when ``value`` is given. Context keys must be atoms in the VM."""
    params: Json = {"workflow": workflow.name, "context": dict(context), "config_key": config_key}
    if instance_id is not None:
        params["instance_id"] = instance_id
    else:
        params["value"] = value
    reply = fx.call("workflow.start", **params)
    return str(reply["instance_id"])


def wait_status(
    fx: ElixirFixture, instance_id: str, *statuses: str, timeout_ms: int = 10_000
) -> str:
    """Until the stored instance's status is one of ``statuses`` (polled inside the VM)."""
    reply = fx.call(
        "workflow.wait", instance_id=instance_id, statuses=list(statuses), timeout_ms=timeout_ms
    )
    return str(reply["status"])


def elixir_instance_row(fx: ElixirFixture, instance_id: str) -> Json | None:
    """The ``workflow_instances`` row as the VM reads it (``row_to_json``)."""
    row: Json | None = fx.call("workflow.instance", instance_id=instance_id)["row"]
    return row


def elixir_step_results(fx: ElixirFixture, instance_id: str) -> list[Json]:
    """The instance's ``hephaestus_step_results`` rows, insertion order (``row_to_json``)."""
    rows: list[Json] = fx.call("workflow.step_results", instance_id=instance_id)["rows"]
    return rows


def load_in_vm(fx: ElixirFixture, instance_id: str) -> Json:
    """``HephaestusEcto.Storage.get/2`` in the VM: ``{"loaded": True, "instance": {...}}`` with
    the loaded instance serialised again, or ``{"loaded": False, "error", "type"}``."""
    reply = fx.call("workflow.load", instance_id=instance_id)
    return {key: value for key, value in reply.items() if key not in ("ok", "id")}


def hephaestus_jobs(fx: ElixirFixture, instance_id: str | None = None) -> list[Json]:
    """The HephaestusOban jobs (of one instance), by id."""
    return [
        job
        for job in fx.jobs()
        if job["worker"] in HEPHAESTUS_WORKERS
        and (instance_id is None or job["args"].get("instance_id") == instance_id)
    ]


# -- the database, from Python -----------------------------------------------------------------


def db_instance_row(conn: psycopg.Connection[Any], prefix: str, instance_id: str) -> Json:
    """The row's columns as psycopg returns them (what ``serializer.from_row`` takes)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL("SELECT * FROM {}.workflow_instances WHERE id = %s").format(
                sql.Identifier(prefix)
            ),
            (instance_id,),
        )
        row = cur.fetchone()
    assert row is not None, f"no workflow instance {instance_id!r}"
    return dict(row)


def db_step_results(conn: psycopg.Connection[Any], prefix: str, instance_id: str) -> list[Json]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                "SELECT * FROM {}.hephaestus_step_results"
                " WHERE instance_id = %s ORDER BY inserted_at, id"
            ).format(sql.Identifier(prefix)),
            (instance_id,),
        )
        return [dict(row) for row in cur.fetchall()]


def complete_from_outside(
    conn: psycopg.Connection[Any],
    prefix: str,
    workflow: Workflow,
    instance_id: str,
    step_ref: str,
    event: str,
    context_updates: Mapping[str, Any],
    *,
    config_key: str = CONFIG_KEY,
    check: bool = True,
) -> Json:
    """The outside door of golden external-step-completion s3a, written from Python: in one
    transaction a step result (a declared event, context updates) and an AdvanceWorker job with
    the args, meta and tags ResumeWorker would give it, then the ``oban_insert`` NOTIFY (sent at
    COMMIT). With ``check`` the updates are first checked against the names the Elixir side
    knows (``ensure_loadable``), so an update that would brick the instance is refused.

    Returns the AdvanceWorker row as inserted."""
    if check:
        known = KnownNames.for_workflow(workflow)
        ensure_loadable(unloadable_update(workflow, step_ref, event, context_updates, known))
    instance = from_row(db_instance_row(conn, prefix, instance_id), WORKFLOWS)
    job = advance_job(
        workflow, instance, queue=HEPHAESTUS_QUEUE, config_key=config_key, step_ref=step_ref
    )
    with conn.transaction():
        written = insert_result(
            conn,
            prefix,
            instance_id,
            StepResult(step_ref, event, dict(context_updates), {}),
            instance.workflow_version,
        )
        assert written, f"an unprocessed step result for {step_ref} already exists"
        [inserted] = enqueue.insert_all(conn, [job], prefix=prefix)
    return {
        "id": inserted.id,
        "worker": inserted.worker,
        "queue": inserted.queue,
        "args": inserted.args,
        "meta": inserted.meta,
        "tags": inserted.tags,
        "max_attempts": inserted.max_attempts,
        "state": inserted.state,
    }
