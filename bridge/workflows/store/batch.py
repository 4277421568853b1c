"""The runner's statements for many instances at once: the same rows as :mod:`storage`'s
one-instance statements, for a batch of job bodies that share one transaction
(:mod:`bridge.workflows.store.coalesce`). They run on the node's event loop (async psycopg), as the
job bodies do: no thread hand-over, no GIL contention between the loop and a writer thread.

A row that one instance of a batch cannot use (an unknown workflow, a malformed state) is
reported for that instance alone, as the exception its own job would have raised; the others go
on. Locks are taken in ascending key order, so two batches never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from bridge.db import read_json_as_jason
from bridge.jobs import queries
from bridge.jobs.client.insert_rows import insert_params
from bridge.jobs.client.job import Job
from bridge.wire import jsonfmt, notify
from bridge.wire.phash2 import phash2
from bridge.workflows.model.definition import Workflow
from bridge.workflows.model.engine import StepResult
from bridge.workflows.model.instance import Instance
from bridge.workflows.model.serializer import from_row, to_row
from bridge.workflows.store.instances import (
    ACTIVITY_COLUMNS,
    TAKEN_AS_JSON,
    StoredResult,
    UndecodableRowError,
    _q,
    locked_begin,
    require_idle_autocommit,
    taken_results,
)
from bridge.workflows.store.stamps import instance_stamp_async

AConn = psycopg.AsyncConnection[Any]

# An instance as read, or why it could not be read.
Loaded = Instance | Exception


def lock_keys(instance_ids: Iterable[str]) -> list[int]:
    """The instances' advisory keys, each once, in the order they must be taken; pure."""
    return sorted({phash2(instance_id) for instance_id in instance_ids})


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
    xmin: str  # the row version read (apply_if_unchanged)


async def load_for_steps(
    conn: AConn,
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
        "SELECT i.id, i.workflow, i.status, i.state, i.workflow_version, i.xmin::text AS xmin,"
        " ARRAY(SELECT DISTINCT r.step_ref FROM {prefix}.hephaestus_step_results r"
        "  WHERE r.instance_id = i.id AND r.step_ref = ANY(%(steps)s::text[])) AS ran"
        " FROM {prefix}.workflow_instances i WHERE i.id = ANY(%(ids)s::text[])",
        prefix,
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query, {"ids": list(dict.fromkeys(instance_ids)), "steps": sorted(set(steps))}
        )
        rows = await cur.fetchall()
    return {
        row["id"]: StepCheck(_decode(row, workflows), frozenset(row["ran"]), row["xmin"])
        for row in rows
    }


async def _last_rows(
    conn: AConn, query: bytes, params: Mapping[str, Any], *, dicts: bool = False
) -> list[Any]:
    """Send several statements as one query (one round trip) and return the rows of the last.

    Bound on the client (psycopg's ``ClientCursor`` quotes every value): the extended
    protocol that binds on the server takes one statement a message.
    """
    cur: psycopg.AsyncClientCursor[Any] = (
        psycopg.AsyncClientCursor(conn, row_factory=dict_row)
        if dicts
        else psycopg.AsyncClientCursor(conn)
    )
    async with cur:
        await cur.execute(query, params)
        while cur.nextset():
            pass
        return await cur.fetchall() if cur.description is not None else []


def _begin_locked_then(
    conn: AConn, instance_ids: Iterable[str], query: bytes, *, shared: bool
) -> bytes:
    """``BEGIN``, every instance's lock in key order (:func:`lock_keys`), then ``query``."""
    require_idle_autocommit(conn, "a batch")
    return (locked_begin(lock_keys(instance_ids), shared=shared) + "; ").encode() + query


_ACTIVITIES = (
    f"SELECT {ACTIVITY_COLUMNS} FROM {{prefix}}.workflow_instances WHERE id = ANY(%(ids)s::text[])"
)


async def begin_and_load_activities(
    conn: AConn, prefix: str, instance_ids: Sequence[str], workflows: Mapping[str, Workflow]
) -> dict[str, Loaded]:
    """Open the recorders' transaction: ``BEGIN``, every instance's lock shared, and
    ``load_activity`` for each (never save what it returns), in one round trip. The caller
    commits with :func:`record_and_commit` or rolls back."""
    query = _begin_locked_then(conn, instance_ids, _q(conn, _ACTIVITIES, prefix), shared=True)
    try:
        rows = await _last_rows(conn, query, {"ids": list(dict.fromkeys(instance_ids))}, dicts=True)
    except BaseException:
        await rollback_open(conn)
        raise
    return {row["id"]: _decode(row, workflows) for row in rows}


