"""``workflow_instances`` rows exactly as HephaestusEcto writes and reads them.

A row is ``id``, ``workflow`` (the module string), ``status``, ``workflow_version``, the jsonb
``state`` and Ecto's ``timestamps()`` (naive UTC, whole seconds: ``timestamp(0)``). The state
holds ``current_step``, ``context`` (``{"initial": ..., "steps": {"<key>": ...}}``),
``step_configs``, ``active_steps``/``completed_steps`` as sorted lists of module strings,
``execution_history`` and ``runtime_metadata``.

Loading in Elixir turns every module string, the status, every key of ``context.initial`` and
``context.steps`` (recursively, also inside lists) and history events into *existing* atoms; one
unknown name makes the row unloadable for good (golden ``external-step-completion``, s3b). Here
loading checks names against the workflow definition, and :func:`unloadable_names` reports, for
a state about to be written into an Elixir-owned instance, every name that side could not load.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bridge.wire.timefmt import to_naive_utc, utc_now
from bridge.workflows.model.definition import (
    MAX_ATOM_LENGTH,
    JsonPath,
    UnknownStepError,
    UnknownWorkflowError,
    Workflow,
    WorkflowError,
    json_copy,
    lookup,
    render_path,
)
from bridge.workflows.model.instance import STATUSES, Context, ExecutionEntry, Instance, Status

STATE_KEYS = (
    "current_step",
    "context",
    "step_configs",
    "active_steps",
    "completed_steps",
    "execution_history",
    "runtime_metadata",
)

# The zero-offset forms DateTime.from_iso8601/1 accepts (it refuses "-00:00", oddly).
MAX_PROBLEMS = 100

_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?(Z|[+-]00(?:00)?|\+00:00)\Z"
)


class _Shown(reprlib.Repr):
    """Values in error messages: a row's values can nest thousands of levels deep (``repr``
    would recurse past Python's limit), run to megabytes, or be integers of more digits than
    ``repr`` may print."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = 80
        self.maxother = 80

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:
            return f"<an integer of about {int(x.bit_length() * 0.30103)} digits>"


_SHOW = _Shown()


def _show(value: object) -> str:
    """``repr(value)``, shortened and never recursing more than a few levels."""
    return _SHOW.repr(value)


def _label(id: str) -> str:
    """An instance id at the head of a message, shortened if a row holds a huge one."""
    return id if len(id) <= 120 else f"{id[:80]}…{id[-20:]}"


class SerializationError(WorkflowError):
    """Base class of errors turning rows into instances and back."""


class MalformedStateError(SerializationError):
    """A row or state whose shape HephaestusEcto would not have written."""


class UnknownContextKeyError(SerializationError):
    """A ``context.steps`` key that no step of the workflow writes."""


