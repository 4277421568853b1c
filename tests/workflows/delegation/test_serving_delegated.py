"""A node serves the ``@delegated`` bodies of the worker modules it is given: ``bridge worker
--workers`` finds them as it finds ``@worker`` definitions, serves their queue and runs the
delegation lifeline, so an Elixir app's delegated step completes with no wiring code."""

from __future__ import annotations

import asyncio
import signal
import types
from typing import Any

import psycopg
import pytest

from bridge.jobs.client.registry import Registry
from bridge.jobs.node import NodeConfig
from bridge.workflows import StepOk, delegated
from bridge.workflows.delegation.host import DelegatedCall, DelegationHost
from bridge.workflows.delegation.lifeline import DelegationLifeline
from bridge.workflows.run.runner import WorkflowRunner
from bridge.workflows.serving import WorkflowModuleError, delegated_steps_of, serve_delegated
from tests.jobs.support import wait_for_state
from tests.support.worker import spawn_worker
from tests.workflows.delegation.test_delegation import (
    delegated_job,
    resolve,
    results,
    waiting_instance,
)
from tests.workflows.run.test_runner import LINEAR


def test_serve_delegated_registers_serves_the_queue_and_sweeps() -> None:
    module = types.ModuleType("myapp.steps")
    module.resolve = resolve  # type: ignore[attr-defined]
    module.alias = resolve  # type: ignore[attr-defined]  # one body under two names: once
    steps = delegated_steps_of([module])
    assert steps == [resolve]

    config = NodeConfig(url="postgresql://unused", queues={}, registry=Registry(), plugins=[])
    runner = WorkflowRunner(config.url, [LINEAR])
    host = serve_delegated(config, steps, runner=runner)
    assert host is not None and config.registry.names() == [resolve.worker]
    assert config.queues == {"python": 10}
    (lifeline,) = config.plugins or []
    assert isinstance(lifeline, DelegationLifeline)
    assert (lifeline.host, lifeline.runners) == (host, [runner])

    busy = NodeConfig(url="postgresql://unused", queues={"python": 3}, registry=Registry())
    serve_delegated(busy, steps)
    assert busy.queues == {"python": 3}  # the operator's limit is kept
    # A config without plugins keeps the defaults beside the lifeline: no Peer meant a node
    # that counted itself leader whatever other nodes did.
    kinds = [type(plugin).__name__ for plugin in busy.plugins or []]
    assert kinds == ["Stager", "Peer", "Sonar", "DelegationLifeline"]
    assert serve_delegated(NodeConfig(url="x", queues={}, registry=Registry()), []) is None

    wired = NodeConfig(url="postgresql://unused", queues={}, registry=Registry())
    own = DelegationHost(wired.url, [resolve])
    own.register(wired.registry)  # the app registered the body by hand: that host keeps it
    assert serve_delegated(wired, steps) is None
    assert wired.registry.resolve(resolve.worker).target is own  # type: ignore[union-attr]


def test_two_bodies_with_one_worker_name_are_refused() -> None:
    @delegated(worker=resolve.worker)
    def impostor(call: DelegatedCall) -> StepOk:
        return StepOk("resumed", {})

    first, second = types.ModuleType("a"), types.ModuleType("b")
    first.resolve = resolve  # type: ignore[attr-defined]
    second.impostor = impostor  # type: ignore[attr-defined]
    with pytest.raises(WorkflowModuleError, match="two delegated bodies"):
        delegated_steps_of([first, second])


async def test_bridge_worker_runs_the_delegated_bodies_of_its_worker_modules(
    database_url: str, oban_prefix: str, conn: psycopg.Connection[Any]
) -> None:
    waiting_instance(conn, oban_prefix, "cli::ok")
    job_id = delegated_job(conn, oban_prefix, "cli::ok")
    proc = spawn_worker(
        database_url, oban_prefix, "--workers", "tests.workflows.delegation.test_delegation",
        "--poll-interval", "0.2", "--grace", "2",
    )  # fmt: skip
    try:
        row = await wait_for_state(
            database_url, oban_prefix, job_id, {"completed", "discarded"}, timeout=30
        )
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert row["state"] == "completed", row["errors"]
    assert results(conn, oban_prefix, "cli::ok")[-1][1:3] == ("resumed", {"external_ref": "py-7"})
    assert resolve.worker in err.decode()  # the startup line names the served workers
