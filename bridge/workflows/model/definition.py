"""Workflow and step definitions, validated the way Hephaestus validates them at compile time.

Hephaestus names everything by Elixir module (``Elixir.MyApp.Steps.Charge``) and those names are
what crosses the database, so a Python definition carries its module string explicitly
(``name=``): nothing is derived from Python identifiers. What *is* derived follows the Elixir
rules exactly, because the other side derives it too: a step's context key (``step_key`` or the
``Macro.underscore`` of the last module segment) and the short names used in job meta and tags.

The predecessor graph is built and checked once, when the :class:`Workflow` is constructed:
the checks Hephaestus runs in ``Hephaestus.Core.Workflow.validate!`` (acyclic, reachable,
leaves end at ``Hephaestus.Steps.Done``, fan-outs converge, no context-key collisions, events
declared and handled) plus a few it has no rule for (see ``docs/workflows.md``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

if TYPE_CHECKING:
    from bridge.workflows.model.instance import Context, Instance

DONE_STEP_NAME = "Elixir.Hephaestus.Steps.Done"
ASYNC_EVENT = "__async__"
MAX_ATOM_LENGTH = 255

_SEGMENT = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")
_UNIQUE_KEY = re.compile(r"[a-z0-9]+\Z")
_UUID = re.compile(r"[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}\Z")


class WorkflowError(Exception):
    """Base class of every error raised by ``bridge.workflows``."""


class DefinitionError(WorkflowError):
    """A workflow or step definition Hephaestus (or this port) would refuse."""


class InvalidNameError(DefinitionError):
    """A module name, event or key that cannot be the Elixir atom it stands for."""


class InvalidOptionError(DefinitionError):
    """A workflow/step option with a wrong type or value (version, tags, unique, config...)."""


class DuplicateStepError(DefinitionError):
    """Two different step definitions share one module name."""


class DuplicateTransitionError(DefinitionError):
    """Two transitions for the same (step, event): Elixir would silently use the first clause."""


class CycleError(DefinitionError):
    """The step graph has a cycle."""


class UnreachableStepError(DefinitionError):
    """A step cannot be reached from the start step."""


class NonTerminalLeafError(DefinitionError):
    """A path ends at a step other than ``Hephaestus.Steps.Done``."""


class FanOutConvergenceError(DefinitionError):
    """The branches of a static fan-out never meet before Done."""


class ContextKeyCollisionError(DefinitionError):
    """Two steps would write their results under the same context key."""


class UndeclaredEventError(DefinitionError):
    """A transition uses an event its source step does not declare."""


class UnhandledEventError(DefinitionError):
    """A step declares an event for which the workflow has no transition."""


class UnknownWorkflowError(WorkflowError):
    """A workflow module name that no registered definition carries."""


class UnknownStepError(WorkflowError):
    """A step module name that the workflow does not contain."""


class BusinessKeyError(WorkflowError):
    """A business-key value or instance id Hephaestus would reject."""


class TransitionError(WorkflowError):
    """A dynamic transition chose a step it did not declare among its possible targets."""


# -- names -------------------------------------------------------------------------------------


def check_module_name(name: object, what: str = "module name") -> str:
    """An Elixir alias as ``Atom.to_string`` prints it: ``Elixir.`` + capitalised segments."""
    if not isinstance(name, str):
        raise InvalidNameError(f"{what} must be a string, got {name!r}")
    if len(name) > MAX_ATOM_LENGTH:
        raise InvalidNameError(f"{what} is longer than {MAX_ATOM_LENGTH} characters: {name!r}")
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "Elixir" or not all(_SEGMENT.match(p) for p in parts[1:]):
        raise InvalidNameError(
            f"{what} must look like 'Elixir.My.Module' (explicit Elixir module string), "
            f"got {name!r}"
        )
    return name


def check_atom_name(name: object, what: str) -> str:
    """Any text of 1..255 characters can be an atom; anything else never can."""
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > MAX_ATOM_LENGTH:
        raise InvalidNameError(f"{what} is longer than {MAX_ATOM_LENGTH} characters: {name!r}")
    return name


def underscore(text: str) -> str:
    """Elixir's ``Macro.underscore/1`` on a string, byte for byte (ASCII rules, as Elixir's)."""
    data = text.encode()
    out = bytearray()
    _underscore_into(data, 0, out)
    return out.decode()


def _is_upper(byte: int) -> bool:
    return 0x41 <= byte <= 0x5A


def _is_digit(byte: int) -> bool:
    return 0x30 <= byte <= 0x39


def _lower(byte: int) -> int:
    return byte + 32 if _is_upper(byte) else byte


def _underscore_into(data: bytes, start: int, out: bytearray) -> None:
    # Iterative rendering of the Elixir clauses; a "." restarts the word (emits "/").
    if start >= len(data):
        return
    out.append(_lower(data[start]))
    prev = data[start]
    i = start + 1
    size = len(data)
    while i < size:
        head = data[i]
        if _is_upper(head) and i + 1 < size:
            nxt = data[i + 1]
            if not _is_upper(nxt) and not _is_digit(nxt) and nxt not in (0x2E, 0x5F):
                out += bytes((0x5F, _lower(head), nxt))
                prev = nxt
                i += 2
                continue
        if _is_upper(head) and not _is_upper(prev) and prev != 0x5F:
            out += bytes((0x5F, _lower(head)))
            prev = head
            i += 1
            continue
        if head == 0x2E:
            out.append(0x2F)
            if i + 1 >= size:
                return
            out.append(_lower(data[i + 1]))
            prev = data[i + 1]
            i += 2
            continue
        out.append(_lower(head))
        prev = head
        i += 1


def short_name(module: str) -> str:
    """``Module.split |> List.last |> Macro.underscore``: context keys, job meta and tags."""
    return underscore(module.rsplit(".", 1)[-1])


# -- JSON values -------------------------------------------------------------------------------


# A JSON path kept as a chain of (parent, key-or-index) links and rendered only when needed, so
# walking deeply nested data stays linear.
JsonPath: TypeAlias = "tuple[JsonPath | str, str | int]"


def render_path(path: JsonPath | str) -> str:
    parts: list[str] = []
    node: JsonPath | str = path
    while not isinstance(node, str):
        node, step_ = node
        parts.append(f"[{step_}]" if isinstance(step_, int) else f".{step_}")
    parts.append(node)
    return "".join(reversed(parts))


def json_copy(value: Any, where: str, error: type[WorkflowError]) -> Any:
    """A deep copy of a JSON value with string keys, or ``error`` naming the offending path.

    Iterative so that deeply nested input cannot exhaust the Python stack.
    """
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, JsonPath | str]] = [(value, root, 0, where)]
    while stack:
        item, parent, slot, path = stack.pop()
        if item is None or isinstance(item, str | bool | int):
            parent[slot] = item
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise error(f"{render_path(path)} is not a finite number: {item!r}")
            parent[slot] = item
        elif isinstance(item, Mapping):
            copied: dict[str, Any] = {}
            parent[slot] = copied
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise error(f"{render_path(path)} has a non-string key {key!r}")
                copied[key] = None
                stack.append((sub, copied, key, (path, key)))
        elif isinstance(item, list | tuple):
            seq: list[Any] = [None] * len(item)
            parent[slot] = seq
            for index, sub in enumerate(item):
                stack.append((sub, seq, index, (path, index)))
        else:
            raise error(f"{render_path(path)} is not a JSON value: {type(item).__name__}")
    return root[0]


def json_object(value: Any, where: str, error: type[WorkflowError]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise error(f"{where} must be a JSON object (dict), got {type(value).__name__}")
    copied: dict[str, Any] = json_copy(value, where, error)
    return copied


# -- step outcomes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StepOk:
    """``{:ok, event}``, ``{:ok, event, context_updates}`` or ``{..., metadata_updates}``."""

    event: str
    context_updates: Mapping[str, Any] = field(default_factory=dict)
    metadata_updates: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepAsync:
    """``{:async}``: the step completes later through a resume (the instance waits)."""


@dataclass(frozen=True)
class StepError:
    """``{:error, reason}``: the step job fails and Oban retries it."""

    reason: Any


StepOutcome: TypeAlias = StepOk | StepAsync | StepError
StepFn: TypeAlias = Callable[
    ["Instance", "Mapping[str, Any] | None", "Context"], "StepOutcome | Awaitable[StepOutcome]"
]


@dataclass(frozen=True)
class RetryConfig:
    """A step's ``retry_config/0``; HephaestusOban uses ``max_attempts`` for the step job."""

    max_attempts: int = 5
    backoff: Literal["exponential", "linear", "constant"] = "exponential"
    max_backoff: int = 60_000

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidOptionError(f"max_attempts must be a positive integer: {self!r}")
        if self.backoff not in ("exponential", "linear", "constant"):
            raise InvalidOptionError(f"backoff must be exponential, linear or constant: {self!r}")
        if not isinstance(self.max_backoff, int) or self.max_backoff < 1:
            raise InvalidOptionError(f"max_backoff must be a positive integer: {self!r}")


