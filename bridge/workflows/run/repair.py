"""Heal workflow instances that HephaestusOban leaves stuck, by enqueuing the owner's own job.

Two shapes are stuck, each recognised from the rows alone:

- **Lost advance.** HephaestusOban inserts a step result together with an ``AdvanceWorker`` job
  in one transaction, but that insert is deduplicated against an advance that is already
  *executing*; if that advance read its pending results before the new one was committed, the
  result stays unprocessed and the instance stays ``running`` for ever (golden
  ``async-step-in-fanout`` s2d: 27 of 3,000 workflows at concurrency 50). Stuck when the instance
  is ``pending``/``running``/``waiting``, has an unprocessed result for a step that is still
  active, written more than ``grace`` seconds ago, and no ``AdvanceWorker`` of the instance is
  ``available``, ``scheduled``, ``executing`` or ``retryable`` (nor being inserted by a bridge
  process). Results for steps no longer active are left alone: an Elixir advance would apply them
  again and re-run the steps after them.
- **Failed step never failed the instance.** An ``ExecuteStepWorker`` that errors on its last
  attempt (or that a lifeline discards because its node died on it) ends ``discarded``.
  HephaestusOban's ``FailureHandler`` would then insert an ``AdvanceWorker``, whose
  ``detect_discarded_steps`` fails the instance; but it listens for ``[:oban, :job, :stop]`` and
  Oban 2.23 reports an exhausted job as ``[:oban, :job, :exception]``, so it never fires (golden
  ``failing-step`` s1a): the instance stays ``running`` with no live job and nothing pending.
  Stuck when the instance is unfinished, one of its ``ExecuteStepWorker`` jobs was discarded more
  than ``grace`` seconds ago, and *no* job of any worker naming the instance is live (a live one
  will still run an advance, which notices the discard itself). The bridge runner fails its own
  instances on a step's last failing attempt, but not when its node is killed during it; the
  same look heals that.

A chain may lose a second advance later (after the first is healed): :mod:`.repair_passes`
repeats passes until one finds nothing; the lifeline does by ticking.

A third shape is **reported, never healed**: the failed step whose evidence is gone. Oban's
Pruner (and bridge's) deletes discarded, completed and cancelled jobs after ``max_age``, 60 s by
default, which is less than the lifeline's grace + interval; once the discarded step job is
pruned the instance is ``running`` with an active step that has no result and no job at all.
Stuck when the instance is ``running``, was last written more than ``grace`` seconds ago, one of
its active steps has no step result row, and no job naming it is live or a discarded step job
(that is the failed-step shape). The owner's own advance does not heal it: with no discarded job
to see, HephaestusOban's AdvanceWorker runs ``Engine.advance/1`` (a running instance with active
steps is returned unchanged) and enqueues an ExecuteStepWorker for every active step -- the step
that already exhausted its attempts runs again with a fresh budget, its side effects repeated,
and if it fails for good the discard may be pruned again before anyone sees it; the Python
runner's advance queues only newly activated steps, so does nothing. Nor can the rows tell a
pruned failure from a step job cancelled by hand and pruned. So the instance is listed as
``skipped`` with what to do, and nothing is written: keep the Pruner's ``max_age`` above the
lifeline's grace + interval so this shape cannot arise.

The owner is read from the instance's own jobs, never guessed from the workflow name: the queue
of its most recent HephaestusOban job. ``hephaestus`` (the only queue HephaestusOban uses) means
Elixir-owned; any other queue means a Python runner on that queue. The ``config_key`` comes from
the same job's args, and meta and tags from its most recent advance or resume job (their meta is
``JobMetadata.build`` without runtime metadata), with ``step`` set to the step concerned. An
instance with no such job left (pruned) is reported and skipped unless a Python runner given to
:func:`repair` has its workflow on that queue.

The job written is the one the owner's own code would have written: for a lost advance, the
advance the lost insert carried (args ``instance_id``, ``config_key``, ``workflow``,
``workflow_version``); for an Elixir step that failed, the one ``FailureHandler.handle_event/4``
builds (the same without ``workflow_version``: golden ``failing-step`` job 3); for a Python
instance, the runner's own ``advance_job``. Elixir-owned jobs are inserted with AdvanceWorker's
unique options through bridge's unique-insert protocol, so a concurrent Elixir insert and ours
never both stay; Python-owned ones under the instance's advisory lock after checking again, as
the runner does.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.db import read_json_as_jason
from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from bridge.jobs.client.unique import UniqueOptions
from bridge.jobs.client.unique_insert import PENDING, insert_unique
from bridge.wire.phash2 import phash2
from bridge.workflows.model.definition import short_name
from bridge.workflows.model.instance import Instance
from bridge.workflows.run.runner import (
    ADVANCE_MAX_ATTEMPTS,
    ADVANCE_WORKER,
    EXECUTE_STEP_WORKER,
    RESUME_WORKER,
    WORKERS,
    WorkflowRunner,
    advance_job,
)
from bridge.workflows.store.instances import lock_instance
from bridge.workflows.store.stamps import instance_stamp

Conn = psycopg.Connection[Any]

ELIXIR_QUEUE = "hephaestus"
DEFAULT_GRACE = 60.0
LIVE_STATES = ("available", "scheduled", "executing", "retryable")
# AdvanceWorker's `unique: [keys: [:instance_id], period: :infinity, states: [...]]`.
ADVANCE_UNIQUE = UniqueOptions(keys=("instance_id",), period=None, states=LIVE_STATES)

Action = Literal["enqueued", "would enqueue", "already queued", "skipped"]
# What makes an instance stuck (module docstring): a result no advance will apply, or a step job
# discarded with nothing left to notice it.
Kind = Literal["lost advance", "failed step", "step job gone"]
LOST_ADVANCE: Kind = "lost advance"
FAILED_STEP: Kind = "failed step"
# Reported only (module docstring): no job the owner would run brings the instance where the
# pruned evidence would have.
JOB_GONE: Kind = "step job gone"
GONE_REASON = (
    "no job and no result left for this active step (its job was pruned after failing, or "
    "cancelled): an advance would run the step again, not fail the instance, so nothing is "
    "enqueued; fail the instance (`bridge workflows cancel` if Python-owned) or enqueue its "
    "AdvanceWorker by hand to re-run the step, and keep the Pruner's max_age above the "
    "lifeline's grace + interval"
)

_LIVE_ADVANCE = """
SELECT 1 FROM {prefix}.oban_jobs j
WHERE j.worker = %(advance)s
  AND (j.state::text = ANY(%(live)s) OR (j.state = 'suspended' AND j.meta ? %(pending)s))
  AND j.args @> jsonb_build_object('instance_id', {instance}::text)
