"""``bridge workflows list|show|start|resume|cancel|repair``: Hephaestus workflow instances.

``list`` and ``show`` read the rows as stored (:mod:`bridge.cli.workflow_rows`), so they work
for any instance, Elixir-owned ones included, with or without a Python definition, and whatever
a row holds.
``start``, ``resume`` and ``cancel`` act only on workflows the command is given
(``--workflows module``, :mod:`bridge.cli.workflow_defs`) and only on Python-owned instances:
an Elixir-owned one is driven by its own app. ``repair`` heals stuck instances of both owners
(``bridge.workflows.run.repair``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from psycopg.rows import dict_row

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import (
    UNDECODABLE_HELP,
    bad_parameter,
    echo_json,
    failure,
    printable,
    progress,
    table,
    usage_error,
)
from bridge.cli.workflow_defs import (
    definition_options,
    definitions_from,
    loadable,
    pick_workflow,
    python_owned,
)
from bridge.cli.workflow_rows import (
    INSTANCE_STATUSES,
    LIST_INSTANCES,
    echo_show,
    jsonable,
    render_sql,
    show_data,
    show_json,
    shown_time,
    step_count,
    step_names,
)
from bridge.jobs.client.admin import decode_json

if TYPE_CHECKING:
    from bridge.workflows.run.repair_passes import RepairRun


F = TypeVar("F", bound=Callable[..., Any])


JSON_HELP = "Print the result as one JSON document."


@click.group("workflows")
def workflows_group() -> None:
    """Start, inspect, resume, cancel and repair Hephaestus workflow instances.

    list and show read any instance as stored (Elixir- or Python-owned); start, resume and
    cancel act on Python-owned instances of the workflows named by --workflows."""


@workflows_group.command("list", epilog=UNDECODABLE_HELP)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(INSTANCE_STATUSES),
    help="Only instances in this status (repeatable).",
)
@click.option(
    "--workflow",
    default=None,
    metavar="NAME",
    help="Only this workflow: its module (with or without Elixir.) or last segment (Order).",
)
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Show at most this many instances.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as one JSON array.")
@pass_ctx
def workflows_list(
    ctx: CliContext,
    statuses: tuple[str, ...],
    workflow: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Instances, most recently updated first (any owner, rows as stored): id, status,
    workflow, active steps, completed steps, unprocessed step results, last update."""
    params = {"statuses": list(statuses), "workflow": workflow, "limit": limit}
    with connect(ctx) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(render_sql(LIST_INSTANCES, ctx.prefix), params)
        rows = cur.fetchall()
    for row in rows:
        row["active_steps"] = decode_json(row["active_steps"])
        row["completed_steps"] = decode_json(row["completed_steps"])
    if as_json:
        echo_json([{key: jsonable(value) for key, value in row.items()} for row in rows])
        return
    table(
        ["id", "status", "workflow", "active", "done", "unproc", "updated"],
        [
            (
                printable(r["id"]),
                printable(r["status"]),
                printable(r["workflow"]),
                step_names(r["active_steps"], "active_steps", short=True),
                step_count(r["completed_steps"], "completed_steps"),
                r["unprocessed"],
                shown_time(r["updated_at"]),
            )
            for r in rows
        ],
    )


@workflows_group.command("show", epilog=UNDECODABLE_HELP)
@click.argument("instance_id")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the instance, its owner, step results and jobs as one JSON document.",
)
@pass_ctx
def workflows_show(ctx: CliContext, instance_id: str, as_json: bool) -> None:
    """Status, steps, context, history, step results and jobs of INSTANCE_ID."""
    with connect(ctx) as conn:
        data = show_data(conn, ctx, instance_id)
    if as_json:
        echo_json(show_json(data), lenient=True)
    else:
        echo_show(data)


