"""The workflow engine: ``Hephaestus.Core.Engine`` function by function, plus the pure half of
HephaestusOban's AdvanceWorker (applying step results) so that a Python runner advances an
instance exactly as an Elixir node would.

Every function takes the :class:`Workflow` (Elixir gets it from ``instance.workflow``) and
returns a new :class:`Instance`; nothing here does I/O. Departures from Hephaestus, each a
refusal where Elixir would silently do something harmful, are listed in ``docs/workflows.md``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.workflows.model.definition import (
    ASYNC_EVENT,
    Step,
    StepAsync,
    StepError,
    StepOk,
    StepOutcome,
    Workflow,
    WorkflowError,
    check_atom_name,
    json_copy,
    json_object,
)
from bridge.workflows.model.instance import Context, Instance


class EngineError(WorkflowError):
    """Base class of the engine's errors."""


class WorkflowMismatchError(EngineError):
    """An instance handed to the engine together with another workflow's definition."""


class StepOutcomeError(EngineError):
    """A step body returned something that is not a valid outcome for that step."""


class StepNotExecutableError(EngineError):
    """The step has no Python body (it is declared only, e.g. run by Elixir)."""


class InvalidStepResultError(EngineError):
    """A step result (a ``hephaestus_step_results`` row) that cannot be applied."""


@dataclass(frozen=True)
class StepResult:
    """What ``hephaestus_step_results`` records: a step's event and updates.

    ``event`` is ``"__async__"`` when the step returned ``{:async}``; a resume records the
    resume event with empty ``context_updates``.
    """

    step_ref: str
    event: str
    context_updates: Mapping[str, Any] = field(default_factory=dict)
    metadata_updates: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StepCall:
    """Everything ``execute/3`` receives: copies, so a step body cannot alter the instance."""

    step: Step
    instance: Instance
    config: Mapping[str, Any] | None
    context: Context


def _check(workflow: Workflow, instance: Instance) -> None:
    if instance.workflow != workflow.name:
        raise WorkflowMismatchError(
            f"instance {instance.id!r} belongs to {instance.workflow}, not {workflow.name}"
        )


def new_instance(workflow: Workflow, initial: Mapping[str, Any], *, id: str) -> Instance:
    """``Instance.new(workflow, version, context, id)``: a pending instance."""
    if not isinstance(id, str) or not id:
        raise EngineError(f"an instance id must be a non-empty string, got {id!r}")
    context = Context(json_object(initial, "initial context", EngineError), {})
    return Instance(
        id=id, workflow=workflow.name, workflow_version=workflow.version, context=context
    )


def advance(workflow: Workflow, instance: Instance) -> Instance:
    """Start a pending instance; leave a waiting or busy one; otherwise check completion."""
    _check(workflow, instance)
    instance = _ensure_started(workflow, instance)
    if instance.status == "waiting":
        return instance
    if instance.active_steps:
        return instance
    return check_completion(instance)


def _ensure_started(workflow: Workflow, instance: Instance) -> Instance:
    if instance.status != "pending":
        return instance
    module = workflow.start_step
    return replace(
        instance,
        status="running",
        current_step=module,
        active_steps=instance.active_steps | {module},
        step_configs=_put_config(instance.step_configs, module, workflow.start_config),
    )


def complete_step(
    workflow: Workflow,
    instance: Instance,
    step_name: str,
    event: str,
    context_updates: Mapping[str, Any],
    metadata_updates: Mapping[str, Any] | None = None,
) -> Instance:
    """Move the step from active to completed, store its updates, drop its config.

    ``event`` is unused, as in Hephaestus; it is part of the signature for symmetry.
    """
    del event
    _check(workflow, instance)
    key = workflow.step(step_name).context_key
    updates = json_object(context_updates, f"context updates of {step_name}", EngineError)
    metadata = json_object(metadata_updates or {}, f"metadata of {step_name}", EngineError)
    configs = {name: cfg for name, cfg in instance.step_configs.items() if name != step_name}
    return replace(
        instance,
        active_steps=instance.active_steps - {step_name},
        completed_steps=instance.completed_steps | {step_name},
        context=instance.context.put_step_result(key, updates),
        runtime_metadata={**instance.runtime_metadata, **metadata},
        step_configs=configs,
    )


def resume_step(workflow: Workflow, instance: Instance, step_name: str, event: str) -> Instance:
    """Complete a waiting instance's step with ``event`` (the local runner's resume path)."""
    _check(workflow, instance)
    if instance.status != "waiting":
        return instance
    instance = complete_step(workflow, instance, step_name, event, {})
    instance = activate_transitions(workflow, instance, step_name, event)
    return replace(instance, status="running", current_step=None)


def check_completion(instance: Instance) -> Instance:
    """No active steps and not waiting: completed, ``current_step`` cleared."""
    if not instance.active_steps and instance.status != "waiting":
        return replace(instance, status="completed", current_step=None)
    return instance