async def execute_and_commit(conn: AConn, query: Any, params: Mapping[str, Any]) -> list[Any]:
    """Run a batch's last statement and ``COMMIT`` in one round trip; its rows.

    Pipelined, so both go out before one Sync: the commit's wait (a WAL flush, the longest
    part of a batch on a loaded server) is not preceded by a round trip of its own. If the
    statement fails, PostgreSQL skips the ``COMMIT`` and the transaction is rolled back here.
    """
    try:
        async with conn.pipeline():
            cur = await conn.execute(query, params)
            await conn.commit()
        return await cur.fetchall() if cur.description is not None else []
    except BaseException:
        await rollback_open(conn)
        raise


async def rollback_open(conn: AConn) -> None:
    """Roll back a batch's transaction if it is still open (an error between its statements)."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        await conn.rollback()


@dataclass(frozen=True)
class NewResult:
    """A step result to insert (``insert_result``'s arguments) and the advance job to queue
    with it if it is its instance's first written result here and no advance of the instance
    waits unstarted."""

    instance_id: str
    result: StepResult
    workflow_version: int
    advance: Job


# INSERT_JOBS's row source without its ORDER BY/RETURNING, for the statements above and below.
_JOB_ROWS = queries.INSERT_JOBS.split("ORDER BY x.n")[0].replace("\n", " ")

_RECORD = (
    "WITH input AS ("
    " SELECT * FROM unnest(%(instance_ids)b::text[], %(step_refs)b::text[], %(events)b::text[],"
    "  %(context_updates)b::text[], %(metadata_updates)b::text[], %(versions)b::int[])"
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
    "  AND j.worker = %(guard_worker)s AND j.args->>'instance_id' = ANY(%(instance_ids)b::text[])),"
    " chosen AS ("
    " SELECT DISTINCT ON (i.instance_id) i.ord FROM input i"
    "  JOIN written w ON w.instance_id = i.instance_id AND w.step_ref = i.step_ref"
    "  WHERE i.instance_id NOT IN (SELECT instance_id FROM guarded)"
    "  ORDER BY i.instance_id, i.ord),"
    " jobs AS (" + _JOB_ROWS + " WHERE x.n IN (SELECT ord FROM chosen) ORDER BY x.n"
    " RETURNING queue, state)"
    " SELECT w.instance_id, w.step_ref,"
    " (SELECT count(pg_notify(n.channel, n.payload)) FROM unnest(%(n_queues)b::text[],"
    "  %(n_channels)b::text[], %(n_payloads)b::text[]) AS n(queue, channel, payload)"
    "  WHERE n.queue IN (SELECT queue FROM jobs WHERE state = 'available')) AS notified"
    " FROM written w"
)


def _job_params(jobs: Sequence[Job], prefix: str) -> dict[str, Any]:
    """INSERT_JOBS's column arrays and the ``oban_insert`` notification of every queue they
    could make available (sent only for queues that did get an available job)."""
    params: dict[str, Any] = dict(insert_params(jobs))  # the database's clock, as Oban
    queues = sorted({job.queue for job in jobs})
    params["n_queues"] = queues
    params["n_channels"] = [notify.channel(prefix, "insert")] * len(queues)
    params["n_payloads"] = [notify.encode({"queue": queue}) for queue in queues]
    return params


async def record_and_commit(
    conn: AConn, prefix: str, results: Sequence[NewResult], guard_worker: str, guard_queue: str
) -> set[tuple[str, str]]:
    """Insert the results, queue their advances, notify, and ``COMMIT``, in one round trip.

    Each result is insert-or-nothing against the partial unique index (as ``insert_result``);
    an instance gets the advance of its first *written* result, and only if no
    ``guard_worker`` job of it waits unstarted in ``guard_queue`` (as the guarded advance insert
    of ``insert_result_and_job``), read in the same snapshot. Answers which results were
    written. ``inserted_at`` is left to the column default, as ``insert_result`` leaves it.

    The guard reads the queue's unstarted jobs once (Oban's state-and-queue index) and
    compares ``args->>'instance_id'``: a containment test per result (``args @> …``,
    correlated or OR-ed) makes the planner scan every unstarted job once per result, tens of
    ms for a batch (measured). Only the runner's own queue is read: an advance of a
    Python-owned instance is never elsewhere, and one missed would only cost an advance that
    finds nothing to do.
    """
    if not results:
        await conn.commit()
        return set()
    params: dict[str, Any] = {
        "instance_ids": [r.instance_id for r in results],
        "step_refs": [r.result.step_ref for r in results],
        "events": [r.result.event for r in results],
        "context_updates": [jsonfmt.dumps(dict(r.result.context_updates)) for r in results],
        "metadata_updates": [jsonfmt.dumps(dict(r.result.metadata_updates or {})) for r in results],
        "versions": [r.workflow_version for r in results],
        "guard_worker": guard_worker,
        "guard_queue": guard_queue,
        **_job_params([r.advance for r in results], prefix),
    }
    rows = await execute_and_commit(conn, _q(conn, _RECORD, prefix), params)
    return {(row[0], row[1]) for row in rows}


_TAKE_PENDING = (
    "WITH taken AS ("
    " UPDATE {prefix}.hephaestus_step_results SET processed = true"
    " WHERE instance_id = ANY(%(ids)s::text[]) AND NOT processed"
    " RETURNING instance_id, id, step_ref, event, context_updates, metadata_updates,"
    "  inserted_at)"
    " SELECT i.id, i.workflow, i.status, i.state, i.workflow_version,"
    " ({flag}) AS flag,"
    f" (SELECT {TAKEN_AS_JSON} FROM taken t WHERE t.instance_id = i.id) AS pending"
    " FROM {prefix}.workflow_instances i WHERE i.id = ANY(%(ids)s::text[]) FOR UPDATE OF i"
)


@dataclass(frozen=True)
class Taken:
    """An advance's first read of one instance: the row ``FOR UPDATE``, a flag, and its pending
    results, read and marked processed (``load_and_take_pending``)."""

    instance: Loaded
    flag: bool
    pending: list[StoredResult]


def _taken(rows: Sequence[dict[str, Any]], workflows: Mapping[str, Workflow]) -> dict[str, Taken]:
    """Each instance's row of a take statement: its decoded instance, flag and pending results;
    a row that cannot be decoded is that instance's :class:`UndecodableRowError` (its job fails
    with it), never the batch's."""
    answer: dict[str, Taken] = {}
    for row in rows:
        try:
            pending = taken_results(row["pending"], row["id"])
            instance: Loaded = _decode(row, workflows)
        except UndecodableRowError as exc:
            pending, instance = [], exc
        answer[row["id"]] = Taken(instance, bool(row["flag"]), pending)
    return answer


