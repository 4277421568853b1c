"""Install and verify the shared schema: Oban's ``oban_jobs``/``oban_peers``, HephaestusEcto's
``workflow_instances`` and HephaestusOban's ``hephaestus_step_results``.

The Elixir migrations own these objects. ``install`` therefore only creates what is missing
(so a Python-first deployment works, and a later ``mix ecto.migrate`` finds the version comments
it expects and does nothing) and never alters or drops anything; ``verify`` says precisely what
differs from what bridge needs, so an operator can fix it with the Elixir migrations.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from bridge.db import DEFAULT_PREFIX
from bridge.schema.catalog import SchemaSnapshot, read_schema
from bridge.schema.ddl import SchemaObject, load_objects, render_all

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_PREFIX_BYTES",
    "MIN_VERSIONS",
    "Difference",
    "InstallReport",
    "SchemaInstallError",
    "VerifyReport",
    "install",
    "prefix_problem",
    "render_all",
    "shown",
    "verify",
]

# PostgreSQL names (schemas and NOTIFY channels) hold at most NAMEDATALEN - 1 bytes; it cuts a
# longer schema name with only a NOTICE, and refuses a longer channel name.
MAX_NAME_BYTES = 63
# Oban (and bridge) notify on "<prefix>.oban_insert", "<prefix>.oban_signal", ...: 12 bytes
# more than the prefix. A longer prefix installs, but every insert fails.
MAX_PREFIX_BYTES = MAX_NAME_BYTES - len(".oban_insert")

# Version comments each table must carry at least (the migrations the SQL files mirror).
MIN_VERSIONS: dict[str, tuple[str, int]] = {
    "oban_jobs": ("Oban", 14),
    "workflow_instances": ("HephaestusEcto", 3),
    "hephaestus_step_results": ("HephaestusOban", 4),
}


class SchemaInstallError(RuntimeError):
    """A missing object could not be created (existing ones differ, or no privilege); nothing
    changed."""


# Control characters shown escaped (\x0a), so a report line stays one line.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(32), 127)}


def shown(prefix: str) -> str:
    """The schema name for a message: double-quoted, with newlines and other control
    characters escaped, so a message naming it stays one line whatever the name holds."""
    return json.dumps(prefix, ensure_ascii=False)


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be the shared schema's name, or None if it can.

    PostgreSQL takes any non-empty name without NUL, but cuts it past 63 bytes (the schema
    created would not be the one asked for), and Oban's notification channels add 12 bytes to
    it: past 51 bytes every insert fails with "channel name too long". A ``%`` breaks every
    query that also takes parameters (psycopg finds placeholders inside identifiers)."""
    if not prefix:
        return "the schema name is empty: give one such as public"
    if "\x00" in prefix:
        return f"the schema name {shown(prefix)} holds a NUL character, which names cannot hold"
    if "%" in prefix:
        # psycopg reads placeholders inside quoted identifiers too ("a%sb" takes a parameter)
        return (
            f"the schema name {shown(prefix)} holds '%', which bridge's parameterised queries "
            "cannot carry: choose a name without it"
        )
    size = len(prefix.encode())
    if size > MAX_PREFIX_BYTES:
        return (
            f"the schema name {shown(prefix)} is {size} bytes long: Oban notifies on channels "
            f'named "<prefix>.oban_insert" and PostgreSQL names hold at most {MAX_NAME_BYTES} '
            f"bytes, so use at most {MAX_PREFIX_BYTES} bytes"
        )
    return None


@dataclass(frozen=True)
class Difference:
    """One way a live schema departs from what bridge needs.

    ``blocking`` differences make bridge's reads or writes wrong; the others are worth knowing
    (an extra column from a newer migration, a constraint someone validated) but harmless.
    """

    blocking: bool
    subject: str
    message: str

    def __str__(self) -> str:
        """One line, whatever the subject holds (a schema name may hold a newline)."""
        tag = "MISMATCH" if self.blocking else "note"
        return f"{tag}: {self.subject}: {self.message}".translate(_CONTROL)

    def to_dict(self) -> dict[str, Any]:
        return {"blocking": self.blocking, "subject": self.subject, "message": self.message}


@dataclass
class VerifyReport:
    prefix: str
    differences: list[Difference] = field(default_factory=list)

    @property
    def compatible(self) -> bool:
        return not any(d.blocking for d in self.differences)

    @property
    def mismatches(self) -> list[Difference]:
        return [d for d in self.differences if d.blocking]

    @property
    def exists(self) -> bool:
        return not any(d.subject == f"schema {self.prefix}" for d in self.mismatches)


@dataclass
class InstallReport:
    prefix: str
    created: list[str] = field(default_factory=list)  # "schema <prefix>", "table oban_jobs", ...

    @property
    def changed(self) -> bool:
        return bool(self.created)


