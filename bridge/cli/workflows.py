"""``bridge workflows list|show|start|resume|cancel|repair``: Hephaestus workflow instances.

``list`` and ``show`` read the rows as stored, so they work for any instance, Elixir-owned ones
included, with or without a Python definition. ``start``, ``resume`` and ``cancel`` act only on
workflows the command is given (``--workflows module``) and only on Python-owned instances: an
Elixir-owned one is driven by its own app. ``repair`` heals stuck instances of both owners
(``bridge.workflows.run.repair``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import (
    bad_parameter,
    echo_json,
    fail,
    failure,
    json_text,
    short_name,
    usage_error,
)

if TYPE_CHECKING:
    from bridge.workflows.model.definition import Workflow
    from bridge.workflows.run.runner import WorkflowRunner

F = TypeVar("F", bound=Callable[..., Any])

INSTANCE_STATUSES = ("pending", "running", "waiting", "completed", "failed")


def _dumps(value: Any) -> str:
    """Values inside a ``show`` line: JSON as stored, whatever the column types."""
    return json_text(value, lenient=True)


def _q(template: str, prefix: str) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


def definition_options(fn: F) -> F:
    """The options that name the Python workflows a command acts on, and their runner."""
    options = [
        click.option(
            "--workflows",
            "modules",
            multiple=True,
            help="Module(s) defining the Python workflows (default: workflows in [tool.bridge]).",
        ),
        click.option(
            "--config",
            "config_path",
            type=click.Path(path_type=Path),
            default=None,
            help="TOML settings ([tool.bridge] of ./pyproject.toml by default).",
        ),
        click.option("--queue", default=None, help="The runner's queue (bridge_workflows)."),
        click.option("--config-key", default=None, help="The runner's config_key (bridge)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@contextmanager
def _runner(
    ctx: CliContext,
    modules: tuple[str, ...],
    config_path: Path | None,
    queue: str | None,
    config_key: str | None,
    *,
    required: bool = True,
) -> Iterator[WorkflowRunner | None]:
    from bridge.cli.settings import ConfigError, load_settings
    from bridge.workflows.model.definition import WorkflowError
    from bridge.workflows.run.runner import DEFAULT_CONFIG_KEY, DEFAULT_QUEUE, WorkflowRunner
    from bridge.workflows.serving import load_workflows

    try:
        settings = load_settings(config_path)
        names = list(modules) or settings.workflows
        if not names and required:
            raise usage_error("name the workflows: --workflows MODULE (or [tool.bridge])")
        flows = load_workflows(names) if names else []
    except (ConfigError, WorkflowError) as exc:
        raise bad_parameter(str(exc), "--workflows") from exc
    if not flows:
        yield None
        return
    runner = WorkflowRunner(
        ctx.url,
        flows,
        prefix=ctx.prefix,
        queue=queue or settings.workflow_queue or DEFAULT_QUEUE,
        config_key=config_key or settings.workflow_config_key or DEFAULT_CONFIG_KEY,
    )
    try:
        yield runner
    finally:
        runner.close()


def _pick_workflow(runner: WorkflowRunner, name: str) -> Workflow:
    flows = list(runner.workflows.values())
    for workflow in flows:
        if name in (workflow.name, workflow.name.removeprefix("Elixir."), workflow.short_name):
            return workflow
    known = ", ".join(sorted(w.name for w in flows))
    raise bad_parameter(f"no workflow {name!r} among {known}", "WORKFLOW")


def _python_owned(conn: psycopg.Connection[Any], ctx: CliContext, instance_id: str) -> None:
    from bridge.workflows.run.repair import owner_of

    owner = owner_of(conn, ctx.prefix, instance_id)
    if owner is not None and owner.kind == "elixir":
        raise fail(
            f"{instance_id} is Elixir-owned (its jobs run in queue {owner.queue}); "
            "drive it from its Elixir app"
        )


# -- the group -----------------------------------------------------------------------------------


@click.group("workflows")
def workflows_group() -> None:
    """Start, inspect, resume, cancel and repair Hephaestus workflow instances."""


_LIST = """
SELECT i.id, i.workflow, i.status, i.workflow_version, i.inserted_at, i.updated_at,
       i.state->>'current_step' AS current_step,
       coalesce(i.state->'active_steps', '[]'::jsonb) AS active_steps,
       coalesce(i.state->'completed_steps', '[]'::jsonb) AS completed_steps,
       (SELECT count(*) FROM {prefix}.hephaestus_step_results r
        WHERE r.instance_id = i.id AND NOT r.processed) AS unprocessed
FROM {prefix}.workflow_instances i
WHERE (cardinality(%(statuses)s::text[]) = 0 OR i.status = ANY(%(statuses)s::text[]))
  AND (%(workflow)s::text IS NULL OR i.workflow = %(workflow)s::text
       OR i.workflow = 'Elixir.' || %(workflow)s::text)
