"""The runner's statements for many instances at once: the same rows as :mod:`storage`'s
one-instance statements, for a batch of job bodies that share one transaction
(:mod:`bridge.workflows.coalesce`).

A row that one instance of a batch cannot use (an unknown workflow, a malformed state) is
reported for that instance alone, as the exception its own job would have raised; the others go
on. Locks are taken in ascending key order, so two batches never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from bridge.wire import jsonfmt
from bridge.wire.phash2 import phash2
from bridge.workflows.definition import Workflow
from bridge.workflows.engine import StepResult
from bridge.workflows.instance import Instance
from bridge.workflows.serializer import from_row, to_row
from bridge.workflows.storage import Conn, StorageError, StoredResult, _q

# An instance as read, or why it could not be read.
Loaded = Instance | Exception


def lock_keys(instance_ids: Iterable[str]) -> list[int]:
    """The instances' advisory keys, each once, in the order they must be taken; pure."""
    return sorted({phash2(instance_id) for instance_id in instance_ids})


def begin_locked_many(conn: Conn, instance_ids: Iterable[str], *, shared: bool = False) -> None:
    """``begin_locked`` for several instances: ``BEGIN`` and every lock in one round trip.

    The locks are separate statements of one simple-protocol query, so PostgreSQL takes them
    one after the other in the ascending order of :func:`lock_keys`.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE or not conn.autocommit:
        raise StorageError("begin_locked_many needs an idle autocommit connection")
    function = sql.SQL("pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock")
    locks = [
        sql.SQL("SELECT {}({}::bigint)").format(function, sql.Literal(key))
        for key in lock_keys(instance_ids)
    ]
    conn.execute(sql.SQL("; ").join([sql.SQL("BEGIN"), *locks]), prepare=False)


def _decode(row: Mapping[str, Any], workflows: Mapping[str, Workflow]) -> Loaded:
    try:
        return from_row(row, workflows)
    except Exception as exc:  # this instance's job fails with it; the batch goes on
        return exc


@dataclass(frozen=True)
class StepCheck:
    """An instance read for its step jobs, and which of the asked steps have a result."""

    instance: Loaded
    ran: frozenset[str]


def load_for_steps(
    conn: Conn,
    prefix: str,
    instance_ids: Sequence[str],
    steps: Sequence[str],
    workflows: Mapping[str, Workflow],
) -> dict[str, StepCheck]:
    """The step jobs' pre-check for many jobs in one statement: each instance once (as
    ``load_instance``) with those of ``steps`` that have any result for it (``HAS_RESULT``).
    A missing instance is missing from the answer."""
    query = _q(
        conn,
        "SELECT i.id, i.workflow, i.status, i.state, i.workflow_version,"
        " ARRAY(SELECT DISTINCT r.step_ref FROM {prefix}.hephaestus_step_results r"
        "  WHERE r.instance_id = i.id AND r.step_ref = ANY(%(steps)s::text[])) AS ran"
        " FROM {prefix}.workflow_instances i WHERE i.id = ANY(%(ids)s::text[])",
        prefix,
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, {"ids": list(dict.fromkeys(instance_ids)), "steps": sorted(set(steps))})
        rows = cur.fetchall()
    return {row["id"]: StepCheck(_decode(row, workflows), frozenset(row["ran"])) for row in rows}


def load_activities(
    conn: Conn, prefix: str, instance_ids: Sequence[str], workflows: Mapping[str, Workflow]
) -> dict[str, Loaded]:
    """``load_activity`` for many instances in one statement (never save what it returns)."""
    query = _q(
        conn,
        "SELECT id, workflow, status, workflow_version,"
        " jsonb_build_object('active_steps', state->'active_steps') AS state"
        " FROM {prefix}.workflow_instances WHERE id = ANY(%(ids)s::text[])",
        prefix,
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, {"ids": list(dict.fromkeys(instance_ids))})
        rows = cur.fetchall()
    return {row["id"]: _decode(row, workflows) for row in rows}


@dataclass(frozen=True)
class NewResult:
    """A step result to insert: ``insert_result``'s arguments."""

    instance_id: str
    result: StepResult
    workflow_version: int


_INSERT_RESULTS = (
    "WITH input AS ("
    " SELECT * FROM unnest(%(instance_ids)s::text[], %(step_refs)s::text[], %(events)s::text[],"
    "  %(context_updates)s::text[], %(metadata_updates)s::text[], %(versions)s::int[])"
    "  WITH ORDINALITY AS t(instance_id, step_ref, event, context_updates, metadata_updates,"
    "  workflow_version, ord)),"
    " written AS ("
    " INSERT INTO {prefix}.hephaestus_step_results"
    " (instance_id, step_ref, event, context_updates, metadata_updates, workflow_version)"
    " SELECT instance_id, step_ref, event, context_updates::jsonb, metadata_updates::jsonb,"
    "  workflow_version FROM input ORDER BY ord"
    " ON CONFLICT (instance_id, step_ref) WHERE NOT processed DO NOTHING"
    " RETURNING instance_id, step_ref),"
    " guarded AS ("
    " SELECT DISTINCT j.args->>'instance_id' AS instance_id FROM {prefix}.oban_jobs j"
    "  WHERE j.state IN ('available', 'scheduled') AND j.queue = %(guard_queue)s"
    "  AND j.worker = %(guard_worker)s AND j.args->>'instance_id' = ANY(%(instance_ids)s::text[]))"
    " SELECT w.instance_id, w.step_ref,"
    "  w.instance_id IN (SELECT instance_id FROM guarded) AS has_advance"
    " FROM written w"
)