def activate_transitions(
    workflow: Workflow, instance: Instance, from_step: str, event: str
) -> Instance:
    """Activate ``transit(from, event, context)``'s targets whose predecessors all completed."""
    _check(workflow, instance)
    targets = workflow.transit(from_step, event, instance.context)
    if targets is None:
        return instance
    for name, config in targets:
        instance = _maybe_activate(workflow, instance, name, config)
    return instance


def _maybe_activate(
    workflow: Workflow, instance: Instance, name: str, config: Mapping[str, Any] | None
) -> Instance:
    predecessors = workflow.predecessors.get(name, frozenset())
    if not predecessors <= instance.completed_steps:
        return instance
    return replace(
        instance,
        active_steps=instance.active_steps | {name},
        step_configs=_put_config(instance.step_configs, name, config),
    )


def _put_config(
    configs: Mapping[str, Mapping[str, Any]], name: str, config: Mapping[str, Any] | None
) -> Mapping[str, Mapping[str, Any]]:
    if config is None:
        return configs
    return {**configs, name: config}


def fail_workflow(instance: Instance) -> Instance:
    """What AdvanceWorker does once a step job is discarded: failed, no current step."""
    return replace(instance, status="failed", current_step=None)


def apply_step_results(
    workflow: Workflow, instance: Instance, results: Sequence[StepResult]
) -> Instance:
    """AdvanceWorker's ``apply_step_results``: fold results in order, then check completion.

    ``__async__`` makes the instance wait on that step; any other result first wakes a waiting
    instance (clearing ``current_step``), then completes the step and activates its targets.
    Unlike Elixir, a result naming an event its step does not declare is refused: Elixir would
    complete the step, activate nothing and could mark the workflow completed.
    """
    _check(workflow, instance)
    if not results:
        return instance
    acc = instance
    for result in results:
        step_def = workflow.step(result.step_ref)
        if result.event == ASYNC_EVENT:
            acc = replace(acc, status="waiting", current_step=step_def.name)
            continue
        check_atom_name(result.event, f"event of {step_def.name}")
        if result.event not in step_def.events:
            raise InvalidStepResultError(
                f"{step_def.name} does not declare the event {result.event!r}"
            )
        if acc.status == "waiting":
            acc = replace(acc, status="running", current_step=None)
        try:
            acc = complete_step(
                workflow,
                acc,
                step_def.name,
                result.event,
                result.context_updates,
                result.metadata_updates or {},
            )
        except EngineError as exc:
            raise InvalidStepResultError(str(exc)) from exc
        acc = activate_transitions(workflow, acc, step_def.name, result.event)
    return check_completion(acc)


# -- executing a step ------------------------------------------------------------------------


def prepare_step(workflow: Workflow, instance: Instance, step_name: str) -> StepCall:
    """The arguments of ``execute/3`` for a step (its config from ``step_configs``)."""
    _check(workflow, instance)
    step_def = workflow.step(step_name)
    if step_def.run is None:
        raise StepNotExecutableError(f"{step_name} has no Python body in {workflow.name}")
    raw_config = instance.step_configs.get(step_name)
    config = None if raw_config is None else json_copy(raw_config, "step config", EngineError)
    context = Context(
        json_copy(instance.context.initial, "context.initial", EngineError),
        json_copy(instance.context.steps, "context.steps", EngineError),
    )
    return StepCall(step_def, instance, config, context)


def check_outcome(step_def: Step, value: object) -> StepOutcome:
    """Validate what a step body returned; context/metadata updates become JSON copies."""
    if isinstance(value, StepOk):
        if not isinstance(value.event, str) or value.event not in step_def.events:
            raise StepOutcomeError(
                f"{step_def.name} returned event {value.event!r}, which it does not declare "
                f"(declared: {list(step_def.events)})"
            )
        where = f"{step_def.name} context updates"
        updates = json_object(value.context_updates, where, StepOutcomeError)
        where = f"{step_def.name} metadata updates"
        metadata = json_object(value.metadata_updates, where, StepOutcomeError)
        return StepOk(value.event, updates, metadata)
    if isinstance(value, StepAsync | StepError):
        return value
    raise StepOutcomeError(
        f"{step_def.name} returned {value!r}; expected StepOk, StepAsync or StepError"
    )


def execute_step(workflow: Workflow, instance: Instance, step_name: str) -> StepOutcome:
    """Run a synchronous step body (``Engine.execute_step/2``); async bodies need a runner."""
    call = prepare_step(workflow, instance, step_name)
    assert call.step.run is not None
    value = call.step.run(call.instance, call.config, call.context)
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise StepOutcomeError(f"{step_name} is asynchronous: await it in a runner")
    return check_outcome(call.step, value)


def step_result(step_name: str, outcome: StepOutcome) -> StepResult | None:
    """The step-results row ExecuteStepWorker writes for an outcome; ``None`` for an error."""
    if isinstance(outcome, StepOk):
        return StepResult(
            step_name, outcome.event, outcome.context_updates, outcome.metadata_updates
        )
    if isinstance(outcome, StepAsync):
        return StepResult(step_name, ASYNC_EVENT, {}, {})
    return None