def _exists(snap: SchemaSnapshot, obj: SchemaObject) -> bool:
    if obj.kind == "type":
        return obj.name in snap.enums
    if obj.kind == "table":
        return obj.name in snap.tables
    return obj.name in snap.indexes


def install(conn: psycopg.Connection[Any], prefix: str = DEFAULT_PREFIX) -> InstallReport:
    """Create the missing objects in ``prefix`` in one transaction; idempotent.

    Concurrent installers serialise on a transaction-scoped advisory lock so two processes
    starting at once do not both try to create the same table. A name PostgreSQL would cut, or
    one too long for Oban's channels (:func:`prefix_problem`), is a ``ValueError``.
    """
    problem = prefix_problem(prefix)
    if problem is not None:
        raise ValueError(problem)
    report = InstallReport(prefix)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtext('bridge.schema.install:' || %s))", (prefix,)
        )
        snap = read_schema(conn, prefix)
        if not snap.exists:
            try:
                with conn.transaction():
                    cur.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(prefix))
                    )
            except psycopg.Error as exc:
                raise SchemaInstallError(
                    f"cannot create schema {shown(prefix)}: {_first_line(exc)}"
                ) from exc
            report.created.append(f"schema {prefix}")
        for obj in load_objects():
            if _exists(snap, obj):
                continue
            try:
                with conn.transaction():
                    for statement in obj.statements(prefix):
                        cur.execute(statement)
            except psycopg.Error as exc:
                raise SchemaInstallError(
                    f"cannot create {obj.kind} {obj.name} in schema {shown(prefix)}: "
                    f"{_first_line(exc)}; nothing was changed, see `bridge schema verify`"
                ) from exc
            report.created.append(f"{obj.kind} {obj.name}")
    return report


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def expected_snapshot(conn: psycopg.Connection[Any]) -> SchemaSnapshot:
    """What the SQL files create, read back from a scratch schema that is rolled back."""
    scratch = f"bridge_verify_{uuid.uuid4().hex[:12]}"
    tx = conn.transaction(force_rollback=True)
    with tx, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch)))
        for obj in load_objects():
            for statement in obj.statements(scratch):
                cur.execute(statement)
        return read_schema(conn, scratch)


def verify(conn: psycopg.Connection[Any], prefix: str = DEFAULT_PREFIX) -> VerifyReport:
    """Compare the live schema ``prefix`` with what bridge needs, reading only catalogs."""
    expected = expected_snapshot(conn)
    actual = read_schema(conn, prefix)
    report = VerifyReport(prefix)
    if not actual.exists:
        report.differences.append(Difference(True, f"schema {prefix}", "does not exist"))
        return report
    report.differences += _compare_enums(expected, actual)
    report.differences += _compare_tables(expected, actual)
    report.differences += _compare_indexes(expected, actual)
    return report


def _compare_enums(expected: SchemaSnapshot, actual: SchemaSnapshot) -> list[Difference]:
    out: list[Difference] = []
    for name, labels in expected.enums.items():
        subject = f"type {name}"
        have = actual.enums.get(name)
        if have is None:
            out.append(Difference(True, subject, "enum type is missing"))
            continue
        missing = [label for label in labels if label not in have]
        for label in missing:
            out.append(Difference(True, subject, f"enum value '{label}' is missing"))
        extra = [label for label in have if label not in labels]
        for label in extra:
            out.append(Difference(False, subject, f"extra enum value '{label}'"))
        common = [label for label in have if label in labels]
        if not missing and common != labels:
            out.append(
                Difference(False, subject, f"values ordered {have}, Oban orders them {labels}")
            )
    return out


def _compare_tables(expected: SchemaSnapshot, actual: SchemaSnapshot) -> list[Difference]:
    out: list[Difference] = []
    for name, want in expected.tables.items():
        have = actual.tables.get(name)
        if have is None:
            out.append(Difference(True, f"table {name}", "table is missing"))
            continue
        if have.persistence != want.persistence:
            kinds = {"p": "logged", "u": "unlogged"}
            out.append(
                Difference(
                    False,
                    f"table {name}",
                    f"is {kinds.get(have.persistence, have.persistence)}, "
                    f"expected {kinds.get(want.persistence, want.persistence)}",
                )
            )
        out += _compare_columns(name, want.columns, have.columns)
        out += _compare_constraints(name, want.constraints, have.constraints)
        if name in MIN_VERSIONS:
            out += _compare_version(name, have.comment)
    return out


