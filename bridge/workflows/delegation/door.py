"""The door: complete (or fail) a waiting step of an Elixir-owned instance from outside.

What the genuine stack accepts from another process (golden ``external-step-completion``, s3a):
a step-result row and an ``HephaestusOban.AdvanceWorker`` job shaped as ResumeWorker's, in one
transaction, then the ``oban_insert`` NOTIFY. Here the transaction also takes the lock every
genuine AdvanceWorker takes, ``pg_advisory_xact_lock(phash2(instance_id))``, and writes only
when the step is *settled*, because the genuine stack loses or misapplies a result otherwise:

- its ``__async__`` row must already be processed: an unprocessed one blocks ours on the
  partial unique index (ours would be dropped), and one inserted after ours is processed would
  flip a finished step back to ``waiting`` for ever;
- the instance must be ``waiting``: a ``running`` instance with the step still active is one a
  sibling's result just woke, whose AdvanceWorker is about to execute the step again (upstream
  re-executes every active step); completing now could let that re-execution run after the
  step finished;
- no ExecuteStepWorker job for the step may be pending, for the same reason.

An ``__async__`` left unprocessed with no advance job pending is the upstream lost-advance
defect; the door then queues that advance itself (what the workflow lifeline would do) and waits.

Every function runs on the caller's connection inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from psycopg import sql

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from bridge.wire import notify
from bridge.workflows.delegation.protocol import DelegationArgs, RemoteOutcome
from bridge.workflows.model.engine import StepResult
from bridge.workflows.store.instances import Conn, insert_result, lock_instance
from bridge.workflows.store.stamps import instance_stamp

ADVANCE_WORKER = "HephaestusOban.AdvanceWorker"
EXECUTE_STEP_WORKER = "HephaestusOban.ExecuteStepWorker"
ADVANCE_MAX_ATTEMPTS = 20
CANCELLABLE_STATES = ("available", "scheduled", "executing", "retryable")

Verdict = Literal["completed", "failed", "not_ready", "gone", "finished", "inactive", "recorded"]
NO_OPS: frozenset[Verdict] = frozenset({"gone", "finished", "inactive", "recorded"})


@dataclass(frozen=True)
class DoorResult:
    """What the door did; ``not_ready`` wrote nothing and may be retried."""

    verdict: Verdict
    detail: str
    cancelled: tuple[int, ...] = ()


_STEP_STATE = """
SELECT i.status,
       coalesce(i.state->'active_steps', '[]'::jsonb) ? %(step)s AS active,
       EXISTS (SELECT 1 FROM {prefix}.hephaestus_step_results r
               WHERE r.instance_id = i.id AND r.step_ref = %(step)s
                 AND r.processed AND r.event = '__async__') AS async_done,
       EXISTS (SELECT 1 FROM {prefix}.hephaestus_step_results r
               WHERE r.instance_id = i.id AND r.step_ref = %(step)s
                 AND NOT r.processed AND r.event = '__async__') AS async_pending,
       EXISTS (SELECT 1 FROM {prefix}.hephaestus_step_results r
               WHERE r.instance_id = i.id AND r.step_ref = %(step)s
                 AND NOT r.processed AND r.event <> '__async__') AS result_pending,
       EXISTS (SELECT 1 FROM {prefix}.oban_jobs j
               WHERE j.worker = %(execute)s AND j.state::text = ANY(%(states)s)
                 AND j.args @> jsonb_build_object('instance_id', i.id, 'step_ref', %(step)s::text)
              ) AS execution_pending,
       EXISTS (SELECT 1 FROM {prefix}.oban_jobs j
               WHERE j.worker = %(advance)s AND j.state::text = ANY(%(states)s)
                 AND j.args @> jsonb_build_object('instance_id', i.id)) AS advance_pending
FROM {prefix}.workflow_instances i WHERE i.id = %(id)s FOR UPDATE
"""

_UNSTARTED_ADVANCE = """
SELECT 1 FROM {prefix}.oban_jobs
WHERE state IN ('available', 'scheduled') AND worker = %(worker)s AND queue = %(queue)s
  AND args @> jsonb_build_object('instance_id', %(id)s::text)
LIMIT 1
"""

_FAIL_INSTANCE = """
UPDATE {prefix}.workflow_instances
SET status = 'failed', state = jsonb_set(state, '{{current_step}}', 'null'::jsonb),
    updated_at = <stamp>
WHERE id = %(id)s
"""

_MARK_PENDING = """
UPDATE {prefix}.hephaestus_step_results SET processed = true
WHERE instance_id = %(id)s AND NOT processed
"""

# HephaestusOban's failure path cancels every job whose args name the instance, whatever the
# worker (AdvanceWorker.cancel_pending_jobs): delegated jobs included.
_CANCEL_PENDING = """
UPDATE {prefix}.oban_jobs AS j SET state = 'cancelled', cancelled_at = timezone('UTC', now())
FROM (SELECT id, state FROM {prefix}.oban_jobs
      WHERE args @> jsonb_build_object('instance_id', %(id)s::text)
        AND state::text = ANY(%(states)s) AND id <> %(own)s
      FOR UPDATE) AS x
