"""``bridge worker``: run a Python node, with the jobs, plugins and workflows it serves.

Start-up runs in an order that starts nothing until everything is known to work: settings
(option > environment > file), logging, the operator's modules (``startup.import_user_module``:
one that does not import stops here), the node's configuration, the database (waited for,
``--wait-for-database``) and its schema (``startup.check_schema``). Only then does the node
claim a job. The ``--workflows`` options live here with the command they configure; the node's
workflows come from them or ``[tool.bridge]`` through ``workflows_for_node``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bridge.cli.context import CliContext, pass_ctx
from bridge.cli.output import (
    EXIT_INTERRUPTED,
    EXIT_NO_DATABASE,
    EXIT_SCHEMA,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    bad_parameter,
    fail,
)
from bridge.cli.settings import settings_epilog
from bridge.db import DEFAULT_PREFIX

if TYPE_CHECKING:
    from bridge.cli.settings import WorkerSettings
    from bridge.jobs.client.registry import Registry
    from bridge.jobs.node import NodeConfig
    from bridge.workflows.model.definition import Workflow
    from bridge.workflows.run.runner import WorkflowRunner

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("bridge.cli")

DEFAULT_WAIT_FOR_DATABASE = 60.0
# Set by the --processes supervisor in each node process it starts: that node's number.
PROCESS_ENV = "BRIDGE_WORKER_PROCESS"


def workflow_options(fn: F) -> F:
    """The workflow options of ``bridge worker`` (each also a ``[tool.bridge]`` key)."""
    options = [
        click.option(
            "--workflows",
            "workflow_modules",
            multiple=True,
            help="Module(s) whose Workflow objects (or WORKFLOWS list) this node runs.",
        ),
        click.option(
            "--workflow-queue", default=None, help="Their queue (default bridge_workflows)."
        ),
        click.option(
            "--workflow-concurrency", type=int, default=None, help="Its concurrency (10)."
        ),
        click.option(
            "--workflow-config-key", default=None, help="config_key in their job args (bridge)."
        ),
        click.option(
            "--workflow-repair-after",
            type=float,
            default=None,
            help="Run the workflow lifeline: heal, by enqueuing the advance the owner's own code "
            "would, instances stuck this many seconds (results waiting for an advance that does "
            "not exist; a step job discarded without failing its instance). See docs/"
            "workflow-operations.md.",
        ),
        click.option(
            "--workflow-repair-interval",
            type=float,
            default=None,
            metavar="SECONDS",
            help="How often the leader's workflow lifeline looks, from the moment it leads "
            "(workflow-repair-after / 10, between 1 and 30): an instance stuck by an upstream "
            "defect is healed within workflow-repair-after + this.",
        ),
        click.option(
            "--workflow-inline-advance/--no-workflow-inline-advance",
            default=None,
            help="Step jobs apply their own results in the transaction that writes them, one "
            "job per step (default); off, each result queues an AdvanceWorker job as "
            "HephaestusOban does. Instance and step-result rows are the same either way.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@dataclass
class NodeWorkflows:
    """The workflows a node serves and how, merged from the command line and the settings."""

    workflows: list[Workflow] = field(default_factory=list)
    queue: str | None = None
    concurrency: int | None = None
    config_key: str | None = None
    repair_after: float | None = None
    repair_interval: float | None = None
    inline_advance: bool = True

    @property
    def needs_workflow_tables(self) -> bool:
        return bool(self.workflows) or self.repair_after is not None

    def attach(self, config: NodeConfig) -> WorkflowRunner | None:
        from bridge.workflows.run.repair import DEFAULT_GRACE
        from bridge.workflows.run.runner import DEFAULT_CONFIG_KEY, DEFAULT_QUEUE
        from bridge.workflows.serving import WorkflowServing, serve_workflows

        serving = WorkflowServing(
            queue=self.queue or DEFAULT_QUEUE,
            concurrency=self.concurrency or 10,
            config_key=self.config_key or DEFAULT_CONFIG_KEY,
            repair_grace=self.repair_after,
            repair_interval=self.repair_interval,
            inline_advance=self.inline_advance,
        )
        if self.workflows:
            return serve_workflows(config, self.workflows, serving)
        if self.repair_after is not None:  # heal Elixir-owned instances only
            from bridge.workflows.run.lifeline import WorkflowLifeline

            config.add_plugin(
                WorkflowLifeline(
                    grace=self.repair_after or DEFAULT_GRACE, interval=self.repair_interval
                )
            )
        return None


def workflows_for_node(
    settings: WorkerSettings,
    modules: tuple[str, ...],
    *,
    queue: str | None,
    concurrency: int | None,
    config_key: str | None,
    repair_after: float | None,
    repair_interval: float | None = None,
    app_dirs: Sequence[str | Path] = (),
) -> NodeWorkflows:
    """Command-line values win over the settings (``modules``, when given, replace theirs).

    A named module that does not import stops start-up (``startup.import_user_module``); one
    that imports but defines no workflow is a usage error naming it."""
    from bridge.cli.startup import import_user_modules
    from bridge.workflows.model.definition import WorkflowError
    from bridge.workflows.serving import load_workflows

    names = list(modules) or settings.workflows
    concurrency = concurrency or settings.workflow_concurrency
    if concurrency is not None and concurrency < 1:
        raise bad_parameter("must be >= 1", "--workflow-concurrency")
    repair_after = repair_after or settings.workflow_repair_after
    repair_interval = repair_interval or settings.workflow_repair_interval
    if repair_interval and not repair_after:
        raise bad_parameter(
            "the workflow lifeline is off: give --workflow-repair-after too, or drop "
            "--workflow-repair-interval",
            "--workflow-repair-interval",
        )
    import_user_modules(names, app_dirs, kind="workflows")
    try:
        flows = load_workflows(names) if names else []
    except WorkflowError as exc:
        raise bad_parameter(str(exc), "--workflows") from exc
    return NodeWorkflows(
        workflows=flows,
        queue=queue or settings.workflow_queue,
        concurrency=concurrency,
        config_key=config_key or settings.workflow_config_key,
        repair_after=repair_after,
        repair_interval=repair_interval,
        inline_advance=settings.workflow_inline_advance is not False,
    )


def import_worker_modules(
    names: Sequence[str], app_dirs: Sequence[str | Path], registry: Registry
) -> list[ModuleType]:
    """Import the operator's worker modules; the first that fails stops start-up.

    A module that imports but defines neither a ``@worker`` nor a ``@delegated`` step is only a
    warning: it may exist for its side effects (registering workers defined elsewhere)."""
    from bridge.cli.startup import import_user_module
    from bridge.workflows.serving import WorkflowModuleError, delegated_steps_of

    imported = []
    for name in names:
        before = set(registry.names())
        module = import_user_module(name, app_dirs, kind="worker")
        imported.append(module)
        added = set(registry.names()) - before
        own = any(
            getattr(getattr(registry.resolve(n), "target", None), "__module__", None) == name
            for n in registry.names()
        )
        try:
            delegated = bool(delegated_steps_of([module]))
        except WorkflowModuleError:
            delegated = True  # reported where every module's steps are collected
        if not (added or own or delegated):
            log.warning(
                "worker module %r defines no @worker or @delegated step: nothing to run from it",
                name,
            )
    return imported


def _root_context() -> click.Context:
    return click.get_current_context().find_root()


@click.command("worker", epilog=settings_epilog())
@click.option("--queues", "-q", default=None, help='Queues and limits, e.g. "badges:10,default:5".')
@click.option(
    "--workers",
    "-w",
    "modules",
    multiple=True,
    help="Python module(s) defining @worker classes/functions or @delegated steps "
    "(repeatable, or comma-separated).",
)
@click.option(
    "--app-dir",
    "app_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Directory to import those modules from, before the current one (repeatable).",
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
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Run this many nodes, each a process of its own named NODE-1, NODE-2, ... (1): "
    "CPU-bound sync workers then use that many cores. A supervisor replaces a node process "
    "that dies, failing the jobs it was running with Oban's crash entry, and forwards "
    "SIGTERM/SIGINT so each drains within --grace.",
)
@click.option(
    "--process-pool",
    type=click.IntRange(min=1),
    default=None,
    help='Child processes per node for @worker(executor="process") bodies (one per core): '
    "started when first needed, each runs one job at a time and is killed on timeout or pkill.",
)
@click.option(
    "--process-max-jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Replace such a child after it has run this many jobs, which bounds the memory a "
    "body that leaks can take (off).",
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
    help="Run the lifeline: rescue jobs executing longer than this many seconds. A job left "
    "executing by a dead node is available again within rescue-after + rescue-interval "
    "seconds, plus up to 30 s (the leader's lease) when the leader itself was killed.",
)
@click.option(
    "--rescue-interval",
    type=float,
    default=None,
    metavar="SECONDS",
    help="How often the leader's lifeline looks, from the moment it leads "
    "(rescue-after / 10, between 1 and 60).",
)
@click.option(
    "--prune-after",
    type=float,
    default=None,
    help="Run the pruner: delete finished jobs older than this many seconds.",
)
@click.option(
    "--gossip/--no-gossip",
    default=None,
    help="Send each queue's check on oban_gossip every 0.75 s, as an Elixir node with Oban "
    "Web's oban_met does, so Oban Web lists this node's queues (off: OSS Oban 2.23 sends "
    "nothing there).",
)
@click.option(
    "--cron",
    "cron_entries",
    multiple=True,
    help='Cron entry "<expression> <worker> [<json options>]" (repeatable).',
)
@click.option("--cron-timezone", default=None, help="Time zone of the cron entries (Etc/UTC).")
@workflow_options
@click.option(
    "--wait-for-database",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Retry an unreachable database at start for this long, then exit 4 (60; 0: no retry).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default=None,
    help="text: lines for people; json: one JSON object per line, job events with Oban's "
    "logger keys (text).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default=None,
    help="Least severe record logged (info).",
)
@pass_ctx
def worker_command(
    ctx: CliContext,
    queues: str | None,
    modules: tuple[str, ...],
    app_dirs: tuple[str, ...],
    config_path: Path | None,
    node_name: str | None,
    processes: int | None,
    process_pool: int | None,
    process_max_jobs: int | None,
    instance_name: str | None,
    grace: float | None,
    poll_interval: float | None,
    rescue_after: float | None,
    rescue_interval: float | None,
    prune_after: float | None,
    gossip: bool | None,
    cron_entries: tuple[str, ...],
    cron_timezone: str | None,
    workflow_modules: tuple[str, ...],
    workflow_queue: str | None,
    workflow_concurrency: int | None,
    workflow_config_key: str | None,
    workflow_repair_after: float | None,
    workflow_repair_interval: float | None,
    workflow_inline_advance: bool | None,
    wait_for_database: float | None,
    log_format: str | None,
    log_level: str | None,
) -> None:
    """Run a Python node serving QUEUES until SIGTERM/SIGINT.

    Modules named by --workers/--workflows are imported from --app-dir and the current
    directory first, as `python -m` would; one that cannot be imported stops start-up (exit 2).
    Before claiming any job the node waits for the database (exit 4 when it gives up) and checks
    the schema (exit 5, with the differences, when it is not what the node needs)."""
    from bridge.cli.logs import configure_logging
    from bridge.cli.settings import ConfigError, parse_queues, resolve_settings

    if queues is not None:
        try:
            parse_queues(queues)
        except ValueError as exc:
            raise bad_parameter(str(exc), "--queues") from exc
    options: dict[str, Any] = {
        "queues": parse_queues(queues) if queues is not None else None,
        "workers": modules,
        "app_dir": app_dirs,
        "node": node_name,
        "processes": processes,
        "process_pool": process_pool,
        "process_max_jobs": process_max_jobs,
        "name": instance_name,
        "grace": grace,
        "poll_interval": poll_interval,
        "rescue_after": rescue_after,
        "rescue_interval": rescue_interval,
        "prune_after": prune_after,
        "gossip": gossip,
        "cron": cron_entries,
        "cron_timezone": cron_timezone,
        "workflows": workflow_modules,
        "workflow_queue": workflow_queue,
        "workflow_concurrency": workflow_concurrency,
        "workflow_config_key": workflow_config_key,
        "workflow_repair_after": workflow_repair_after,
        "workflow_repair_interval": workflow_repair_interval,
        "workflow_inline_advance": workflow_inline_advance,
        "wait_for_database": wait_for_database,
        "log_format": log_format.lower() if log_format else None,
        "log_level": log_level.lower() if log_level else None,
    }
    try:
        settings = resolve_settings(config_path, options)
    except ConfigError as exc:
        message = str(exc)
        if message.startswith("environment variable"):
            raise fail(message, EXIT_USAGE) from exc
        raise bad_parameter(message) from exc
    root = _root_context()
    configure_logging(
        settings.log_format or "text", settings.log_level, verbose=root.params.get("verbose", 0)
    )
    if root.get_parameter_source("prefix") == click.core.ParameterSource.DEFAULT:
        prefix = settings.prefix or DEFAULT_PREFIX
    else:
        prefix = ctx.prefix
    child = os.environ.get(PROCESS_ENV)
    if child:
        # One of the supervisor's node processes: an ordinary node under a numbered name.
        settings.node = f"{settings.node or socket.gethostname()}-{child}"
    elif (settings.processes or 1) > 1:
        _supervise(ctx, settings, prefix)
        return
    try:
        _run(ctx, settings, prefix)
    except KeyboardInterrupt:
        raise fail("interrupted before the node started", EXIT_INTERRUPTED) from None


def _supervise(ctx: CliContext, settings: WorkerSettings, prefix: str) -> None:
    """Run ``settings.processes`` nodes, each this same command in a process of its own.

    Each child runs the whole start-up itself (modules, database, schema); the first that fails
    there ends them all with its exit status, having printed why. A child that dies later is
    replaced, after the jobs it was running are failed with Oban's crash entry."""
    import sys

    from bridge.jobs.runtime.crashed import crash_text, fail_crashed_jobs
    from bridge.jobs.runtime.supervisor import Supervisor

    base = settings.node or socket.gethostname()
    url = ctx.url

    def command(index: int) -> list[str]:
        del index
        return [sys.executable, "-m", "bridge.cli", *sys.argv[1:]]

    def env(index: int) -> dict[str, str]:
        return {**os.environ, PROCESS_ENV: str(index)}

    def on_death(index: int, returncode: int, started_at: datetime) -> None:
        failed = fail_crashed_jobs(url, prefix, f"{base}-{index}", started_at, returncode)
        if failed:
            log.error(
                "supervisor: %d job(s) node %s-%d was running failed with %r: %s",
                len(failed),
                base,
                index,
                crash_text(returncode),
                ", ".join(str(ack.id) for ack in failed),
            )

    supervisor = Supervisor(
        settings.processes or 1,
        command,
        env,
        grace=settings.grace or 15.0,
        on_death=on_death,
        fatal=(EXIT_USAGE, EXIT_NO_DATABASE, EXIT_UNREACHABLE, EXIT_SCHEMA),
    )
    log.info(
        "supervisor: running %d nodes %s-1..%s-%d",
        settings.processes,
        base,
        base,
        settings.processes,
    )
    status = supervisor.run()
    if status:
        raise SystemExit(status)  # the child said why, in one line


