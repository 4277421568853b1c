"""A workflow's step graph as Mermaid or Graphviz DOT text, optionally marked with an instance's
step states and the language that ran each step. Pure and deterministic.

HephaestusOban offers no view of its workflows, and a graph read off the definition is the one
the engine walks (``Workflow.edges``: static clauses and the declared targets of dynamic ones),
so the picture cannot drift from what runs. Nodes keep the definition's order (start step
first, then as the transitions name them) and are named ``s0``, ``s1``, … so the same workflow
always gives the same bytes. Every label is escaped for the format it goes into: step modules
are plain, but events are any atom text (quotes, ``|``, ``#``, newlines).

Marks (``StepMark``) come from the rows of one instance; :func:`step_marks` derives them from
plain values so the rules are tested here, without a database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from bridge.workflows.model.definition import ASYNC_EVENT, DONE_STEP_NAME, Workflow
from bridge.workflows.model.instance import Context, Status

WAIT_STEP_NAME = "Elixir.Hephaestus.Steps.Wait"
WAIT_FOR_EVENT_STEP_NAME = "Elixir.Hephaestus.Steps.WaitForEvent"

StepState: TypeAlias = Literal["completed", "active", "waiting", "failed", "not reached"]
Language: TypeAlias = Literal["python", "elixir"]
STEP_STATES: tuple[StepState, ...] = ("completed", "active", "waiting", "failed", "not reached")
LANGUAGE_LABELS: Mapping[Language, str] = {"python": "Python", "elixir": "Elixir"}
# Ended job states that mean the step's body will not run again.
_FAILED_JOB_STATES = frozenset({"discarded", "cancelled"})

# (fill, stroke) per state; "not reached" is drawn dashed.
_COLOURS: Mapping[StepState, tuple[str, str]] = {
    "completed": ("#d4edda", "#2e7d32"),
    "active": ("#dbe9ff", "#1f5fbf"),
    "waiting": ("#fff3cd", "#b8860b"),
    "failed": ("#f8d7da", "#c62828"),
    "not reached": ("#f5f5f5", "#9e9e9e"),
}


@dataclass(frozen=True)
class StepMark:
    """What one instance did with a step: its state, and who ran its body (``None``: no job
    row says, e.g. it was never reached or its jobs were pruned)."""

    state: StepState
    language: Language | None = None


@dataclass(frozen=True)
class StepJob:
    """A job that ran (or will run) a step's body: HephaestusOban's ExecuteStepWorker or a
    delegated job (``delegated``), with the language of the node that runs it."""

    id: int
    step_ref: str
    state: str
    language: Language
    delegated: bool = False


@dataclass(frozen=True)
class _Node:
    id: str
    name: str
    label: tuple[str, ...]
    kind: Literal["step", "wait", "done"]


@dataclass(frozen=True)
class _Arrow:
    source: str
    target: str
    event: str
    dynamic: bool


# -- reading the definition ---------------------------------------------------------------------


def _display_names(names: Sequence[str]) -> dict[str, str]:
    """The last module segment (``Charge``), or the module without ``Elixir.`` when two steps
    share a last segment."""
    last = [name.rsplit(".", 1)[-1] for name in names]
    return {
        name: short if last.count(short) == 1 else name.removeprefix("Elixir.")
        for name, short in zip(names, last, strict=True)
    }


def _wait_detail(workflow: Workflow, name: str) -> str | None:
    """``5 minute`` for a Wait step whose config a static clause (or the start) gives."""
    configs = [workflow.start_config] if workflow.start_step == name else []
    for edge in workflow.edges:
        if edge.dynamic or name not in edge.targets:
            continue
        for target, config in workflow.transit(edge.source, edge.event, Context()) or []:
            if target == name:
                configs.append(config)
    for config in configs:
        if config and "duration" in config and "unit" in config:
            return f"{config['duration']} {config['unit']}"
    return None


def _nodes(
    workflow: Workflow,
    marks: Mapping[str, StepMark] | None,
    elixir_steps: Iterable[str],
) -> list[_Node]:
    names = list(workflow.steps)
    shown = _display_names(names)
    remote = set(elixir_steps)
    nodes = []
    for index, name in enumerate(names):
        kind: Literal["step", "wait", "done"] = "step"
        label = [shown[name]]
        if name == DONE_STEP_NAME:
            kind = "done"
        elif name in (WAIT_STEP_NAME, WAIT_FOR_EVENT_STEP_NAME):
            kind = "wait"
            detail = _wait_detail(workflow, name) if name == WAIT_STEP_NAME else "an event"
            if detail:
                label.append(f"for {detail}")
        if marks is not None:
            mark = marks.get(name, StepMark("not reached"))
            language = LANGUAGE_LABELS[mark.language] if mark.language else None
            label.append(f"{mark.state} · {language}" if language else mark.state)
        elif name in remote:
            label.append("runs in Elixir")
        nodes.append(_Node(f"s{index}", name, tuple(label), kind))
    return nodes


def _arrows(workflow: Workflow, ids: Mapping[str, str]) -> list[_Arrow]:
    return [
        _Arrow(ids[edge.source], ids[target], edge.event, edge.dynamic)
        for edge in workflow.edges
        for target in edge.targets
    ]


def _taken(
    workflow: Workflow, marks: Mapping[str, StepMark] | None, events: Mapping[str, frozenset[str]]
) -> set[tuple[str, str, str]]:
    """(source, event, target) of the edges the instance went along: the source completed with
    that event (a step result says so) and the target was reached."""
    if marks is None:
        return set()
    taken = set()
    for edge in workflow.edges:
        source = marks.get(edge.source)
        if (
            source is None
            or source.state != "completed"
            or edge.event not in events.get(edge.source, frozenset())
        ):
            continue
        for target in edge.targets:
            if marks.get(target, StepMark("not reached")).state != "not reached":
                taken.add((edge.source, edge.event, target))
    return taken


def _title(workflow: Workflow, instance: str | None) -> str:
    title = f"{workflow.name} (version {workflow.version})"
    return f"{title}, instance {instance}" if instance is not None else title


def _state(marks: Mapping[str, StepMark], name: str) -> StepState:
    return marks.get(name, StepMark("not reached")).state


# -- Mermaid ------------------------------------------------------------------------------------

# Mermaid reads entity codes (``#quot;``, ``#35;``) inside quoted text; everything that could end
# the quote, the edge label, or open markup or markdown is written as one.
_MERMAID_ESCAPES = {
    '"': "#quot;",
    "#": "#35;",
    "&": "#amp;",
    "<": "#lt;",
    ">": "#gt;",
    "|": "#124;",
    "`": "#96;",
    "\\": "#92;",
}


def mermaid_text(text: str) -> str:
    """``text`` safe inside a Mermaid quoted label: entity codes for the characters Mermaid
    reads, control characters as numeric entities."""
    out = []
    for char in text:
        if char in _MERMAID_ESCAPES:
            out.append(_MERMAID_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"#{ord(char)};")
        else:
            out.append(char)
    return "".join(out)


def _mermaid_node(node: _Node) -> str:
    label = '"' + "<br>".join(mermaid_text(line) for line in node.label) + '"'
    if node.kind == "done":
        return f"{node.id}(({label}))"
    if node.kind == "wait":
        return f"{node.id}{{{{{label}}}}}"
    return f"{node.id}[{label}]"


def to_mermaid(
    workflow: Workflow,
    marks: Mapping[str, StepMark] | None = None,
    *,
    events: Mapping[str, frozenset[str]] | None = None,
    elixir_steps: Iterable[str] = (),
    instance: str | None = None,
) -> str:
    """A Mermaid ``flowchart``; with ``marks``, each step shows its state and language, coloured
    by state, and the edges the instance went along (``events``) are drawn thick."""
    nodes = _nodes(workflow, marks, elixir_steps)
    ids = {node.name: node.id for node in nodes}
    taken = _taken(workflow, marks, events or {})
    # The front matter is YAML: a JSON string is a valid YAML double-quoted scalar.
    lines = ["---", f"title: {json.dumps(_title(workflow, instance))}", "---"]
    lines.append("flowchart TD")
    lines.extend(f"    {_mermaid_node(node)}" for node in nodes)
    for edge in workflow.edges:
        for target in edge.targets:
            if (edge.source, edge.event, target) in taken:
                arrow = "==>"
            else:
                arrow = "-.->" if edge.dynamic else "-->"
            label = mermaid_text(edge.event)
            lines.append(f'    {ids[edge.source]} {arrow}|"{label}"| {ids[target]}')
    if marks is not None:
        for state in STEP_STATES:
            members = [n.id for n in nodes if _state(marks, n.name) == state]
            if not members:
                continue
            fill, stroke = _COLOURS[state]
            dash = ",stroke-dasharray:4 3" if state == "not reached" else ""
            css = state.replace(" ", "_")
            lines.append(f"    classDef {css} fill:{fill},stroke:{stroke}{dash}")
            lines.append(f"    class {','.join(members)} {css}")
    return "\n".join(lines) + "\n"


# -- Graphviz DOT -------------------------------------------------------------------------------


def dot_text(text: str) -> str:
    """``text`` inside a DOT double-quoted string: ``\\`` and ``"`` escaped (a lone backslash
    would start a DOT escape such as ``\\N``), line breaks as ``\\n``, other control characters
    written out as ``\\uXXXX`` text."""
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


_DOT_SHAPES = {"step": "box", "wait": "hexagon", "done": "doublecircle"}


def _dot_node(node: _Node, mark: StepMark | None) -> str:
    label = "\\n".join(dot_text(line) for line in node.label)
    styles = ["rounded"] if node.kind == "step" else []
    if mark is not None:
        styles.append("filled")
        if mark.state == "not reached":
            styles.append("dashed")
    attrs = [f'label="{label}"', f"shape={_DOT_SHAPES[node.kind]}"]
    if styles:
        attrs.append(f'style="{",".join(styles)}"')
    if mark is not None:
        fill, stroke = _COLOURS[mark.state]
        attrs.append(f'fillcolor="{fill}", color="{stroke}"')
    return f"  {node.id} [{', '.join(attrs)}];"


def to_dot(
    workflow: Workflow,
    marks: Mapping[str, StepMark] | None = None,
    *,
    events: Mapping[str, frozenset[str]] | None = None,
    elixir_steps: Iterable[str] = (),
    instance: str | None = None,
) -> str:
    """A Graphviz ``digraph`` of the same graph as :func:`to_mermaid` (dashed edges: a dynamic
    transition's declared targets; bold: the edges the instance went along)."""
    nodes = _nodes(workflow, marks, elixir_steps)
    ids = {node.name: node.id for node in nodes}
    taken = _taken(workflow, marks, events or {})
    lines = [
        f'digraph "{dot_text(workflow.name)}" {{',
        f'  label="{dot_text(_title(workflow, instance))}";',
        "  labelloc=t;",
        '  fontname="Helvetica";',
        "  rankdir=TB;",
        '  node [fontname="Helvetica"];',
        '  edge [fontname="Helvetica"];',
    ]
    for node in nodes:
        mark = None if marks is None else marks.get(node.name, StepMark("not reached"))
        lines.append(_dot_node(node, mark))
    for edge in workflow.edges:
        for target in edge.targets:
            attrs = [f'label="{dot_text(edge.event)}"']
            if edge.dynamic:
                attrs.append("style=dashed")
            if (edge.source, edge.event, target) in taken:
                attrs.append("penwidth=2.5")
            lines.append(f"  {ids[edge.source]} -> {ids[target]} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- an instance's marks ------------------------------------------------------------------------


def step_marks(
    workflow: Workflow,
    *,
    status: Status | str,
    current_step: str | None,
    active: Iterable[str],
    completed: Iterable[str],
    results: Sequence[tuple[str, str]],
    jobs: Sequence[StepJob],
) -> dict[str, StepMark]:
    """Each step's state in one instance, and the language of the job that ran its body.

    - completed: in ``completed_steps``;
    - failed: active, and the instance failed or the step's latest job was discarded or
      cancelled (an Elixir owner leaves such an instance running: FailureHandler never fires
      on Oban 2.23);
    - waiting: active, and its latest step result is ``__async__`` (a resume or a delegated
      step's completion is awaited) or the instance waits on it;
    - active: otherwise in ``active_steps`` (its job queued, running or retrying);
    - not reached: none of these.

    ``results`` are ``(step_ref, event)`` in insertion order. The job that tells the language
    and a failure is the step's latest delegated job, else its latest ExecuteStep job: the
    owner executes a delegated step again after its job went out (HephaestusOban runs every
    active step again when a sibling finishes, golden s2b), and that re-execution only says
    ``{:async}`` again, the other side still runs the body.
    """
    active_set, completed_set = set(active), set(completed)
    last_event: dict[str, str] = {}
    for step_ref, event in results:
        last_event[step_ref] = event
    last_job: dict[str, StepJob] = {}
    for each in sorted(jobs, key=lambda j: (j.delegated, j.id)):
        last_job[each.step_ref] = each
    marks: dict[str, StepMark] = {}
    for name in workflow.steps:
        job = last_job.get(name)
        language: Language | None = job.language if job is not None else None
        state: StepState
        if name in completed_set:
            state = "completed"
        elif name in active_set:
            if status == "failed" or (job is not None and job.state in _FAILED_JOB_STATES):
                state = "failed"
            elif last_event.get(name) == ASYNC_EVENT or (
                status == "waiting" and current_step == name
            ):
                state = "waiting"
            else:
                state = "active"
        else:
            state = "not reached"
            language = None
        marks[name] = StepMark(state, language)
    return marks


def result_events(results: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    """The events each step's results recorded (``__async__`` left out): which edges were
    taken."""
    found: dict[str, set[str]] = {}
    for step_ref, event in results:
        if event != ASYNC_EVENT:
            found.setdefault(step_ref, set()).add(event)
    return {name: frozenset(events) for name, events in found.items()}
