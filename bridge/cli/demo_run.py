"""What ``bridge demo`` does: the whole loop on one database in a few seconds.

It installs the schema, enqueues jobs for Python workers (one succeeds, one fails once and is
retried on Oban's backoff shortened for the demo, one snoozes, one cancels itself) plus one for an
Elixir worker, runs a node until the Python jobs are done, and prints the rows as Oban and any
Elixir node would read them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import click
import psycopg
from psycopg.rows import dict_row

from bridge import schema
from bridge.cli.output import last_error, progress, table
from bridge.db import connect
from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from bridge.jobs.client.outcome import Cancel, Snooze
from bridge.jobs.client.registry import Registry, worker
from bridge.jobs.node import Node, NodeConfig

DEMO_QUEUE = "demo"


def demo_registry() -> Registry:
    registry = Registry()

    @worker(name="bridge.cli.demo.Greet", queue=DEMO_QUEUE, registry=registry)
    def greet(job: Job) -> dict[str, Any]:
        return {"greeting": f"hello, {job.args.get('name', 'world')}"}

    @worker(
        name="bridge.cli.demo.Flaky",
        queue=DEMO_QUEUE,
        max_attempts=3,
        backoff=lambda job: 1,
        registry=registry,
    )
    async def flaky(job: Job) -> None:
        if job.attempt < 2:
            raise RuntimeError(f"flaky on attempt {job.attempt}")

    @worker(name="bridge.cli.demo.Sleepy", queue=DEMO_QUEUE, registry=registry)
    def sleepy(job: Job) -> Snooze | None:
        return Snooze(1) if job.attempt == 1 else None

    @worker(name="bridge.cli.demo.Picky", queue=DEMO_QUEUE, registry=registry)
    def picky(job: Job) -> Cancel:
        return Cancel("not needed")

    return registry


def _demo_jobs(run: str) -> list[Job]:
    meta = {"demo_run": run}
    return [
        Job.new("bridge.cli.demo.Greet", {"name": "Ada"}, queue=DEMO_QUEUE, meta=meta),
        Job.new("bridge.cli.demo.Flaky", {}, queue=DEMO_QUEUE, max_attempts=3, meta=meta),
        Job.new("bridge.cli.demo.Sleepy", {}, queue=DEMO_QUEUE, meta=meta),
        Job.new("bridge.cli.demo.Picky", {}, queue=DEMO_QUEUE, meta=meta),
        # For an Elixir worker in a queue this node does not serve: it stays available.
        Job.new("BadgeForge.PrintCenter", {"badge": 1}, queue="printing", meta=meta),
    ]


FINAL = {"completed", "discarded", "cancelled"}


def _rows(conn: psycopg.Connection[Any], prefix: str, run: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            psycopg.sql.SQL(
                "SELECT id, worker, queue, state::text, attempt, max_attempts, errors, "
                "attempted_by FROM {}.oban_jobs WHERE meta->>'demo_run' = %s ORDER BY id"
            ).format(psycopg.sql.Identifier(prefix)),
            (run,),
        )
        return cur.fetchall()


async def _run_node(
    url: str, prefix: str, run: str, timeout: float, update: Callable[[str], None]
) -> None:
    node = Node(
        NodeConfig(
            url=url,
            queues={DEMO_QUEUE: 5},
            prefix=prefix,
            registry=demo_registry(),
            poll_interval=0.2,
            shutdown_grace=2.0,
        )
    )
    await node.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            with connect(url, autocommit=True) as conn:
                states = [r["state"] for r in _rows(conn, prefix, run) if r["queue"] == DEMO_QUEUE]
            finished = sum(s in FINAL for s in states)
            update(f"demo jobs: {finished} of {len(states)} finished")
            if states and finished == len(states):
                break
            await asyncio.sleep(0.2)
    finally:
        await node.stop()


def run_demo(url: str, prefix: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    with connect(url, autocommit=True) as conn:
        created = schema.install(conn, prefix).created
        if created:
            click.echo(f"installed schema {prefix!r}: {len(created)} objects")
        jobs = insert_all(conn, _demo_jobs(run), prefix=prefix)
    click.echo(f"enqueued {len(jobs)} jobs (run {run}); running a Python node on queue 'demo'…")
    with progress("demo jobs: waiting for the node") as update:
        asyncio.run(_run_node(url, prefix, run, timeout, update))
    with connect(url, autocommit=True) as conn:
        rows = _rows(conn, prefix, run)
    click.echo()
    table(
        ["id", "worker", "queue", "state", "attempt", "last error"],
        [
            [
                row["id"],
                row["worker"],
                row["queue"],
                row["state"],
                f"{row['attempt']}/{row['max_attempts']}",
                last_error(row["errors"]),
            ]
            for row in rows
        ],
    )
    click.echo(
        "\nThe BadgeForge.PrintCenter job waits in queue 'printing' for an Elixir node, "
        "exactly as if Elixir had inserted it."
    )
    return rows
