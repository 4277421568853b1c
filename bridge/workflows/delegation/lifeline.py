"""Delegated jobs that ended without applying their failure policy.

A delegated job normally applies the step's failure policy itself on its last attempt. It cannot
when it never gets to run that attempt: Oban's Lifeline (and ours) *discards* an ``executing``
job whose node died on its last attempt, and an operator may discard one. The Elixir instance
would then wait for ever: HephaestusOban's AdvanceWorker only notices discarded
``ExecuteStepWorker`` jobs. :func:`sweep` finds such jobs of this host's workers — discarded,
their step still active with no result, and no newer delegated job pending for the same step —
and applies the policy for them. Applying it twice is harmless (the door's verdicts make the
second one a no-op), so any node may run the sweep at any time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from psycopg import Connection, sql
from psycopg.rows import dict_row

from bridge.jobs.client.job import Job
from bridge.jobs.plugins import Plugin
from bridge.workflows.delegation.door import NO_OPS, judge, step_state
from bridge.workflows.delegation.elixir import ElixirStepRun
from bridge.workflows.delegation.host import DelegationHost
from bridge.workflows.delegation.protocol import DelegationArgs, DelegationArgsError
from bridge.workflows.model.engine import StepResult
from bridge.workflows.run.runner import WorkflowRunner
from bridge.workflows.store.instances import awaiting_steps, results_for

log = logging.getLogger("bridge.workflows.delegation")

_ORPHANS = """
SELECT j.* , j.state::text AS state FROM {prefix}.oban_jobs j
JOIN {prefix}.workflow_instances i ON i.id = j.args->>'instance_id'
WHERE (j.worker = ANY(%(workers)s)
       OR (%(any_worker)s AND j.args ? 'protocol' AND j.args ? 'advance_queue'))
  AND j.state = 'discarded'
  AND i.status NOT IN ('completed', 'failed')
  AND coalesce(i.state->'active_steps', '[]'::jsonb) ? (j.args->>'step_ref')
  AND NOT EXISTS (
    SELECT 1 FROM {prefix}.oban_jobs k
    WHERE k.worker = j.worker AND k.id <> j.id
      AND k.state IN ('available', 'scheduled', 'executing', 'retryable')
      AND k.args @> jsonb_build_object('instance_id', j.args->'instance_id',
                                       'step_ref', j.args->'step_ref'))
ORDER BY j.id
LIMIT %(limit)s
"""


def find_orphans(
    conn: Connection[Any], prefix: str, workers: Sequence[str] | None, *, limit: int = 100
) -> list[dict[str, Any]]:
    """The discarded delegated jobs whose failure policy is still owed (module docstring), as
    rows; read-only. ``workers=None``: of any worker whose args carry the delegation protocol
    (what ``bridge doctor`` looks for without knowing the hosts' workers)."""
    params = {"workers": list(workers or ()), "any_worker": workers is None, "limit": limit}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL(_ORPHANS).format(prefix=sql.Identifier(prefix)), params)
        return cur.fetchall()


def sweep(host: DelegationHost, *, limit: int = 100) -> list[int]:
    """Apply the failure policy for orphaned discarded jobs; returns their ids."""
    done: list[int] = []
    with host.connection() as conn:
        rows = find_orphans(conn, host.prefix, sorted(host.steps), limit=limit)
    for row in rows:
        job = Job.from_row(row)
        try:
            args = DelegationArgs.parse(job.args)
        except DelegationArgsError:
            continue
        with host.connection() as conn, conn.transaction():
            verdict, _ = judge(step_state(conn, host.prefix, args.instance_id, args.step_ref))
        if verdict in NO_OPS:
            continue
        host.apply_failure_policy(job, args, f"job {job.id} was discarded before it could")
        done.append(job.id or 0)
    return done


def sweep_elixir_steps(runner: WorkflowRunner, *, limit: int = 100) -> list[int]:
    """The same for Python-owned instances: discarded jobs of their Elixir-run steps
    (``elixir_step``) that never ran their last attempt. The owner applies the policy with its
    own runner: the ``failure_event`` is recorded as a resume of the waiting step would be,
    else the instance is failed and its pending jobs cancelled (``runner.cancel``)."""
    remote = {
        (wf.name, st.name): st.run
        for wf in runner.workflows.values()
        for st in wf.steps.values()
        if isinstance(st.run, ElixirStepRun)
    }
    workers = sorted({run.worker for run in remote.values()})
    if not workers:
        return []
    done: list[int] = []
    with runner._connection() as conn:
        rows = find_orphans(conn, runner.prefix, workers, limit=limit)
    for row in rows:
        job = Job.from_row(row)
        step_ref = str(job.args.get("step_ref"))
        instance_id = str(job.args.get("instance_id"))
        run = remote.get((str(job.args.get("workflow")), step_ref))
        if run is None or run.worker != job.worker:
            continue  # not a step of this runner's workflows
        with runner._connection() as conn:
            every = results_for(conn, runner.prefix, instance_id, pending=False)
        if step_ref not in awaiting_steps(every):
            continue  # completed meanwhile, or not waiting on the remote step
        if run.failure_event is not None:
            result = StepResult(step_ref, run.failure_event, {}, {})
            recorded = runner._record_one(job, result, resume=True)
        else:
            recorded = False
        if not recorded:
            with runner._connection() as conn:
                runner.cancel(conn, instance_id)
        done.append(job.id or 0)
    return done


class DelegationLifeline(Plugin):
    """Runs :func:`sweep` (and :func:`sweep_elixir_steps` for ``runners``) every ``interval``
    seconds on the leader node."""

    name = "delegation_lifeline"
    leader_only = True

    def __init__(
        self,
        host: DelegationHost | None = None,
        interval: float = 30.0,
        runners: list[WorkflowRunner] | None = None,
    ) -> None:
        super().__init__(interval)
        self.host = host
        self.runners = list(runners or [])

    async def tick(self) -> list[int]:
        node = self.node
        if node is None or not node.is_leader():
            return []
        swept = await asyncio.to_thread(self._sweep)
        for job_id in swept:
            log.warning("delegation lifeline: failure policy applied for discarded job %s", job_id)
        return swept

    def _sweep(self) -> list[int]:
        swept = sweep(self.host) if self.host is not None else []
        for runner in self.runners:
            swept += sweep_elixir_steps(runner)
        return swept