ORDER BY i.updated_at DESC, i.id
LIMIT %(limit)s
"""


@workflows_group.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(INSTANCE_STATUSES),
    help="Only instances in this status (repeatable).",
)
@click.option("--workflow", default=None, help="Only this workflow (module name).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@pass_ctx
def workflows_list(
    ctx: CliContext,
    statuses: tuple[str, ...],
    workflow: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Most recently updated instances first; any owner, rows as stored."""
    params = {"statuses": list(statuses), "workflow": workflow, "limit": limit}
    with connect(ctx) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_q(_LIST, ctx.prefix), params)
        rows = cur.fetchall()
    if as_json:
        echo_json(rows, lenient=True)
        return
    click.echo(f"{'id':<32} {'status':<9} {'workflow':<36} {'active':<28} done unproc updated")
    for r in rows:
        active = ",".join(short_name(s) for s in r["active_steps"]) or "-"
        click.echo(
            f"{r['id']:<32} {r['status']:<9} {r['workflow']:<36} {active[:28]:<28} "
            f"{len(r['completed_steps']):>4} {r['unprocessed']:>6} "
            f"{r['updated_at']:%Y-%m-%d %H:%M:%S}"
        )


_INSTANCE = """
SELECT id, workflow, status, workflow_version, inserted_at, updated_at, state
FROM {prefix}.workflow_instances WHERE id = %(id)s
"""
_RESULTS = """
SELECT id::text AS id, step_ref, event, context_updates, metadata_updates, processed,
       workflow_version, inserted_at
FROM {prefix}.hephaestus_step_results WHERE instance_id = %(id)s ORDER BY inserted_at, id
"""
_JOBS = """
SELECT id, state::text AS state, queue, worker, args, meta, tags, attempt, max_attempts,
       errors, inserted_at, scheduled_at, attempted_at, completed_at, discarded_at, cancelled_at
FROM {prefix}.oban_jobs WHERE args @> jsonb_build_object('instance_id', %(id)s::text)
ORDER BY id
"""


def _show_data(conn: psycopg.Connection[Any], ctx: CliContext, instance_id: str) -> dict[str, Any]:
    from bridge.workflows.run.repair import owner_of

    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_q(_INSTANCE, ctx.prefix), {"id": instance_id})
        instance = cur.fetchone()
        if instance is None:
            raise fail(f"no workflow instance {instance_id!r}")
        cur.execute(_q(_RESULTS, ctx.prefix), {"id": instance_id})
        results = cur.fetchall()
        cur.execute(_q(_JOBS, ctx.prefix), {"id": instance_id})
        jobs = cur.fetchall()
    owner = owner_of(conn, ctx.prefix, instance_id)
    return {
        "instance": instance,
        "owner": None if owner is None else {"kind": owner.kind, "queue": owner.queue},
        "step_results": results,
        "jobs": jobs,
    }


def _echo_show(data: dict[str, Any]) -> None:
    row = data["instance"]
    state = row["state"] if isinstance(row["state"], dict) else {}
    owner = data["owner"]
    status = row["status"]
    if state.get("current_step") and status == "waiting":
        status += f" (on {state['current_step']})"
    lines = [
        ("instance", row["id"]),
        ("workflow", f"{row['workflow']} (version {row['workflow_version']})"),
        ("owner", "unknown (no jobs)" if owner is None else f"{owner['kind']} ({owner['queue']})"),
        ("status", status),
        ("current step", state.get("current_step") or "-"),
        ("active", ", ".join(state.get("active_steps") or []) or "-"),
        ("completed", ", ".join(state.get("completed_steps") or []) or "-"),
        ("inserted", f"{row['inserted_at']}  updated {row['updated_at']}"),
    ]
    for label, value in lines:
        click.echo(f"{label:>12}: {value}")
    context = state.get("context") or {}
    click.echo(f"{'context':>12}: initial {_dumps(context.get('initial', {}))}")
    for key, value in sorted((context.get("steps") or {}).items()):
        click.echo(f"{'':>14}steps.{key} {_dumps(value)}")
    if state.get("step_configs"):
        click.echo(f"{'configs':>12}: {_dumps(state['step_configs'])}")
    click.echo(f"{'metadata':>12}: {_dumps(state.get('runtime_metadata') or {})}")
    history = state.get("execution_history") or []
    click.echo(f"{'history':>12}: {'(empty)' if not history else ''}")
    for entry in history:
        click.echo(
            f"{'':>14}{entry.get('timestamp')} {entry.get('step_ref')} {entry.get('event')} "
            f"{_dumps(entry.get('context_updates'))}"
        )
    click.echo(f"\nstep results ({len(data['step_results'])}):")
    for r in data["step_results"]:
        mark = "processed" if r["processed"] else "UNPROCESSED"
        click.echo(
            f"  {r['inserted_at']}  {short_name(r['step_ref']):<24} {r['event']:<12} {mark:<11} "
            f"{_dumps(r['context_updates'])}"
        )
    click.echo(f"\njobs ({len(data['jobs'])}):")
    for j in data["jobs"]:
        step = short_name(j["args"].get("step_ref")) if j["args"].get("step_ref") else ""
        event = j["args"].get("event") or ""
        click.echo(
            f"  {j['id']:>8}  {j['state']:<10} {j['queue']:<18} {j['worker']:<34} "
            f"{step:<20} {event:<10} {j['attempt']}/{j['max_attempts']}"
        )


