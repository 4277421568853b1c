"""The args of a delegated step job and the checks a remote step's outcome must pass. Pure.

A step crosses the language line as one job (``docs/workflow-delegation.md``): the workflow's
owner enqueues it for a worker of the other language, and that worker completes the step by
writing a step result and the owner's advance job. The job carries everything the worker needs
*and* what the owning step declares it may write (events, context-update keys), because only
the owner knows which names its VM can load: an Elixir instance holding one key that is not an
existing atom there can never be loaded again (golden ``external-step-completion``, s3b).

Both directions use the same args, so the Elixir modules in ``integrations/elixir`` and the
Python code here read and write one format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.workflows.model.definition import (
    ASYNC_EVENT,
    MAX_ATOM_LENGTH,
    WorkflowError,
    check_module_name,
    json_copy,
)
from bridge.workflows.model.instance import STATUSES, Context
from bridge.workflows.model.serializer import KnownNames, LoadProblem, unloadable_names

PROTOCOL_VERSION = 1
ELIXIR_ADVANCE_QUEUE = "hephaestus"
# Keys every delegated job's args carry (``protocol`` included); others are refused.
ARG_KEYS = frozenset(
    {
        "protocol",
        "instance_id",
        "step_ref",
        "workflow",
        "workflow_version",
        "config_key",
        "advance_queue",
        "context_key",
        "events",
        "context_keys",
        "failure_event",
        "context",
        "config",
    }
)
# Bounds on what a job may declare: names become atoms, and atoms are never collected.
MAX_DECLARED = 1_000


class DelegationError(WorkflowError):
    """Base class of errors of delegated steps."""


class DelegationArgsError(DelegationError):
    """A delegated job whose args are not the protocol's: no retry can make them valid."""


class DelegationViolation(DelegationError):
    """A remote step's outcome that the owning step does not allow (undeclared event or
    context-update key, or a name the owner's VM could not load). Nothing was written."""