@dataclass(frozen=True)
class Written:
    """A result row that was written, and whether its instance has an advance not started."""

    instance_id: str
    step_ref: str
    has_advance: bool


def insert_results(
    conn: Conn, prefix: str, results: Sequence[NewResult], guard_worker: str, guard_queue: str
) -> list[Written]:
    """``insert_result`` for many results in one statement, each insert-or-nothing against the
    partial unique index; answers which were written and, for their instances, whether a
    ``guard_worker`` job that has not started exists in ``guard_queue`` (the advance insert's
    guard), read in the same snapshot. ``inserted_at`` is left to the column default, as
    ``insert_result`` leaves it.

    The guard reads the queue's unstarted jobs once (Oban's state-and-queue index) and compares
    ``args->>'instance_id'``: a containment test per result (``args @> …``, correlated or
    OR-ed) makes the planner scan every unstarted job once per result, tens of ms for a batch
    (measured). Only the runner's own queue is read: an advance of a Python-owned instance is
    never elsewhere, and one missed would only cost an advance that finds nothing to do.
    """
    if not results:
        return []
    params: dict[str, Any] = {
        "instance_ids": [r.instance_id for r in results],
        "step_refs": [r.result.step_ref for r in results],
        "events": [r.result.event for r in results],
        "context_updates": [jsonfmt.dumps(dict(r.result.context_updates)) for r in results],
        "metadata_updates": [jsonfmt.dumps(dict(r.result.metadata_updates or {})) for r in results],
        "versions": [r.workflow_version for r in results],
        "guard_worker": guard_worker,
        "guard_queue": guard_queue,
    }
    with conn.cursor() as cur:
        cur.execute(_q(conn, _INSERT_RESULTS, prefix), params)
        rows = cur.fetchall()
    return [Written(row[0], row[1], bool(row[2])) for row in rows]


@dataclass(frozen=True)
class Taken:
    """An advance's first read of one instance: the row ``FOR UPDATE``, a flag, and its pending
    results, read and marked processed (``load_and_take_pending``)."""

    instance: Loaded
    flag: bool
    pending: list[StoredResult]


def load_and_take_pending_many(
    conn: Conn,
    prefix: str,
    instance_ids: Sequence[str],
    workflows: Mapping[str, Workflow],
    flag: str,
    params: Mapping[str, Any],
) -> dict[str, Taken]:
    """``load_and_take_pending`` for many instances in one statement; the caller holds every
    instance's lock exclusively and rolls back if it cannot use what it read. A missing
    instance is missing from the answer (and none of its results are taken)."""
    query = _q(
        conn,
        "WITH taken AS ("
        " UPDATE {prefix}.hephaestus_step_results SET processed = true"
        " WHERE instance_id = ANY(%(ids)s::text[]) AND NOT processed"
        "  AND instance_id IN (SELECT id FROM {prefix}.workflow_instances"
        "   WHERE id = ANY(%(ids)s::text[]))"
        " RETURNING instance_id, id, step_ref, event, context_updates, metadata_updates,"
        "  inserted_at)"
        " SELECT i.id, i.workflow, i.status, i.state, i.workflow_version,"
        f" ({flag}) AS flag,"
        " (SELECT coalesce(jsonb_agg(jsonb_build_object('id', t.id::text,"
        " 'step_ref', t.step_ref, 'event', t.event, 'context_updates', t.context_updates,"
        " 'metadata_updates', t.metadata_updates, 'inserted_at', t.inserted_at)"
        " ORDER BY t.inserted_at, t.id), '[]'::jsonb) FROM taken t"
        "  WHERE t.instance_id = i.id) AS pending"
        " FROM {prefix}.workflow_instances i WHERE i.id = ANY(%(ids)s::text[]) FOR UPDATE OF i",
        prefix,
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, {**params, "ids": list(dict.fromkeys(instance_ids))})
        rows = cur.fetchall()
    answer: dict[str, Taken] = {}
    for row in rows:
        pending = [
            StoredResult(
                id=r["id"],
                step_ref=r["step_ref"],
                event=r["event"],
                context_updates=r["context_updates"],
                metadata_updates=r["metadata_updates"],
                processed=True,
                inserted_at=datetime.fromisoformat(r["inserted_at"]),
            )
            for r in row["pending"]
        ]
        answer[row["id"]] = Taken(_decode(row, workflows), bool(row["flag"]), pending)
    return answer


def save_instances(conn: Conn, prefix: str, instances: Sequence[Instance]) -> None:
    """``save_instance`` for many instances in one statement."""
    if not instances:
        return
    rows = [to_row(instance) for instance in instances]
    conn.execute(
        _q(
            conn,
            "UPDATE {prefix}.workflow_instances AS w"
            " SET workflow = u.workflow, status = u.status, state = u.state::jsonb,"
            "  updated_at = u.updated_at"
            " FROM unnest(%(ids)s::text[], %(workflows)s::text[], %(statuses)s::text[],"
            "  %(states)s::text[], %(updated_at)s::timestamp[])"
            "  AS u(id, workflow, status, state, updated_at)"
            " WHERE w.id = u.id",
            prefix,
        ),
        {
            "ids": [row.id for row in rows],
            "workflows": [row.workflow for row in rows],
            "statuses": [row.status for row in rows],
            "states": [jsonfmt.dumps(row.state) for row in rows],
            "updated_at": [row.updated_at for row in rows],
        },
    )