@workflows_group.command("show")
@click.argument("instance_id")
@click.option("--json", "as_json", is_flag=True, help="Instance, owner, step results, jobs.")
@pass_ctx
def workflows_show(ctx: CliContext, instance_id: str, as_json: bool) -> None:
    """Status, steps, context, history, step results and jobs of one instance."""
    with connect(ctx) as conn:
        data = _show_data(conn, ctx, instance_id)
    if as_json:
        echo_json(data, lenient=True)
    else:
        _echo_show(data)


@workflows_group.command("start")
@click.argument("workflow_name", metavar="WORKFLOW")
@click.option("--context", "context_json", default="{}", help="Initial context (JSON object).")
@click.option("--id", "instance_id", default=None, help="Explicit instance id.")
@click.option("--key", "key_value", default=None, help="Business-key value: id '<key>::VALUE'.")
@click.option("--json", "as_json", is_flag=True)
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
) -> None:
    """Start a Python-owned instance of WORKFLOW (module name or short name)."""
    from bridge.workflows.model.definition import WorkflowError

    try:
        context = json.loads(context_json)
    except json.JSONDecodeError as exc:
        raise bad_parameter(str(exc), "--context") from exc
    if not isinstance(context, dict):
        raise bad_parameter("must be a JSON object", "--context")
    if (instance_id is None) == (key_value is None):
        raise usage_error("give exactly one of --id and --key")
    with _runner(ctx, modules, config_path, queue, config_key) as runner:
        assert runner is not None
        workflow = _pick_workflow(runner, workflow_name)
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
        echo_json({"instance_id": started, "workflow": workflow.name}, lenient=True)
    else:
        click.echo(f"started {started} ({workflow.name}) in queue {runner.queue}")


@workflows_group.command("resume")
@click.argument("instance_id")
@click.argument("event")
@click.option("--step", "step_ref", default=None, help="Step to resume (default current_step).")
@definition_options
@pass_ctx
def workflows_resume(
    ctx: CliContext,
    instance_id: str,
    event: str,
    step_ref: str | None,
    modules: tuple[str, ...],
    config_path: Path | None,
    queue: str | None,
    config_key: str | None,
) -> None:
    """Queue a resume with EVENT for a waiting Python-owned instance."""
    from bridge.workflows.model.definition import WorkflowError

    with _runner(ctx, modules, config_path, queue, config_key) as runner, connect(ctx) as conn:
        assert runner is not None
        _python_owned(conn, ctx, instance_id)
        try:
            job = runner.resume(conn, instance_id, event, step_ref=step_ref)
        except WorkflowError as exc:
            raise failure(exc) from exc
    click.echo(f"resume queued: job {job.id} ({job.args['step_ref']} {event})")


@workflows_group.command("cancel")
@click.argument("instance_id")
@definition_options
@pass_ctx
def workflows_cancel(
    ctx: CliContext,
    instance_id: str,
    modules: tuple[str, ...],
    config_path: Path | None,
    queue: str | None,
    config_key: str | None,
) -> None:
    """Fail a Python-owned instance and cancel its pending jobs."""
    from bridge.workflows.model.definition import WorkflowError

    with _runner(ctx, modules, config_path, queue, config_key) as runner, connect(ctx) as conn:
        assert runner is not None
        _python_owned(conn, ctx, instance_id)
        try:
            cancelled = runner.cancel(conn, instance_id)
        except WorkflowError as exc:
            raise failure(exc) from exc
    click.echo(f"cancelled {instance_id}: failed, {len(cancelled)} job(s) cancelled {cancelled}")


@workflows_group.command("repair")
@click.option("--dry-run", is_flag=True, help="Report what would be enqueued; write nothing.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds an unprocessed result must have waited (60).",
)
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
@definition_options
@pass_ctx
def workflows_repair(
    ctx: CliContext,
    dry_run: bool,
    grace: float | None,
    limit: int,
    as_json: bool,
    modules: tuple[str, ...],
    config_path: Path | None,
    queue: str | None,
    config_key: str | None,
) -> None:
    """Enqueue the owner's advance job for instances stuck with unprocessed step results."""
    from bridge.workflows.run.repair import DEFAULT_GRACE, describe, repair

    with (
        _runner(ctx, modules, config_path, queue, config_key, required=False) as runner,
        connect(ctx) as conn,
    ):
        done = repair(
            conn,
            ctx.prefix,
            grace=DEFAULT_GRACE if grace is None else grace,
            dry_run=dry_run,
            runners=[runner] if runner is not None else [],
            limit=limit,
        )
    if as_json:
        echo_json([r.to_dict() for r in done], lenient=True)
        return
    for line in describe(done):
        click.echo(line)
    click.echo(f"{len(done)} stuck instance(s){' (dry run: nothing written)' if dry_run else ''}")
