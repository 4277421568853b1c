"""The ``bridge`` command line.

The database is resolved lazily, only by commands that need one, so ``bridge schema show`` and
``--help`` never start an embedded server.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from bridge import schema
from bridge.cli.workflows import workflow_options, workflows_for_node, workflows_group
from bridge.db import DEFAULT_PREFIX, DatabaseConfigError, ResolvedDatabase, resolve_database_url


@dataclass
class CliContext:
    database_url: str | None
    prefix: str
    _resolved: ResolvedDatabase | None = field(default=None, init=False)

    def resolve(self) -> ResolvedDatabase:
        if self._resolved is None:
            try:
                self._resolved = resolve_database_url(self.database_url)
            except DatabaseConfigError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._resolved

    @property
    def url(self) -> str:
        return self.resolve().url


pass_ctx = click.make_pass_decorator(CliContext)


@click.group()
@click.option(
    "--database-url",
    metavar="URL",
    help="PostgreSQL URL. Default: $BRIDGE_DATABASE_URL, $DATABASE_URL, else an embedded server "
    "in ./.bridge/pgdata.",
)
@click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    envvar="BRIDGE_PREFIX",
    show_default=True,
    help="Oban schema prefix (a PostgreSQL schema).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="oban-bridge")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, prefix: str, verbose: int) -> None:
    """Python workers and workflows in an Elixir Oban/Hephaestus system."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Which database a command uses is always announced (one line, password masked).
    logging.getLogger("bridge.db").setLevel(min(level, logging.INFO))
    ctx.obj = CliContext(database_url, prefix)


@main.group("schema")
def schema_group() -> None:
    """Install, verify or print the shared tables (oban_jobs, workflow tables)."""


@schema_group.command("install")
@pass_ctx
def schema_install(ctx: CliContext) -> None:
    """Create whatever is missing; never alter or drop existing objects."""
    from bridge.db import connect

    with connect(ctx.url, autocommit=True) as conn:
        try:
            report = schema.install(conn, ctx.prefix)
        except schema.SchemaInstallError as exc:
            raise click.ClickException(str(exc)) from exc
    if not report.created:
        click.echo(f"schema {ctx.prefix!r}: nothing to do, every object exists")
    for item in report.created:
        click.echo(f"created {item}")


@schema_group.command("verify")
@pass_ctx
def schema_verify(ctx: CliContext) -> None:
    """Compare the live database with what bridge needs; exit 1 on any mismatch."""
    from bridge.db import connect

    with connect(ctx.url, autocommit=True) as conn:
        report = schema.verify(conn, ctx.prefix)
    for difference in report.differences:
        click.echo(str(difference))
    if report.compatible:
        click.echo(f"schema {ctx.prefix!r} is compatible")
    else:
        click.echo(f"schema {ctx.prefix!r} is NOT compatible", err=True)
        sys.exit(1)


@schema_group.command("show")
@pass_ctx
def schema_show(ctx: CliContext) -> None:
    """Print the SQL that `install` would run on an empty database."""
    click.echo(schema.render_all(ctx.prefix))


@main.command("demo")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the jobs.")
@pass_ctx
def demo(ctx: CliContext, timeout: float) -> None:
    """Install the schema, enqueue sample jobs, run a Python worker on them, show the rows."""
    from bridge.cli.demo import run_demo

    resolved = ctx.resolve()
    click.echo(f"database: {resolved.display} ({resolved.source})")
    rows = run_demo(resolved.url, ctx.prefix, timeout)
    pending = [
        r
        for r in rows
        if r["queue"] == "demo" and r["state"] not in ("completed", "cancelled", "discarded")
    ]
    if pending:
        raise click.ClickException(f"{len(pending)} demo jobs did not finish in {timeout}s")