"""

# Any job naming the instance, of any worker (upstream's cancel_pending_jobs has no worker filter
# either): while one is live, an advance will still run and notice a discarded step job itself.
_LIVE_JOB = """
SELECT 1 FROM {prefix}.oban_jobs j
WHERE (j.state::text = ANY(%(live)s) OR (j.state = 'suspended' AND j.meta ? %(pending)s))
  AND j.args @> jsonb_build_object('instance_id', {instance}::text)
"""

# ``settled``: instances a repair loop saw settle after healing them (no job of theirs live), for
# which the grace is waived: nothing can be committing a result for them.
_STUCK = (
    """
SELECT i.id, i.workflow, i.status, i.workflow_version,
       array_agg(r.step_ref ORDER BY r.inserted_at, r.id) AS steps,
       min(r.inserted_at) AS oldest
FROM {prefix}.workflow_instances i
JOIN {prefix}.hephaestus_step_results r ON r.instance_id = i.id AND NOT r.processed
WHERE i.status IN ('pending', 'running', 'waiting')
  AND (r.inserted_at < localtimestamp - make_interval(secs => %(grace)s)
       OR i.id = ANY(%(settled)s))
  AND coalesce(i.state->'active_steps', '[]'::jsonb) ? r.step_ref
  AND (%(only)s::text IS NULL OR i.id = %(only)s::text)
  AND NOT EXISTS ("""
    + _LIVE_ADVANCE.format(prefix="{prefix}", instance="i.id")
    + """)
