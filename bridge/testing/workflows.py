"""Testing Python workflows: run one to completion in-process, assert on its instance row.

:func:`run_workflow` starts an instance with a :class:`~bridge.workflows.run.runner.WorkflowRunner`
and drains the runner's queue with recursion (:func:`drain_workflows`): advances, steps and
resumes run through the same claim, bodies and acks as on a node, so the instance, its step
results and its jobs end as a node leaves them. A step that waits (an async step, a timer)
leaves the instance ``waiting``; resume it and drain again (``with_scheduled=True`` makes a
timer's scheduled resume due at once).

:func:`assert_workflow` reads an instance row, Python-owned or Elixir-owned alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from bridge.db import DEFAULT_PREFIX
from bridge.jobs.client.registry import Registry
from bridge.testing.drain import drain_queue, drain_queue_async
from bridge.testing.matching import contains
from bridge.wire import jsonfmt
from bridge.workflows.model.definition import Workflow
from bridge.workflows.run.runner import DEFAULT_CONFIG_KEY, DEFAULT_QUEUE, WorkflowRunner
from bridge.workflows.run.workers import register

Source = psycopg.Connection[Any] | str


@dataclass(frozen=True)
class WorkflowState:
    """An instance row as a test reads it: ``context`` is the stored ``{"initial": ...,
    "steps": {step_key: output}}``, step sets hold step module names."""

    id: str
    workflow: str
    status: str
    current_step: str | None
    context: dict[str, Any]
    active_steps: frozenset[str]
    completed_steps: frozenset[str]
    drained: dict[str, int] = field(default_factory=dict)


def _runner(
    url: str, workflows: Iterable[Workflow], prefix: str, queue: str, config_key: str
) -> tuple[WorkflowRunner, Registry]:
    # Job by job (coalesce=False), as HephaestusOban sends them: the rows are the same.
    runner = WorkflowRunner(
        url, workflows, prefix=prefix, queue=queue, config_key=config_key, coalesce=False
    )
    registry = Registry()
    register(registry, runner)
    return runner, registry


def drain_workflows(
    url: str,
    workflows: Iterable[Workflow],
    *,
    prefix: str = DEFAULT_PREFIX,
    queue: str = DEFAULT_QUEUE,
    config_key: str = DEFAULT_CONFIG_KEY,
    with_scheduled: bool | datetime = False,
    with_safety: bool = True,
) -> dict[str, int]:
    """Run the workflow jobs waiting in ``queue`` until none is left; Oban's drain counts."""
    runner, registry = _runner(url, workflows, prefix, queue, config_key)
    try:
        return drain_queue(
            url,
            queue,
            prefix=prefix,
            with_recursion=True,
            with_scheduled=with_scheduled,
            with_safety=with_safety,
            registry=registry,
        )
    finally:
        runner.close()


async def drain_workflows_async(
    url: str,
    workflows: Iterable[Workflow],
    *,
    prefix: str = DEFAULT_PREFIX,
    queue: str = DEFAULT_QUEUE,
    config_key: str = DEFAULT_CONFIG_KEY,
    with_scheduled: bool | datetime = False,
    with_safety: bool = True,
) -> dict[str, int]:
    """The async twin of :func:`drain_workflows`."""
    runner, registry = _runner(url, workflows, prefix, queue, config_key)
    try:
        return await drain_queue_async(
            url,
            queue,
            prefix=prefix,
            with_recursion=True,
            with_scheduled=with_scheduled,
            with_safety=with_safety,
            registry=registry,
        )
    finally:
        await asyncio.to_thread(runner.close)


def start_workflow(
    url: str,
    workflow: Workflow,
    context: Mapping[str, Any],
    *,
    id: str,
    prefix: str = DEFAULT_PREFIX,
    queue: str = DEFAULT_QUEUE,
    config_key: str = DEFAULT_CONFIG_KEY,
) -> str:
    """Insert the instance and its first advance job, as ``bridge workflows start`` does."""
    runner, _ = _runner(url, [workflow], prefix, queue, config_key)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            return runner.start(conn, workflow, context, id=id)
    finally:
        runner.close()