@main.command("worker")
@click.option("--queues", "-q", default=None, help='Queues and limits, e.g. "badges:10,default:5".')
@click.option(
    "--workers",
    "-w",
    "modules",
    multiple=True,
    help="Python module(s) defining @worker classes/functions to import (repeatable).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML settings ([tool.bridge] of ./pyproject.toml by default).",
)
@click.option(
    "--node", "node_name", default=None, help="Node name for attempted_by (default: host)."
)
@click.option(
    "--name",
    "instance_name",
    default=None,
    help="Elixir instance name whose targeted signals this node obeys (default Oban).",
)
@click.option("--grace", type=float, default=None, help="Shutdown grace period, seconds (15).")
@click.option("--poll-interval", type=float, default=None, help="Seconds between polls (1).")
@click.option(
    "--rescue-after",
    type=float,
    default=None,
    help="Run the lifeline: rescue jobs executing longer than this many seconds.",
)
@click.option(
    "--prune-after",
    type=float,
    default=None,
    help="Run the pruner: delete finished jobs older than this many seconds.",
)
@click.option(
    "--cron",
    "cron_entries",
    multiple=True,
    help='Cron entry "<expression> <worker> [<json options>]" (repeatable).',
)
@click.option("--cron-timezone", default="Etc/UTC", show_default=True)
@workflow_options
@pass_ctx
def worker_command(
    ctx: CliContext,
    queues: str | None,
    modules: tuple[str, ...],
    config_path: Path | None,
    node_name: str | None,
    instance_name: str | None,
    grace: float | None,
    poll_interval: float | None,
    rescue_after: float | None,
    prune_after: float | None,
    cron_entries: tuple[str, ...],
    cron_timezone: str,
    workflow_modules: tuple[str, ...],
    workflow_queue: str | None,
    workflow_concurrency: int | None,
    workflow_config_key: str | None,
    workflow_repair_after: float | None,
) -> None:
    """Run a Python node serving QUEUES until SIGTERM/SIGINT."""
    import asyncio
    import importlib

    from bridge.cli.settings import ConfigError, load_settings, parse_queues
    from bridge.jobs.client.registry import default_registry
    from bridge.jobs.node import Node, NodeConfig
    from bridge.jobs.plugins.gossip import Gossip
    from bridge.jobs.plugins.lifeline import Lifeline
    from bridge.jobs.plugins.peer import Peer
    from bridge.jobs.plugins.pruner import Pruner
    from bridge.jobs.plugins.sonar import Sonar
    from bridge.jobs.plugins.stager import Stager
    from bridge.jobs.runtime import telemetry
    from bridge.workflows.serving import WorkflowModuleError, delegated_steps_of, serve_delegated

    try:
        settings = load_settings(config_path)
        queue_limits = parse_queues(queues) if queues else settings.queues
    except (ConfigError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc
    flows = workflows_for_node(
        settings,
        workflow_modules,
        queue=workflow_queue,
        concurrency=workflow_concurrency,
        config_key=workflow_config_key,
        repair_after=workflow_repair_after,
    )
    imported = []
    for module in [*settings.workers, *modules]:
        # Modules are named by the operator, never by a row. One that fails to import is
        # reported and skipped: the node still serves its other workers, and jobs for the
        # missing ones get Oban's "unknown worker" error path instead of a dead node.
        before = set(default_registry.names())
        try:
            imported.append(importlib.import_module(module))
        except Exception as exc:
            logging.getLogger("bridge.cli").exception("worker module %s failed to import", module)
            default_registry.import_failures[module] = f"{type(exc).__name__}: {exc}"
            # Workers a half-imported module registered before failing must not run.
            for name in set(default_registry.names()) - before:
                default_registry.unregister(name)
    try:
        delegated = delegated_steps_of(imported)
    except WorkflowModuleError as exc:
        raise click.BadParameter(str(exc), param_hint="--workers") from exc
    if not queue_limits and not flows.workflows and flows.repair_after is None and not delegated:
        raise click.BadParameter("no queues: pass --queues or set queues in [tool.bridge]")
    prefix = ctx.prefix if ctx.prefix != DEFAULT_PREFIX else (settings.prefix or DEFAULT_PREFIX)
    plugins = [Stager(), Peer(), Sonar(), Gossip()]
    rescue = rescue_after or settings.rescue_after
    if rescue:
        plugins.append(Lifeline(rescue_after=rescue))
    prune = prune_after or settings.prune_after
    if prune:
        plugins.append(Pruner(max_age=prune))
    if cron_entries:
        from bridge.jobs.plugins.cron import Cron, CronError, parse_entry

        try:
            plugins.append(Cron([parse_entry(e) for e in cron_entries], timezone=cron_timezone))
        except CronError as exc:
            raise click.BadParameter(str(exc), param_hint="--cron") from exc
    config = NodeConfig(
        url=ctx.url,
        queues=queue_limits,
        prefix=prefix,
        name=instance_name or settings.name or "Oban",
        poll_interval=poll_interval or settings.poll_interval or 1.0,
        shutdown_grace=grace or settings.grace or 15.0,
        registry=default_registry,
        plugins=plugins,
    )
    if node_name or settings.node:
        config.node = node_name or settings.node or config.node
    runner = flows.attach(config)
    host = serve_delegated(config, delegated, runner=runner)
    telemetry.attach_default_logger()
    logging.getLogger("bridge.jobs").setLevel(logging.INFO)
    logging.getLogger("bridge.node").setLevel(logging.INFO)
    click.echo(f"workers: {', '.join(default_registry.names()) or '(none registered)'}", err=True)
    try:
        asyncio.run(Node(config).run_until_signalled())
    finally:
        if runner is not None:
            runner.close()
        if host is not None:
            host.close()


@main.command("enqueue")
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

    import orjson

    from bridge.db import connect
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
        raise click.BadParameter(str(exc)) from exc
    with connect(ctx.url, autocommit=True) as conn:
        inserted = insert(conn, job, prefix=ctx.prefix)
    if as_json:
        click.echo(orjson.dumps(inserted.to_dict()).decode())
    else:
        click.echo(
            f"inserted job {inserted.id} ({inserted.worker}) in queue {inserted.queue}: "
            f"{inserted.state}"
        )


def _job_line(job: Any) -> str:
    last = job.errors[-1]["error"].splitlines()[0] if job.errors else ""
    return (
        f"{job.id:>8}  {job.state:<10} {job.queue:<12} {job.worker:<36} "
        f"{job.attempt}/{job.max_attempts:<4} {last[:60]}"
    )


@main.group("jobs")
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
    import orjson

    from bridge.db import connect
    from bridge.jobs.client import admin as ops

    try:
        flt = ops.JobFilter(states=states, queue=queue, worker=worker_name, limit=limit)
        with connect(ctx.url, autocommit=True) as conn:
            jobs = ops.list_jobs(conn, ctx.prefix, flt)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if as_json:
        click.echo(orjson.dumps([j.to_dict() for j in jobs]).decode())
        return
    click.echo(f"{'id':>8}  {'state':<10} {'queue':<12} {'worker':<36} attempt last error")
    for job in jobs:
        click.echo(_job_line(job))


@jobs_group.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def jobs_show(ctx: CliContext, job_id: int, as_json: bool) -> None:
    import orjson

    from bridge.db import connect
    from bridge.jobs.client import admin as ops

    with connect(ctx.url, autocommit=True) as conn:
        job = ops.get_job(conn, ctx.prefix, job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    data = job.to_dict()
    if as_json:
        click.echo(orjson.dumps(data).decode())
        return
    for key, value in data.items():
        if key == "errors":
            continue
        shown = orjson.dumps(value).decode() if isinstance(value, dict | list) else value
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
        from bridge.db import connect
        from bridge.jobs.client import admin as ops

        fn = {"retry": ops.retry_jobs, "cancel": ops.cancel_jobs, "delete": ops.delete_jobs}[action]
        with connect(ctx.url, autocommit=True) as conn:
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


@main.group("queues")
def queues_group() -> None:
    """Signal queues on every node, Elixir and Python (pause/resume/scale/start/stop)."""


def _signal_command(action: str) -> Any:
    @queues_group.command(action)
    @click.argument("queue")
    @click.option("--node", default=None, help="Only this node (ident <instance>.<node>).")
    @click.option(
        "--instance",
        default="Oban",
        show_default=True,
        help="Oban instance name used in a targeted ident.",
    )
    @click.option("--limit", type=int, default=None, help="For scale/start.")
    @pass_ctx
    def command(
        ctx: CliContext, queue: str, node: str | None, instance: str, limit: int | None
    ) -> None:
        from bridge.db import connect
        from bridge.jobs.client import admin as ops

        try:
            payload = ops.signal_payload(action, queue, node=node, instance=instance, limit=limit)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
        with connect(ctx.url, autocommit=True) as conn:
            ops.send_signal(conn, ctx.prefix, payload)
        click.echo(f"sent {payload}")

    command.__doc__ = f"Send a {action} signal for QUEUE ('*' for all, pause/resume only)."
    return command


for _action in ("pause", "resume", "scale", "start", "stop"):
    _signal_command(_action)


main.add_command(workflows_group)

if __name__ == "__main__":
    main()