async def begin_and_take_pending(
    conn: AConn,
    prefix: str,
    instance_ids: Sequence[str],
    workflows: Mapping[str, Workflow],
    flag: str,
    params: Mapping[str, Any],
) -> dict[str, Taken]:
    """Open the advances' transaction: ``BEGIN``, every instance's lock exclusive, and
    ``load_and_take_pending`` for each, in one round trip. A missing instance is missing from
    the answer (its orphaned results are taken, as the one-instance statement takes them). The
    caller commits with :func:`save_and_commit` or rolls back."""
    body = _q(conn, _TAKE_PENDING.replace("{flag}", flag), prefix)
    query = _begin_locked_then(conn, instance_ids, body, shared=False)
    try:
        values = {**params, "ids": list(dict.fromkeys(instance_ids))}
        rows = await _last_rows(conn, query, values, dicts=True)
    except BaseException:
        await rollback_open(conn)
        raise
    return _taken(rows, workflows)


# _TAKE_PENDING over the instances whose exclusive lock was free: the ones another transaction
# holds are left out, not waited for.
_TAKE_FREE = (
    "WITH got AS MATERIALIZED (SELECT t.id FROM unnest(%(ids)s::text[], %(keys)s::bigint[])"
    " AS t(id, key) WHERE pg_try_advisory_xact_lock(t.key)), "
    + _TAKE_PENDING.removeprefix("WITH ")
    .replace("instance_id = ANY(%(ids)s::text[])", "instance_id IN (SELECT id FROM got)")
    .replace("i.id = ANY(%(ids)s::text[])", "i.id IN (SELECT id FROM got)")
)


