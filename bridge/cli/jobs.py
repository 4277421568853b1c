"""``bridge jobs list|show|retry|cancel|delete``: jobs as Oban stores them, with Oban's rules
for which states each action may touch (``bridge.jobs.client.admin``)."""

from __future__ import annotations

from typing import Any

import click

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import bad_parameter, echo_json, fail, json_text, last_error


def _job_line(job: Any) -> str:
    last = last_error(job.errors)
    return (
        f"{job.id:>8}  {job.state:<10} {job.queue:<12} {job.worker:<36} "
        f"{job.attempt}/{job.max_attempts:<4} {last[:60]}"
    )


@click.group("jobs")
def jobs_group() -> None:
    """List, show, retry, cancel or delete jobs (Oban's semantics)."""


@jobs_group.command("list")
@click.option("--state", "states", multiple=True, help="Filter by state (repeatable).")
@click.option("--queue", default=None)
@click.option("--worker", "worker_name", default=None)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def jobs_list(
    ctx: CliContext,
    states: tuple[str, ...],
    queue: str | None,
    worker_name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Newest jobs first."""
    from bridge.jobs.client import admin as ops

    try:
        flt = ops.JobFilter(states=states, queue=queue, worker=worker_name, limit=limit)
        with connect(ctx) as conn:
            jobs = ops.list_jobs(conn, ctx.prefix, flt)
    except ValueError as exc:
        raise bad_parameter(str(exc)) from exc
    if as_json:
        echo_json([j.to_dict() for j in jobs])
        return
    click.echo(f"{'id':>8}  {'state':<10} {'queue':<12} {'worker':<36} attempt last error")
    for job in jobs:
        click.echo(_job_line(job))


@jobs_group.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def jobs_show(ctx: CliContext, job_id: int, as_json: bool) -> None:
    from bridge.jobs.client import admin as ops

    with connect(ctx) as conn:
        job = ops.get_job(conn, ctx.prefix, job_id)
    if job is None:
        raise fail(f"no job {job_id}")
    data = job.to_dict()
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if key == "errors":
            continue
        shown = json_text(value) if isinstance(value, dict | list) else value
        click.echo(f"{key:>13}: {shown}")
    for entry in job.errors:
        click.echo(
            f"\n-- attempt {entry.get('attempt')} at {entry.get('at')}\n{entry.get('error')}"
        )


def _bulk(action: str) -> Any:
    @jobs_group.command(action)
    @click.argument("job_ids", type=int, nargs=-1, required=True)
    @pass_ctx
    def command(ctx: CliContext, job_ids: tuple[int, ...]) -> None:
        from bridge.jobs.client import admin as ops

        fn = {"retry": ops.retry_jobs, "cancel": ops.cancel_jobs, "delete": ops.delete_jobs}[action]
        with connect(ctx) as conn:
            done = fn(conn, ctx.prefix, list(job_ids))
        skipped = sorted(set(job_ids) - set(done))
        click.echo(f"{action}: {len(done)} job(s) {sorted(done)}")
        if skipped:
            click.echo(f"left alone (state does not allow {action}): {skipped}")

    command.__doc__ = {
        "retry": "Make jobs available again (not available/executing ones).",
        "cancel": "Cancel unfinished jobs; executing ones get a pkill signal.",
        "delete": "Delete jobs that are not executing.",
    }[action]
    return command


for _action in ("retry", "cancel", "delete"):
    _bulk(_action)
