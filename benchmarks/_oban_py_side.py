"""The peer side of the jobs benchmark: the ``oban`` package (Oban for Python), its defaults.

Runs under Python >= 3.12 in the virtualenv ``run.sh`` makes (``.bench-venv-oban``), never in
bridge's environment, and imports nothing from bridge. Inserts use ``Oban.enqueue_many`` /
``Oban.enqueue`` on a client-mode instance; the node is ``Oban(pool=..., queues=...)`` with the
pool ``Oban.create_pool`` gives (1..10 connections) and every default plugin, as ``oban start``
would run it.
"""

from __future__ import annotations

import argparse
from typing import Any

import psycopg
from _side_common import job_ran, main
from oban import Oban, worker  # type: ignore[import-not-found,unused-ignore]
from oban import __version__ as oban_version  # type: ignore[import-not-found,unused-ignore]
from oban.schema import install_sql  # type: ignore[import-not-found,unused-ignore]


@worker(queue="default")  # type: ignore[untyped-decorator,misc,unused-ignore]
class Noop:
    new: Any  # added by @worker

    async def process(self, job: Any) -> None:
        job_ran(job.args)


class ObanPySide:
    library = "oban"
    version: str = oban_version

    def __init__(self, args: argparse.Namespace) -> None:
        if args.sync_worker or args.async_commit:
            raise SystemExit("oban side: --sync-worker and --async-commit are bridge-only")
        self.url: str = args.url
        self.client_pool: Any = None
        self.client: Any = None
        self.node_pool: Any = None
        self.node: Any = None

    async def setup(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(install_sql())

    async def open_client(self) -> None:
        self.client_pool = await Oban.create_pool(self.url, min_size=1, max_size=1)
        # A separate name keeps the client from replacing the node's registered instance.
        self.client = Oban(pool=self.client_pool, name="BenchClient")

    async def insert_batch(self, first: int, end: int) -> None:
        await self.client.enqueue_many([Noop.new({"i": i}) for i in range(first, end)])

    async def insert_one(self, args: dict[str, Any]) -> None:
        await self.client.enqueue(Noop.new(args))

    async def close_client(self) -> None:
        if self.client_pool is not None:
            await self.client_pool.close()
            self.client_pool = None

    async def start_node(self, concurrency: int) -> None:
        self.node_pool = await Oban.create_pool(self.url)
        self.node = Oban(pool=self.node_pool, queues={"default": concurrency})
        await self.node.start()

    async def stop_node(self) -> None:
        if self.node is not None:
            await self.node.stop()
            self.node = None
        if self.node_pool is not None:
            await self.node_pool.close()
            self.node_pool = None


if __name__ == "__main__":
    main(ObanPySide)