async def begin_and_take_free(
    conn: AConn,
    prefix: str,
    instance_ids: Sequence[str],
    workflows: Mapping[str, Workflow],
    flag: str,
    params: Mapping[str, Any],
) -> tuple[dict[str, Taken], set[str]]:
    """:func:`begin_and_take_pending` for the instances whose lock is free now, and the others.

    Each lock is only tried (``pg_try_advisory_xact_lock``, exclusive), in the same round trip:
    an instance another transaction holds (a frozen node's, a slow one's) is answered as busy
    for its jobs to wait on their own, so it cannot hold up every other job of the batch. A
    missing instance is answered as busy too (the rows cannot tell it apart); its own job then
    finds it missing. No lock is waited for, so the key order does not matter here."""
    ids = list(dict.fromkeys(instance_ids))
    body = _q(conn, _TAKE_FREE.replace("{flag}", flag), prefix)
    query = _begin_locked_then(conn, [], body, shared=False)
    try:
        values = {**params, "ids": ids, "keys": [phash2(i) for i in ids]}
        rows = await _last_rows(conn, query, values, dicts=True)
    except BaseException:
        await rollback_open(conn)
        raise
    answer = _taken(rows, workflows)
    return answer, set(ids) - set(answer)


# Each instance's results as one jsonb array in ``inserted_at`` (then id) order, timestamps as
# JSON text: one instance's unreadable result cannot fail the fetch of the others'.
_RESULTS_OF = (
    "SELECT t.instance_id, coalesce(jsonb_agg(jsonb_build_object('id', t.id::text,"
    " 'step_ref', t.step_ref, 'event', t.event, 'context_updates', t.context_updates,"
    " 'metadata_updates', t.metadata_updates, 'processed', t.processed,"
    " 'inserted_at', t.inserted_at) ORDER BY t.inserted_at, t.id), '[]'::jsonb) AS results"
    " FROM {prefix}.hephaestus_step_results t WHERE t.instance_id = ANY(%(ids)s::text[])"
    " GROUP BY t.instance_id"
)

ResultsOf = dict[str, "list[StoredResult] | UndecodableRowError"]


async def results_of(conn: AConn, prefix: str, instance_ids: Sequence[str]) -> ResultsOf:
    """``results_for(pending=False)`` for several instances in one statement, each list in
    ``inserted_at`` order (then id). An instance whose results cannot be read (a timestamp
    outside years 1 to 9999) gets its :class:`UndecodableRowError` in place of the list, so it
    fails alone: read the answer with :func:`results_or_raise`."""
    answer: ResultsOf = {instance_id: [] for instance_id in instance_ids}
    if not answer:
        return answer
    async with conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        await cur.execute(_q(conn, _RESULTS_OF, prefix), {"ids": list(answer)})
        for row in await cur.fetchall():
            try:
                answer[row["instance_id"]] = taken_results(row["results"], row["instance_id"])
            except UndecodableRowError as exc:
                answer[row["instance_id"]] = exc
    return answer


def results_or_raise(every: ResultsOf, instance_id: str) -> list[StoredResult]:
    """One instance's results from :func:`results_of`, or its :class:`UndecodableRowError`."""
    found = every[instance_id]
    if isinstance(found, UndecodableRowError):
        raise found
    return found


_SAVE = (
    "WITH saved AS ("
    " UPDATE {prefix}.workflow_instances AS w"
    " SET workflow = u.workflow, status = u.status, state = u.state::jsonb,"
    "  updated_at = <stamp>"
    " FROM unnest(%(s_ids)b::text[], %(s_workflows)b::text[], %(s_statuses)b::text[],"
    "  %(s_states)b::text[])"
    "  AS u(id, workflow, status, state)"
    " WHERE w.id = u.id RETURNING 1),"
    " jobs AS (" + _JOB_ROWS + " ORDER BY x.n RETURNING queue, state)"
    " SELECT (SELECT count(*) FROM saved) AS saved,"
    " (SELECT count(pg_notify(n.channel, n.payload)) FROM unnest(%(n_queues)b::text[],"
    "  %(n_channels)b::text[], %(n_payloads)b::text[]) AS n(queue, channel, payload)"
    "  WHERE n.queue IN (SELECT queue FROM jobs WHERE state = 'available')) AS notified"
)


@dataclass(frozen=True)
class AppliedResult:
    """A step result applied in the transaction that writes it (an inline advance): inserted
    already processed, as ``insert_result(processed=True)``."""

    instance_id: str
    result: StepResult
    workflow_version: int


