"""Workflow hazards: instances HephaestusOban leaves stuck, delegated steps whose failure
policy was never applied, and Python-owned workflows an Elixir node may be unable to load.

Detection is the healing code's own, run read-only: ``repair.find_stuck`` (the shapes the
lifeline and ``bridge workflows repair`` heal) and the delegation lifeline's
``find_orphans``. Who owns a workflow is decided as ``repair.owner_of`` decides it: the queue
of its instances' HephaestusOban jobs, ``hephaestus`` for the Elixir runner, any other for a
Python runner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.db import read_json_as_jason
from bridge.doctor.findings import Finding
from bridge.wire.timefmt import utc_now
from bridge.workflows.delegation.declaration import declared_names
from bridge.workflows.delegation.lifeline import find_orphans
from bridge.workflows.model.definition import Workflow
from bridge.workflows.model.serializer import unloadable_names
from bridge.workflows.run.repair import (
    DEFAULT_GRACE,
    ELIXIR_QUEUE,
    FAILED_STEP,
    LOST_ADVANCE,
    find_stuck,
)
from bridge.workflows.run.runner import WORKERS

# At most this many instances (or jobs) get a finding each; the rest are counted in one.
SHOWN = 20
# A discarded delegated job younger than this may still be swept by a running lifeline (every
# 30 s), so it is not reported yet.
ORPHAN_GRACE = 60.0
# Instance rows read to check they load with the declared names (newest first).
LOAD_CHECK_LIMIT = 1000

# Each workflow's instances by the queue of their HephaestusOban jobs (owner_of's rule).
_OWNERS = """
SELECT i.workflow, j.queue, count(DISTINCT i.id)
FROM {prefix}.workflow_instances i
JOIN {prefix}.oban_jobs j ON j.args->>'instance_id' = i.id AND j.worker = ANY(%(workers)s)
GROUP BY 1, 2 ORDER BY 1, 2
"""

_ROWS = """
SELECT id, workflow, status, state FROM {prefix}.workflow_instances
WHERE workflow = ANY(%(workflows)s) ORDER BY updated_at DESC, id LIMIT %(limit)s
"""


def _q(template: str, prefix: str) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


def _more(check: str, count: int, what: str, fix: str) -> list[Finding]:
    if count <= 0:
        return []
    return [Finding(check, "error", f"{count} more {what}", fix, {"count": count})]


REPAIR_FIX = (
    "`bridge workflows repair` enqueues the job its owner's own code would have (or run a "
    "node with `bridge worker --workflow-repair-after SECONDS`)"
)


UNHEALED_FIX = (
    "`bridge workflows repair --dry-run` says what to do: repair reports this shape and does "
    "not heal it"
)


def stuck_instances(conn: psycopg.Connection[Any], prefix: str) -> list[Finding]:
    """Instances in either stuck shape of ``bridge.workflows.run.repair``, read-only."""
    stuck = find_stuck(conn, prefix, grace=DEFAULT_GRACE, limit=SHOWN + 1000)
    found = []
    for item in stuck[:SHOWN]:
        fix = REPAIR_FIX
        if item.kind == FAILED_STEP:
            why = (
                f"its step {item.failed_step} job was discarded and nothing failed the "
                "instance (HephaestusOban's FailureHandler never fires on Oban 2.23)"
            )
        elif item.kind == LOST_ADVANCE:
            steps = ", ".join(dict.fromkeys(item.pending_steps))
            why = f"the result of {steps} waits with no advance job to apply it (a lost advance)"
        else:  # a shape repair reports and does not heal: it says what to do instead
            why = f"{item.kind} (step {item.failed_step})"
            fix = UNHEALED_FIX
        found.append(
            Finding(
                "workflows",
                "error",
                f"workflow instance {item.id!r} ({item.workflow}, {item.status}) is stuck: {why}",
                fix,
                {
                    "instance_id": item.id,
                    "workflow": item.workflow,
                    "status": item.status,
                    "kind": item.kind,
                    "pending_steps": list(item.pending_steps),
                    "failed_step": item.failed_step,
                },
            )
        )
    return found + _more("workflows", len(stuck) - SHOWN, "stuck workflow instances", REPAIR_FIX)


def orphaned_delegations(
    conn: psycopg.Connection[Any], prefix: str, *, now: datetime | None = None
) -> list[Finding]:
    """Delegated-step jobs discarded before they could apply their step's failure policy,
    older than ``ORPHAN_GRACE`` (a running delegation lifeline sweeps them sooner)."""
    rows = [row for row in find_orphans(conn, prefix, None, limit=1000) if _old(row, now)]
    found = []
    fix = (
        "run a `bridge worker` serving that worker's module (its delegation lifeline applies "
        "the failure policy within 30 s), or retry the job with `bridge jobs retry ID`"
    )
    for row in rows[:SHOWN]:
        args = row["args"] if isinstance(row["args"], Mapping) else {}
        instance, step = args.get("instance_id"), args.get("step_ref")
        found.append(
            Finding(
                "delegation",
                "error",
                f"delegated job {row['id']} ({row['worker']}) for step {step} of workflow "
                f"instance {instance!r} was discarded without applying its failure policy: "
                "the instance waits for ever",
                fix,
                {
                    "job_id": row["id"],
                    "worker": row["worker"],
                    "instance_id": instance,
                    "step_ref": step,
                },
            )
        )
    return found + _more("delegation", len(rows) - SHOWN, "orphaned delegated jobs", fix)


def _old(row: Mapping[str, Any], now: datetime | None) -> bool:
    """Discarded at least ``ORPHAN_GRACE`` ago (Oban's timestamps are naive UTC)."""
    stamp = row.get("discarded_at") or row.get("attempted_at") or row.get("inserted_at")
    if not isinstance(stamp, datetime):
        return True
    current = now or utc_now()
    return (current - stamp.replace(tzinfo=None)).total_seconds() >= ORPHAN_GRACE


def python_owned(conn: psycopg.Connection[Any], prefix: str) -> dict[str, int]:
    """Workflow name -> instances whose HephaestusOban jobs run on a queue other than
    ``hephaestus``: a Python runner's (``repair.owner_of``'s rule)."""
    rows = conn.execute(_q(_OWNERS, prefix), {"workers": list(WORKERS)}).fetchall()
    owned: dict[str, int] = {}
    for workflow, queue, count in rows:
        if queue != ELIXIR_QUEUE:
            owned[workflow] = owned.get(workflow, 0) + count
    return owned


def declarations(
    conn: psycopg.Connection[Any],
    prefix: str,
    workflows: Sequence[Workflow] | None,
    modules: Sequence[str] = (),
) -> list[Finding]:
    """Python-owned workflows an Elixir node may not load.

    Without ``workflows`` doctor cannot know what the Elixir apps declare: each Python-owned
    workflow is a note saying what every Elixir app needs. With them (``--workflows``), each
    instance row is checked against the names the generated declaration pins
    (``declared_names``): a row holding one it does not pin crashes HephaestusEcto even with the
    declaration, and a Python-owned workflow missing from the modules gets no declaration."""
    owned = python_owned(conn, prefix)
    source = " ".join(modules) or "MODULE"
    export = f"`bridge workflows export-elixir {source} --output lib/my_app/python_workflows.ex`"
    if workflows is None:
        return [
            Finding(
                "declarations",
                "note",
                f"workflow {name} is Python-owned ({count} instance{'s' if count != 1 else ''}):"
                " it needs an ObanBridge.PythonWorkflow declaration in every Elixir app that "
                "loads instances, or HephaestusEcto raises on its rows",
                f"generate it with {export} and compile it in; give doctor --workflows MODULE "
                "to check the rows against it",
                {"workflow": name, "instances": count},
            )
            for name, count in sorted(owned.items())
        ]
    by_name = {w.name: w for w in workflows}
    found = [
        Finding(
            "declarations",
            "warning",
            f"workflow {name} is Python-owned ({count} instance{'s' if count != 1 else ''}) but "
            f"not defined in {source}: no declaration is generated for it",
            "add the module defining it to --workflows and to `bridge workflows export-elixir`",
            {"workflow": name, "instances": count},
        )
        for name, count in sorted(owned.items())
        if name not in by_name
    ]
    checked = sorted(name for name in owned if name in by_name)
    if not checked:
        return found
    with conn.cursor(row_factory=dict_row) as cur:
        read_json_as_jason(cur)
        cur.execute(_q(_ROWS, prefix), {"workflows": checked, "limit": LOAD_CHECK_LIMIT})
        rows = cur.fetchall()
    known = {name: declared_names(by_name[name]) for name in checked}
    bad = []
    for row in rows:
        state = row["state"] if isinstance(row["state"], Mapping) else {}
        problems = unloadable_names(
            state, known[row["workflow"]], workflow=row["workflow"], status=row["status"]
        )
        if problems:
            bad.append((row, problems))
    fix = (
        f"the rows were written by another definition (a step or event since renamed?): "
        f"regenerate the declaration from the definition that wrote them with {export}, or "
        "finish or delete those instances"
    )
    for row, problems in bad[:SHOWN]:
        names = ", ".join(f"{p.path} {p.name!r}" for p in problems[:3])
        found.append(
            Finding(
                "declarations",
                "error",
                f"workflow instance {row['id']!r} ({row['workflow']}) holds names its "
                f"generated declaration does not pin ({names}): an Elixir node raises loading it",
                fix,
                {
                    "instance_id": row["id"],
                    "workflow": row["workflow"],
                    "problems": [
                        {"path": p.path, "name": p.name, "reason": p.reason} for p in problems
                    ],
                },
            )
        )
    return found + _more("declarations", len(bad) - SHOWN, "instances Elixir cannot load", fix)