GROUP BY i.id
ORDER BY min(r.inserted_at), i.id
LIMIT %(limit)s
"""
)

# AdvanceWorker's ``detect_discarded_steps``: discarded ExecuteStepWorker jobs whose
# ``args->>'instance_id'`` is the instance; the newest one names the step (FailureHandler fires per
# discard). Oban writes ``discarded_at`` in UTC.
_FAILED_STEP = (
    """
SELECT i.id, i.workflow, i.status, i.workflow_version,
       (array_agg(d.args->>'step_ref' ORDER BY d.id DESC))[1] AS step,
       min(coalesce(d.discarded_at, d.attempted_at, d.inserted_at)) AS oldest
FROM {prefix}.oban_jobs d
JOIN {prefix}.workflow_instances i ON i.id = d.args->>'instance_id'
WHERE d.worker = %(execute)s AND d.state = 'discarded'
  AND i.status IN ('pending', 'running', 'waiting')
  AND (coalesce(d.discarded_at, d.attempted_at, d.inserted_at)
         < timezone('UTC', now()) - make_interval(secs => %(grace)s)
       OR i.id = ANY(%(settled)s))
  AND (%(only)s::text IS NULL OR i.id = %(only)s::text)
  AND NOT EXISTS ("""
    + _LIVE_JOB.format(prefix="{prefix}", instance="i.id")
    + """)
GROUP BY i.id
ORDER BY min(coalesce(d.discarded_at, d.attempted_at, d.inserted_at)), i.id
LIMIT %(limit)s
"""
)

# The failed step whose discarded job was pruned: a running instance, last written more than
# ``grace`` ago (its clock: the column's own stamp expression), with an active step that has no
# result row, no live job and no discarded step job. ``{now}`` is trusted SQL (store.stamps).
# Jobs are matched on ``args->>'instance_id'`` (as upstream's detect_discarded_steps and
# cancel_pending_jobs do): an equality the planner hashes once, where a containment test per
# instance would scan every live job for each running instance.
_GONE = """
SELECT i.id, i.workflow, i.status, i.workflow_version,
       min(s.step) AS step, i.updated_at AS oldest
FROM {prefix}.workflow_instances i
CROSS JOIN LATERAL jsonb_array_elements_text(
    CASE jsonb_typeof(i.state->'active_steps') WHEN 'array' THEN i.state->'active_steps'
    ELSE '[]'::jsonb END) AS s(step)
WHERE i.status = 'running'
  AND i.updated_at <= {now} - make_interval(secs => %(grace)s)
  AND (%(only)s::text IS NULL OR i.id = %(only)s::text)
  AND NOT EXISTS (SELECT 1 FROM {prefix}.hephaestus_step_results r
                  WHERE r.instance_id = i.id AND r.step_ref = s.step)
  AND NOT EXISTS (SELECT 1 FROM {prefix}.oban_jobs j
                  WHERE j.args->>'instance_id' = i.id
                    AND (j.state::text = ANY(%(live)s)
                         OR (j.state = 'suspended' AND j.meta ? %(pending)s)
                         OR (j.state = 'discarded' AND j.worker = %(execute)s)))
GROUP BY i.id
ORDER BY i.updated_at, i.id
LIMIT %(limit)s
"""

_RECENT_JOBS = """
SELECT id, worker, queue, args, meta, tags FROM {prefix}.oban_jobs
WHERE worker = ANY(%(workers)s) AND args @> jsonb_build_object('instance_id', %(id)s::text)
ORDER BY id DESC
LIMIT 200
"""


def _q(template: str, prefix: str, **extra: sql.Composable) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix), **extra)


@dataclass(frozen=True)
class Owner:
    """Who runs an instance's orchestration jobs, as its most recent job says."""

    kind: Literal["elixir", "python"]
    queue: str
    config_key: str
    # meta and tags of the most recent advance/resume job (None: none left to copy from)
    meta: dict[str, Any] | None
    tags: list[str] | None


