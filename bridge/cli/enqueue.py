"""``bridge enqueue``: insert one job for any worker, Python or Elixir, by its string name."""

from __future__ import annotations

import click

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import bad_parameter, echo_json


@click.command("enqueue")
@click.argument("worker_name")
@click.option("--args", "args_json", default="{}", help="Job args as a JSON object.")
@click.option("--queue", default="default", show_default=True)
@click.option("--priority", default=0, show_default=True, type=int)
@click.option("--max-attempts", default=20, show_default=True, type=int)
@click.option("--schedule-in", default=None, type=float, help="Seconds from now.")
@click.option("--tag", "tags", multiple=True)
@click.option("--meta", "meta_json", default="{}", help="Job meta as a JSON object.")
@click.option("--json", "as_json", is_flag=True, help="Print the inserted row as JSON.")
@pass_ctx
def enqueue_command(
    ctx: CliContext,
    worker_name: str,
    args_json: str,
    queue: str,
    priority: int,
    max_attempts: int,
    schedule_in: float | None,
    tags: tuple[str, ...],
    meta_json: str,
    as_json: bool,
) -> None:
    """Insert a job for WORKER_NAME (any worker, Python or Elixir, by its string name)."""
    import json

    from bridge.jobs.client.enqueue import insert
    from bridge.jobs.client.job import Job, JobValidationError

    try:
        args = json.loads(args_json)  # the stdlib keeps integers beyond 64 bits exact
        meta = json.loads(meta_json)
        job = Job.new(
            worker_name,
            args,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            schedule_in=schedule_in,
            tags=list(tags),
            meta=meta,
        )
    except (json.JSONDecodeError, JobValidationError, TypeError) as exc:
        raise bad_parameter(str(exc)) from exc
    with connect(ctx) as conn:
        inserted = insert(conn, job, prefix=ctx.prefix)
    if as_json:
        echo_json(inserted.to_dict())
    else:
        click.echo(
            f"inserted job {inserted.id} ({inserted.worker}) in queue {inserted.queue}: "
            f"{inserted.state}"
        )
