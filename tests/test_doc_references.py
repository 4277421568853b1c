"""Every file or folder the docs point to exists in a clone of the repository.

A reader follows `tests/data/golden/cron/` or `bridge/workflows/run/recording.py` from a doc; a
path that only existed on the author's machine (`/work/shared/…`) or before a move is a dead end.
Paths are taken from inline code and from Markdown links; a path resolves against the doc's own
folder (an Elixir project's README speaks of its `lib/`) or the repository root.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [
        ROOT / "README.md",
        *ROOT.glob("docs/**/*.md"),
        *ROOT.glob("examples/*/README.md"),
        *ROOT.glob("integrations/*/README.md"),
        ROOT / "elixir_fixture" / "README.md",
    ]
)

_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
# Looks like a path: segments joined by '/', no scheme, not an Elixir arity (`query/2`).
_PATHLIKE = re.compile(r"^(\.{1,2}/|/)?[\w.\-*{},]+(/[\w.\-*{},]*)+$")
_ARITY = re.compile(r"^[\w.!?]+/[\d,]+$")  # `query/2`, `Oban.insert/1,2`
_CRON = re.compile(r"^[\d*,\-]+/\d+$")  # `*/15`, `1-30/2`
# Path-like text that names no file of the repository, by nature.
NOT_REPOSITORY_PATHS = {
    "./.bridge/pgdata",  # made at run time by the embedded server
    "config/config.exs",  # the user's Elixir app
    "config/runtime.exs",  # the user's Elixir app
    "config/test.exs",  # the user's Elixir app
    "myapp/",  # the reader's own Python app
    "Etc/UTC",  # a time zone
    "Cursor.execute/executemany/copy",  # psycopg methods
}


def references(text: str) -> list[str]:
    found = []
    for match in _CODE.finditer(text):
        token = match.group(1).strip().split()[0] if match.group(1).strip() else ""
        found.append(token)
    found += [m.group(1).split("#")[0] for m in _LINK.finditer(text)]
    return [
        t
        for t in found
        if t
        and "://" not in t
        and _PATHLIKE.match(t)
        and not _ARITY.match(t)
        and not _CRON.match(t)
        and t not in NOT_REPOSITORY_PATHS
    ]


def expand(path: str) -> list[str]:
    """``a/{b,c}/d`` -> ``a/b/d``, ``a/c/d``."""
    brace = re.search(r"\{([^{}]*)\}", path)
    if not brace:
        return [path]
    head, tail = path[: brace.start()], path[brace.end() :]
    return [p for part in brace.group(1).split(",") for p in expand(head + part + tail)]


def exists(doc: Path, ref: str) -> bool:
    for candidate in expand(ref):
        bases = [doc.parent, ROOT]
        if candidate.startswith("/"):
            return False  # an absolute path is nobody else's path
        if not any(list(base.glob(candidate)) or (base / candidate).exists() for base in bases):
            return False
    return True


def written_by_page(doc: Path, text: str) -> set[str]:
    """The reader's files a docs/guide/ page writes (its path-comment blocks), and their folders:
    the page creates them, so naming them is no dead end."""
    if doc.parent != ROOT / "docs" / "guide" or not doc.name[:2].isdigit():
        return set()
    from tests.support.guide import ParseElixir, WriteFile, parse_page

    names: set[str] = set()
    for step in parse_page(doc.name, text).steps:
        path = step.path if isinstance(step, WriteFile | ParseElixir) else None
        while path:
            names |= {path, path + "/"}
            path = path.rpartition("/")[0]
    return names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_referenced_path_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    written = written_by_page(doc, text)
    missing = sorted({r for r in references(text) if r not in written and not exists(doc, r)})
    assert not missing, f"{doc.relative_to(ROOT)} points to paths not in the repository: {missing}"


def test_the_checker_finds_a_dead_reference() -> None:
    text = "see `tests/data/golden/cron/` and `/work/shared/golden/README.md`, `query!/2` and "
    text += "[x](docs/nowhere.md)"
    refs = references(text)
    assert refs == ["tests/data/golden/cron/", "/work/shared/golden/README.md", "docs/nowhere.md"]
    assert [exists(ROOT / "README.md", r) for r in refs] == [True, False, False]
