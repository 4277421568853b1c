"""``bridge worker``: run a Python node, with the jobs, plugins and workflows it serves.

The ``--workflows`` options live here with the command they configure; the node's workflows
are merged from them and ``[tool.bridge]`` by ``workflows_for_node``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bridge.cli.context import CliContext, pass_ctx
from bridge.cli.output import bad_parameter
from bridge.db import DEFAULT_PREFIX

if TYPE_CHECKING:
    from bridge.cli.settings import WorkerSettings
    from bridge.jobs.node import NodeConfig
    from bridge.workflows.model.definition import Workflow
    from bridge.workflows.run.runner import WorkflowRunner

F = TypeVar("F", bound=Callable[..., Any])


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
            help="Run the workflow lifeline: heal instances whose results have waited this many "
            "seconds for an advance job that does not exist.",
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

    def attach(self, config: NodeConfig) -> WorkflowRunner | None:
        from bridge.workflows.run.repair import DEFAULT_GRACE
        from bridge.workflows.run.runner import DEFAULT_CONFIG_KEY, DEFAULT_QUEUE
        from bridge.workflows.serving import WorkflowServing, serve_workflows

        serving = WorkflowServing(
            queue=self.queue or DEFAULT_QUEUE,
            concurrency=self.concurrency or 10,
            config_key=self.config_key or DEFAULT_CONFIG_KEY,
            repair_grace=self.repair_after,
        )
        if self.workflows:
            return serve_workflows(config, self.workflows, serving)
        if self.repair_after is not None:  # heal Elixir-owned instances only
            from bridge.workflows.run.lifeline import WorkflowLifeline

            if config.plugins is None:
                config.plugins = []
            config.plugins.append(WorkflowLifeline(grace=self.repair_after or DEFAULT_GRACE))
        return None


def workflows_for_node(
    settings: WorkerSettings,
    modules: tuple[str, ...],
    *,
    queue: str | None,
    concurrency: int | None,
    config_key: str | None,
    repair_after: float | None,
) -> NodeWorkflows:
    """Command-line values win over ``[tool.bridge]``; modules from both are loaded."""
    from bridge.workflows.model.definition import WorkflowError
    from bridge.workflows.serving import load_workflows

    names = [*settings.workflows, *modules]
    concurrency = concurrency or settings.workflow_concurrency
    if concurrency is not None and concurrency < 1:
        raise bad_parameter("must be >= 1", "--workflow-concurrency")
    try:
        flows = load_workflows(names) if names else []
    except WorkflowError as exc:
        raise bad_parameter(str(exc), "--workflows") from exc
    return NodeWorkflows(
        workflows=flows,
        queue=queue or settings.workflow_queue,
        concurrency=concurrency,
        config_key=config_key or settings.workflow_config_key,
        repair_after=repair_after or settings.workflow_repair_after,
    )


@click.command("worker")
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
        raise bad_parameter(str(exc)) from exc
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
        raise bad_parameter(str(exc), "--workers") from exc
    if not queue_limits and not flows.workflows and flows.repair_after is None and not delegated:
        raise bad_parameter("no queues: pass --queues or set queues in [tool.bridge]")
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
            raise bad_parameter(str(exc), "--cron") from exc
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