# Columns made by Ecto's ``timestamps()`` in the migrations: their type follows the Elixir Repo's
# ``migration_timestamps`` setting (``timestamp(0)`` by default, ``timestamp`` with
# ``type: :utc_datetime_usec``, ``timestamptz`` with ``type: :timestamptz``) and so may their
# default. bridge writes whole seconds of UTC in each (``workflows/store/stamps.py``). The schema
# field stays ``:naive_datetime`` whatever the setting, and Postgrex refuses to encode a
# NaiveDateTime for a ``timestamptz`` parameter, so HephaestusEcto cannot write those columns.
ECTO_TIMESTAMPS = frozenset(
    {("workflow_instances", "inserted_at"), ("workflow_instances", "updated_at")}
)
_TIMESTAMP = re.compile(r"timestamp(\(\d\))? with(out)? time zone")


def _ecto_variant(table: str, col: str, have: str, want: str) -> str | None:
    """A note for a ``timestamps()`` column typed by another Ecto setting, else None."""
    if (table, col) not in ECTO_TIMESTAMPS or not _TIMESTAMP.fullmatch(have):
        return None
    note = (
        f"type is {have}, the Elixir migrations' default is {want} (an Ecto Repo's "
        "migration_timestamps setting makes this one); bridge reads and writes either"
    )
    if "with time zone" in have:
        note += (
            ", but HephaestusEcto 0.3.0 cannot write it (Postgrex refuses its NaiveDateTime "
            "timestamps for timestamptz): Elixir nodes cannot start or advance workflows here"
        )
    return note


def _compare_columns(
    table: str,
    want: dict[str, tuple[str, bool, str | None]],
    have: dict[str, tuple[str, bool, str | None]],
) -> list[Difference]:
    out: list[Difference] = []
    for col, (typ, notnull, default) in want.items():
        subject = f"column {table}.{col}"
        if col not in have:
            out.append(Difference(True, subject, f"column is missing (expected {typ})"))
            continue
        htyp, hnotnull, hdefault = have[col]
        if htyp != typ:
            variant = _ecto_variant(table, col, htyp, typ)
            if variant is not None:
                out.append(Difference(False, subject, variant))
            else:
                out.append(Difference(True, subject, f"type is {htyp}, expected {typ}"))
        if hnotnull != notnull:
            want_null = "NOT NULL" if notnull else "nullable"
            have_null = "NOT NULL" if hnotnull else "nullable"
            out.append(Difference(True, subject, f"is {have_null}, expected {want_null}"))
        if hdefault != default:
            # bridge always writes these columns: a default it does not expect is harmless
            harmless = default is None and (table, col) in ECTO_TIMESTAMPS
            out.append(
                Difference(
                    not harmless,
                    subject,
                    f"default is {hdefault or 'none'}, expected {default or 'none'}",
                )
            )
    for col in have.keys() - want.keys():
        out.append(Difference(False, f"column {table}.{col}", "extra column (not used by bridge)"))
    return out


def _compare_constraints(
    table: str,
    want: dict[str, tuple[str, str, bool]],
    have: dict[str, tuple[str, str, bool]],
) -> list[Difference]:
    out: list[Difference] = []
    for name, (_kind, definition, validated) in want.items():
        subject = f"constraint {table}.{name}"
        if name not in have:
            out.append(Difference(True, subject, f"constraint is missing ({definition})"))
            continue
        _hkind, hdef, hvalidated = have[name]
        if hdef != definition:
            out.append(Difference(True, subject, f"is {hdef}, expected {definition}"))
        elif hvalidated != validated:
            state = "validated" if hvalidated else "NOT VALID"
            out.append(Difference(False, subject, f"is {state} (Oban leaves it otherwise)"))
    for name in have.keys() - want.keys():
        out.append(Difference(False, f"constraint {table}.{name}", "extra constraint"))
    return out


def _compare_version(table: str, comment: str | None) -> list[Difference]:
    owner, minimum = MIN_VERSIONS[table]
    subject = f"table {table}"
    if comment is None or not comment.strip().isdigit():
        return [
            Difference(
                True,
                subject,
                f"no {owner} migration version comment (found {comment!r}); "
                f"expected version {minimum}",
            )
        ]
    version = int(comment.strip())
    if version < minimum:
        return [
            Difference(
                True,
                subject,
                f"{owner} migration version {version} is older than {minimum}, the oldest "
                f"bridge supports: run the {owner} migrations up to {minimum}",
            )
        ]
    if version > minimum:
        return [
            Difference(
                False,
                subject,
                f"{owner} migration version {version} is newer than {minimum}, the newest "
                "bridge knows",
            )
        ]
    return []


def _compare_indexes(expected: SchemaSnapshot, actual: SchemaSnapshot) -> list[Difference]:
    out: list[Difference] = []
    for name, (table, definition) in expected.indexes.items():
        subject = f"index {name}"
        if name not in actual.indexes:
            out.append(Difference(True, subject, f"index is missing on {table}"))
            continue
        _, have_def = actual.indexes[name]
        if have_def != definition:
            out.append(Difference(True, subject, f"is `{have_def}`, expected `{definition}`"))
    return out
