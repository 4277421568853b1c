"""Running real nodes and reading real rows in job-runtime tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
