"""Serving Python workflows on a node: which definitions, which queue, how many at once.

The definitions come from modules the operator names (``bridge worker --workflows myapp.flows``,
``workflows = [...]`` in ``[tool.bridge]``, or :func:`load_workflows`), never from a row: a job
names a workflow, and only a workflow registered here can run.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType

from bridge.jobs.node import NodeConfig
from bridge.workflows.delegation.host import DelegatedStep, DelegationHost
from bridge.workflows.delegation.lifeline import DelegationLifeline
from bridge.workflows.model.definition import Workflow, WorkflowError, registry
from bridge.workflows.run.lifeline import WorkflowLifeline
from bridge.workflows.run.runner import DEFAULT_CONFIG_KEY, DEFAULT_QUEUE, WorkflowRunner
from bridge.workflows.run.workers import register

EXPLICIT_ATTRIBUTE = "WORKFLOWS"


class WorkflowModuleError(WorkflowError):
    """A workflows module that cannot be imported or defines no workflow."""


def workflows_of(module: ModuleType) -> list[Workflow]:
    """``module.WORKFLOWS`` if the module has one, else its module-level ``Workflow`` objects."""
    explicit = getattr(module, EXPLICIT_ATTRIBUTE, None)
    if explicit is not None:
        if isinstance(explicit, Workflow) or not isinstance(explicit, Iterable):
            raise WorkflowModuleError(
                f"{module.__name__}.{EXPLICIT_ATTRIBUTE} must be a list of Workflow objects"
            )
        found = list(explicit)
        bad = [w for w in found if not isinstance(w, Workflow)]
        if bad:
            raise WorkflowModuleError(
                f"{module.__name__}.{EXPLICIT_ATTRIBUTE} holds non-workflows: {bad[:3]!r}"
            )
    else:
        found = [v for v in vars(module).values() if isinstance(v, Workflow)]
    if not found:
        raise WorkflowModuleError(f"module {module.__name__} defines no Workflow")
    return list({id(w): w for w in found}.values())


def load_workflows(modules: Sequence[str]) -> list[Workflow]:
    """Import each named module and collect its workflows; two with one name are an error."""
    found: list[Workflow] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise WorkflowModuleError(
                f"workflows module {name} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        found.extend(workflows_of(module))
    by_name = registry(*found)
    return list(by_name.values())


@dataclass(frozen=True)
class WorkflowServing:
    """How a node serves Python workflows (``[tool.bridge]`` keys ``workflow_*``)."""

    queue: str = DEFAULT_QUEUE
    concurrency: int = 10
    config_key: str = DEFAULT_CONFIG_KEY
    repair_grace: float | None = None  # seconds; None: no workflow lifeline
    repair_interval: float | None = None  # seconds; None: repair_grace / 10, 1 to 30
    # A step job applies its own result (one job per step); False: HephaestusOban's job rows,
    # an AdvanceWorker per result. Instance and step-result rows are the same either way.
    inline_advance: bool = True


def serve_workflows(
    config: NodeConfig,
    workflows: Iterable[Workflow],
    serving: WorkflowServing | None = None,
) -> WorkflowRunner:
    """Make the node configured by ``config`` run ``workflows``.

    Registers the three HephaestusOban workers for a new runner in ``config.registry``, adds
    the runner's queue at its concurrency to ``config.queues`` and, with ``repair_grace``, the
    workflow lifeline to the plugins. Close the returned runner after the node has stopped.
    """
    serving = serving or WorkflowServing()
    if serving.concurrency < 1:
        raise WorkflowModuleError(f"workflow concurrency must be >= 1, got {serving.concurrency}")
    runner = WorkflowRunner(
        config.url,
        workflows,
        prefix=config.prefix,
        queue=serving.queue,
        config_key=serving.config_key,
        pool_size=min(serving.concurrency, 10),
        inline_advance=serving.inline_advance,
    )
    register(config.registry, runner)
    config.queues[serving.queue] = serving.concurrency
    if serving.repair_grace is not None:
        config.add_plugin(
            WorkflowLifeline(
                grace=serving.repair_grace, interval=serving.repair_interval, runners=[runner]
            )
        )
    return runner


# -- delegated steps (Elixir workflows, Python bodies) -------------------------------------------

DEFAULT_DELEGATED_CONCURRENCY = 10


def delegated_steps_of(modules: Iterable[ModuleType]) -> list[DelegatedStep]:
    """The module-level ``@delegated`` bodies of already imported worker modules.

    They are found the way ``@worker`` definitions are: in modules the operator named
    (``bridge worker --workers``), never from a row.
    """
    found: dict[str, DelegatedStep] = {}
    for module in modules:
        for value in vars(module).values():
            if not isinstance(value, DelegatedStep):
                continue
            other = found.get(value.worker)
            if other is not None and other is not value:
                raise WorkflowModuleError(f"two delegated bodies are named {value.worker}")
            found[value.worker] = value
    return list(found.values())


def serve_delegated(
    config: NodeConfig,
    steps: Sequence[DelegatedStep],
    *,
    runner: WorkflowRunner | None = None,
    concurrency: int = DEFAULT_DELEGATED_CONCURRENCY,
    sweep_interval: float = 30.0,
) -> DelegationHost | None:
    """Make the node run ``steps`` and apply the delegation failure policy for lost jobs.

    Registers a :class:`DelegationHost` for the ``steps`` not registered yet (None when none
    are left), serves each step's queue at ``concurrency`` unless ``config.queues`` already
    names it, and adds the :class:`DelegationLifeline` for the host and for ``runner``'s
    Elixir-run steps: without it, a delegated job whose node died on its last attempt would
    leave its instance waiting for ever. Close the returned host after the node has stopped.
    """
    # A body whose worker name is registered already (a host the app wired by hand) is the
    # app's: serving it twice would make the registry refuse the second one.
    steps = [item for item in steps if item.worker not in config.registry]
    host = DelegationHost(config.url, steps, prefix=config.prefix) if steps else None
    if host is not None:
        host.register(config.registry)
        for item in steps:
            config.queues.setdefault(item.queue, concurrency)
    if host is not None or runner is not None:
        runners = [runner] if runner is not None else []
        config.add_plugin(DelegationLifeline(host, interval=sweep_interval, runners=runners))
    return host
