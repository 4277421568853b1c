"""Running real nodes and reading real rows in job-runtime tests."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.jobs.client.registry import Registry
from bridge.jobs.node import Node, NodeConfig


def job_row(url: str, prefix: str, job_id: int) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL("SELECT *, state::text AS state FROM {}.oban_jobs WHERE id = %s").format(
                sql.Identifier(prefix)
            ),
            (job_id,),
        )
        row = cur.fetchone()
        assert row is not None, f"job {job_id} not found"
        return row


def job_json(url: str, prefix: str, job_id: int) -> dict[str, Any]:
    """The row as row_to_json shows it: what the golden files hold."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT row_to_json(j) FROM {}.oban_jobs j WHERE id = %s").format(
                sql.Identifier(prefix)
            ),
            (job_id,),
        ).fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]


async def wait_for_state(
    url: str, prefix: str, job_id: int, states: set[str], timeout: float = 15.0
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        row = job_row(url, prefix, job_id)
        if row["state"] in states:
            return row
        if loop.time() > deadline:
            raise AssertionError(f"job {job_id} is {row['state']}, wanted {states}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running_node(
    url: str, prefix: str, queues: dict[str, int], registry: Registry, **options: Any
) -> AsyncIterator[Node]:
    options.setdefault("poll_interval", 0.2)
    options.setdefault("shutdown_grace", 2.0)
    node = Node(NodeConfig(url=url, queues=queues, prefix=prefix, registry=registry, **options))
    await node.start()
    await asyncio.wait_for(node.notifier.connected.wait(), 10)
    try:
        yield node
    finally:
        await node.stop()


GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
GOLDEN_CHECK = GOLDEN / "peers-and-leader" / "s8_check_queue.txt"
_ELIXIR_UTC = re.compile(r"^~U\[(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d\.\d{6})Z\]$")


def golden_check() -> dict[str, str]:
    """``Oban.check_queue/1`` as the genuine Oban 2.23.1 printed it: ``key: value`` lines of an
    Elixir map, each value as Elixir prints it."""
    pairs = re.findall(r"^\s+(\w+): (.*?),?$", GOLDEN_CHECK.read_text(), re.MULTILINE)
    return dict(pairs)


def as_elixir_json(value: str) -> object:
    """One Elixir-printed value of the golden check as Elixir's JSON encodes it."""
    if value == "nil":
        return None
    if value in ("true", "false"):
        return value == "true"
    if value.startswith(('"', "[")):
        return json.loads(value)
    if value.isdigit():
        return int(value)
    if match := _ELIXIR_UTC.match(value):
        return f"{match[1]}T{match[2]}Z"  # DateTime: ISO-8601, six digits, Z
    return value  # an atom's inspect: the examiner sends inspect(name) for the instance name


def golden_examiner_payload() -> str:
    """What oban_met's examiner on the golden node would send on oban_gossip for that check:
    ``{"checks": [check]}`` in Elixir's JSON (small maps' keys sorted)."""
    check = {key: as_elixir_json(value) for key, value in sorted(golden_check().items())}
    return json.dumps({"checks": [check]}, separators=(",", ":"))
