"""The shared schema as plain SQL files, split into installable objects.

The SQL in ``schema/`` (``bridge/schema/sql``) is the single source of truth: ``install`` runs
the blocks of missing objects, ``verify`` builds its expectations by running all of them in a
scratch schema, and ``show`` prints them. No second description of the schema exists that
could drift from the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from bridge.db import quote_ident

_OBJECT_MARKER = re.compile(r"^-- object: (type|table|index) (\w+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class SchemaObject:
    """One object and every statement that creates it (with its constraints and comment)."""

    kind: str  # "type" | "table" | "index"
    name: str
    source: str  # file it comes from
    template: str  # SQL with {prefix} placeholders

    def render(self, prefix: str) -> str:
        return self.template.replace("{prefix}", quote_ident(prefix))

    def statements(self, prefix: str) -> list[str]:
        """Split on statement ends; the files hold no semicolons inside literals."""
        text = _strip_comments(self.render(prefix))
        return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def sql_files() -> list[tuple[str, str]]:
    folder = resources.files("bridge.schema") / "sql"
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return files


def load_objects() -> list[SchemaObject]:
    """Every object in file order, which is also a valid creation order."""
    objects: list[SchemaObject] = []
    for filename, text in sql_files():
        matches = list(_OBJECT_MARKER.finditer(text))
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            body = text[match.end() : end].strip() + "\n"
            objects.append(SchemaObject(match.group(1), match.group(2), filename, body))
    return objects


def render_all(prefix: str) -> str:
    """The whole schema as one script, for ``bridge schema show`` and for DBAs."""
    parts = [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(prefix)};\n"]
    parts += [_render_file(text, prefix) for _, text in sql_files()]
    return "\n".join(parts)


def _render_file(text: str, prefix: str) -> str:
    return text.replace("{prefix}", quote_ident(prefix))
