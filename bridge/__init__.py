"""oban-bridge: Python as an equal in an Elixir Oban/Hephaestus system, through PostgreSQL.

The names below are imported lazily so that ``import bridge.wire`` (pure codecs) and the CLI's
``--help`` stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.jobs.client.enqueue import insert, insert_all, insert_all_async, insert_async
    from bridge.jobs.client.job import Job, JobValidationError
    from bridge.jobs.client.outcome import Cancel, Discard, Error, Ok, Snooze
    from bridge.jobs.client.registry import Registry, default_registry, worker
    from bridge.jobs.node import Node, NodeConfig
    from bridge.jobs.runtime import telemetry

__version__ = "0.1.0"

# Public name -> the module that defines it. ``telemetry`` is a module of its own (handlers for
# job events), exported here so users need not know where the runtime keeps it.
_EXPORTS = {
    "Job": "bridge.jobs.client.job",
    "JobValidationError": "bridge.jobs.client.job",
    "worker": "bridge.jobs.client.registry",
    "Registry": "bridge.jobs.client.registry",
    "default_registry": "bridge.jobs.client.registry",
    "Snooze": "bridge.jobs.client.outcome",
    "Cancel": "bridge.jobs.client.outcome",
    "Discard": "bridge.jobs.client.outcome",
    "Error": "bridge.jobs.client.outcome",
    "Ok": "bridge.jobs.client.outcome",
    "insert": "bridge.jobs.client.enqueue",
    "insert_all": "bridge.jobs.client.enqueue",
    "insert_async": "bridge.jobs.client.enqueue",
    "insert_all_async": "bridge.jobs.client.enqueue",
    "Node": "bridge.jobs.node",
    "NodeConfig": "bridge.jobs.node",
    "telemetry": "bridge.jobs.runtime",
}

__all__ = [
    "Cancel",
    "Discard",
    "Error",
    "Job",
    "JobValidationError",
    "Node",
    "NodeConfig",
    "Ok",
    "Registry",
    "Snooze",
    "__version__",
    "default_registry",
    "insert",
    "insert_all",
    "insert_all_async",
    "insert_async",
    "telemetry",
    "worker",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    owner = importlib.import_module(module)
    if not hasattr(owner, name):  # a module exported by name (telemetry) loads on first use
        importlib.import_module(f"{module}.{name}")
    return getattr(owner, name)