DEFAULT_RETRY = RetryConfig()


@dataclass(frozen=True, eq=False)
class Step:
    """A step module: its Elixir name, declared events, optional ``step_key`` and body.

    ``run`` is ``None`` for a step that only exists on the Elixir side (declared so that a
    Python mirror of an Elixir workflow can validate and load its instances).
    """

    name: str
    events: tuple[str, ...]
    run: StepFn | None = None
    step_key: str | None = None
    retry: RetryConfig | None = None

    def __post_init__(self) -> None:
        check_module_name(self.name, "step name")
        if isinstance(self.events, str) or not isinstance(self.events, Iterable):
            raise InvalidOptionError(f"{self.name}: events must be a list of strings")
        events = tuple(self.events)
        for event in events:
            check_atom_name(event, f"{self.name}: event")
            if event == ASYNC_EVENT:
                raise InvalidNameError(f"{self.name}: {ASYNC_EVENT!r} is reserved for async steps")
        object.__setattr__(self, "events", events)
        if self.step_key is not None:
            check_atom_name(self.step_key, f"{self.name}: step_key")
        if self.retry is not None and not isinstance(self.retry, RetryConfig):
            raise InvalidOptionError(f"{self.name}: retry must be a RetryConfig")
        if self.run is not None and not callable(self.run):
            raise InvalidOptionError(f"{self.name}: run must be callable")

    @property
    def context_key(self) -> str:
        """Where this step's context updates land: ``step_key/0``, else the short name."""
        return self.step_key if self.step_key is not None else short_name(self.name)

    @property
    def short_name(self) -> str:
        """The ``step`` value HephaestusOban puts in job meta (ignores ``step_key``)."""
        return short_name(self.name)

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


