"""The shared schema: what ``bridge schema verify`` finds, as findings, and the migration
versions the tables carry.

Oban records its migration version as the comment on ``oban_jobs`` (``COMMENT ON TABLE ...
IS '14'``, what ``Oban.Migrations`` reads back to decide what to run); HephaestusEcto and
HephaestusOban do the same on their tables. ``schema.verify`` already compares those comments
with the versions bridge needs (``schema.MIN_VERSIONS``); this module only turns its differences
into findings and reports the versions as facts.
"""

from __future__ import annotations

from typing import Any

import psycopg

from bridge import schema
from bridge.doctor.findings import Finding
from bridge.schema.catalog import read_schema

CHECK = "schema"


def migration_versions(conn: psycopg.Connection[Any], prefix: str) -> dict[str, int | None]:
    """Each shared table's migration version as its comment says (None: no table, or no
    number in the comment), keyed ``oban``, ``hephaestus_ecto``, ``hephaestus_oban``."""
    snapshot = read_schema(conn, prefix)
    keys = {"oban_jobs": "oban", "workflow_instances": "hephaestus_ecto"}
    keys["hephaestus_step_results"] = "hephaestus_oban"
    versions: dict[str, int | None] = {}
    for table, key in keys.items():
        info = snapshot.tables.get(table)
        comment = (info.comment or "").strip() if info is not None else ""
        versions[key] = int(comment) if comment.isdigit() else None
    return versions


def has_oban_jobs(conn: psycopg.Connection[Any], prefix: str) -> bool:
    """Whether ``prefix`` holds an ``oban_jobs`` table (catalogs only: any role may ask)."""
    return "oban_jobs" in read_schema(conn, prefix).tables


def unverifiable(prefix: str, exc: psycopg.Error, *, present: bool) -> list[Finding]:
    """What doctor says when the role may not run ``verify`` (it builds the expected schema in
    a scratch schema, rolled back, which needs CREATE on the database): a note when
    ``oban_jobs`` is ``present``, else a blocking error."""
    shown = schema.shown(prefix)
    if not present:
        return [
            Finding(
                CHECK,
                "error",
                f"schema {shown} has no oban_jobs table",
                "create it with `bridge schema install` or the Elixir migrations "
                "(or pass --prefix)",
                {"subject": "table oban_jobs"},
                schema_blocking=True,
            )
        ]
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return [
        Finding(
            CHECK,
            "note",
            f"schema {shown} was not compared with what bridge needs ({reason}): this role "
            "may not create the scratch schema the comparison builds, so only the presence of "
            "oban_jobs was checked",
            "run `bridge schema verify` as a role with CREATE on the database",
            {"error": reason},
        )
    ]


def schema_findings(report: schema.VerifyReport) -> list[Finding]:
    """One finding per difference ``verify`` found: a mismatch is an error that blocks (exit
    status 5), a note stays a note."""
    shown = schema.shown(report.prefix)
    if not report.exists:
        return [
            Finding(
                CHECK,
                "error",
                f"schema {shown} does not exist",
                "create it with `bridge schema install` or the Elixir migrations "
                "(or pass --prefix)",
                {"subject": f"schema {report.prefix}"},
                schema_blocking=True,
            )
        ]
    found = []
    for difference in report.differences:
        if difference.blocking:
            found.append(
                Finding(
                    CHECK,
                    "error",
                    f"schema {shown}: {difference.subject}: {difference.message}",
                    "run the Elixir migrations (Oban, HephaestusEcto, HephaestusOban) up to "
                    "the versions `bridge schema show` prints; `bridge schema verify` lists "
                    "every difference",
                    difference.to_dict(),
                    schema_blocking=True,
                )
            )
        else:
            found.append(
                Finding(
                    CHECK,
                    "note",
                    f"schema {shown}: {difference.subject}: {difference.message}",
                    "nothing to do unless the note says so",
                    difference.to_dict(),
                )
            )
    return found