@workflows_group.command("start")
@click.argument("workflow_name", metavar="WORKFLOW")
@click.option(
    "--context",
    "context_json",
    default="{}",
    metavar="JSON",
    help="Initial context (a JSON object).",
)
@click.option("--id", "instance_id", default=None, metavar="ID", help="Explicit instance id.")
@click.option(
    "--key",
    "key_value",
    default=None,
    metavar="VALUE",
    help="Business-key value: the id becomes '<key>::VALUE' (workflows with a unique key).",
)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@definition_options
@pass_ctx
def workflows_start(
    ctx: CliContext,
    workflow_name: str,
    context_json: str,
    instance_id: str | None,
    key_value: str | None,
    as_json: bool,
    modules: tuple[str, ...],
    config_path: Path | None,
    queue: str | None,
    config_key: str | None,
    app_dirs: tuple[Path, ...],
) -> None:
    """Start a Python-owned instance of WORKFLOW: its module name (with or without Elixir.),
    or its last segment (Order) when only one workflow has it. Give --id or --key."""
    from bridge.workflows.model.definition import WorkflowError

    try:
        context = json.loads(context_json)
    except json.JSONDecodeError as exc:
        raise bad_parameter(str(exc), "--context") from exc
    if not isinstance(context, dict):
        raise bad_parameter("must be a JSON object", "--context")
    if (instance_id is None) == (key_value is None):
        raise usage_error("give exactly one of --id and --key")
    with definitions_from(ctx, modules, config_path, queue, config_key, app_dirs) as definitions:
        assert definitions is not None
        runner = definitions.runner
        workflow = pick_workflow(definitions, workflow_name)
        try:
            if key_value is not None:
                if workflow.unique is None:
                    raise usage_error(f"{workflow.name} has no business key; use --id")
                instance_id = workflow.unique.build_id(key_value)
            assert instance_id is not None
            with connect(ctx) as conn:
                started = runner.start(conn, workflow, context, id=instance_id)
        except WorkflowError as exc:
            raise failure(exc) from exc
    if as_json:
        echo_json(
            {"instance_id": started, "workflow": workflow.name, "queue": runner.queue},
            lenient=True,
        )
    else:
        click.echo(f"started {started} ({workflow.name}) in queue {runner.queue}")


@workflows_group.command("resume")
@click.argument("instance_id")
@click.argument("event")
@click.option(
    "--step",
    "step_ref",
    default=None,
    metavar="STEP",
    help="Step module to resume (default: the step the instance waits on).",
)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@definition_options
@pass_ctx
def workflows_resume(
    ctx: CliContext,
    instance_id: str,
    event: str,
    step_ref: str | None,
    as_json: bool,
    modules: tuple[str, ...],
    config_path: Path | None,
    queue: str | None,
    config_key: str | None,
    app_dirs: tuple[Path, ...],
) -> None:
    """Queue a resume with EVENT for a waiting Python-owned instance INSTANCE_ID."""
    from bridge.workflows.model.definition import WorkflowError

    with (
        definitions_from(ctx, modules, config_path, queue, config_key, app_dirs) as definitions,
        connect(ctx) as conn,
    ):
        assert definitions is not None
        python_owned(conn, ctx, instance_id)
        loadable(conn, ctx, definitions.runner, instance_id, "resume")
        try:
            job = definitions.runner.resume(conn, instance_id, event, step_ref=step_ref)
        except WorkflowError as exc:
            raise failure(exc) from exc
    if as_json:
        echo_json({"instance_id": instance_id, "event": event, "job": job.to_dict()})
    else:
        click.echo(f"resume queued: job {job.id} ({job.args['step_ref']} {event})")


