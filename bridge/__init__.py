"""oban-bridge: Python as an equal in an Elixir Oban/Hephaestus system, through PostgreSQL.

The names below are imported lazily so that ``import bridge.wire`` (pure codecs) and the CLI's
``--help`` stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.jobs.enqueue import insert, insert_all, insert_all_async, insert_async
    from bridge.jobs.job import Job, JobValidationError
    from bridge.jobs.outcome import Cancel, Discard, Error, Ok, Snooze
    from bridge.jobs.registry import Registry, default_registry, worker
    from bridge.node import Node, NodeConfig

__version__ = "0.1.0"

_EXPORTS = {
    "Job": "bridge.jobs.job",
    "JobValidationError": "bridge.jobs.job",
    "worker": "bridge.jobs.registry",
    "Registry": "bridge.jobs.registry",
    "default_registry": "bridge.jobs.registry",
    "Snooze": "bridge.jobs.outcome",
    "Cancel": "bridge.jobs.outcome",
    "Discard": "bridge.jobs.outcome",
    "Error": "bridge.jobs.outcome",
    "Ok": "bridge.jobs.outcome",
    "insert": "bridge.jobs.enqueue",
    "insert_all": "bridge.jobs.enqueue",
    "insert_async": "bridge.jobs.enqueue",
    "insert_all_async": "bridge.jobs.enqueue",
    "Node": "bridge.node",
    "NodeConfig": "bridge.node",
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
    "worker",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