def step(
    *,
    name: str,
    events: Iterable[str],
    step_key: str | None = None,
    retry: RetryConfig | None = None,
) -> Callable[[StepFn], Step]:
    """Decorate ``fn(instance, config, context) -> StepOutcome`` as the step module ``name``."""

    def wrap(fn: StepFn) -> Step:
        return Step(name=name, events=tuple(events), run=fn, step_key=step_key, retry=retry)

    return wrap


# -- transitions -------------------------------------------------------------------------------

Target: TypeAlias = Step | tuple[Step, Mapping[str, Any]]
TargetSpec: TypeAlias = Target | Sequence[Target]
Chooser: TypeAlias = Callable[["Context"], "TargetSpec | None"]


@dataclass(frozen=True)
class Transition:
    """One ``transit(from, event, ctx)`` clause.

    Static: ``targets`` is what the clause returns. Dynamic: ``choose(context)`` computes the
    result at run time and ``targets`` lists every step it may return (Hephaestus's
    ``@targets``), which is what the graph is built from.
    """

    source: Step
    event: str
    targets: TargetSpec
    choose: Chooser | None = None


@dataclass(frozen=True)
class Edge:
    source: str
    event: str
    targets: tuple[str, ...]
    dynamic: bool


@dataclass(frozen=True)
class _Clause:
    targets: tuple[tuple[str, Mapping[str, Any] | None], ...]
    choose: Chooser | None


