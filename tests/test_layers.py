"""The package tree is the architecture (docs/architecture.md): arrows point down only.

Every import in ``bridge/`` — at module level, inside functions and under ``TYPE_CHECKING``
alike, since each is a dependency a reader must follow — is read with ``ast`` and checked
against the layer order below; and the module graph must have no cycle at all, within a layer
too. A change that makes ``wire`` reach into the runtime, ``jobs`` into ``workflows`` or any
library module into the CLI fails here with the offending import named.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bridge"

# Lowest first. A module may import modules of its own layer or of a lower one, never higher.
LAYERS: list[tuple[str, ...]] = [
    ("bridge.wire",),
    ("bridge.db",),
    ("bridge.schema",),
    ("bridge.jobs.queries",),
    ("bridge.jobs.client",),
    ("bridge.jobs.runtime",),
    ("bridge.jobs.plugins",),
    ("bridge.jobs.node",),
    ("bridge.workflows.model",),
    ("bridge.workflows.store",),
    ("bridge.workflows.run",),
    ("bridge.workflows.delegation",),
    ("bridge.workflows.serving", "bridge.workflows"),
    # Test helpers and the pytest plugin: above everything they drive; nothing in bridge
    # imports them.
    ("bridge.testing",),
    ("bridge.doctor",),
    ("bridge.cli",),
]
# The package roots only hold docstrings or lazy re-exports of what lies below them.
FACADES = {"bridge", "bridge.jobs"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> Iterator[tuple[int, str]]:
    """(line, imported bridge module) for every import statement anywhere in the module."""
    path = MODULES[name]
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "bridge":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "bridge":
                continue
            for alias in node.names:  # `from pkg import module` depends on that module
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else target


def rank(name: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer index): the longest prefix wins
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                candidate = (len(prefix), index)
                best = candidate if best is None or candidate > best else best
    return None if best is None else best[1]


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if m not in FACADES and rank(m) is None]
    assert not unplaced, f"modules in no layer of LAYERS (place them): {unplaced}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m not in FACADES))
def test_imports_point_down(name: str) -> None:
    own = rank(name)
    assert own is not None
    upward = [
        f"{MODULES[name].relative_to(PACKAGE.parent)}:{line} imports {target}"
        for line, target in imports_of(name)
        if target not in FACADES and (rank(target) or 0) > own
    ]
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = {
        name: {t for _, t in imports_of(name) if t in MODULES and t not in FACADES}
        for name in MODULES
        if name not in FACADES
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_layer_order() -> None:
    """The order the checks above enforce, as docs/architecture.md draws it."""
    assert (rank("bridge.jobs.node") or 0) > (rank("bridge.wire.term") or 0)
    assert rank("bridge.workflows.serving") == rank("bridge.workflows")
    assert (rank("bridge.cli.worker") or 0) > (rank("bridge.workflows.run.runner") or 0)