@dataclass(frozen=True)
class Stuck:
    id: str
    workflow: str
    status: str
    workflow_version: int
    pending_steps: tuple[str, ...]  # steps of the unprocessed results, oldest first
    oldest: datetime  # the oldest such result, or the oldest discard
    kind: Kind = LOST_ADVANCE
    # FAILED_STEP: the newest discarded step job's step; JOB_GONE: the active step without a
    # result or job (the first by name)
    failed_step: str | None = None

    @property
    def step(self) -> str:
        """The step the owner's job names in ``meta.step``: the failed one, else the newest
        pending result's."""
        return self.failed_step if self.failed_step is not None else self.pending_steps[-1]


@dataclass(frozen=True)
class Repair:
    """What repair did (or, in a dry run, would do) for one stuck instance."""

    instance_id: str
    workflow: str
    status: str
    pending_steps: tuple[str, ...]
    action: Action
    owner: str | None = None
    queue: str | None = None
    job: Job | None = None
    reason: str = ""
    kind: Kind = LOST_ADVANCE
    failed_step: str | None = None

    def to_dict(self) -> dict[str, Any]:
        job = self.job
        return {
            "instance_id": self.instance_id,
            "workflow": self.workflow,
            "status": self.status,
            "kind": self.kind,
            "pending_steps": list(self.pending_steps),
            "failed_step": self.failed_step,
            "action": self.action,
            "owner": self.owner,
            "queue": self.queue,
            "reason": self.reason,
            "job": None
            if job is None
            else {
                "id": job.id,
                "worker": job.worker,
                "queue": job.queue,
                "state": job.state,
                "args": job.args,
                "meta": job.meta,
                "tags": job.tags,
                "max_attempts": job.max_attempts,
            },
        }


def find_stuck(
    conn: Conn,
    prefix: str,
    *,
    grace: float = DEFAULT_GRACE,
    instance_id: str | None = None,
    limit: int = 1000,
    settled: Collection[str] = (),
    gone: bool = True,
) -> list[Stuck]:
    """Instances stuck in a shape of the module docstring, oldest evidence first; one that is
    both is a failed step (its advance fails it whatever is pending), and one whose results or
    discard a healable shape shows is never reported as gone. ``settled``: ids whose grace is
    waived (:mod:`.repair_passes`); ``gone``: include the reported-only shape."""
    params = {
        "grace": float(grace),
        "advance": ADVANCE_WORKER,
        "execute": EXECUTE_STEP_WORKER,
        "live": list(LIVE_STATES),
        "pending": PENDING,
        "only": instance_id,
        "limit": limit,
        "settled": list(settled),
    }
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_q(_FAILED_STEP, prefix), params)
        failed = cur.fetchall()
        cur.execute(_q(_STUCK, prefix), params)
        lost = cur.fetchall()
        vanished: list[dict[str, Any]] = []
        if gone:
            now = sql.SQL(instance_stamp(conn, prefix))
            cur.execute(_q(_GONE, prefix, now=now), params)
            vanished = cur.fetchall()
    found = {
        r["id"]: Stuck(
            id=r["id"],
            workflow=r["workflow"],
            status=r["status"],
            workflow_version=r["workflow_version"],
            pending_steps=tuple(r["steps"]),
            oldest=r["oldest"],
        )
        for r in lost
    }
    for r in failed:
        pending = found[r["id"]].pending_steps if r["id"] in found else ()
        found[r["id"]] = Stuck(
            id=r["id"],
            workflow=r["workflow"],
            status=r["status"],
            workflow_version=r["workflow_version"],
            pending_steps=pending,
            oldest=r["oldest"],
            kind=FAILED_STEP,
            failed_step=r["step"],
        )
    for r in vanished:
        if r["id"] not in found:
            found[r["id"]] = Stuck(
                id=r["id"],
                workflow=r["workflow"],
                status=r["status"],
                workflow_version=r["workflow_version"],
                pending_steps=(),
                oldest=r["oldest"],
                kind=JOB_GONE,
                failed_step=r["step"],
            )
    return sorted(found.values(), key=lambda s: (_naive(s.oldest), s.id))[:limit]