@workflows_group.command("cancel")
@click.argument("instance_id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@definition_options
@pass_ctx
def workflows_cancel(
    ctx: CliContext,
    instance_id: str,
    as_json: bool,
    modules: tuple[str, ...],
    config_path: Path | None,
    queue: str | None,
    config_key: str | None,
    app_dirs: tuple[Path, ...],
) -> None:
    """Fail the Python-owned instance INSTANCE_ID and cancel its pending jobs."""
    from bridge.workflows.model.definition import WorkflowError

    with (
        definitions_from(ctx, modules, config_path, queue, config_key, app_dirs) as definitions,
        connect(ctx) as conn,
    ):
        assert definitions is not None
        python_owned(conn, ctx, instance_id)
        loadable(conn, ctx, definitions.runner, instance_id, "cancel")
        try:
            cancelled = definitions.runner.cancel(conn, instance_id)
        except WorkflowError as exc:
            raise failure(exc) from exc
    if as_json:
        echo_json({"instance_id": instance_id, "status": "failed", "cancelled_jobs": cancelled})
    else:
        click.echo(
            f"cancelled {instance_id}: failed, {len(cancelled)} job(s) cancelled {cancelled}"
        )


REPAIR_EPILOG = (
    "Stuck: an unprocessed result for an active step older than --grace with no advance job "
    "left (a lost advance), or a step job discarded more than --grace ago with no job of the "
    "instance left (HephaestusOban's FailureHandler never fires on Oban 2.23). Each is healed "
    "by the advance job its owner's code would enqueue. A pass that enqueued something is "
    "followed by another once the healed instances have settled (finished, or no job of theirs "
    "running or available), until a pass finds nothing: a chain may lose a later advance. A "
    "running instance with an active step that has no result and no job left (its failed job "
    "pruned) is listed as skipped, nothing enqueued: an advance would run the step again. On a "
    "terminal, a spinner on stderr shows it is working."
)


@workflows_group.command("repair", epilog=REPAIR_EPILOG)
@click.option("--dry-run", is_flag=True, help="Report what would be enqueued; write nothing.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Seconds a result (or a discarded step job) must have waited (default 60).",
)
@click.option(
    "--limit",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Repair at most this many stuck instances per pass.",
)
@click.option("--once", is_flag=True, help="One pass only; do not wait for the healed instances.")
@click.option(
    "--max-passes",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Stop after this many passes.",
)
@click.option(
    "--settle",
    "settle_timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="How long to wait for the instances a pass healed to settle before the next pass.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print {passes, stuck, enqueued, unsettled, stopped_at_limit, repairs}.",
)
@definition_options
@pass_ctx
def workflows_repair(
    ctx: CliContext,
    dry_run: bool,
    grace: float | None,
    limit: int,
    once: bool,
    max_passes: int,
    settle_timeout: float,
    as_json: bool,
    modules: tuple[str, ...],
    config_path: Path | None,
    queue: str | None,
    config_key: str | None,
    app_dirs: tuple[Path, ...],
) -> None:
    """Enqueue the owner's advance job for stuck workflow instances, pass after pass."""
    from bridge.workflows.run.repair import DEFAULT_GRACE, describe
    from bridge.workflows.run.repair_passes import repair_until_clear

    with (
        definitions_from(
            ctx, modules, config_path, queue, config_key, app_dirs, required=False
        ) as definitions,
        connect(ctx) as conn,
        progress("repair: looking for stuck workflow instances and enqueueing their advances"),
    ):
        run = repair_until_clear(
            conn,
            ctx.prefix,
            grace=DEFAULT_GRACE if grace is None else grace,
            dry_run=dry_run,
            runners=[definitions.runner] if definitions is not None else [],
            limit=limit,
            max_passes=1 if once else max_passes,
            settle_timeout=settle_timeout,
        )
    if as_json:
        repairs = [{"pass": n, **r.to_dict()} for n, r in run.repairs]
        echo_json(
            {
                "passes": len(run.passes),
                "stuck": run.stuck,
                "enqueued": run.enqueued,
                "unsettled": list(run.unsettled),
                "stopped_at_limit": run.stopped_at_limit and not once,
                "repairs": repairs,
            },
            lenient=True,
        )
        return
    for n, r in run.repairs:
        click.echo(f"pass {n}: {describe([r])[0]}")
    click.echo(_repair_summary(run, dry_run=dry_run, once=once, settle_timeout=settle_timeout))


def _repair_summary(run: RepairRun, *, dry_run: bool, once: bool, settle_timeout: float) -> str:
    """The last line: counts, then why the passes stopped if that was not a clean pass."""
    line = (
        f"{run.stuck} stuck instance(s), {run.enqueued} advance(s) enqueued"
        f" in {len(run.passes)} pass(es)"
    )
    if dry_run:
        return line + " (dry run: nothing written)"
    if run.unsettled:
        return (
            f"{line}; {len(run.unsettled)} healed instance(s) still moving after"
            f" {settle_timeout:g} s: run repair again later"
        )
    if run.stopped_at_limit and not once:
        return f"{line}; stopped at --max-passes: run repair again"
    return line
