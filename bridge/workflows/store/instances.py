"""``workflow_instances`` and ``hephaestus_step_results`` rows, read and written as
HephaestusEcto and HephaestusOban do, on the caller's connection and transaction.

Everything here is one statement (or a short fixed sequence) so the runner can compose them
inside a single transaction: a step result and the job that applies it commit together, or
neither does.

Rows are read with JSON decoded as Jason does (any depth, integers of any length) on any
connection, the caller's own included; a value no Python object holds (a result's timestamp
outside the years 1 to 9999) raises :class:`UndecodableRowError` naming the instance.

Timestamps: an instance's ``inserted_at``/``updated_at`` are the database's clock truncated to
the second (:mod:`bridge.workflows.store.stamps`), in whichever column type the Elixir migration
produced; a result's ``inserted_at`` is the column default, as HephaestusOban leaves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from bridge.db import read_json_as_jason
from bridge.jobs import queries
from bridge.jobs.client.insert_rows import insert_one_params
from bridge.jobs.client.job import Job
from bridge.wire import jsonfmt
from bridge.wire.phash2 import phash2
from bridge.workflows.model.definition import ASYNC_EVENT, Workflow, WorkflowError
from bridge.workflows.model.engine import StepResult
from bridge.workflows.model.instance import Instance
from bridge.workflows.model.serializer import InstanceRow, from_row, to_row
from bridge.workflows.store.stamps import instance_stamp

Conn = psycopg.Connection[Any]


class StorageError(WorkflowError):
    """Base class of errors reading or writing workflow rows."""


class InstanceNotFoundError(StorageError):
    """No ``workflow_instances`` row has that id."""


class DuplicateInstanceError(StorageError):
    """An instance with that id already exists (HephaestusEcto would silently overwrite it)."""


class UndecodableRowError(StorageError):
    """A row of an instance (its own or one of its results) holding a value no Python object
    can: the message names the instance and what could not be read."""

    def __init__(self, instance_id: str, what: str, reason: object) -> None:
        self.instance_id = instance_id
        super().__init__(f"workflow instance {instance_id!r}: {what} cannot be read: {reason}")


@dataclass(frozen=True)
class StoredResult:
    """One ``hephaestus_step_results`` row."""

    id: str
    step_ref: str
    event: str
    context_updates: Mapping[str, Any]
    metadata_updates: Mapping[str, Any]
    processed: bool
    inserted_at: datetime

    def to_step_result(self) -> StepResult:
        return StepResult(self.step_ref, self.event, self.context_updates, self.metadata_updates)


_RENDERED: dict[tuple[str, str, str], bytes] = {}


def _q(conn: Conn | psycopg.AsyncConnection[Any], template: str, prefix: str) -> bytes:
    """The statement with the quoted prefix, rendered once per prefix (and client encoding)
    rather than composed and encoded on every call: the runner's hot path sends a few of these
    thousands of times."""
    key = (template, prefix, conn.info.encoding)
    rendered = _RENDERED.get(key)
    if rendered is None:
        composed = sql.SQL(template).format(prefix=sql.Identifier(prefix))
        rendered = _RENDERED[key] = composed.as_bytes(conn)
    return rendered


def lock_instance(conn: Conn, instance_id: str, *, shared: bool = False) -> None:
    """Serialise every writer of one instance for the rest of the transaction.

    The key is HephaestusOban's, ``:erlang.phash2(instance_id)`` with the id hashed as an Elixir
    binary, so a Python advance and an Elixir advance of the same instance exclude each other.
    ``shared`` is for writers that only add a result (and its advance): they need to exclude
    the advances, which take the key exclusively, not each other.
    """
    if shared:
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (phash2(instance_id),))
    else:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (phash2(instance_id),))


def begin_locked(conn: Conn, instance_id: str, *, shared: bool = False) -> None:
    """Open a transaction holding the instance's lock (:func:`lock_instance`) from its start.

    ``BEGIN`` and the lock go in one simple-protocol query: one round trip instead of the two
    that ``conn.transaction()`` and the lock statement make; the key is an integer literal. For
    an idle autocommit connection (a pool's); the caller commits or rolls back.
    """
    require_idle_autocommit(conn, "begin_locked")
    # two statements: never a prepared statement
    conn.execute(locked_begin([phash2(instance_id)], shared=shared), prepare=False)


def require_idle_autocommit(conn: Conn | psycopg.AsyncConnection[Any], who: str) -> None:
    """A caller that sends its own ``BEGIN`` needs a connection in no transaction."""
    if conn.info.transaction_status != TransactionStatus.IDLE or not conn.autocommit:
        raise StorageError(f"{who} needs an idle autocommit connection")


def locked_begin(keys: Iterable[int], *, shared: bool) -> str:
    """``BEGIN`` and the advisory lock of each key, in the order given, as one simple-protocol
    query (its statements run one after the other). The keys are computed integers, written as
    literals."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    return "; ".join(["BEGIN", *(f"SELECT {function}({int(key)}::bigint)" for key in keys)])


def insert_instance(conn: Conn, prefix: str, row: InstanceRow) -> None:
    """Insert a new instance; an existing id is refused rather than overwritten.

    ``inserted_at`` and ``updated_at`` are the database's clock (``row``'s are not used)."""
    stamp = instance_stamp(conn, prefix)
    cur = conn.execute(
        _q(
            conn,
            "INSERT INTO {prefix}.workflow_instances"
            " (id, workflow, status, state, workflow_version, inserted_at, updated_at)"
            f" VALUES (%s, %s, %s, %s, %s, {stamp}, {stamp}) ON CONFLICT (id) DO NOTHING",
            prefix,
        ),
        (
            row.id,
            row.workflow,
            row.status,
            Jsonb(row.state, dumps=jsonfmt.dumps),
            row.workflow_version,
        ),
    )
    if cur.rowcount != 1:
        raise DuplicateInstanceError(f"a workflow instance with id {row.id!r} already exists")


def load_instance(
    conn: Conn,
    prefix: str,
    instance_id: str,
    workflows: Mapping[str, Workflow],
    *,
    for_update: bool = False,
) -> Instance:
    """Load and validate an instance (``FOR UPDATE`` inside the advancing transaction)."""
    lock = " FOR UPDATE" if for_update else ""
    query = _q(
        conn,
        "SELECT id, workflow, status, state, workflow_version"
        " FROM {prefix}.workflow_instances WHERE id = %(id)s" + lock,
        prefix,
    )
    return from_row(_instance_row(conn, query, {}, instance_id), workflows)


def _instance_row(
    conn: Conn, query: bytes, params: Mapping[str, Any], instance_id: str
) -> dict[str, Any]:
    """Run a statement reading one instance row by ``%(id)s``; a missing instance is an error,
    and so (typed, naming it) is one holding a value no Python object can."""
    with conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        cur.execute(query, {**params, "id": instance_id})
        try:
            row = cur.fetchone()
        except (jsonfmt.JSONDecodeError, psycopg.DataError) as exc:
            raise UndecodableRowError(instance_id, "its row", exc) from None
    if row is None:
        raise InstanceNotFoundError(f"no workflow instance with id {instance_id!r}")
    return row


# The columns of a row read for its activity only (load_activity and its batch twin): ``state``
# holds nothing but ``active_steps``.
ACTIVITY_COLUMNS = (
    "id, workflow, status, workflow_version,"
    " jsonb_build_object('active_steps', state->'active_steps') AS state"
)

# The results an advance takes (a ``taken`` CTE of ``UPDATE … RETURNING``, as ``t``), as one
# jsonb array in application order; :func:`taken_results` decodes it.
TAKEN_AS_JSON = (
    "coalesce(jsonb_agg(jsonb_build_object('id', t.id::text,"
    " 'step_ref', t.step_ref, 'event', t.event, 'context_updates', t.context_updates,"
    " 'metadata_updates', t.metadata_updates, 'inserted_at', t.inserted_at)"
    " ORDER BY t.inserted_at, t.id), '[]'::jsonb)"
)


def load_activity(
    conn: Conn, prefix: str, instance_id: str, workflows: Mapping[str, Workflow]
) -> Instance:
    """The instance's id, workflow, status, version and active steps, validated as
    :func:`load_instance` validates them; every other field is left at its default.

    For a recorder, which needs only those (is the step still active? which advance to queue?):
    the rest of ``state`` (context, history: it grows with every step) is neither sent nor
    decoded. Never save what this returns.
    """
    query = _q(
        conn,
        f"SELECT {ACTIVITY_COLUMNS} FROM {{prefix}}.workflow_instances WHERE id = %(id)s",
        prefix,
    )
    return from_row(_instance_row(conn, query, {}, instance_id), workflows)


def load_instance_and_flag(
    conn: Conn,
    prefix: str,
    instance_id: str,
    workflows: Mapping[str, Workflow],
    flag: str,
    params: Mapping[str, Any],
    *,
    for_update: bool = False,
) -> tuple[Instance, bool]:
    """:func:`load_instance` and one boolean SQL expression about it, in one statement.

    ``flag`` is a template with ``{prefix}``, the instance's id as ``i.id`` and named
    parameters from ``params``: a check that would otherwise be a statement of its own (has the
    step a result? is a step job discarded?), read in the same snapshot as the row.
    """
    lock = " FOR UPDATE OF i" if for_update else ""
    query = _q(
        conn,
        "SELECT i.id, i.workflow, i.status, i.state, i.workflow_version,"
        f" ({flag}) AS flag FROM {{prefix}}.workflow_instances i WHERE i.id = %(id)s" + lock,
        prefix,
    )
    row = _instance_row(conn, query, params, instance_id)
    return from_row(row, workflows), bool(row["flag"])


def load_and_take_pending(
    conn: Conn,
    prefix: str,
    instance_id: str,
    workflows: Mapping[str, Workflow],
    flag: str,
    params: Mapping[str, Any],
) -> tuple[Instance, bool, list[StoredResult]]:
    """The advance's first read in one statement: the instance ``FOR UPDATE`` with a flag (as
    :func:`load_instance_and_flag`) and its pending results, taken (as :func:`take_pending`).

    The caller holds the lock exclusively and rolls back if it cannot use what it read.
    """
    query = _q(
        conn,
        "WITH taken AS ("
        " UPDATE {prefix}.hephaestus_step_results SET processed = true"
        " WHERE instance_id = %(id)s AND NOT processed"
        " RETURNING id, step_ref, event, context_updates, metadata_updates, inserted_at)"
        " SELECT i.id, i.workflow, i.status, i.state, i.workflow_version,"
        f" ({flag}) AS flag,"
        f" (SELECT {TAKEN_AS_JSON} FROM taken t) AS pending"
        " FROM {prefix}.workflow_instances i WHERE i.id = %(id)s FOR UPDATE OF i",
        prefix,
    )
    row = _instance_row(conn, query, params, instance_id)
    return (
        from_row(row, workflows),
        bool(row["flag"]),
        taken_results(row["pending"], instance_id),
    )


def taken_results(rows: Sequence[Mapping[str, Any]], instance_id: str) -> list[StoredResult]:
    """The results an advance took, from the ``jsonb_agg`` its first read returns (so marked
    processed unless an element says otherwise, ``inserted_at`` as JSON text: ``infinity`` or a
    year past 9999 is :class:`UndecodableRowError`)."""
    return [
        StoredResult(
            id=r["id"],
            step_ref=r["step_ref"],
            event=r["event"],
            context_updates=r["context_updates"],
            metadata_updates=r["metadata_updates"],
            processed=r.get("processed", True),
            inserted_at=_result_time(r, instance_id),
        )
        for r in rows
    ]


def _result_time(row: Mapping[str, Any], instance_id: str) -> datetime:
    try:
        return datetime.fromisoformat(row["inserted_at"])
    except ValueError:
        what = f"result {row['id']} ({row['step_ref']})"
        raise UndecodableRowError(
            instance_id, what, f"inserted_at is {row['inserted_at']}, outside years 1 to 9999"
        ) from None


def fetch_results(cur: psycopg.Cursor[dict[str, Any]], instance_id: str) -> list[dict[str, Any]]:
    """``cur.fetchall()`` of result rows, a timestamp outside years 1 to 9999 (psycopg's
    DataError) as :class:`UndecodableRowError` naming the instance."""
    try:
        return cur.fetchall()
    except (jsonfmt.JSONDecodeError, psycopg.DataError) as exc:
        raise UndecodableRowError(instance_id, "its results", exc) from None


HAS_RESULT = (
    "EXISTS (SELECT 1 FROM {prefix}.hephaestus_step_results r"
    " WHERE r.instance_id = i.id AND r.step_ref = %(step_ref)s)"
)


def save_instance(conn: Conn, prefix: str, instance: Instance) -> None:
    """HephaestusEcto's upsert on an existing row: ``inserted_at`` and the version stay;
    ``updated_at`` is the database's clock."""
    row = to_row(instance)
    stamp = instance_stamp(conn, prefix)
    conn.execute(
        _q(
            conn,
            "UPDATE {prefix}.workflow_instances"
            f" SET workflow = %s, status = %s, state = %s, updated_at = {stamp} WHERE id = %s",
            prefix,
        ),
        (
            row.workflow,
            row.status,
            Jsonb(row.state, dumps=jsonfmt.dumps),
            row.id,
        ),
    )


_SAVE_THEN_JOB = (
    "WITH saved AS ("
    " UPDATE {prefix}.workflow_instances SET workflow = %(s_workflow)s, status = %(s_status)s,"
    " state = %(s_state)s, updated_at = <stamp> WHERE id = %(s_id)s),"
    " job AS (" + queries.JOB_ROW + ")"
    " SELECT CASE WHEN job.state = 'available' THEN pg_notify(%(channel)s, %(payload)s)::text"
    " END AS notified FROM job"
)


def save_instance_and_job(conn: Conn, prefix: str, instance: Instance, job: Job) -> None:
    """:func:`save_instance` and ``insert_all([job])``: the same two rows and the job's
    notification, in one statement (an advance that activates one step)."""
    row = to_row(instance)
    values = {
        "s_workflow": row.workflow,
        "s_status": row.status,
        "s_state": Jsonb(row.state, dumps=jsonfmt.dumps),
        "s_id": row.id,
        **insert_one_params(prefix, job),  # the database's clock, as Oban
    }
    template = _SAVE_THEN_JOB.replace("<stamp>", instance_stamp(conn, prefix))
    conn.execute(queries.render_insert_job(prefix, "true", template), values).fetchall()


_RESULT_COLUMNS = (
    "id::text AS id, step_ref, event, context_updates, metadata_updates, processed, inserted_at"
)


def _result(row: dict[str, Any]) -> StoredResult:
    return StoredResult(
        id=row["id"],
        step_ref=row["step_ref"],
        event=row["event"],
        context_updates=row["context_updates"],
        metadata_updates=row["metadata_updates"],
        processed=row["processed"],
        inserted_at=row["inserted_at"],
    )


def insert_result(
    conn: Conn,
    prefix: str,
    instance_id: str,
    result: StepResult,
    workflow_version: int,
    *,
    processed: bool = False,
) -> bool:
    """Insert-or-nothing against the partial unique index, as ``StepResults.insert/7``.

    Returns whether a row was written (``False``: an unprocessed result for that step exists).
    ``inserted_at`` is left to the column default (``now()`` in the session's time zone), as
    HephaestusOban's insert leaves it: its schema field is never set. Writing UTC instead would
    order Python's results apart from Elixir's on a server whose time zone is not UTC.
    ``processed``: the result is applied in the same transaction (an inline advance, under the
    instance's exclusive lock), so the row is written as the advance would leave it.
    """
    cur = conn.execute(
        _q(
            conn,
            "INSERT INTO {prefix}.hephaestus_step_results"
            " (instance_id, step_ref, event, context_updates, metadata_updates,"
            "  workflow_version, processed)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (instance_id, step_ref) WHERE NOT processed DO NOTHING",
            prefix,
        ),
        (
            instance_id,
            result.step_ref,
            result.event,
            Jsonb(dict(result.context_updates), dumps=jsonfmt.dumps),
            Jsonb(dict(result.metadata_updates or {}), dumps=jsonfmt.dumps),
            workflow_version,
            processed,
        ),
    )
    return cur.rowcount == 1


_RESULT_THEN_JOB = (
    "WITH result AS ("
    " INSERT INTO {prefix}.hephaestus_step_results"
    " (instance_id, step_ref, event, context_updates, metadata_updates, workflow_version)"
    " VALUES (%(r_instance_id)s, %(r_step_ref)s, %(r_event)s, %(r_context_updates)s,"
    " %(r_metadata_updates)s, %(r_workflow_version)s)"
    " ON CONFLICT (instance_id, step_ref) WHERE NOT processed DO NOTHING RETURNING 1),"
    " job AS (" + queries.JOB_ROW + ")"
    " SELECT EXISTS (SELECT 1 FROM result) AS recorded,"
    " (SELECT count(pg_notify(%(channel)s, %(payload)s)::text) FROM job"
    " WHERE job.state = 'available') AS notified"
)


def insert_result_and_job(
    conn: Conn,
    prefix: str,
    instance_id: str,
    result: StepResult,
    workflow_version: int,
    job: Job,
    unless: str,
    params: Mapping[str, Any],
) -> bool:
    """:func:`insert_result` and, only if it wrote the row, ``insert_one_unless(job, unless)``:
    the same two rows and the job's notification, in one statement. Returns whether the result
    was written."""
    values: dict[str, Any] = {
        "r_instance_id": instance_id,
        "r_step_ref": result.step_ref,
        "r_event": result.event,
        "r_context_updates": Jsonb(dict(result.context_updates), dumps=jsonfmt.dumps),
        "r_metadata_updates": Jsonb(dict(result.metadata_updates or {}), dumps=jsonfmt.dumps),
        "r_workflow_version": workflow_version,
        **insert_one_params(prefix, job),  # the database's clock, as Oban
    }
    clash = set(values) & set(params)
    if clash:
        raise StorageError(f"guard parameters clash with the statement's: {sorted(clash)}")
    condition = f"EXISTS (SELECT 1 FROM result) AND NOT EXISTS ({unless})"
    query = queries.render_insert_job(prefix, condition, _RESULT_THEN_JOB)
    row = conn.execute(query, {**values, **params}).fetchone()
    return bool(row and row[0])


def results_for(conn: Conn, prefix: str, instance_id: str, *, pending: bool) -> list[StoredResult]:
    """An instance's results in ``inserted_at`` order (only unprocessed ones if ``pending``)."""
    where = " AND NOT processed" if pending else ""
    with conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        cur.execute(
            _q(
                conn,
                f"SELECT {_RESULT_COLUMNS} FROM {{prefix}}.hephaestus_step_results"
                f" WHERE instance_id = %s{where} ORDER BY inserted_at, id",
                prefix,
            ),
            (instance_id,),
        )
        return [_result(row) for row in fetch_results(cur, instance_id)]


def take_pending(conn: Conn, prefix: str, instance_id: str) -> list[StoredResult]:
    """Mark an instance's unprocessed results processed and return them in ``inserted_at``
    order: the read and the mark of ``results_for(pending=True)`` + ``mark_processed`` in one
    statement, for a caller that holds the instance lock exclusively and applies (or drops)
    exactly these rows in the same transaction. The rows returned show ``processed`` true."""
    with conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        cur.execute(
            _q(
                conn,
                "UPDATE {prefix}.hephaestus_step_results SET processed = true"
                f" WHERE instance_id = %s AND NOT processed RETURNING {_RESULT_COLUMNS}",
                prefix,
            ),
            (instance_id,),
        )
        rows = fetch_results(cur, instance_id)
    # uuid order is the order of its canonical (lower-case hex) text, as ORDER BY id.
    rows.sort(key=lambda row: (row["inserted_at"], row["id"]))
    return [_result(row) for row in rows]


def has_result(conn: Conn, prefix: str, instance_id: str, step_ref: str) -> bool:
    """Whether the step has any result (processed or not): it ran for this activation.

    A workflow graph is acyclic, so a step activates at most once per instance.
    """
    cur = conn.execute(
        _q(
            conn,
            "SELECT 1 FROM {prefix}.hephaestus_step_results"
            " WHERE instance_id = %s AND step_ref = %s LIMIT 1",
            prefix,
        ),
        (instance_id, step_ref),
    )
    return cur.fetchone() is not None


def awaiting_steps(results: Sequence[StoredResult]) -> set[str]:
    """Steps whose only results are ``__async__``: they wait for a resume. Pure."""
    events: dict[str, set[str]] = {}
    for result in results:
        events.setdefault(result.step_ref, set()).add(result.event)
    return {step for step, seen in events.items() if seen == {ASYNC_EVENT}}


def mark_processed(conn: Conn, prefix: str, ids: Sequence[str]) -> None:
    if ids:
        conn.execute(
            _q(
                conn,
                "UPDATE {prefix}.hephaestus_step_results SET processed = true"
                " WHERE id = ANY(%s::uuid[])",
                prefix,
            ),
            (list(ids),),
        )