def _naive(moment: datetime) -> datetime:
    """Results and discards are read as UTC wall times; an instance's ``updated_at`` in a
    ``timestamptz`` column as an aware instant: compared as UTC wall times."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def owner_of(conn: Conn, prefix: str, instance_id: str) -> Owner | None:
    """The owner as the instance's most recent HephaestusOban job says; None without jobs.

    The jobs' args and meta are read as Jason reads them (any depth, integers of any length),
    on any connection: an Elixir-written job that Elixir can read never stops a repair."""
    with conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        cur.execute(_q(_RECENT_JOBS, prefix), {"workers": list(WORKERS), "id": instance_id})
        jobs = cur.fetchall()
    if not jobs:
        return None
    newest = jobs[0]
    template = next((j for j in jobs if j["worker"] in (ADVANCE_WORKER, RESUME_WORKER)), None)
    config_key = newest["args"].get("config_key")
    if not isinstance(config_key, str) or not config_key:
        return None
    return Owner(
        kind="elixir" if newest["queue"] == ELIXIR_QUEUE else "python",
        queue=newest["queue"],
        config_key=config_key,
        meta=None if template is None else dict(template["meta"] or {}),
        tags=None if template is None else list(template["tags"] or []),
    )


def advance_from_rows(stuck: Stuck, owner: Owner) -> Job | None:
    """The advance job the owner's code would have written, built from the instance's jobs:
    the lost insert's, or for an Elixir step that failed ``FailureHandler.handle_event/4``'s
    (no ``workflow_version`` in its args)."""
    if owner.meta is None or owner.tags is None:
        return None
    meta = {k: v for k, v in owner.meta.items() if k not in ("step", PENDING)}
    meta["step"] = short_name(stuck.step)
    args: dict[str, Any] = {
        "instance_id": stuck.id,
        "config_key": owner.config_key,
        "workflow": stuck.workflow,
    }
    if not (stuck.kind == FAILED_STEP and owner.kind == "elixir"):
        args["workflow_version"] = stuck.workflow_version
    return Job.new(
        ADVANCE_WORKER,
        args,
        queue=owner.queue,
        max_attempts=ADVANCE_MAX_ATTEMPTS,
        meta=meta,
        tags=owner.tags,
    )


def _python_advance(stuck: Stuck, owner: Owner, runners: Iterable[WorkflowRunner]) -> Job | None:
    for runner in runners:
        if runner.queue != owner.queue or runner.config_key != owner.config_key:
            continue
        workflow = runner.workflows.get(stuck.workflow)
        if workflow is None or stuck.step not in workflow.steps:
            continue
        instance = Instance(
            id=stuck.id, workflow=stuck.workflow, workflow_version=stuck.workflow_version
        )
        return advance_job(
            workflow,
            instance,
            queue=runner.queue,
            config_key=runner.config_key,
            step_ref=stuck.step,
        )
    return None


def _still_stuck(conn: Conn, prefix: str, instance_id: str) -> bool:
    """Whether the instance is still in a shape repair heals (the check before inserting)."""
    found = find_stuck(conn, prefix, grace=0.0, instance_id=instance_id, limit=1, gone=False)
    return bool(found)


def _insert_python(conn: Conn, prefix: str, job: Job, instance_id: str) -> Job | None:
    """Under the instance lock, as the Python runner inserts its advances; None if not needed."""
    with conn.transaction():
        lock_instance(conn, instance_id)
        if not _still_stuck(conn, prefix, instance_id):
            return None
        return insert_all(conn, [job], prefix=prefix)[0]


@contextmanager
def _instance_held(conn: Conn, instance_id: str) -> Iterator[None]:
    """Hold the instance's advisory key across several transactions of this session.

    The key is the one every advance takes for its transaction (``lock_instance``); session and
    transaction advisory locks share one key space, so while it is held no advance -- Elixir's or
    ours -- can read and apply the instance's results.
    """
    key = phash2(instance_id)
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def _insert_elixir(conn: Conn, prefix: str, job: Job, instance_id: str) -> Job | None:
    """Check and insert with no advance able to run in between; None if not needed.

    Without the hold, an advance inserted and finished between the check and the insert would
    leave ours with nothing to apply, and HephaestusOban's AdvanceWorker then re-enqueues a step
    job for every active step. With it, an advance that ran before is seen by the check, and one
    inserted after is deduplicated against ours by its own unique options.
    """
    with _instance_held(conn, instance_id):
        if not _still_stuck(conn, prefix, instance_id):
            return None
        inserted = insert_unique(conn, job, ADVANCE_UNIQUE, prefix)
    return None if inserted.conflict else inserted


def repair(
    conn: Conn,
    prefix: str,
    *,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    runners: Sequence[WorkflowRunner] = (),
    limit: int = 1000,
    settled: Collection[str] = (),
) -> list[Repair]:
    """One pass: enqueue the owner's advance job for every stuck instance (nothing in a dry run).

    ``conn`` must be an idle autocommit connection: the Elixir-owned inserts run the
    unique-insert protocol, which needs transactions of its own. ``settled``: ids whose grace is
    waived (:func:`find_stuck`).
    """
    if not conn.autocommit:
        raise ValueError("repair needs an autocommit connection")
    done: list[Repair] = []
    for stuck in find_stuck(conn, prefix, grace=grace, limit=limit, settled=settled):
        report = Repair(
            stuck.id,
            stuck.workflow,
            stuck.status,
            stuck.pending_steps,
            "skipped",
            kind=stuck.kind,
            failed_step=stuck.failed_step,
        )
        owner = owner_of(conn, prefix, stuck.id)
        if stuck.kind == JOB_GONE:
            if owner is not None:
                report = replace(report, owner=owner.kind, queue=owner.queue)
            done.append(replace(report, reason=GONE_REASON))
            continue
        if owner is None:
            done.append(replace(report, reason="no HephaestusOban jobs left"))
            continue
        report = replace(report, owner=owner.kind, queue=owner.queue)
        job = advance_from_rows(stuck, owner)
        if owner.kind == "python":
            job = _python_advance(stuck, owner, runners) or job
        if job is None:
            reason = "no advance or resume job left to copy meta and tags from"
            done.append(replace(report, reason=reason))
            continue
        if dry_run:
            done.append(replace(report, action="would enqueue", job=job))
            continue
        inserted: Job | None = None
        if owner.kind == "elixir":
            inserted = _insert_elixir(conn, prefix, job, stuck.id)
        else:
            inserted = _insert_python(conn, prefix, job, stuck.id)
        if inserted is None:
            done.append(replace(report, action="already queued", job=job))
        else:
            done.append(replace(report, action="enqueued", job=inserted))
    return done


def describe(repairs: Sequence[Repair]) -> list[str]:
    """One readable line per instance, for the CLI and the lifeline's log."""
    lines = []
    for r in repairs:
        job = f" job {r.job.id}" if r.job is not None and r.job.id is not None else ""
        where = f" ({r.owner}, queue {r.queue})" if r.owner else ""
        why = f": {r.reason}" if r.reason else ""
        if r.kind == JOB_GONE and r.failed_step is not None:
            what = f"step {short_name(r.failed_step)} has no job and no result"
        elif r.failed_step is not None:
            what = f"step {short_name(r.failed_step)} discarded"
        else:
            what = "pending " + ", ".join(short_name(s) for s in r.pending_steps)
        lines.append(f"{r.action}{job} {r.instance_id} [{r.status}; {what}]{where}{why}")
    return lines


__all__ = [
    "ADVANCE_UNIQUE",
    "DEFAULT_GRACE",
    "ELIXIR_QUEUE",
    "FAILED_STEP",
    "GONE_REASON",
    "JOB_GONE",
    "LIVE_STATES",
    "LOST_ADVANCE",
    "Kind",
    "Owner",
    "Repair",
    "Stuck",
    "advance_from_rows",
    "describe",
    "find_stuck",
    "owner_of",
    "repair",
]