WHERE j.id = x.id
RETURNING j.id, x.state::text
"""


def _q(template: str, prefix: str) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


@dataclass(frozen=True)
class StepState:
    status: str
    active: bool
    async_done: bool
    async_pending: bool
    result_pending: bool
    execution_pending: bool
    advance_pending: bool


def step_state(conn: Conn, prefix: str, instance_id: str, step_ref: str) -> StepState | None:
    """The step's standing in an Elixir-owned instance (row locked ``FOR UPDATE``)."""
    params = {
        "id": instance_id,
        "step": step_ref,
        "execute": EXECUTE_STEP_WORKER,
        "advance": ADVANCE_WORKER,
        "states": list(CANCELLABLE_STATES),
    }
    row = conn.execute(_q(_STEP_STATE, prefix), params).fetchone()
    return None if row is None else StepState(*row)


def judge(state: StepState | None) -> tuple[Verdict, str]:
    """Whether the step can be completed now (``ok``), later (``not_ready``) or never."""
    if state is None:
        return "gone", "the instance no longer exists"
    if state.status in ("completed", "failed"):
        return "finished", f"the instance is {state.status}"
    if not state.active:
        return "inactive", "the step is not active (already completed or never reached)"
    if state.result_pending:
        return "recorded", "the step already has an unprocessed result"
    if not state.async_done or state.async_pending:
        return "not_ready", "the step's __async__ result is not processed yet"
    if state.status != "waiting":
        return "not_ready", f"the instance is {state.status}, not waiting (a re-execution is due)"
    if state.execution_pending:
        return "not_ready", "an ExecuteStepWorker job for the step is still pending"
    return "completed", "ready"


def complete_elixir_step(
    conn: Conn,
    prefix: str,
    args: DelegationArgs,
    outcome: RemoteOutcome,
    *,
    meta: Mapping[str, Any],
    tags: Sequence[str],
) -> DoorResult:
    """Lock, check the step is settled, write the result and (unless an unstarted one exists)
    the advance job. The caller commits; the NOTIFY is delivered at commit."""
    lock_instance(conn, args.instance_id)
    state = step_state(conn, prefix, args.instance_id, args.step_ref)
    verdict, detail = judge(state)
    if verdict != "completed":
        if state is not None and state.async_pending and not state.advance_pending:
            # The upstream lost advance: an __async__ nobody will ever process (its advance was
            # deduplicated against one already executing). Queue the advance that heals it.
            insert_all(conn, [advance_job(args, meta=meta, tags=tags)], prefix=prefix)
            detail += "; queued the advance that was lost"
        return DoorResult(verdict, detail)
    result = StepResult(
        args.step_ref, outcome.event, outcome.context_updates, outcome.metadata_updates
    )
    if not insert_result(conn, prefix, args.instance_id, result, args.workflow_version):
        return DoorResult("recorded", "the step already has an unprocessed result")
    queue = args.advance_queue
    unstarted = {"worker": ADVANCE_WORKER, "queue": queue, "id": args.instance_id}
    if conn.execute(_q(_UNSTARTED_ADVANCE, prefix), unstarted).fetchone() is None:
        insert_all(conn, [advance_job(args, meta=meta, tags=tags)], prefix=prefix)
    return DoorResult("completed", f"{args.step_ref} completed with {outcome.event!r}")


def advance_job(args: DelegationArgs, *, meta: Mapping[str, Any], tags: Sequence[str]) -> Job:
    """ResumeWorker's advance: its four args, the owner's queue, 20 attempts, the step's meta."""
    return Job.new(
        ADVANCE_WORKER,
        {
            "instance_id": args.instance_id,
            "config_key": args.config_key,
            "workflow": args.workflow,
            "workflow_version": args.workflow_version,
        },
        queue=args.advance_queue,
        max_attempts=ADVANCE_MAX_ATTEMPTS,
        meta=dict(meta),
        tags=list(tags),
    )


def fail_elixir_instance(
    conn: Conn, prefix: str, args: DelegationArgs, *, own_job: int
) -> DoorResult:
    """HephaestusOban's failure path, under the lock: ``failed``, no current step, pending
    results marked processed, every other pending job of the instance cancelled (pkill for the
    executing ones). Only while the step is active with no result: otherwise it is moot."""
    lock_instance(conn, args.instance_id)
    verdict, detail = judge(step_state(conn, prefix, args.instance_id, args.step_ref))
    if verdict in NO_OPS:
        return DoorResult(verdict, detail)
    params = {"id": args.instance_id}
    # The store's stamp for this table's column type: a UTC wall time assigned to a timestamptz
    # column would be read in the session's time zone and store another instant.
    fail = _FAIL_INSTANCE.replace("<stamp>", instance_stamp(conn, prefix))
    conn.execute(_q(fail, prefix), params)
    conn.execute(_q(_MARK_PENDING, prefix), params)
    cancelled = cancel_instance_jobs(conn, prefix, args.instance_id, own_job=own_job)
    return DoorResult("failed", f"{args.instance_id} failed", tuple(cancelled))


def cancel_instance_jobs(conn: Conn, prefix: str, instance_id: str, *, own_job: int) -> list[int]:
    params = {"id": instance_id, "states": list(CANCELLABLE_STATES), "own": own_job}
    rows = conn.execute(_q(_CANCEL_PENDING, prefix), params).fetchall()
    channel = notify.channel(prefix, "signal")
    for job_id, old_state in rows:
        if old_state == "executing":
            payload = notify.encode({"action": "pkill", "job_id": job_id})
            conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
    return sorted(row[0] for row in rows)
