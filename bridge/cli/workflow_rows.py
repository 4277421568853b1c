"""Workflow rows as stored, for ``bridge workflows list`` and ``show``: read whatever a row holds.

JSON columns are read as text and decoded here, so a value the driver could not decode (nested
past what Python's JSON reader recurses, a number longer than Python reads) or a state of a
shape no Hephaestus wrote is shown marked ``<undecodable: reason>`` with the rest of its row,
never a traceback. Elixir-owned instances are read the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.cli.context import CliContext
from bridge.cli.output import (
    fail,
    json_text,
    printable,
    short_name,
)
from bridge.jobs.client.admin import Undecodable, decode_json

if TYPE_CHECKING:
    pass


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


def render_sql(template: str, prefix: str) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


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
        cur.execute(render_sql(_PARTS, prefix), {"id": instance_id, "path": list(path)})
        rows = cur.fetchall()
    if not rows:
        return value
    return Parts(
        {key: _readable(conn, prefix, instance_id, part, (*path, key)) for key, part in rows}
    )


def jsonable(value: Any) -> Any:
    """For ``--json``: an undecodable value as ``{"undecodable": reason, "text": ...}``."""
    if isinstance(value, Undecodable):
        return value.to_json()
    if isinstance(value, Parts):
        return {key: jsonable(part) for key, part in value.items()}
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


def shown_time(text: str | None) -> str:
    """A timestamp as PostgreSQL prints it in JSON (any value it holds: ``infinity``,
    year 10000), with a space for the ``T``."""
    return "-" if text is None else printable(text.replace("T", " ", 1))


def step_names(value: Any, what: str, *, short: bool = False) -> str:
    """A list of step modules on one line (``-`` if none), or why it is not one."""
    if isinstance(value, Undecodable):
        return str(value)
    if value is None:
        return "-"
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        return _unexpected(what, value, "a list of step names")
    names = [short_name(name) if short else name for name in value]
    return ", ".join(printable(name) for name in names) or "-"


LIST_INSTANCES = """
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


def step_count(value: Any, what: str) -> Any:
    if isinstance(value, Undecodable):
        return str(value)
    if isinstance(value, list):
        return len(value)
    return _unexpected(what, value, "a list")


READ_INSTANCE = """
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


def instance_owner(conn: psycopg.Connection[Any], prefix: str, instance_id: str) -> Any:
    """``{"kind", "queue"}`` from the instance's jobs, None without jobs, or Undecodable when
    those jobs cannot be read (their args or meta too deep, of another shape)."""
    from bridge.workflows.run.repair import owner_of

    try:
        owner = owner_of(conn, prefix, instance_id)
    except (RecursionError, ValueError, TypeError, AttributeError) as exc:
        return Undecodable(f"its jobs cannot be read ({type(exc).__name__})")
    return None if owner is None else {"kind": owner.kind, "queue": owner.queue}


def show_data(conn: psycopg.Connection[Any], ctx: CliContext, instance_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(render_sql(READ_INSTANCE, ctx.prefix), {"id": instance_id})
        instance = cur.fetchone()
        if instance is None:
            raise fail(f"no workflow instance {instance_id!r}")
        cur.execute(render_sql(_RESULTS, ctx.prefix), {"id": instance_id})
        results = cur.fetchall()
        cur.execute(render_sql(_JOBS, ctx.prefix), {"id": instance_id})
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
        "owner": instance_owner(conn, ctx.prefix, instance_id),
        "step_results": results,
        "jobs": jobs,
    }


def show_json(data: dict[str, Any]) -> dict[str, Any]:
    def row(values: dict[str, Any]) -> dict[str, Any]:
        out = {key: jsonable(value) for key, value in values.items()}
        if "errors" in values:
            out["errors"] = [jsonable(entry) for entry in values["errors"]]
        return out

    return {
        "instance": row(data["instance"]),
        "owner": jsonable(data["owner"]),
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
        _line("current step", printable(current))
    else:
        _line("current step", _unexpected("current_step", current, "a step name"))
    _line("active", step_names(state.get("active_steps"), "active_steps"))
    _line("completed", step_names(state.get("completed_steps"), "completed_steps"))


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
            click.echo(f"{'':>14}steps.{printable(key)} {_dumps(value)}")
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
                f"{'':>14}{printable(entry.get('timestamp'))} "
                f"{printable(entry.get('step_ref'))} {printable(entry.get('event'))} "
                f"{_dumps(entry.get('context_updates'))}"
            )
        else:
            click.echo(f"{'':>14}{_dumps(entry)}")


def echo_show(data: dict[str, Any]) -> None:
    row = data["instance"]
    state = row["state"]
    readable = isinstance(state, dict)
    owner = data["owner"]
    status = printable(row["status"])
    current = state.get("current_step") if readable else None
    if isinstance(current, str) and current and status == "waiting":
        status += f" (on {printable(current)})"
    if owner is None:
        shown_owner = "unknown (no jobs)"
    elif isinstance(owner, Undecodable):
        shown_owner = f"unknown {owner}"
    else:
        shown_owner = f"{owner['kind']} ({printable(owner['queue'])})"
    _line("instance", printable(row["id"]))
    _line("workflow", f"{printable(row['workflow'])} (version {row['workflow_version']})")
    _line("owner", shown_owner)
    _line("status", status)
    if not readable:
        _line(
            "state",
            state
            if isinstance(state, Undecodable)
            else _unexpected("the state", state, "an object"),
        )
        _line(
            "inserted", f"{shown_time(row['inserted_at'])}  updated {shown_time(row['updated_at'])}"
        )
    else:
        _echo_state(state)
        _line(
            "inserted", f"{shown_time(row['inserted_at'])}  updated {shown_time(row['updated_at'])}"
        )
        _echo_context(state.get("context"))
        if state.get("step_configs"):
            _line("configs", _dumps(state["step_configs"]))
        _line("metadata", _dumps(state.get("runtime_metadata") or {}))
        _echo_history(state.get("execution_history"))
        for key in sorted(set(state) - set(STATE_KEYS)):
            _line("unknown key", f"{printable(key)} {_dumps(state[key])}")
    click.echo(f"\nstep results ({len(data['step_results'])}):")
    for r in data["step_results"]:
        mark = "processed" if r["processed"] else "UNPROCESSED"
        click.echo(
            f"  {shown_time(r['inserted_at'])}  {printable(short_name(r['step_ref'])):<24} "
            f"{printable(r['event']):<12} {mark:<11} {_dumps(r['context_updates'])}"
        )
    click.echo(f"\njobs ({len(data['jobs'])}):")
    for j in data["jobs"]:
        args = j["args"] if isinstance(j["args"], dict) else {}
        step_ref, event = args.get("step_ref"), args.get("event")
        step = short_name(step_ref) if isinstance(step_ref, str) else ""
        click.echo(
            f"  {j['id']:>8}  {j['state']:<10} {printable(j['queue']):<18} "
            f"{printable(j['worker']):<34} {printable(step):<20} "
            f"{printable(event if isinstance(event, str) else ''):<10} "
            f"{j['attempt']}/{j['max_attempts']}"
            + ("" if isinstance(j["args"], dict) else f"  args {_dumps(j['args'])}")
        )