def _run(ctx: CliContext, settings: WorkerSettings, prefix: str) -> None:
    """Check everything, then run the node until it is signalled."""
    import asyncio

    from bridge.cli.startup import wait_until_ready
    from bridge.jobs.client.registry import default_registry
    from bridge.jobs.node import Node, NodeConfig
    from bridge.jobs.runtime import telemetry
    from bridge.jobs.runtime.supervisor import report_ready
    from bridge.workflows.serving import WorkflowModuleError, delegated_steps_of, serve_delegated

    imported = import_worker_modules(settings.workers, settings.app_dir, default_registry)
    flows = workflows_for_node(
        settings,
        (),
        queue=None,
        concurrency=None,
        config_key=None,
        repair_after=None,
        app_dirs=settings.app_dir,
    )
    try:
        delegated = delegated_steps_of(imported)
    except WorkflowModuleError as exc:
        raise bad_parameter(str(exc), "--workers") from exc
    queue_limits = dict(settings.queues)
    if not queue_limits and not flows.needs_workflow_tables and not delegated:
        raise bad_parameter(
            "no queues: pass --queues, set BRIDGE_QUEUES or queues in [tool.bridge]"
        )
    config = NodeConfig(
        url=ctx.url,
        queues=queue_limits,
        prefix=prefix,
        name=settings.name or "Oban",
        poll_interval=settings.poll_interval or 1.0,
        shutdown_grace=settings.grace or 15.0,
        registry=default_registry,
        plugins=_plugins(settings),
        gossip=bool(settings.gossip),
        process_pool_size=settings.process_pool,
        process_max_jobs=settings.process_max_jobs,
    )
    if settings.node:
        config.node = settings.node
    wait = settings.wait_for_database
    wait_until_ready(
        config.url,
        DEFAULT_WAIT_FOR_DATABASE if wait is None else wait,
        prefix,
        workflows=flows.needs_workflow_tables or bool(delegated),
    )
    runner = flows.attach(config)
    host = serve_delegated(config, delegated, runner=runner)
    telemetry.attach_default_logger()
    names = default_registry.names()
    if names:
        log.info("workers: %s", ", ".join(names))
    else:
        log.warning(
            "workers: (none registered): every job in %s will fail with 'unknown worker'; "
            "pass --workers",
            ", ".join(config.queues) or "its queues",
        )
    report_ready()  # start-up is over: from now on an exit is a death, not a refusal
    try:
        asyncio.run(Node(config).run_until_signalled())
    finally:
        if runner is not None:
            runner.close()
        if host is not None:
            host.close()


def _plugins(settings: WorkerSettings) -> list[Any]:
    """Oban's always-on plugins, plus the lifeline, pruner and cron when configured (the node
    adds gossip when configured)."""
    from bridge.jobs.node import default_plugins
    from bridge.jobs.plugins.lifeline import Lifeline
    from bridge.jobs.plugins.pruner import Pruner

    plugins: list[Any] = default_plugins()
    if settings.rescue_after:
        plugins.append(
            Lifeline(rescue_after=settings.rescue_after, interval=settings.rescue_interval)
        )
    elif settings.rescue_interval:
        raise bad_parameter(
            "the lifeline is off: give --rescue-after too, or drop --rescue-interval",
            "--rescue-interval",
        )
    if settings.prune_after:
        plugins.append(Pruner(max_age=settings.prune_after))
    if settings.cron:
        from bridge.jobs.plugins.cron import Cron, CronError, parse_entry

        try:
            entries = [parse_entry(entry) for entry in settings.cron]
            plugins.append(Cron(entries, timezone=settings.cron_timezone or "Etc/UTC"))
        except CronError as exc:
            raise bad_parameter(str(exc), "--cron") from exc
    return plugins
