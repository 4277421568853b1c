"""``bridge jobs list|show|retry|cancel|delete``: jobs as Oban stores them, with Oban's rules
for which states each action may touch (``bridge.jobs.client.admin``).

The read commands show every row the database can hold: JSON is read as Jason reads it (any
depth, integers of any length) and printed back as stored; a value no Python object holds (a
JSON number beyond a double) is shown marked, with the rest of its row, and timestamps as
PostgreSQL prints them, instead of failing the whole listing.
"""

from __future__ import annotations

from typing import Any

import click

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import (
    CONTROL_ESCAPES_BUT_TAB,
    UNDECODABLE_HELP,
    echo_json,
    fail,
    json_text,
    printable,
    table,
)
from bridge.jobs.client.admin import STATES, ActionOutcome, Undecodable


def _shown(value: Any) -> str:
    """A value on one line: text as is, JSON as JSON, ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, Undecodable):
        return str(value)
    if isinstance(value, list):  # errors may hold undecodable elements
        value = [_jsonable(element) for element in value]
    if isinstance(value, dict | list):
        return printable(json_text(value))
    return printable(str(value))


def _jsonable(value: Any) -> Any:
    return value.to_json() if isinstance(value, Undecodable) else value


def _row_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {key: _jsonable(value) for key, value in row.items()}
    out["errors"] = [_jsonable(entry) for entry in row["errors"]]
    return out


def _last_error(errors: list[Any]) -> str:
    """The first line of the latest error entry, whatever the entry holds."""
    if not errors:
        return ""
    entry = errors[-1]
    if isinstance(entry, dict) and isinstance(entry.get("error"), str):
        lines = entry["error"].splitlines()
        return printable(lines[0]) if lines else ""
    return _shown(entry)


@click.group("jobs")
def jobs_group() -> None:
    """List, show, retry, cancel or delete jobs (Oban's semantics).

    Retry, cancel and delete take any number of job ids; each id is reported as done, left
    alone (its state does not allow the action) or missing. They exit with status 1 when
    nothing was done for any id."""


@jobs_group.command("list", epilog=UNDECODABLE_HELP)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATES),
    help="Only jobs in this state (repeatable).",
)
@click.option("--queue", default=None, metavar="QUEUE", help="Only jobs in this queue.")
@click.option(
    "--worker",
    "worker_name",
    default=None,
    metavar="WORKER",
    help="Only jobs of this worker, as stored (e.g. BadgeForge.PrintCenter).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many jobs.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the rows as one JSON array (row_to_json's)."
)
@pass_ctx
def jobs_list(
    ctx: CliContext,
    states: tuple[str, ...],
    queue: str | None,
    worker_name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Jobs, newest first: id, state, queue, worker, attempt and the last error's first line."""
    from bridge.jobs.client import admin as ops

    flt = ops.JobFilter(states=states, queue=queue, worker=worker_name, limit=limit)
    with connect(ctx) as conn:
        rows = ops.list_job_rows(conn, ctx.prefix, flt)
    if as_json:
        echo_json([_row_json(row) for row in rows])
        return
    table(
        ("id", "state", "queue", "worker", "attempt", "last error"),
        (
            (
                row["id"],
                row["state"],
                _shown(row["queue"]),
                _shown(row["worker"]),
                f"{row['attempt']}/{row['max_attempts']}",
                _last_error(row["errors"]),
            )
            for row in rows
        ),
    )


@jobs_group.command("show", epilog=UNDECODABLE_HELP)
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the row as one JSON object.")
@pass_ctx
def jobs_show(ctx: CliContext, job_id: int, as_json: bool) -> None:
    """Every column of job JOB_ID, then each error entry in full."""
    from bridge.jobs.client import admin as ops

    with connect(ctx) as conn:
        row = ops.get_job_row(conn, ctx.prefix, job_id)
    if row is None:
        raise fail(f"no job {job_id}")
    if as_json:
        echo_json(_row_json(row))
        return
    for key, value in row.items():
        if key != "errors":
            click.echo(f"{key:>13}: {_shown(value)}")
    for number, entry in enumerate(row["errors"], start=1):
        click.echo("")
        click.echo(_error_entry(number, entry))


def _error_entry(number: int, entry: Any) -> str:
    """One error entry: Oban's ``{attempt, at, error}``, or whatever else the element holds."""
    if isinstance(entry, Undecodable):
        return f"-- entry {number}: {entry}"
    if not isinstance(entry, dict):
        return f"-- entry {number} (not an error object)\n{printable(json_text(entry))}"
    attempt, at = entry.get("attempt"), entry.get("at")
    head = f"-- attempt {_known(attempt)} at {_known(at)}"
    error = entry.get("error")
    if not isinstance(error, str):
        return f"{head} (no error text)\n{_shown(entry)}"
    return "\n".join(
        [head, *(line.translate(CONTROL_ESCAPES_BUT_TAB) for line in error.splitlines())]
    )


def _known(value: Any) -> str:
    return "?" if value is None else _shown(value)


# -- actions ---------------------------------------------------------------------------------------

_DONE = {"retry": "retried", "cancel": "cancelled", "delete": "deleted"}


def _ids(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids)


def _done_line(outcome: ActionOutcome) -> str:
    count = len(outcome.done)
    return f"{_DONE[outcome.action]} {count} job{'' if count == 1 else 's'}: {_ids(outcome.done)}"


def _problem_lines(outcome: ActionOutcome) -> list[str]:
    lines = []
    if outcome.skipped:
        shown = ", ".join(f"{i} ({state})" for i, state in outcome.skipped)
        lines.append(f"left alone (state does not allow {outcome.action}): {shown}")
    if outcome.missing:
        several = len(outcome.missing) > 1
        lines.append(f"no job{'s' if several else ''} {_ids(outcome.missing)}")
    return lines


def _act(ctx: CliContext, action: str, job_ids: tuple[int, ...], as_json: bool) -> None:
    from bridge.jobs.client import admin as ops

    with connect(ctx) as conn:
        outcome = ops.apply_action(conn, ctx.prefix, action, list(job_ids))
    problems = _problem_lines(outcome)
    if as_json:
        echo_json(
            {
                "action": action,
                "done": outcome.done,
                "skipped": [{"id": i, "state": state} for i, state in outcome.skipped],
                "missing": outcome.missing,
            }
        )
    elif outcome.done:
        click.echo(_done_line(outcome))
    if not outcome.done:
        raise fail("; ".join(problems))
    if not as_json:
        for line in problems:
            click.echo(line, err=True)


_IDS = click.argument("job_ids", metavar="JOB_ID...", type=int, nargs=-1, required=True)
_ACTION_JSON = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"action", "done": [ids], "skipped": [{"id", "state"}], "missing": [ids]}.',
)


@jobs_group.command("retry")
@_IDS
@_ACTION_JSON
@pass_ctx
def jobs_retry(ctx: CliContext, job_ids: tuple[int, ...], as_json: bool) -> None:
    """Make jobs available again, as Oban.retry_all_jobs does (any state but available and
    executing; max_attempts is raised if the job used them all)."""
    _act(ctx, "retry", job_ids, as_json)


@jobs_group.command("cancel")
@_IDS
@_ACTION_JSON
@pass_ctx
def jobs_cancel(ctx: CliContext, job_ids: tuple[int, ...], as_json: bool) -> None:
    """Cancel unfinished jobs, as Oban.cancel_all_jobs does (not completed, discarded or
    cancelled ones); an executing job's node gets a pkill signal and stops it."""
    _act(ctx, "cancel", job_ids, as_json)


@jobs_group.command("delete")
@_IDS
@_ACTION_JSON
@pass_ctx
def jobs_delete(ctx: CliContext, job_ids: tuple[int, ...], as_json: bool) -> None:
    """Delete jobs that are not executing, as Oban.delete_all_jobs does."""
    _act(ctx, "delete", job_ids, as_json)
