"""``bridge workflows list|show|start|resume|cancel|repair``: Hephaestus workflow instances.

``list`` and ``show`` read the rows as stored, so they work for any instance, Elixir-owned ones
included, with or without a Python definition, and whatever a row holds: JSON columns are read
as text and decoded here, so a value the driver could not decode (nested past what Python's
JSON reader recurses, a number longer than Python reads) or a state of a shape no Hephaestus
wrote is shown marked ``<undecodable: reason>`` with the rest of its row, never a traceback.
``start``, ``resume`` and ``cancel`` act only on workflows the command is given
(``--workflows module``) and only on Python-owned instances: an Elixir-owned one is driven by
its own app. ``repair`` heals stuck instances of both owners (``bridge.workflows.run.repair``).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import (
    EXIT_USAGE,
    bad_parameter,
    echo_json,
    fail,
    failure,
    json_text,
    short_name,
    table,
    usage_error,
)
from bridge.jobs.client.admin import Undecodable, decode_json

if TYPE_CHECKING:
    from bridge.workflows.model.definition import Workflow
    from bridge.workflows.run.runner import WorkflowRunner

F = TypeVar("F", bound=Callable[..., Any])

INSTANCE_STATUSES = ("pending", "running", "waiting", "completed", "failed")
# The keys of a HephaestusEcto state (bridge.workflows.model.serializer.STATE_KEYS): any other
# key is shown as "unknown key".
STATE_KEYS = (
    "current_step",
    "context",
    "step_configs",
    "active_steps",
    "completed_steps",
    "execution_history",
    "runtime_metadata",
)

JSON_HELP = "Print the result as one JSON document."
UNDECODABLE_HELP = (
    'A value that cannot be decoded is printed as "<undecodable: reason>" (with --json, as '
    '{"undecodable": reason, "text": the value as PostgreSQL prints it}).'
)

# Control characters a row may hold are shown escaped, so a row cannot move the cursor or
# recolour the terminal that lists it.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(32), 127)}


def _printable(text: object) -> str:
    return str(text).translate(_CONTROL)


def _q(template: str, prefix: str) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


# -- values as stored --------------------------------------------------------------------------


class Parts(dict[str, Any]):
    """An object too deep to decode whole, read key by key (PostgreSQL splits it): the keys
    that decode are values, the others :class:`Undecodable`."""


# How many levels ``show`` splits an undecodable state (state, context, steps, one step's
# context) before it gives up and marks the rest.
_SPLIT_LEVELS = 4

_PARTS = """
SELECT p.key, p.value::text
FROM {prefix}.workflow_instances i,
     jsonb_each(CASE jsonb_typeof(i.state #> %(path)s::text[])
                WHEN 'object' THEN i.state #> %(path)s::text[] END) AS p
WHERE i.id = %(id)s
"""


def _readable(
    conn: psycopg.Connection[Any],
    prefix: str,
    instance_id: str,
    text: str | None,
    path: tuple[str, ...] = (),
) -> Any:
    """The state (or the part at ``path``) decoded; one too deep to decode whole is split into
    its keys by PostgreSQL, so only what really cannot be decoded is marked."""
    value = decode_json(text)
    if not isinstance(value, Undecodable) or len(path) >= _SPLIT_LEVELS:
        return value
    with conn.cursor() as cur:
        cur.execute(_q(_PARTS, prefix), {"id": instance_id, "path": list(path)})
        rows = cur.fetchall()
    if not rows:
        return value
    return Parts(
        {key: _readable(conn, prefix, instance_id, part, (*path, key)) for key, part in rows}
    )


def _jsonable(value: Any) -> Any:
    """For ``--json``: an undecodable value as ``{"undecodable": reason, "text": ...}``."""
    if isinstance(value, Undecodable):
        return value.to_json()
    if isinstance(value, Parts):
        return {key: _jsonable(part) for key, part in value.items()}
    return value


def _displayable(value: Any) -> Any:
    if isinstance(value, Undecodable):
        return str(value)
    if isinstance(value, Parts):
        return {key: _displayable(part) for key, part in value.items()}
    return value


def _dumps(value: Any) -> str:
    """A value inside a ``show`` line: JSON as stored, an undecodable one marked."""
    if isinstance(value, Undecodable):
        return str(value)
    return json_text(_displayable(value), lenient=True)


def _kind(value: Any) -> str:
    """What a JSON value is, for saying why it is not what a state holds there."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _unexpected(what: str, value: Any, expected: str) -> str:
    return f"<undecodable: {what} is {_kind(value)}, not {expected}>"


def _when(text: str | None) -> str:
    """A timestamp as PostgreSQL prints it in JSON (any value it holds: ``infinity``,
    year 10000), with a space for the ``T``."""
    return "-" if text is None else _printable(text.replace("T", " ", 1))


def _step_names(value: Any, what: str, *, short: bool = False) -> str:
    """A list of step modules on one line (``-`` if none), or why it is not one."""
    if isinstance(value, Undecodable):
        return str(value)
    if value is None:
        return "-"
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        return _unexpected(what, value, "a list of step names")
    names = [short_name(name) if short else name for name in value]
    return ", ".join(_printable(name) for name in names) or "-"


# -- the Python definitions a command acts on ----------------------------------------------------


def definition_options(fn: F) -> F:
    """The options that name the Python workflows a command acts on, and their runner."""
    from bridge.cli.startup import app_dir_option

    options = [
        click.option(
            "--workflows",
            "modules",
            multiple=True,
            metavar="MODULE",
            help="Module defining the Python workflows (repeatable; default: workflows in "
            "[tool.bridge]).",
        ),
        click.option(
            "--config",
            "config_path",
            type=click.Path(path_type=Path),
            default=None,
            help="TOML settings ([tool.bridge] of ./pyproject.toml by default).",
        ),
        click.option(
            "--queue",
            default=None,
            metavar="QUEUE",
            help="The runner's queue (default: workflow_queue in the settings, else "
            "bridge_workflows).",
        ),
        click.option(
            "--config-key",
            default=None,
            metavar="KEY",
            help="The runner's config_key in job args (default bridge).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    decorated: F = app_dir_option(fn)
    return decorated


@dataclass(frozen=True)
class Definitions:
    """The runner over the workflows a command was given, and the modules they came from."""

    runner: WorkflowRunner
    modules: list[str]


@contextmanager
def _runner(
    ctx: CliContext,
    modules: tuple[str, ...],
    config_path: Path | None,
    queue: str | None,
    config_key: str | None,
    app_dirs: tuple[Path, ...],
    *,
    required: bool = True,
) -> Iterator[Definitions | None]:
    """The runner over the named workflows, their modules imported as ``bridge worker`` imports
    them: from ``--app-dir`` and the current directory first (``startup.import_user_module``)."""
    from bridge.cli.settings import ConfigError, load_settings
    from bridge.cli.startup import import_user_modules
    from bridge.workflows.model.definition import WorkflowError
    from bridge.workflows.run.runner import DEFAULT_CONFIG_KEY, DEFAULT_QUEUE, WorkflowRunner
    from bridge.workflows.serving import load_workflows

    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc  # names the file and the key
    names = list(modules) or settings.workflows
    if not names and required:
        raise usage_error("name the workflows: --workflows MODULE (or [tool.bridge])")
    import_user_modules(names, list(app_dirs) or settings.app_dir, kind="workflows")
    try:
        flows = load_workflows(names) if names else []
    except WorkflowError as exc:
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
        yield Definitions(runner, names)
    finally:
        runner.close()


def _last_segment(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _pick_workflow(definitions: Definitions, name: str) -> Workflow:
    """The workflow named by its module (with or without ``Elixir.``) or, when only one has
    it, by its last segment (``Order``) or Hephaestus's short name (``order``)."""
    flows = sorted(definitions.runner.workflows.values(), key=lambda w: w.name)
    for workflow in flows:
        if name in (workflow.name, workflow.name.removeprefix("Elixir.")):
            return workflow
    matches = [w for w in flows if name in (_last_segment(w.name), w.short_name)]
    where = ", ".join(definitions.modules)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise fail(
            f"workflow {name!r} is ambiguous in {where}: "
            f"{', '.join(w.name for w in matches)}; give the full name",
            EXIT_USAGE,
        )
    known = ", ".join(f"{w.name} ({_last_segment(w.name)})" for w in flows)
    raise fail(f"no workflow {name!r} in {where}: known: {known}", EXIT_USAGE)


def _python_owned(conn: psycopg.Connection[Any], ctx: CliContext, instance_id: str) -> None:
    owner = _owner(conn, ctx.prefix, instance_id)
    if isinstance(owner, dict) and owner["kind"] == "elixir":
        raise fail(
            f"{instance_id} is Elixir-owned (its jobs run in queue {owner['queue']}); "
            "drive it from its Elixir app"
        )


def _loadable(
    conn: psycopg.Connection[Any],
    ctx: CliContext,
    runner: WorkflowRunner,
    instance_id: str,
    verb: str,
) -> None:
    """Refuse, in one line, to act on an instance the runner could not load: a state too deep
    to decode, or of a shape (names, keys) its definition does not have."""
    from bridge.workflows.model.definition import UnknownStepError, WorkflowError
    from bridge.workflows.model.serializer import SerializationError, from_row

    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_q(_INSTANCE, ctx.prefix), {"id": instance_id})
        row = cur.fetchone()
    if row is None:
        raise fail(f"no workflow instance {instance_id!r}")
    state = decode_json(row["state"])
    if isinstance(state, Undecodable):
        raise fail(
            f"cannot {verb} {instance_id!r}: its state cannot be decoded: {state.reason}; "
            f"`bridge workflows show {shlex.quote(instance_id)}` shows what it holds"
        )
    try:
        from_row({**row, "state": state}, runner.workflows)
    except (SerializationError, UnknownStepError) as exc:
        reason = str(exc).removeprefix(f"{instance_id}: ")
        raise fail(f"cannot {verb} {instance_id!r}: its state cannot be decoded: {reason}") from exc
    except WorkflowError:
        pass  # e.g. a workflow the command was not given: the runner's own error says it


# -- the group -----------------------------------------------------------------------------------


@click.group("workflows")
def workflows_group() -> None:
    """Start, inspect, resume, cancel and repair Hephaestus workflow instances.

    list and show read any instance as stored (Elixir- or Python-owned); start, resume and
    cancel act on Python-owned instances of the workflows named by --workflows."""


_LIST = """
SELECT i.id, i.workflow, i.status, i.workflow_version,
       to_jsonb(i.inserted_at) #>> '{{}}' AS inserted_at,
       to_jsonb(i.updated_at) #>> '{{}}' AS updated_at,
       i.state->>'current_step' AS current_step,
       coalesce(i.state->'active_steps', '[]'::jsonb)::text AS active_steps,
       coalesce(i.state->'completed_steps', '[]'::jsonb)::text AS completed_steps,
       (SELECT count(*) FROM {prefix}.hephaestus_step_results r
        WHERE r.instance_id = i.id AND NOT r.processed) AS unprocessed
FROM {prefix}.workflow_instances i
WHERE (cardinality(%(statuses)s::text[]) = 0 OR i.status = ANY(%(statuses)s::text[]))
  AND (%(workflow)s::text IS NULL OR i.workflow = %(workflow)s::text
       OR i.workflow = 'Elixir.' || %(workflow)s::text
       OR right(i.workflow, length(%(workflow)s::text) + 1) = '.' || %(workflow)s::text)
ORDER BY i.updated_at DESC, i.id
LIMIT %(limit)s
"""


def _count(value: Any, what: str) -> Any:
    if isinstance(value, Undecodable):
        return str(value)
    if isinstance(value, list):
        return len(value)
    return _unexpected(what, value, "a list")


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
        cur.execute(_q(_LIST, ctx.prefix), params)
        rows = cur.fetchall()
    for row in rows:
        row["active_steps"] = decode_json(row["active_steps"])
        row["completed_steps"] = decode_json(row["completed_steps"])
    if as_json:
        echo_json([{key: _jsonable(value) for key, value in row.items()} for row in rows])
        return
    table(
        ["id", "status", "workflow", "active", "done", "unproc", "updated"],
        [
            (
                _printable(r["id"]),
                _printable(r["status"]),
                _printable(r["workflow"]),
                _step_names(r["active_steps"], "active_steps", short=True),
                _count(r["completed_steps"], "completed_steps"),
                r["unprocessed"],
                _when(r["updated_at"]),
            )
            for r in rows
        ],
    )


_INSTANCE = """
SELECT id, workflow, status, workflow_version,
       to_jsonb(inserted_at) #>> '{{}}' AS inserted_at,
       to_jsonb(updated_at) #>> '{{}}' AS updated_at,
       state::text AS state
FROM {prefix}.workflow_instances WHERE id = %(id)s
"""
_RESULTS = """
SELECT id::text AS id, step_ref, event, context_updates::text AS context_updates,
       metadata_updates::text AS metadata_updates, processed, workflow_version,
       to_jsonb(inserted_at) #>> '{{}}' AS inserted_at
FROM {prefix}.hephaestus_step_results WHERE instance_id = %(id)s ORDER BY inserted_at, id
"""
_JOBS = """
SELECT j.id, j.state::text AS state, j.queue, j.worker, j.args::text AS args,
       j.meta::text AS meta, j.tags, j.attempt, j.max_attempts,
       ARRAY(SELECT e::text FROM unnest(j.errors) WITH ORDINALITY AS u(e, n) ORDER BY n)
         AS errors,
       to_jsonb(j.inserted_at) #>> '{{}}' AS inserted_at,
       to_jsonb(j.scheduled_at) #>> '{{}}' AS scheduled_at,
       to_jsonb(j.attempted_at) #>> '{{}}' AS attempted_at,
       to_jsonb(j.completed_at) #>> '{{}}' AS completed_at,
       to_jsonb(j.discarded_at) #>> '{{}}' AS discarded_at,
       to_jsonb(j.cancelled_at) #>> '{{}}' AS cancelled_at
FROM {prefix}.oban_jobs j WHERE j.args @> jsonb_build_object('instance_id', %(id)s::text)
ORDER BY j.id
"""


def _owner(conn: psycopg.Connection[Any], prefix: str, instance_id: str) -> Any:
    """``{"kind", "queue"}`` from the instance's jobs, None without jobs, or Undecodable when
    those jobs cannot be read (their args or meta too deep, of another shape)."""
    from bridge.workflows.run.repair import owner_of

    try:
        owner = owner_of(conn, prefix, instance_id)
    except (RecursionError, ValueError, TypeError, AttributeError) as exc:
        return Undecodable(f"its jobs cannot be read ({type(exc).__name__})")
    return None if owner is None else {"kind": owner.kind, "queue": owner.queue}


def _show_data(conn: psycopg.Connection[Any], ctx: CliContext, instance_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_q(_INSTANCE, ctx.prefix), {"id": instance_id})
        instance = cur.fetchone()
        if instance is None:
            raise fail(f"no workflow instance {instance_id!r}")
        cur.execute(_q(_RESULTS, ctx.prefix), {"id": instance_id})
        results = cur.fetchall()
        cur.execute(_q(_JOBS, ctx.prefix), {"id": instance_id})
        jobs = cur.fetchall()
    instance["state"] = _readable(conn, ctx.prefix, instance_id, instance["state"])
    for result in results:
        result["context_updates"] = decode_json(result["context_updates"])
        result["metadata_updates"] = decode_json(result["metadata_updates"])
    for job in jobs:
        job["args"] = decode_json(job["args"])
        job["meta"] = decode_json(job["meta"])
        job["errors"] = [decode_json(entry) for entry in job["errors"] or []]
    return {
        "instance": instance,
        "owner": _owner(conn, ctx.prefix, instance_id),
        "step_results": results,
        "jobs": jobs,
    }


def _show_json(data: dict[str, Any]) -> dict[str, Any]:
    def row(values: dict[str, Any]) -> dict[str, Any]:
        out = {key: _jsonable(value) for key, value in values.items()}
        if "errors" in values:
            out["errors"] = [_jsonable(entry) for entry in values["errors"]]
        return out

    return {
        "instance": row(data["instance"]),
        "owner": _jsonable(data["owner"]),
        "step_results": [row(r) for r in data["step_results"]],
        "jobs": [row(j) for j in data["jobs"]],
    }


def _line(label: str, value: Any) -> None:
    click.echo(f"{label:>12}: {value}")


def _echo_state(state: Any) -> None:
    """The state's fields, each as far as it can be read."""
    current = state.get("current_step")
    if current is None:
        _line("current step", "-")
    elif isinstance(current, str):
        _line("current step", _printable(current))
    else:
        _line("current step", _unexpected("current_step", current, "a step name"))
    _line("active", _step_names(state.get("active_steps"), "active_steps"))
    _line("completed", _step_names(state.get("completed_steps"), "completed_steps"))


def _echo_context(context: Any) -> None:
    if context is None:
        context = {}
    if not isinstance(context, dict):
        reason = str(context) if isinstance(context, Undecodable) else None
        _line("context", reason or _unexpected("context", context, "an object"))
        return
    _line("context", f"initial {_dumps(context.get('initial', {}))}")
    steps = context.get("steps")
    if isinstance(steps, dict):
        for key, value in sorted(steps.items()):
            click.echo(f"{'':>14}steps.{_printable(key)} {_dumps(value)}")
    elif isinstance(steps, Undecodable):
        click.echo(f"{'':>14}steps {steps}")
    elif steps is not None:
        click.echo(f"{'':>14}steps {_unexpected('context.steps', steps, 'an object')}")


def _echo_history(history: Any) -> None:
    if isinstance(history, Undecodable):
        _line("history", str(history))
        return
    if history is not None and not isinstance(history, list):
        _line("history", _unexpected("execution_history", history, "a list"))
        return
    _line("history", "(empty)" if not history else "")
    for entry in history or []:
        if isinstance(entry, dict):
            click.echo(
                f"{'':>14}{_printable(entry.get('timestamp'))} "
                f"{_printable(entry.get('step_ref'))} {_printable(entry.get('event'))} "
                f"{_dumps(entry.get('context_updates'))}"
            )
        else:
            click.echo(f"{'':>14}{_dumps(entry)}")


def _echo_show(data: dict[str, Any]) -> None:
    row = data["instance"]
    state = row["state"]
    readable = isinstance(state, dict)
    owner = data["owner"]
    status = _printable(row["status"])
    current = state.get("current_step") if readable else None
    if isinstance(current, str) and current and status == "waiting":
        status += f" (on {_printable(current)})"
    if owner is None:
        shown_owner = "unknown (no jobs)"
    elif isinstance(owner, Undecodable):
        shown_owner = f"unknown {owner}"
    else:
        shown_owner = f"{owner['kind']} ({_printable(owner['queue'])})"
    _line("instance", _printable(row["id"]))
    _line("workflow", f"{_printable(row['workflow'])} (version {row['workflow_version']})")
    _line("owner", shown_owner)
    _line("status", status)
    if not readable:
        _line(
            "state",
            state
            if isinstance(state, Undecodable)
            else _unexpected("the state", state, "an object"),
        )
        _line("inserted", f"{_when(row['inserted_at'])}  updated {_when(row['updated_at'])}")
    else:
        _echo_state(state)
        _line("inserted", f"{_when(row['inserted_at'])}  updated {_when(row['updated_at'])}")
        _echo_context(state.get("context"))
        if state.get("step_configs"):
            _line("configs", _dumps(state["step_configs"]))
        _line("metadata", _dumps(state.get("runtime_metadata") or {}))
        _echo_history(state.get("execution_history"))
        for key in sorted(set(state) - set(STATE_KEYS)):
            _line("unknown key", f"{_printable(key)} {_dumps(state[key])}")
    click.echo(f"\nstep results ({len(data['step_results'])}):")
    for r in data["step_results"]:
        mark = "processed" if r["processed"] else "UNPROCESSED"
        click.echo(
            f"  {_when(r['inserted_at'])}  {_printable(short_name(r['step_ref'])):<24} "
            f"{_printable(r['event']):<12} {mark:<11} {_dumps(r['context_updates'])}"
        )
    click.echo(f"\njobs ({len(data['jobs'])}):")
    for j in data["jobs"]:
        args = j["args"] if isinstance(j["args"], dict) else {}
        step_ref, event = args.get("step_ref"), args.get("event")
        step = short_name(step_ref) if isinstance(step_ref, str) else ""
        click.echo(
            f"  {j['id']:>8}  {j['state']:<10} {_printable(j['queue']):<18} "
            f"{_printable(j['worker']):<34} {_printable(step):<20} "
            f"{_printable(event if isinstance(event, str) else ''):<10} "
            f"{j['attempt']}/{j['max_attempts']}"
            + ("" if isinstance(j["args"], dict) else f"  args {_dumps(j['args'])}")
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
        data = _show_data(conn, ctx, instance_id)
    if as_json:
        echo_json(_show_json(data), lenient=True)
    else:
        _echo_show(data)


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
    with _runner(ctx, modules, config_path, queue, config_key, app_dirs) as definitions:
        assert definitions is not None
        runner = definitions.runner
        workflow = _pick_workflow(definitions, workflow_name)
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
        _runner(ctx, modules, config_path, queue, config_key, app_dirs) as definitions,
        connect(ctx) as conn,
    ):
        assert definitions is not None
        _python_owned(conn, ctx, instance_id)
        _loadable(conn, ctx, definitions.runner, instance_id, "resume")
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
        _runner(ctx, modules, config_path, queue, config_key, app_dirs) as definitions,
        connect(ctx) as conn,
    ):
        assert definitions is not None
        _python_owned(conn, ctx, instance_id)
        _loadable(conn, ctx, definitions.runner, instance_id, "cancel")
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


@contextmanager
def _progress(message: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while a long command works, on a terminal
    only (piped or redirected, nothing is written)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        progress.add_task(message, total=None)
        yield


@workflows_group.command("repair")
@click.option("--dry-run", is_flag=True, help="Report what would be enqueued; write nothing.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Seconds an unprocessed result must have waited (default 60).",
)
@click.option(
    "--limit",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Repair at most this many stuck instances.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per instance, as an array."
)
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
    app_dirs: tuple[Path, ...],
) -> None:
    """Enqueue the owner's advance job for instances stuck with unprocessed step results.

    On a terminal, a spinner on stderr shows it is working."""
    from bridge.workflows.run.repair import DEFAULT_GRACE, describe, repair

    with (
        _runner(
            ctx, modules, config_path, queue, config_key, app_dirs, required=False
        ) as definitions,
        connect(ctx) as conn,
        _progress("repair: looking for stuck workflow instances and enqueueing their advances"),
    ):
        done = repair(
            conn,
            ctx.prefix,
            grace=DEFAULT_GRACE if grace is None else grace,
            dry_run=dry_run,
            runners=[definitions.runner] if definitions is not None else [],
            limit=limit,
        )
    if as_json:
        echo_json([r.to_dict() for r in done], lenient=True)
        return
    for line in describe(done):
        click.echo(line)
    click.echo(f"{len(done)} stuck instance(s){' (dry run: nothing written)' if dry_run else ''}")
