"""The shared schema as plain SQL files, split into installable objects.

The SQL in ``schema/`` (``bridge/schema/sql``) is the single source of truth: ``install`` runs
the statements of missing objects, ``verify`` builds its expectations by running all of them in
a scratch schema, and ``show`` prints them. No second description of the schema exists that
could drift from the first.

The files hold ``{prefix}`` where the schema name goes. They are split into statements
*before* the name goes in, and the name goes in as a quoted identifier (``psycopg.sql``), so
a name holding ``;``, ``--``, quotes or newlines is only ever a name: splitting the rendered
text would cut such a name apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from psycopg import sql

from bridge.db import quote_ident

PLACEHOLDER = "{prefix}"

_OBJECT_MARKER = re.compile(r"^-- object: (type|table|index) (\w+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class SchemaObject:
    """One object and every statement that creates it (with its constraints and comment)."""

    kind: str  # "type" | "table" | "index"
    name: str
    source: str  # file it comes from
    template: str  # SQL with {prefix} placeholders

    def templates(self) -> list[str]:
        """The statements, still with ``{prefix}``: comment lines dropped, split on ``;``.

        Safe because this is the file's own text (no ``;`` inside its literals, which
        ``tests/test_schema.py`` checks) and no schema name is in it yet."""
        return split_statements(self.template)

    def statements(self, prefix: str) -> list[sql.Composed]:
        """Each statement with ``prefix`` bound as an identifier, ready to execute."""
        return [compose(template, prefix) for template in self.templates()]


def split_statements(template: str) -> list[str]:
    """A template's statements without its ``--`` comment lines."""
    text = "\n".join(line for line in template.splitlines() if not line.lstrip().startswith("--"))
    return [statement.strip() for statement in text.split(";") if statement.strip()]


def compose(template: str, prefix: str) -> sql.Composed:
    """``template`` with every ``{prefix}`` replaced by ``prefix`` as a quoted identifier.

    Not ``sql.SQL.format``: the files' ``'{}'::jsonb`` would read as a placeholder."""
    parts: list[sql.Composable] = []
    for index, text in enumerate(template.split(PLACEHOLDER)):
        if index:
            parts.append(sql.Identifier(prefix))
        parts.append(sql.SQL(text))
    return sql.Composed(parts)


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
    """The whole schema as one script, for ``bridge schema show`` and for DBAs (``psql -f``).

    The quoted name goes into statements only: in a comment line, a name holding a newline
    would turn the rest of that comment into SQL."""
    parts = [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(prefix)};\n"]
    parts += [render_text(text, prefix) for _, text in sql_files()]
    return "\n".join(parts)


def render_text(text: str, prefix: str) -> str:
    """``text`` with ``{prefix}`` quoted in every line that is not a ``--`` comment."""
    quoted = quote_ident(prefix)
    lines = [
        line if line.lstrip().startswith("--") else line.replace(PLACEHOLDER, quoted)
        for line in text.splitlines(keepends=True)
    ]
    return "".join(lines)
