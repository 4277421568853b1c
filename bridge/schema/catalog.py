"""What a live schema holds, read from the PostgreSQL catalogs.

Definitions are read with ``search_path`` emptied so every name comes back schema-qualified,
then the schema's own name is replaced by ``{prefix}``: two schemas with the same objects under
different names then read identically, which is what ``verify`` compares.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

PLACEHOLDER = "{prefix}"


@dataclass
class TableInfo:
    name: str
    persistence: str  # "p" permanent, "u" unlogged
    comment: str | None
    columns: dict[str, tuple[str, bool, str | None]] = field(default_factory=dict)
    # column name -> (type, not null, default expression)
    constraints: dict[str, tuple[str, str, bool]] = field(default_factory=dict)
    # constraint name -> (contype, definition, validated)


@dataclass
class SchemaSnapshot:
    exists: bool
    enums: dict[str, list[str]] = field(default_factory=dict)
    tables: dict[str, TableInfo] = field(default_factory=dict)
    indexes: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (table, def)


def read_schema(conn: psycopg.Connection[Any], schema: str) -> SchemaSnapshot:
    """Snapshot ``schema``; runs inside the caller's transaction with search_path emptied."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL search_path = pg_catalog")
        cur.execute(
            "SELECT oid, quote_ident(nspname) FROM pg_namespace WHERE nspname = %s", (schema,)
        )
        row = cur.fetchone()
        if row is None:
            return SchemaSnapshot(exists=False)
        ns_oid, quoted = row
        norm = _normaliser(quoted)
        snap = SchemaSnapshot(exists=True)

        cur.execute(
            """
            SELECT t.typname, e.enumlabel
            FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
            WHERE t.typnamespace = %s
            ORDER BY t.typname, e.enumsortorder
            """,
            (ns_oid,),
        )
        for typname, label in cur.fetchall():
            snap.enums.setdefault(typname, []).append(label)

        cur.execute(
            """
            SELECT c.oid, c.relname, c.relpersistence, obj_description(c.oid, 'pg_class')
            FROM pg_class c
            WHERE c.relnamespace = %s AND c.relkind IN ('r', 'p')
            """,
            (ns_oid,),
        )
        table_oids: dict[int, TableInfo] = {}
        for oid, relname, persistence, comment in cur.fetchall():
            info = TableInfo(relname, persistence, comment)
            snap.tables[relname] = info
            table_oids[oid] = info

        if table_oids:
            cur.execute(
                """
                SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod),
                       a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
                FROM pg_attribute a
                LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
                ORDER BY a.attrelid, a.attnum
                """,
                (list(table_oids),),
            )
            for relid, name, typ, notnull, default in cur.fetchall():
                table_oids[relid].columns[name] = (
                    norm(typ),
                    notnull,
                    norm(default) if default is not None else None,
                )

            cur.execute(
                """
                SELECT conrelid, conname, contype, pg_get_constraintdef(oid), convalidated
                FROM pg_constraint WHERE conrelid = ANY(%s)
                """,
                (list(table_oids),),
            )
            for relid, name, contype, definition, validated in cur.fetchall():
                table_oids[relid].constraints[name] = (contype, norm(definition), validated)

        cur.execute(
            """
            SELECT i.relname, t.relname, pg_get_indexdef(i.oid)
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            WHERE t.relnamespace = %s AND NOT x.indisprimary
            """,
            (ns_oid,),
        )
        for index, table, definition in cur.fetchall():
            snap.indexes[index] = (table, norm(definition))
    return snap


def _normaliser(quoted_schema: str) -> Callable[[str], str]:
    """Replace the schema's name, as the catalogs print it, by ``{prefix}``.

    The name appears as an identifier (``"o'x".oban_jobs``) and inside string literals, where
    its quotes are doubled (``nextval('"o''x".oban_jobs_id_seq'::regclass)``). A bare name
    (``public``) is only replaced where it starts an identifier, not inside another one
    (``xpublic.t``)."""
    spellings = {quoted_schema, quoted_schema.replace("'", "''")}
    alternatives = "|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True))
    guard = "" if quoted_schema.startswith('"') else r'(?<![\w$"])'
    pattern = re.compile(f"{guard}(?:{alternatives})\\.")
    replacement = PLACEHOLDER + "."

    def norm(text: str) -> str:
        return pattern.sub(lambda _: replacement, text)

    return norm