# The applied results, written as an advance leaves them (processed); added to _SAVE's CTEs.
_APPLIED = (
    " applied AS ("
    " INSERT INTO {prefix}.hephaestus_step_results"
    " (instance_id, step_ref, event, context_updates, metadata_updates, workflow_version,"
    "  processed)"
    " SELECT instance_id, step_ref, event, context_updates::jsonb, metadata_updates::jsonb,"
    "  workflow_version, true"
    " FROM unnest(%(r_instance_ids)b::text[], %(r_step_refs)b::text[], %(r_events)b::text[],"
    "  %(r_context_updates)b::text[], %(r_metadata_updates)b::text[], %(r_versions)b::int[])"
    "  WITH ORDINALITY AS t(instance_id, step_ref, event, context_updates, metadata_updates,"
    "  workflow_version, ord) ORDER BY ord RETURNING 1),"
)
_SAVE_APPLIED = _SAVE.replace("WITH saved AS (", "WITH" + _APPLIED + " saved AS (", 1).replace(
    " AS notified", " AS notified, (SELECT count(*) FROM applied) AS applied", 1
)


def _applied_params(results: Sequence[AppliedResult]) -> dict[str, Any]:
    return {
        "r_instance_ids": [r.instance_id for r in results],
        "r_step_refs": [r.result.step_ref for r in results],
        "r_events": [r.result.event for r in results],
        "r_context_updates": [jsonfmt.dumps(dict(r.result.context_updates)) for r in results],
        "r_metadata_updates": [
            jsonfmt.dumps(dict(r.result.metadata_updates or {})) for r in results
        ],
        "r_versions": [r.workflow_version for r in results],
    }


# An inline batch's one round trip for instances unchanged since their step jobs' pre-check
# (apply_if_unchanged): BEGIN; the locks tried, the ones got kept in a setting local to the
# transaction; the writes, each instance's only if its row is the version the pre-check read and
# nothing changed it since; COMMIT.
_TRY_LOCKS = (
    "SELECT set_config('bridge.inline_locked', coalesce(jsonb_agg(t.id), '[]')::text, true)"
    " FROM unnest(%(l_ids)b::text[], %(l_keys)b::bigint[]) AS t(id, key)"
    " WHERE pg_try_advisory_xact_lock(t.key)"
)
_IF_UNCHANGED = (
    "WITH seen AS MATERIALIZED ("
    " SELECT i.id, ({flag}) AS flag FROM {prefix}.workflow_instances i"
    " JOIN unnest(%(e_ids)b::text[], %(e_xmins)b::text[]) AS e(id, xmin) ON e.id = i.id"
    " WHERE i.id IN (SELECT jsonb_array_elements_text("
    "  current_setting('bridge.inline_locked')::jsonb))"
    "  AND i.xmin::text = e.xmin"
    "  AND NOT EXISTS (SELECT 1 FROM {prefix}.hephaestus_step_results r"
    "   WHERE r.instance_id = i.id AND NOT r.processed)"
    " FOR UPDATE OF i),"
    # The flag as the take statement reads it, in the select list: as a WHERE condition the
    # planner turns it into an anti-join on the args GIN index, ~1 ms an instance (measured).
    " unchanged AS MATERIALIZED (SELECT id FROM seen WHERE NOT flag),"
    + _APPLIED.replace(
        "workflow_version, ord) ORDER BY ord",
        "workflow_version, ord) WHERE t.instance_id IN (SELECT id FROM unchanged) ORDER BY ord",
    )
    + " saved AS ("
    " UPDATE {prefix}.workflow_instances AS w"
    " SET workflow = u.workflow, status = u.status, state = u.state::jsonb,"
    "  updated_at = <stamp>"
    " FROM unnest(%(s_ids)b::text[], %(s_workflows)b::text[], %(s_statuses)b::text[],"
    "  %(s_states)b::text[])"
    "  AS u(id, workflow, status, state)"
    " WHERE w.id = u.id AND u.id IN (SELECT id FROM unchanged) RETURNING 1),"
    " jobs AS (" + _JOB_ROWS + " WHERE x.n IN (SELECT q.n FROM"
    "  unnest(%(j_instance_ids)b::text[]) WITH ORDINALITY AS q(instance_id, n)"
    "  WHERE q.instance_id IN (SELECT id FROM unchanged))"
    " ORDER BY x.n RETURNING queue, state)"
    " SELECT ARRAY(SELECT id FROM unchanged) AS unchanged,"
    " (SELECT count(*) FROM applied) AS applied, (SELECT count(*) FROM saved) AS saved,"
    " (SELECT count(pg_notify(n.channel, n.payload)) FROM unnest(%(n_queues)b::text[],"
    "  %(n_channels)b::text[], %(n_payloads)b::text[]) AS n(queue, channel, payload)"
    "  WHERE n.queue IN (SELECT queue FROM jobs WHERE state = 'available')) AS notified"
)


