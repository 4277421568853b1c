"""Testing helpers for apps built on bridge: Oban.Testing's helpers, in Python.

- :func:`perform_job` runs a worker on a realistic job, without a database.
- :func:`all_enqueued`, :func:`assert_enqueued`, :func:`refute_enqueued` look at ``oban_jobs``.
- :func:`drain_queue` runs a queue's jobs in-process through a node's claim and ack.
- :func:`mode` (``"inline"``, ``"manual"``) decides what an insert does inside a block.
- :func:`run_workflow`, :func:`drain_workflows`, :func:`assert_workflow` for Python workflows.
- :func:`wait_for_job`, :func:`wait_for_instance` wait for the other language's work to land;
  :class:`ElixirApp` is the user's Elixir app the ``bridge_elixir_app`` fixture runs.

Each has an ``_async`` twin for tests on an event loop. The pytest plugin
(:mod:`bridge.testing.plugin`, registered as ``pytest11``) gives a database, a clean schema per
test and an in-process node as fixtures. Names load lazily, so the plugin's import stays cheap.
See docs/testing.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.testing.database import BridgeDatabase
    from bridge.testing.drain import drain_queue, drain_queue_async
    from bridge.testing.elixir import ElixirApp, ElixirAppConfig, ElixirAppError
    from bridge.testing.enqueued import (
        all_enqueued,
        all_enqueued_async,
        assert_enqueued,
        assert_enqueued_async,
        refute_enqueued,
        refute_enqueued_async,
    )
    from bridge.testing.matching import ANY
    from bridge.testing.modes import Recorded, mode
    from bridge.testing.node import NodeHandle
    from bridge.testing.perform import build_job, perform_job, perform_job_async
    from bridge.testing.running import Outcome
    from bridge.testing.waiting import (
        wait_for_instance,
        wait_for_instance_async,
        wait_for_job,
        wait_for_job_async,
    )
    from bridge.testing.workflows import (
        WorkflowState,
        assert_workflow,
        drain_workflows,
        drain_workflows_async,
        read_workflow,
        run_workflow,
        run_workflow_async,
        start_workflow,
    )

_EXPORTS = {
    "ANY": "bridge.testing.matching",
    "BridgeDatabase": "bridge.testing.database",
    "ElixirApp": "bridge.testing.elixir",
    "ElixirAppConfig": "bridge.testing.elixir",
    "ElixirAppError": "bridge.testing.elixir",
    "NodeHandle": "bridge.testing.node",
    "Outcome": "bridge.testing.running",
    "Recorded": "bridge.testing.modes",
    "WorkflowState": "bridge.testing.workflows",
    "all_enqueued": "bridge.testing.enqueued",
    "all_enqueued_async": "bridge.testing.enqueued",
    "assert_enqueued": "bridge.testing.enqueued",
    "assert_enqueued_async": "bridge.testing.enqueued",
    "assert_workflow": "bridge.testing.workflows",
    "build_job": "bridge.testing.perform",
    "drain_queue": "bridge.testing.drain",
    "drain_queue_async": "bridge.testing.drain",
    "drain_workflows": "bridge.testing.workflows",
    "drain_workflows_async": "bridge.testing.workflows",
    "mode": "bridge.testing.modes",
    "perform_job": "bridge.testing.perform",
    "perform_job_async": "bridge.testing.perform",
    "read_workflow": "bridge.testing.workflows",
    "refute_enqueued": "bridge.testing.enqueued",
    "refute_enqueued_async": "bridge.testing.enqueued",
    "run_workflow": "bridge.testing.workflows",
    "run_workflow_async": "bridge.testing.workflows",
    "start_workflow": "bridge.testing.workflows",
    "wait_for_instance": "bridge.testing.waiting",
    "wait_for_instance_async": "bridge.testing.waiting",
    "wait_for_job": "bridge.testing.waiting",
    "wait_for_job_async": "bridge.testing.waiting",
}

__all__ = [
    "ANY",
    "BridgeDatabase",
    "ElixirApp",
    "ElixirAppConfig",
    "ElixirAppError",
    "NodeHandle",
    "Outcome",
    "Recorded",
    "WorkflowState",
    "all_enqueued",
    "all_enqueued_async",
    "assert_enqueued",
    "assert_enqueued_async",
    "assert_workflow",
    "build_job",
    "drain_queue",
    "drain_queue_async",
    "drain_workflows",
    "drain_workflows_async",
    "mode",
    "perform_job",
    "perform_job_async",
    "read_workflow",
    "refute_enqueued",
    "refute_enqueued_async",
    "run_workflow",
    "run_workflow_async",
    "start_workflow",
    "wait_for_instance",
    "wait_for_instance_async",
    "wait_for_job",
    "wait_for_job_async",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