@dataclass(frozen=True)
class Unique:
    """``unique: [key: ..., scope: ...]``: the business key that forms instance ids."""

    key: str
    scope: Literal["workflow", "version", "global", "none"] = "workflow"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _UNIQUE_KEY.match(self.key):
            raise InvalidOptionError(
                f"unique key must contain only lowercase letters and numbers [a-z0-9], "
                f"got {self.key!r}"
            )
        if self.scope not in ("workflow", "version", "global", "none"):
            raise InvalidOptionError(
                f"unique scope must be workflow, version, global or none: {self.scope!r}"
            )

    def build_id(self, value: str) -> str:
        """``Hephaestus.Uniqueness.build_id/2``: ``"<key>::<value>"``."""
        return f"{self.key}::{check_business_value(value)}"

    def build_id_with_suffix(self, value: str, suffix: bytes) -> str:
        """The id ``start/2`` uses for ``scope: :none``: 4 random bytes, lower-case hex."""
        if len(suffix) != 4:
            raise BusinessKeyError("the id suffix is exactly 4 random bytes")
        return f"{self.key}::{check_business_value(value)}::{suffix.hex()}"


def check_business_value(value: object) -> str:
    """``Uniqueness.validate_value!``: ``[a-z0-9]+`` or a lower-case UUID."""
    if not isinstance(value, str) or not (_UNIQUE_KEY.match(value) or _UUID.match(value)):
        raise BusinessKeyError(f"invalid id value: {value!r}. Must be [a-z0-9]+ or a valid UUID")
    return value


def extract_business_value(instance_id: str) -> str:
    """``Uniqueness.extract_value/1``: the value part of ``key::value[::suffix]``."""
    parts = instance_id.split("::")
    if len(parts) not in (2, 3):
        raise BusinessKeyError(f"invalid unique id format: {instance_id}")
    return parts[1]


# -- workflows ---------------------------------------------------------------------------------