@dataclass(frozen=True)
class Unchanged:
    """An instance as a step job's pre-check read it (its row version, ``xmin``), and what an
    inline advance writes for it if the row is still that version: the state to save
    (``None``: unchanged), the step jobs to queue and the results to insert processed."""

    instance_id: str
    xmin: str
    save: Instance | None
    jobs: Sequence[Job]
    applied: Sequence[AppliedResult]


async def apply_if_unchanged(
    conn: AConn, prefix: str, writes: Sequence[Unchanged], flag: str, params: Mapping[str, Any]
) -> set[str]:
    """An inline batch's writes for instances that did not change since their step jobs'
    pre-check, in one round trip and one transaction; the ids of the instances written.

    ``BEGIN``; each instance's exclusive lock tried (``pg_try_advisory_xact_lock``, as
    :func:`begin_and_take_free`: one held elsewhere is left out, never waited for); then, in a
    statement whose snapshot is taken with those locks held, the writes of each locked instance
    whose row is still the version read (``xmin``), with no unprocessed result and ``flag``
    false; ``COMMIT``. What the take path (:func:`begin_and_take_free`, then
    :func:`save_and_commit`) would compute for such an instance is what the caller computed from
    the pre-check's read, so it writes the same rows; an instance left out is written by nothing
    here and goes the take path. Pipelined: the statements go out before one Sync.
    """
    require_idle_autocommit(conn, "a batch")
    for key in params:  # the flag's placeholders, apart from the job rows' (``worker``…)
        flag = flag.replace(f"%({key})s", f"%(flag_{key})s")
    ids = [w.instance_id for w in writes]
    saves = [to_row(w.save) for w in writes if w.save is not None]
    jobs = [(w.instance_id, job) for w in writes for job in w.jobs]
    values: dict[str, Any] = {
        **{f"flag_{key}": value for key, value in params.items()},
        "e_ids": ids,
        "e_xmins": [w.xmin for w in writes],
        "s_ids": [row.id for row in saves],
        "s_workflows": [row.workflow for row in saves],
        "s_statuses": [row.status for row in saves],
        "s_states": [jsonfmt.dumps(row.state) for row in saves],
        "j_instance_ids": [instance_id for instance_id, _ in jobs],
        **_job_params([job for _, job in jobs], prefix),
        **_applied_params([a for w in writes for a in w.applied]),
    }
    locked = sorted(set(ids))
    locks = {"l_ids": locked, "l_keys": [phash2(i) for i in locked]}
    stamp = await instance_stamp_async(conn, prefix)
    template = _IF_UNCHANGED.replace("{flag}", flag).replace("<stamp>", stamp)
    try:
        async with conn.pipeline():
            await conn.execute(b"BEGIN")
            await conn.execute(_TRY_LOCKS, locks)
            cur = await conn.execute(_q(conn, template, prefix), values)
            await conn.execute(b"COMMIT")
        row = await cur.fetchone()
    except BaseException:
        await rollback_open(conn)
        raise
    assert row is not None
    return set(row[0])


async def save_and_commit(
    conn: AConn,
    prefix: str,
    saves: Sequence[Instance],
    jobs: Sequence[Job],
    applied: Sequence[AppliedResult] = (),
) -> None:
    """``save_instance`` for each of ``saves`` and ``insert_all(jobs)`` with its
    notifications, then ``COMMIT``, in one round trip; with ``applied``, those results are
    inserted too, already processed (an inline advance: the caller checked under the exclusive
    locks that each step is active and has no unprocessed result)."""
    if not saves and not jobs and not applied:
        await conn.commit()
        return
    rows = [to_row(instance) for instance in saves]
    params: dict[str, Any] = {
        "s_ids": [row.id for row in rows],
        "s_workflows": [row.workflow for row in rows],
        "s_statuses": [row.status for row in rows],
        "s_states": [jsonfmt.dumps(row.state) for row in rows],
        **_job_params(jobs, prefix),
    }
    if applied:
        params.update(_applied_params(applied))
    try:
        # updated_at: the database's clock, as save_instance (bridge.workflows.store.stamps)
        stamp = await instance_stamp_async(conn, prefix)
        template = (_SAVE_APPLIED if applied else _SAVE).replace("<stamp>", stamp)
    except BaseException:
        await rollback_open(conn)
        raise
    await execute_and_commit(conn, _q(conn, template, prefix), params)