def run_workflow(
    url: str,
    workflow: Workflow,
    context: Mapping[str, Any],
    *,
    id: str,
    prefix: str = DEFAULT_PREFIX,
    queue: str = DEFAULT_QUEUE,
    config_key: str = DEFAULT_CONFIG_KEY,
    with_scheduled: bool | datetime = False,
    with_safety: bool = True,
    workflows: Sequence[Workflow] = (),
) -> WorkflowState:
    """Start ``workflow`` with ``context`` as instance ``id`` and drain until nothing is left
    to run; the instance as it ended, with the drain's counts in ``drained``. ``workflows``
    are others its queue may hold jobs of."""
    known = [workflow, *(w for w in workflows if w is not workflow)]
    start_workflow(url, workflow, context, id=id, prefix=prefix, queue=queue, config_key=config_key)
    counts = drain_workflows(
        url,
        known,
        prefix=prefix,
        queue=queue,
        config_key=config_key,
        with_scheduled=with_scheduled,
        with_safety=with_safety,
    )
    state = read_workflow(url, id, prefix=prefix)
    return WorkflowState(**{**state.__dict__, "drained": counts})


async def run_workflow_async(
    url: str,
    workflow: Workflow,
    context: Mapping[str, Any],
    *,
    id: str,
    prefix: str = DEFAULT_PREFIX,
    queue: str = DEFAULT_QUEUE,
    config_key: str = DEFAULT_CONFIG_KEY,
    with_scheduled: bool | datetime = False,
    with_safety: bool = True,
    workflows: Sequence[Workflow] = (),
) -> WorkflowState:
    """The async twin of :func:`run_workflow`."""
    known = [workflow, *(w for w in workflows if w is not workflow)]
    await asyncio.to_thread(
        start_workflow,
        url,
        workflow,
        context,
        id=id,
        prefix=prefix,
        queue=queue,
        config_key=config_key,
    )
    counts = await drain_workflows_async(
        url,
        known,
        prefix=prefix,
        queue=queue,
        config_key=config_key,
        with_scheduled=with_scheduled,
        with_safety=with_safety,
    )
    state = await asyncio.to_thread(read_workflow, url, id, prefix=prefix)
    return WorkflowState(**{**state.__dict__, "drained": counts})


def read_workflow(
    source: Source, instance_id: str, *, prefix: str = DEFAULT_PREFIX
) -> WorkflowState:
    """The instance row ``instance_id``; an AssertionError when there is none."""
    query = sql.SQL(
        "SELECT id, workflow, status, state::text FROM {prefix}.workflow_instances WHERE id = %s"
    ).format(prefix=sql.Identifier(prefix))
    if isinstance(source, str):
        with psycopg.connect(source, autocommit=True) as conn:
            row = conn.execute(query, (instance_id,)).fetchone()
    else:
        row = source.execute(query, (instance_id,)).fetchone()
    if row is None:
        raise AssertionError(f"no workflow instance {instance_id!r} in {prefix}.workflow_instances")
    state = jsonfmt.loads(row[3]) if row[3] is not None else {}
    return WorkflowState(
        id=row[0],
        workflow=row[1],
        status=row[2],
        current_step=state.get("current_step"),
        context=state.get("context") or {},
        active_steps=frozenset(state.get("active_steps") or ()),
        completed_steps=frozenset(state.get("completed_steps") or ()),
    )


def _step_names(steps: Iterable[Any]) -> frozenset[str]:
    return frozenset(step if isinstance(step, str) else step.name for step in steps)


def assert_workflow(
    source: Source,
    instance_id: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    status: str | None = None,
    completed_steps: Iterable[Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> WorkflowState:
    """The instance, after checking what is given: ``status`` exactly, ``completed_steps``
    as a set (step objects or module names), ``context`` by containment in the stored
    ``{"initial": ..., "steps": ...}`` (``"_"`` matches any value). The AssertionError names
    every difference and shows the row."""
    found = read_workflow(source, instance_id, prefix=prefix)
    problems: list[str] = []
    if status is not None and found.status != status:
        problems.append(f"status is {found.status!r}, expected {status!r}")
    if completed_steps is not None:
        expected = _step_names(completed_steps)
        if found.completed_steps != expected:
            missing = sorted(expected - found.completed_steps)
            extra = sorted(found.completed_steps - expected)
            problems.append(
                "completed_steps differ:"
                + (f" missing {missing}" if missing else "")
                + (f" not expected {extra}" if extra else "")
            )
    if context is not None:
        problems.extend(contains(context, found.context, "context"))
    if problems:
        raise AssertionError(
            f"workflow instance {instance_id!r} ({found.workflow}):\n"
            + "".join(f"    {p}\n" for p in problems)
            + f"the row: status={found.status!r} current_step={found.current_step!r}"
            f" completed_steps={sorted(found.completed_steps)}"
            f" active_steps={sorted(found.active_steps)}\n"
            f"    context={found.context!r}"
        )
    return found
