"""The bridge side of the jobs benchmark: bridge's own API, defaults untouched.

Run by ``bench_jobs.py`` as ``python benchmarks/_bridge_side.py COMMAND --url ...``; it prints
one JSON line (two for ``serve``). The node keeps bridge's default plugins, pool size and poll
interval, so the figures are what ``bridge worker`` gives out of the box.
"""

from __future__ import annotations

import argparse
from typing import Any

import psycopg
from _side_common import job_ran, main

import bridge
from bridge.jobs.client.enqueue import insert_all_async, insert_async
from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry, WorkerSpec, worker
from bridge.jobs.node import Node, NodeConfig
from bridge.schema import install

REGISTRY = Registry()


@worker(name="bench.Noop", queue="default", registry=REGISTRY)
async def noop(job: Job) -> None:
    job_ran(job.args)


@worker(name="bench.NoopSync", queue="default", registry=REGISTRY)
def noop_sync(job: Job) -> None:
    job_ran(job.args)


class BridgeSide:
    library = "bridge"
    version = bridge.__version__

    def __init__(self, args: argparse.Namespace) -> None:
        self.url: str = args.url
        self.async_commit: bool = args.async_commit
        target: Any = noop_sync if args.sync_worker else noop
        self.spec: WorkerSpec = target.spec
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.node: Node | None = None

    async def setup(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            install(conn)

    async def open_client(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def insert_batch(self, first: int, end: int) -> None:
        assert self.conn is not None
        jobs = [self.spec.new({"i": i}) for i in range(first, end)]
        await insert_all_async(self.conn, jobs)

    async def insert_one(self, args: dict[str, Any]) -> None:
        assert self.conn is not None
        await insert_async(self.conn, self.spec.new(args))

    async def close_client(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    async def start_node(self, concurrency: int) -> None:
        config = NodeConfig(
            url=self.url,
            queues={"default": concurrency},
            registry=REGISTRY,
            async_commit=self.async_commit,
        )
        self.node = Node(config)
        await self.node.start()

    async def stop_node(self) -> None:
        if self.node is not None:
            await self.node.stop()
            self.node = None


if __name__ == "__main__":
    main(BridgeSide)