class Workflow:
    """A validated workflow module: start step, transitions, options and derived graph."""

    def __init__(
        self,
        *,
        name: str,
        start: Target,
        transitions: Iterable[Transition | tuple[Step, str, TargetSpec]],
        unique: Unique | None = None,
        version: int = 1,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        default_retry: RetryConfig | None = None,
        atoms: Iterable[str] = (),
    ) -> None:
        self.name = check_module_name(name, "workflow name")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidOptionError(f"version: must be a positive integer, got: {version!r}")
        self.version = version
        if unique is not None and not isinstance(unique, Unique):
            raise InvalidOptionError("unique: must be a Unique(key=..., scope=...)")
        self.unique = unique
        tag_list = list(_iterable(tags, "tags"))
        if not all(isinstance(t, str) for t in tag_list):
            raise InvalidOptionError(f"expected :tags to be a list of strings, got: {tags!r}")
        self.tags = tuple(tag_list)
        self.metadata = json_object(metadata or {}, f"{name} metadata", InvalidOptionError)
        if default_retry is not None and not isinstance(default_retry, RetryConfig):
            raise InvalidOptionError("default_retry: must be a RetryConfig")
        self.default_retry = default_retry
        self.atoms = frozenset(check_atom_name(a, "atom") for a in _iterable(atoms, "atoms"))

        self._steps: dict[str, Step] = {}
        start_step, start_config = self._target(start, "start")
        self.start_step = start_step
        self.start_config = start_config
        self._clauses: dict[tuple[str, str], _Clause] = {}
        self.edges: tuple[Edge, ...] = tuple(
            self._edge(t) for t in _iterable(transitions, "transitions")
        )
        self.predecessors: Mapping[str, frozenset[str]] = MappingProxyType(_validate_graph(self))
        self._by_context_key = {s.context_key: s for s in reversed(self._steps.values())}

    # construction helpers

    def _register(self, candidate: object, where: str) -> Step:
        if not isinstance(candidate, Step):
            raise InvalidOptionError(f"{self.name}: {where} must be a Step, got {candidate!r}")
        known = self._steps.get(candidate.name)
        if known is None:
            self._steps[candidate.name] = candidate
        elif known is not candidate:
            raise DuplicateStepError(
                f"{self.name}: two different step definitions are named {candidate.name}"
            )
        return candidate

    def _target(self, target: object, where: str) -> tuple[str, Mapping[str, Any] | None]:
        if isinstance(target, tuple) and len(target) == 2:
            candidate, config = target
            step_def = self._register(candidate, where)
            where_config = f"{self.name}: config of {step_def.name} in {where}"
            return step_def.name, json_object(config, where_config, InvalidOptionError)
        return self._register(target, where).name, None

    def _edge(self, item: Transition | tuple[Step, str, TargetSpec]) -> Edge:
        if isinstance(item, tuple):
            if len(item) != 3:
                raise InvalidOptionError(f"{self.name}: a transition is (step, event, targets)")
            item = Transition(item[0], item[1], item[2])
        if not isinstance(item, Transition):
            raise InvalidOptionError(f"{self.name}: not a transition: {item!r}")
        source = self._register(item.source, "transition source").name
        event = check_atom_name(item.event, f"{self.name}: transition event from {source}")
        where = f"transit({source}, :{event})"
        raw = item.targets
        is_list = isinstance(raw, list | tuple) and not (
            isinstance(raw, tuple) and len(raw) == 2 and isinstance(raw[1], Mapping)
        )
        items: Sequence[object] = list(raw) if is_list else [raw]  # type: ignore[arg-type]
        if not items:
            raise InvalidOptionError(f"{self.name}: {where} has no targets")
        targets = tuple(self._target(t, where) for t in items)
        if item.choose is not None and not callable(item.choose):
            raise InvalidOptionError(f"{self.name}: {where} choose must be callable")
        if (source, event) in self._clauses:
            raise DuplicateTransitionError(f"{self.name}: more than one transition for {where}")
        self._clauses[(source, event)] = _Clause(targets, item.choose)
        return Edge(source, event, tuple(n for n, _ in targets), item.choose is not None)

    # queries used by the engine, serializer and runner

    @property
    def steps(self) -> Mapping[str, Step]:
        return MappingProxyType(self._steps)

    @property
    def short_name(self) -> str:
        """``heph_workflow`` in job meta and the workflow's job tag."""
        return short_name(self.name)

    def step(self, name: str) -> Step:
        found = self._steps.get(name)
        if found is None:
            raise UnknownStepError(f"{name!r} is not a step of {self.name}")
        return found

    def step_for_context_key(self, key: str) -> Step | None:
        return self._by_context_key.get(key)

    def retry_for(self, step_name: str) -> RetryConfig:
        """``RetryConfig.resolve``: the step's, else the workflow default, else 5 attempts."""
        found = self.step(step_name)
        return found.retry or self.default_retry or DEFAULT_RETRY

    def build_id(self, value: str) -> str:
        if self.unique is None:
            raise BusinessKeyError(f"{self.name} declares no business key (unique:)")
        return self.unique.build_id(value)

    def transit(
        self, source: str, event: str, context: Context
    ) -> list[tuple[str, Mapping[str, Any] | None]] | None:
        """The clause's targets as (step name, config) pairs, or ``None`` for no clause.

        A single target and a one-element list both come back as a one-element list; the engine
        treats them alike, as Hephaestus does.
        """
        clause = self._clauses.get((source, event))
        if clause is None:
            return None
        if clause.choose is None:
            return list(clause.targets)
        return self._choose(clause, source, event, context)

    def _choose(
        self, clause: _Clause, source: str, event: str, context: Context
    ) -> list[tuple[str, Mapping[str, Any] | None]] | None:
        assert clause.choose is not None
        result = clause.choose(context)
        if result is None:
            return None
        allowed = {name for name, _ in clause.targets}
        raw = result
        is_list = isinstance(raw, list) or (
            isinstance(raw, tuple) and not (len(raw) == 2 and isinstance(raw[1], Mapping))
        )
        items: Sequence[object] = list(raw) if is_list else [raw]  # type: ignore[arg-type]
        chosen: list[tuple[str, Mapping[str, Any] | None]] = []
        for item in items:
            config: Mapping[str, Any] | None = None
            if isinstance(item, tuple) and len(item) == 2:
                item, raw_config = item
                config = json_object(raw_config, "dynamic target config", TransitionError)
            if not isinstance(item, Step) or item.name not in allowed:
                raise TransitionError(
                    f"{self.name}: transit({source}, :{event}) chose {item!r}, which is not "
                    f"among its declared targets {sorted(allowed)}"
                )
            chosen.append((item.name, config))
        return chosen

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, version={self.version})"