class UnloadableStateError(SerializationError):
    """A state the Elixir side could not load (names that are not atoms there)."""

    def __init__(self, problems: list[LoadProblem]) -> None:
        self.problems = problems
        listed = "; ".join(f"{p.path}: {p.reason}" for p in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(f"the Elixir side could not load this state: {listed}{more}")


class UndeclaredKeyError(UnloadableStateError):
    """Keys a Python-owned workflow was about to write (an initial context, a step's context
    updates) that its Elixir declaration does not pin: once written, every Elixir node listing
    instances would crash on the row, so nothing is written."""

    def __init__(self, workflow: str, what: str, problems: list[LoadProblem]) -> None:
        names = sorted({p.name for p in problems})
        shown = ", ".join(repr(_short(n)) for n in names[:10])
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        paths = "; ".join(f"{p.path}: {p.reason}" for p in problems[:5])
        more_paths = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        SerializationError.__init__(
            self,
            f"{what} holds key(s) {shown}{more} that {workflow.removeprefix('Elixir.')}'s "
            f"Elixir declaration does not pin ({paths}{more_paths}), so an Elixir node could "
            "not load the instance; declare them in Workflow(atoms=[...]) and regenerate the "
            "Elixir declaration with `bridge workflows export-elixir`",
        )
        self.problems = problems
        self.workflow = workflow


def undeclared_keys(workflow: Workflow, value: Mapping[str, Any], path: str) -> list[LoadProblem]:
    """Map keys at any depth of ``value`` (written at ``path``) that the Python-owned
    ``workflow``'s declaration does not pin (:meth:`KnownNames.declared_by`)."""
    return _key_problems(value, path, KnownNames.declared_by(workflow))


def _short(name: str) -> str:
    return name if len(name) <= 60 else f"{name[:40]}…({len(name)} characters)"


@dataclass(frozen=True)
class InstanceRow:
    """The column values of a ``workflow_instances`` row, as psycopg returns and takes them."""

    id: str
    workflow: str
    status: str
    state: dict[str, Any]
    workflow_version: int
    inserted_at: datetime
    updated_at: datetime


# -- writing ---------------------------------------------------------------------------------


def to_state(instance: Instance) -> dict[str, Any]:
    """``Serializer.to_db/1``'s state map."""
    return {
        "current_step": instance.current_step,
        "context": {
            "initial": json_copy(instance.context.initial, "context.initial", MalformedStateError),
            "steps": {
                key: json_copy(value, f"context.steps.{key}", MalformedStateError)
                for key, value in instance.context.steps.items()
            },
        },
        "step_configs": {
            name: json_copy(config, f"step_configs.{name}", MalformedStateError)
            for name, config in instance.step_configs.items()
        },
        "active_steps": sorted(instance.active_steps),
        "completed_steps": sorted(instance.completed_steps),
        "execution_history": [_entry_to_json(e) for e in instance.execution_history],
        "runtime_metadata": json_copy(
            instance.runtime_metadata, "runtime_metadata", MalformedStateError
        ),
    }


def row_timestamp(moment: datetime) -> datetime:
    """Ecto's ``:naive_datetime`` autogenerate: naive UTC truncated to whole seconds."""
    return to_naive_utc(moment).replace(microsecond=0)


def to_row(instance: Instance, *, clock: Callable[[], datetime] = utc_now) -> InstanceRow:
    """Column values for ``Storage.put/2``'s upsert.

    Both timestamps are ``clock()``; on conflict HephaestusEcto replaces only ``workflow``,
    ``status``, ``state`` and ``updated_at``, so the stored ``inserted_at`` stays.
    """
    now = row_timestamp(clock())
    return InstanceRow(
        id=instance.id,
        workflow=instance.workflow,
        status=instance.status,
        state=to_state(instance),
        workflow_version=instance.workflow_version,
        inserted_at=now,
        updated_at=now,
    )


def format_entry_timestamp(moment: datetime, precision: int = 6) -> str:
    """``DateTime.to_iso8601/1`` of a UTC ``DateTime`` with the given microsecond precision."""
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if precision > 0:
        text += "." + f"{utc.microsecond:06d}"[:precision]
    return text + "Z"


def _entry_to_json(entry: ExecutionEntry) -> dict[str, Any]:
    updates = entry.context_updates
    return {
        "step_ref": entry.step_ref,
        "event": entry.event,
        "timestamp": format_entry_timestamp(entry.timestamp, entry.precision),
        "context_updates": None
        if updates is None
        else json_copy(updates, "execution_history.context_updates", MalformedStateError),
    }


# -- reading ---------------------------------------------------------------------------------


def from_row(row: InstanceRow | Mapping[str, Any], workflows: Mapping[str, Workflow]) -> Instance:
    """Load a row (an :class:`InstanceRow` or a mapping of its columns)."""
    if isinstance(row, InstanceRow):
        values: Mapping[str, Any] = {
            "id": row.id,
            "workflow": row.workflow,
            "status": row.status,
            "workflow_version": row.workflow_version,
            "state": row.state,
        }
    elif isinstance(row, Mapping):
        values = row
    else:
        raise MalformedStateError(f"not a workflow_instances row: {type(row).__name__}")
    missing = [
        c for c in ("id", "workflow", "status", "workflow_version", "state") if c not in values
    ]
    if missing:
        raise MalformedStateError(f"row lacks the columns {missing}")
    return from_state(
        values["id"],
        values["workflow"],
        values["status"],
        values["workflow_version"],
        values["state"],
        workflows,
    )


def from_state(
    id: object,
    workflow: object,
    status: object,
    workflow_version: object,
    state: object,
    workflows: Mapping[str, Workflow],
) -> Instance:
    """``Serializer.from_db/5``, with names checked against the registered definition.

    Absent (or null) state keys take Elixir's defaults; present ones must have the shape
    HephaestusEcto writes. Unknown extra keys are ignored, as Elixir ignores them.
    """
    if not isinstance(id, str):
        raise MalformedStateError(f"id must be a string, got {_show(id)}")
    if not isinstance(workflow, str) or workflow not in workflows:
        raise UnknownWorkflowError(f"no workflow named {_show(workflow)} is registered")
    definition = lookup(workflows, workflow)
    label = _label(id)
    if status not in STATUSES:
        raise MalformedStateError(f"{label}: unknown status {_show(status)}")
    if isinstance(workflow_version, bool) or not isinstance(workflow_version, int):
        raise MalformedStateError(f"{label}: workflow_version must be an integer")
    if workflow_version < 1:
        raise MalformedStateError(f"{label}: workflow_version must be positive")
    if not isinstance(state, Mapping):
        raise MalformedStateError(f"{label}: state must be a JSON object")
    loaded_status: Status = status
    try:
        return Instance(
            id=id,
            workflow=definition.name,
            workflow_version=workflow_version,
            status=loaded_status,
            current_step=_optional_step(definition, state.get("current_step"), "current_step"),
            context=_context(definition, state.get("context")),
            step_configs=_step_configs(definition, state.get("step_configs")),
            active_steps=_step_set(definition, state.get("active_steps"), "active_steps"),
            completed_steps=_step_set(definition, state.get("completed_steps"), "completed_steps"),
            execution_history=_history(definition, state.get("execution_history")),
            runtime_metadata=_object(state.get("runtime_metadata"), "runtime_metadata"),
        )
    except UnknownStepError as exc:
        raise UnknownStepError(f"{label}: {exc}") from exc
    except MalformedStateError as exc:
        raise type(exc)(f"{label}: {exc}") from exc


def _object(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedStateError(f"{where} must be a JSON object")
    copied: dict[str, Any] = json_copy(value, where, MalformedStateError)
    return copied


def _step_name(definition: Workflow, value: object, where: str) -> str:
    if not isinstance(value, str):
        raise MalformedStateError(f"{where} must hold module strings, got {_show(value)}")
    if value not in definition.steps:
        raise UnknownStepError(f"{_show(value)} is not a step of {definition.name}")
    return definition.step(value).name


def _optional_step(definition: Workflow, value: object, where: str) -> str | None:
    return None if value is None else _step_name(definition, value, where)


def _step_set(definition: Workflow, value: object, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise MalformedStateError(f"{where} must be a list of module strings")
    return frozenset(_step_name(definition, item, where) for item in value)


def _context(definition: Workflow, value: object) -> Context:
    if value is None:
        return Context()
    if not isinstance(value, Mapping) or "initial" not in value or "steps" not in value:
        raise MalformedStateError('context must be {"initial": {...}, "steps": {...}}')
    steps = value["steps"]
    if not isinstance(steps, Mapping):
        raise MalformedStateError("context.steps must be a JSON object")
    loaded: dict[str, Mapping[str, Any]] = {}
    for key, result in steps.items():
        if not isinstance(key, str) or definition.step_for_context_key(key) is None:
            raise UnknownContextKeyError(
                f"context.steps has the key {_show(key)}, which no step of {definition.name} writes"
            )
        if not isinstance(result, Mapping):
            raise MalformedStateError(f"context.steps.{key} must be a JSON object")
        loaded[key] = _object(result, f"context.steps.{key}")
    initial = value["initial"]
    if not isinstance(initial, Mapping):
        raise MalformedStateError("context.initial must be a JSON object")
    return Context(_object(initial, "context.initial"), loaded)


def _step_configs(definition: Workflow, value: object) -> dict[str, Mapping[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedStateError("step_configs must be a JSON object")
    configs: dict[str, Mapping[str, Any]] = {}
    for name, config in value.items():
        step_name = _step_name(definition, name, "step_configs")
        if not isinstance(config, Mapping):
            raise MalformedStateError(f"step_configs.{name} must be a JSON object")
        configs[step_name] = _object(config, f"step_configs.{name}")
    return configs


def _history(definition: Workflow, value: object) -> tuple[ExecutionEntry, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MalformedStateError("execution_history must be a list")
    entries = []
    for index, item in enumerate(value):
        where = f"execution_history[{index}]"
        if not isinstance(item, Mapping) or not {"step_ref", "event", "timestamp"} <= item.keys():
            raise MalformedStateError(f"{where} needs step_ref, event and timestamp")
        event = item["event"]
        if not isinstance(event, str) or not 0 < len(event) <= MAX_ATOM_LENGTH:
            raise MalformedStateError(f"{where}.event is not an atom name: {_show(event)}")
        timestamp, precision = parse_entry_timestamp(item["timestamp"], f"{where}.timestamp")
        updates = item.get("context_updates")
        entries.append(
            ExecutionEntry(
                step_ref=_step_name(definition, item["step_ref"], f"{where}.step_ref"),
                event=event,
                timestamp=timestamp,
                context_updates=None
                if updates is None
                else _object(updates, f"{where}.context_updates"),
                precision=precision,
            )
        )
    return tuple(entries)


def parse_entry_timestamp(value: object, where: str = "timestamp") -> tuple[datetime, int]:
    """``DateTime.from_iso8601/1`` restricted to offset 0, which is all Hephaestus accepts.

    Returns the aware UTC moment and its fractional-digit precision (at most 6, as Elixir).
    """
    match = _ISO.match(value) if isinstance(value, str) else None
    if match is None:
        raise MalformedStateError(f"{where} is not a UTC ISO-8601 timestamp: {_show(value)}")
    year, month, day, hour, minute, second, fraction, _zone = match.groups()
    digits = (fraction or "")[:6]
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int(digits.ljust(6, "0")) if digits else 0,
            tzinfo=timezone(timedelta(0)),
        )
    except ValueError as exc:
        raise MalformedStateError(f"{where} is not a valid date/time: {_show(value)}") from exc
    return moment.astimezone(UTC), len(digits)


# -- what the Elixir side can load ------------------------------------------------------------


@dataclass(frozen=True)
class KnownNames:
    """Module names and atoms that exist in the Elixir VM reading an instance.

    Only names the Elixir side *declares* count: literals of its code, which exist as soon as
    that code is loaded. A step's context key derived from its module name is not one: the
    Elixir engine creates it (``String.to_atom``) only when it completes that step itself, so a
    freshly booted node lacks it, and for a Python-owned workflow no Elixir node ever makes it.
    """

    modules: frozenset[str]
    atoms: frozenset[str]

    @classmethod
    def for_workflow(cls, workflow: Workflow, extra_atoms: Iterable[str] = ()) -> KnownNames:
        """What an Elixir workflow module and its step modules declare: the modules, their
        events, explicit ``step_key/0`` literals and the atoms the definition lists
        (``Workflow(atoms=...)``, the names the app's code holds), plus ``extra_atoms``.

        Context keys derived from module names are left out (see the class); a Python-owned
        workflow's names are those of its generated declaration
        (:func:`bridge.workflows.delegation.declaration.declared_names`)."""
        steps = workflow.steps.values()
        atoms = {*workflow.atoms, *extra_atoms, *STATUSES}
        atoms.update(e for s in steps for e in s.events)
        atoms.update(s.step_key for s in steps if s.step_key is not None)
        return cls(frozenset({workflow.name, *workflow.steps}), frozenset(atoms))

    @classmethod
    def declared_by(cls, workflow: Workflow) -> KnownNames:
        """What the generated declaration of a Python-owned workflow pins (``use
        ObanBridge.PythonWorkflow``): the workflow and every step module, every step's context
        key and events, ``Workflow(atoms=...)`` and the ``context_keys`` an Elixir-run step
        declares, plus the statuses. Equal to
        :func:`bridge.workflows.delegation.declaration.declared_names`, which builds it from the
        declaration itself; the runner, a layer below, checks what its steps write against this.
        """
        steps = workflow.steps.values()
        atoms = {*workflow.atoms, *STATUSES}
        atoms.update(s.context_key for s in steps)
        atoms.update(e for s in steps for e in s.events)
        # An elixir_step's body (ElixirStepRun, a layer above) declares its context keys.
        atoms.update(k for s in steps for k in getattr(s.run, "context_keys", None) or ())
        return cls(frozenset({workflow.name, *workflow.steps}), frozenset(atoms))

    def with_atoms(self, names: Iterable[str]) -> KnownNames:
        """These names plus ``names`` (e.g. context keys this node's engine has made)."""
        return KnownNames(self.modules, self.atoms | frozenset(names))


def engine_context_keys(workflow: Workflow) -> frozenset[str]:
    """The context keys only the Elixir engine creates, on completing the step: every step's
    key that no ``step_key/0`` literal declares."""
    return frozenset(s.context_key for s in workflow.steps.values() if s.step_key is None)


@dataclass(frozen=True)
class LoadProblem:
    """One name the Elixir side could not turn into an existing atom or loaded module."""

    path: str
    name: str
    reason: str


def unloadable_names(
    state: Mapping[str, Any],
    known: KnownNames,
    *,
    workflow: str | None = None,
    status: str | None = None,
) -> list[LoadProblem]:
    """Every name in ``state`` (and the row's ``workflow``/``status``) Elixir could not load.

    Mirrors what ``Serializer.from_db/5`` converts: module strings (workflow, current step,
    step sets, step-config keys, history step refs), the status, history events, and every map
    key under ``context.initial``, ``context.steps`` and history ``context_updates``.
    ``runtime_metadata`` and step-config values are not converted, so not checked.
    """
    problems: list[LoadProblem] = []

    def module(path: str, name: object) -> None:
        if not isinstance(name, str) or name not in known.modules:
            problems.append(LoadProblem(path, str(name), "not a module known to the Elixir side"))

    def atom(path: str, name: object) -> None:
        reason = _atom_problem(name, known)
        if reason is not None:
            problems.append(LoadProblem(path, str(name), reason))

    if workflow is not None:
        module("workflow", workflow)
    if status is not None:
        atom("status", status)
    if state.get("current_step") is not None:
        module("state.current_step", state["current_step"])
    for key in ("active_steps", "completed_steps"):
        items = state.get(key) or []
        for index, name in enumerate(items if isinstance(items, list) else [items]):
            module(f"state.{key}[{index}]", name)
    configs = state.get("step_configs") or {}
    if isinstance(configs, Mapping):
        for name in configs:
            module(f"state.step_configs.{name}", name)
    context = state.get("context")
    if isinstance(context, Mapping):
        problems.extend(_key_problems(context.get("initial"), "state.context.initial", known))
        steps = context.get("steps")
        if isinstance(steps, Mapping):
            for key, value in steps.items():
                reason = _atom_problem(key, known)
                if reason == _UNKNOWN_ATOM:
                    reason = _UNDECLARED_STEP_KEY
                if reason is not None:
                    problems.append(LoadProblem(f"state.context.steps.{key}", str(key), reason))
                problems.extend(_key_problems(value, f"state.context.steps.{key}", known))
    history = state.get("execution_history") or []
    for index, entry in enumerate(history if isinstance(history, list) else []):
        if isinstance(entry, Mapping):
            where = f"state.execution_history[{index}]"
            module(f"{where}.step_ref", entry.get("step_ref"))
            atom(f"{where}.event", entry.get("event"))
            problems.extend(
                _key_problems(entry.get("context_updates"), f"{where}.context_updates", known)
            )
    return problems


def unloadable_update(
    workflow: Workflow,
    step_name: str,
    event: str,
    context_updates: Mapping[str, Any],
    known: KnownNames,
) -> list[LoadProblem]:
    """Names in a step result that would make the instance unloadable once applied.

    The updates land under ``context.steps.<context key>`` and every key in them, at any
    depth, becomes an atom when the Elixir side next loads the instance. The context key
    itself is not checked: the engine applying the result creates it (``complete_step/5``).
    """
    problems: list[LoadProblem] = []
    key = workflow.step(step_name).context_key
    if step_name not in known.modules:
        problems.append(LoadProblem("step_ref", step_name, "not a module known to the Elixir side"))
    reason = _atom_problem(event, known)
    if reason is not None:
        problems.append(LoadProblem("event", event, reason))
    problems.extend(_key_problems(context_updates, f"state.context.steps.{key}", known))
    return problems


def ensure_loadable(problems: list[LoadProblem]) -> None:
    """Raise :class:`UnloadableStateError` if there is any problem."""
    if problems:
        raise UnloadableStateError(problems)


def _key_problems(
    value: object, path: str, known: KnownNames, limit: int = MAX_PROBLEMS
) -> list[LoadProblem]:
    """Map keys under ``value`` (maps inside lists too) that are not known atoms, at most
    ``limit`` of them so that hostile input cannot make the report unbounded."""
    problems: list[LoadProblem] = []
    stack: list[tuple[object, JsonPath | str]] = [(value, path)]
    while stack and len(problems) < limit:
        item, where = stack.pop()
        if isinstance(item, Mapping):
            for key, sub in item.items():
                here: JsonPath = (where, str(key))
                reason = _atom_problem(key, known)
                if reason is not None and len(problems) < limit:
                    problems.append(LoadProblem(render_path(here), str(key), reason))
                stack.append((sub, here))
        elif isinstance(item, list):
            stack.extend((sub, (where, i)) for i, sub in enumerate(item))
    problems.sort(key=lambda p: p.path)
    return problems


_UNKNOWN_ATOM = "not an atom known to the Elixir side"
_UNDECLARED_STEP_KEY = (
    "a step's context key the Elixir side does not declare: it exists there only once its "
    "engine has completed that step since boot (never, for a Python-owned workflow without "
    "its ObanBridge.PythonWorkflow declaration)"
)


def _atom_problem(name: object, known: KnownNames) -> str | None:
    if not isinstance(name, str):
        return "not a string"
    if len(name) > MAX_ATOM_LENGTH:
        return "longer than 255 characters: never an atom"
    if name not in known.atoms:
        return _UNKNOWN_ATOM
    return None