@dataclass(frozen=True)
class DelegationArgs:
    """A delegated job's args, checked."""

    instance_id: str
    step_ref: str
    workflow: str
    workflow_version: int
    config_key: str
    advance_queue: str
    context_key: str
    events: tuple[str, ...]
    context_keys: frozenset[str]
    failure_event: str | None
    context: Context
    config: Mapping[str, Any] | None

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> DelegationArgs:
        """Refuse anything the protocol does not define, naming the field."""
        if not isinstance(args, Mapping):
            raise DelegationArgsError("args must be a JSON object")
        unknown = sorted(set(args) - ARG_KEYS)
        if unknown:
            raise DelegationArgsError(f"unknown args keys: {unknown}")
        protocol = args.get("protocol")
        if protocol != PROTOCOL_VERSION:
            raise DelegationArgsError(
                f"args.protocol must be {PROTOCOL_VERSION} (this bridge's), got {protocol!r}"
            )
        version = args.get("workflow_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise DelegationArgsError(f"args.workflow_version must be >= 1, got {version!r}")
        events = _names(args.get("events"), "events")
        if not events or ASYNC_EVENT in events:
            raise DelegationArgsError(
                f"args.events must declare at least one event, never {ASYNC_EVENT!r}"
            )
        failure = args.get("failure_event")
        if failure is not None and failure not in events:
            raise DelegationArgsError(
                f"args.failure_event {failure!r} is not one of the declared events {events}"
            )
        context = args.get("context")
        if not isinstance(context, Mapping) or set(context) - {"initial", "steps"}:
            raise DelegationArgsError('args.context must be {"initial": {...}, "steps": {...}}')
        initial = _object(context.get("initial", {}), "args.context.initial")
        steps = _object(context.get("steps", {}), "args.context.steps")
        config = args.get("config")
        try:
            return cls(
                instance_id=_text(args.get("instance_id"), "instance_id"),
                step_ref=check_module_name(args.get("step_ref"), "args.step_ref"),
                workflow=check_module_name(args.get("workflow"), "args.workflow"),
                workflow_version=version,
                config_key=_text(args.get("config_key"), "config_key"),
                advance_queue=_text(args.get("advance_queue"), "advance_queue"),
                context_key=_atom(args.get("context_key"), "context_key"),
                events=tuple(events),
                context_keys=frozenset(_names(args.get("context_keys"), "context_keys")),
                failure_event=failure,
                context=Context(initial, steps),
                config=None if config is None else _object(config, "args.config"),
            )
        except WorkflowError as exc:
            if isinstance(exc, DelegationArgsError):
                raise
            raise DelegationArgsError(str(exc)) from exc

    def known_names(self) -> KnownNames:
        """What the owner's VM is guaranteed to have: the modules it named and the names its
        step module declares (they are literals in that module, so atoms once it is loaded)."""
        atoms = {*self.events, *self.context_keys, self.context_key, *STATUSES}
        return KnownNames(frozenset({self.workflow, self.step_ref}), frozenset(atoms))


def job_args(
    *,
    instance_id: str,
    step_ref: str,
    workflow: str,
    workflow_version: int,
    config_key: str,
    advance_queue: str,
    context_key: str,
    events: Iterable[str],
    context_keys: Iterable[str],
    failure_event: str | None,
    context: Context,
    config: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The args of a delegated job (what the Elixir ``DelegatedStep`` builds, mirrored)."""
    args = {
        "protocol": PROTOCOL_VERSION,
        "instance_id": instance_id,
        "step_ref": step_ref,
        "workflow": workflow,
        "workflow_version": workflow_version,
        "config_key": config_key,
        "advance_queue": advance_queue,
        "context_key": context_key,
        "events": list(events),
        "context_keys": sorted(set(context_keys)),
        "failure_event": failure_event,
        "context": {"initial": dict(context.initial), "steps": dict(context.steps)},
        "config": None if config is None else dict(config),
    }
    DelegationArgs.parse(args)  # what we send, we could also receive
    return args


@dataclass(frozen=True)
class RemoteOutcome:
    """A remote step's completion, checked: what goes into the step-result row."""

    event: str
    context_updates: Mapping[str, Any]
    metadata_updates: Mapping[str, Any]


def check_remote_outcome(
    args: DelegationArgs,
    event: object,
    context_updates: object = None,
    metadata_updates: object = None,
) -> RemoteOutcome:
    """Accept only what the owning step declares and its VM can load; explain any refusal.

    Every map key at any depth of the context updates must be a declared context key: the
    owner turns all of them into existing atoms when it loads the instance. Metadata updates
    land in ``runtime_metadata``, which is never converted, so only JSON is required there.
    """
    if event == ASYNC_EVENT:
        raise DelegationViolation(
            f"{ASYNC_EVENT!r} is not an event a remote step may complete with"
        )
    if not isinstance(event, str) or event not in args.events:
        raise DelegationViolation(
            f"event {event!r} is not declared by {args.step_ref} (events: {list(args.events)})"
        )
    updates = _updates(context_updates, "context updates")
    meta = _updates(metadata_updates, "metadata updates")
    undeclared = sorted({p.name for p in _undeclared_keys(updates, args)})
    if undeclared:
        raise DelegationViolation(
            f"context update keys {undeclared} are not declared by {args.step_ref}"
            f" (context_keys: {sorted(args.context_keys)}); nothing was written"
        )
    state = {"context": {"steps": {args.context_key: updates}}}
    problems = unloadable_names(state, args.known_names())
    if problems:
        listed = "; ".join(f"{p.path}: {p.reason}" for p in problems[:10])
        raise DelegationViolation(f"the owner could not load these updates: {listed}")
    return RemoteOutcome(event, updates, meta)


def _undeclared_keys(updates: Mapping[str, Any], args: DelegationArgs) -> list[LoadProblem]:
    only_keys = KnownNames(frozenset(), args.context_keys)
    state = {"context": {"steps": {args.context_key: updates}}}
    problems = unloadable_names(state, only_keys)
    # the context key itself is the owner's, not the step body's
    return [p for p in problems if p.path != f"state.context.steps.{args.context_key}"]


def _updates(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DelegationViolation(f"{what} must be a JSON object, got {type(value).__name__}")
    copied: dict[str, Any] = json_copy(value, what, DelegationViolation)
    return copied


def _text(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise DelegationArgsError(f"args.{key} must be a non-empty string, got {value!r}")
    return value


def _atom(value: object, key: str) -> str:
    text = _text(value, key)
    if len(text) > MAX_ATOM_LENGTH:
        raise DelegationArgsError(f"args.{key} is longer than {MAX_ATOM_LENGTH} characters")
    return text


def _names(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_DECLARED:
        raise DelegationArgsError(f"args.{key} must be a list of at most {MAX_DECLARED} names")
    return [_atom(item, f"{key}[{i}]") for i, item in enumerate(value)]


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise DelegationArgsError(f"{where} must be a JSON object")
    copied: dict[str, Any] = json_copy(value, where, DelegationArgsError)
    return copied
