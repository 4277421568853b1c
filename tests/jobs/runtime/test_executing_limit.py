"""A reader of oban_jobs never sees more ``executing`` rows in a queue than the queue's limit.

Oban holds a job's slot until its outcome is stored (CONTRACT.md: 0 of 27,225 samples above the
limit at limit 1). A real node runs many short jobs in a queue at limit 1 and one at limit 3
while a second connection, in a thread of its own, counts the queues' ``executing`` rows as fast
as it can. Every sample must be within the limit; the number of samples is reported, not asserted
on beyond "the reader did sample while jobs ran".
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import psycopg
import pytest
from psycopg import sql

from bridge import Job, Registry, insert_all, worker
from tests.jobs.support import running_node

Conn = psycopg.Connection[tuple[object, ...]]
LIMITS = {"lim_one": 1, "lim_three": 3}
JOBS_PER_QUEUE = 400


def short_jobs_registry(kind: str) -> Registry:
    registry = Registry()
    for queue in LIMITS:
        if kind == "async":

            @worker(name=f"limit.{queue}", queue=queue, registry=registry)
            async def short_async(job: Job) -> None:
                await asyncio.sleep(0.001)

        else:

            @worker(name=f"limit.{queue}", queue=queue, registry=registry)
            def short_sync(job: Job) -> None:
                time.sleep(0.001)

    return registry


class Sampler(threading.Thread):
    """Counts each queue's executing rows on its own connection until told to stop."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.query = sql.SQL(
            "SELECT queue, count(*) FROM {}.oban_jobs WHERE state = 'executing' "
            "AND queue = ANY(%s) GROUP BY queue"
        ).format(sql.Identifier(prefix))
        self.stop = threading.Event()
        self.samples = 0
        self.above: Counter[str] = Counter()  # samples above the limit, per queue
        self.highest: Counter[str] = Counter()
        self.seen_executing = 0  # samples in which some job was executing

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            query = self.query.as_string(conn)
            queues = list(LIMITS)
            while not self.stop.is_set():
                rows = conn.execute(query, (queues,)).fetchall()
                self.samples += 1
                if rows:
                    self.seen_executing += 1
                for queue, count in rows:
                    assert isinstance(queue, str) and isinstance(count, int)
                    self.highest[queue] = max(self.highest[queue], count)
                    if count > LIMITS[queue]:
                        self.above[queue] += 1


def remaining(conn: Conn, prefix: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.oban_jobs WHERE state <> 'completed'").format(
            sql.Identifier(prefix)
        )
    ).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_executing_rows_never_exceed_the_queue_limit(
    conn: Conn, oban_prefix: str, database_url: str, kind: str
) -> None:
    for queue in LIMITS:
        insert_all(
            conn,
            [Job.new(f"limit.{queue}", {"i": i}, queue=queue) for i in range(JOBS_PER_QUEUE)],
            prefix=oban_prefix,
        )
    sampler = Sampler(database_url, oban_prefix)
    sampler.start()
    try:
        async with running_node(
            database_url, oban_prefix, dict(LIMITS), short_jobs_registry(kind)
        ) as node:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while remaining(conn, oban_prefix):
                assert loop.time() < deadline, f"{remaining(conn, oban_prefix)} jobs not done"
                await asyncio.sleep(0.05)
            await node.drain()
    finally:
        sampler.stop.set()
        sampler.join(10)
    print(
        f"{kind}: {sampler.samples} samples, {sampler.seen_executing} with executing rows, "
        f"highest {dict(sampler.highest)}, above the limit {dict(sampler.above)}"
    )
    assert sampler.seen_executing > 0
    assert dict(sampler.above) == {}, (
        f"{dict(sampler.above)} of {sampler.samples} samples showed more executing rows than the "
        f"limit {LIMITS} (highest {dict(sampler.highest)})"
    )