def _iterable(value: Any, what: str) -> Iterable[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidOptionError(f"{what} must be a list, got {value!r}")
    return value


def registry(*workflows: Workflow) -> dict[str, Workflow]:
    """Workflows by module name, for loading instances; refuses two with one name."""
    found: dict[str, Workflow] = {}
    for workflow in workflows:
        if not isinstance(workflow, Workflow):
            raise InvalidOptionError(f"not a Workflow: {workflow!r}")
        if workflow.name in found and found[workflow.name] is not workflow:
            raise DuplicateStepError(f"two workflows are named {workflow.name}")
        found[workflow.name] = workflow
    return found


def lookup(workflows: Mapping[str, Workflow], name: object) -> Workflow:
    if not isinstance(name, str) or name not in workflows:
        raise UnknownWorkflowError(f"no workflow named {name!r} is registered")
    return workflows[name]


# -- graph validation (Hephaestus.Core.Workflow.validate!) ------------------------------------


def _validate_graph(workflow: Workflow) -> dict[str, frozenset[str]]:
    start = workflow.start_step
    vertices: dict[str, None] = {}
    out: dict[str, list[str]] = {}
    into: dict[str, set[str]] = {}
    for edge in workflow.edges:
        for vertex in (edge.source, *edge.targets):
            vertices.setdefault(vertex)
    vertices.setdefault(start)
    for vertex in vertices:
        out[vertex] = []
        into[vertex] = set()
    for edge in workflow.edges:
        for target in edge.targets:
            if target not in out[edge.source]:
                out[edge.source].append(target)
            into[target].add(edge.source)

    cycle = _find_cycle(list(vertices), out)
    if cycle:
        raise CycleError(f"{workflow.name}: cycle detected in workflow graph: {' -> '.join(cycle)}")

    reachable = _reachable(start, out)
    unreachable = sorted(v for v in vertices if v not in reachable)
    if unreachable:
        raise UnreachableStepError(
            f"{workflow.name}: unreachable steps from start {start}: {', '.join(unreachable)}"
        )

    leaves = [v for v in vertices if not out[v] and v != DONE_STEP_NAME]
    if leaves:
        raise NonTerminalLeafError(
            f"{workflow.name}: path terminates at {', '.join(leaves)}, which is not "
            f"{DONE_STEP_NAME}"
        )

    for edge in workflow.edges:
        if edge.dynamic or len(edge.targets) <= 1:
            continue
        common = set.intersection(*(_reachable(t, out) for t in edge.targets))
        common.discard(DONE_STEP_NAME)
        if not common:
            raise FanOutConvergenceError(
                f"{workflow.name}: fan-out branches from {edge.source} must converge before "
                f"{DONE_STEP_NAME}"
            )

    by_key: dict[str, list[str]] = {}
    for vertex in vertices:
        if vertex != DONE_STEP_NAME:
            by_key.setdefault(workflow.step(vertex).context_key, []).append(vertex)
    for key, names in by_key.items():
        if len(names) > 1:
            raise ContextKeyCollisionError(
                f"{workflow.name}: context key collision for {key!r}: {', '.join(names)}"
            )

    handled: dict[str, set[str]] = {}
    for edge in workflow.edges:
        handled.setdefault(edge.source, set()).add(edge.event)
    for vertex in vertices:
        if vertex == DONE_STEP_NAME:
            continue
        declared = workflow.step(vertex).events
        for event in sorted(handled.get(vertex, set())):
            if event not in declared:
                raise UndeclaredEventError(
                    f"{workflow.name}: {vertex} does not declare {event!r} in its events"
                )
        for event in declared:
            if event not in handled.get(vertex, set()):
                raise UnhandledEventError(
                    f"{workflow.name}: {vertex} declares event {event!r} but no transition "
                    f"handles it"
                )

    return {vertex: frozenset(into[vertex]) for vertex in vertices}


def _reachable(start: str, out: Mapping[str, list[str]]) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in out[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _find_cycle(vertices: list[str], out: Mapping[str, list[str]]) -> list[str]:
    """A cycle as a path (first vertex repeated at the end), or ``[]``; iterative DFS."""
    colour: dict[str, int] = dict.fromkeys(vertices, 0)
    for root in vertices:
        if colour[root]:
            continue
        path: list[str] = [root]
        iters = [iter(out[root])]
        colour[root] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                iters.pop()
            elif colour[nxt] == 1:
                return [*path[path.index(nxt) :], nxt]
            elif colour[nxt] == 0:
                colour[nxt] = 1
                path.append(nxt)
                iters.append(iter(out[nxt]))
    return []
