"""The half of a benchmark side that does not depend on the library under test.

``bench_jobs.py`` runs each library in its own child process (the peer ``oban`` package needs
Python 3.12 and its own virtualenv), and both children must time, pace, count and report in
exactly the same way or the comparison means nothing. So everything except the library calls
lives here, and each side script only supplies a :class:`Side`. Stdlib and psycopg only: this
file runs under both interpreters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg

# One entry per finished job. ``list.append`` is atomic under the GIL, so workers running in
# threads can count without a lock, and polling ``len()`` costs the measured process next to
# nothing (polling the table would put a query every few milliseconds into the measurement).
DONE: list[None] = []
# Milliseconds from just before the inserting process called the library's insert to the worker
# being entered, for jobs that carry their send time (trickle jobs); the same clock for both
# libraries, whatever each writes into inserted_at and attempted_at.
LATENCIES_MS: list[float] = []

COUNTER_POLL = 0.005  # seconds between looks at DONE
TABLE_POLL = 0.002  # seconds between looks at the table once every job has run
COMPLETED_SQL = "SELECT count(*) FROM oban_jobs WHERE state = 'completed'"


def job_ran(args: Mapping[str, Any]) -> None:
    """What the no-op worker of either side does: note its latency, if timed, and count."""
    sent = args.get("t")
    if isinstance(sent, float):
        LATENCIES_MS.append((time.time() - sent) * 1000)
    DONE.append(None)


class SideError(RuntimeError):
    """A benchmark step did not finish (timeout, or the library failed to run the jobs)."""


class Side(Protocol):
    """The library calls one benchmark side makes; everything else is shared."""

    library: str
    version: str

    async def setup(self) -> None:
        """Install the library's own tables in the (fresh, empty) database."""

    async def open_client(self) -> None:
        """Open whatever inserting needs; not part of any timing."""

    async def insert_batch(self, first: int, end: int) -> None:
        """Insert jobs ``first..end-1`` for the no-op worker in one call of the bulk API."""

    async def insert_one(self, args: dict[str, Any]) -> None:
        """Insert one job with ``args`` with the single-insert API, committed on return."""

    async def close_client(self) -> None: ...

    async def start_node(self, concurrency: int) -> None:
        """Start a worker node serving queue ``default`` at ``concurrency``."""

    async def stop_node(self) -> None: ...


def cpu_seconds() -> float:
    """User + system CPU of this whole process, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def utc_iso() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def emit(record: dict[str, Any]) -> None:
    """One JSON object per line on stdout: the only channel back to the driver."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One side of benchmarks/bench_jobs.py.")
    parser.add_argument("command", choices=["setup", "drain", "serve", "trickle"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="trickle: jobs per second")
    parser.add_argument("--sync-worker", action="store_true")
    parser.add_argument("--async-commit", action="store_true")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--timeout", type=float, default=120.0)
    return parser.parse_args(argv)


async def wait_completed(watch: psycopg.AsyncConnection[Any], jobs: int, deadline: float) -> None:
    """Return once ``jobs`` rows are ``completed`` in the table, i.e. visible to anyone.

    The in-process counter tells when every worker has returned; the table is only polled
    after that, for the last outcomes to be written.
    """
    while len(DONE) < jobs:
        if time.monotonic() > deadline:
            raise SideError(f"only {len(DONE)} of {jobs} jobs ran before the timeout")
        await asyncio.sleep(COUNTER_POLL)
    while True:
        cursor = await watch.execute(COMPLETED_SQL)
        row = await cursor.fetchone()
        if row is not None and row[0] >= jobs:
            return
        if time.monotonic() > deadline:
            raise SideError(f"{jobs} jobs ran but only {row[0] if row else 0} are completed")
        await asyncio.sleep(TABLE_POLL)


async def insert_bulk(side: Side, jobs: int, batch: int) -> float:
    """Seconds to insert ``jobs`` jobs in batches; building the job objects counts too."""
    await side.open_client()
    try:
        started = time.perf_counter()
        for first in range(0, jobs, batch):
            await side.insert_batch(first, min(jobs, first + batch))
        return time.perf_counter() - started
    finally:
        await side.close_client()


async def drain(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    """Bulk-insert, then time one node from ``start`` until every job is completed."""
    insert_s = await insert_bulk(side, args.jobs, args.batch)
    async with await psycopg.AsyncConnection.connect(args.url, autocommit=True) as watch:
        deadline = time.monotonic() + args.timeout
        started_at = utc_iso()
        cpu0 = cpu_seconds()
        wall0 = time.perf_counter()
        await side.start_node(args.concurrency)
        try:
            await wait_completed(watch, args.jobs, deadline)
            wall_s = time.perf_counter() - wall0
            cpu_s = cpu_seconds() - cpu0
        finally:
            await side.stop_node()
    return {"insert_s": insert_s, "wall_s": wall_s, "cpu_s": cpu_s, "started_at": started_at}


async def serve(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    """An idle node that says when it listens and stops after ``--jobs`` jobs completed."""
    async with await psycopg.AsyncConnection.connect(args.url, autocommit=True) as watch:
        await side.start_node(args.concurrency)
        try:
            emit({"ready": True})
            cpu0 = cpu_seconds()
            await wait_completed(watch, args.jobs, time.monotonic() + args.timeout)
            cpu_s = cpu_seconds() - cpu0
        finally:
            await side.stop_node()
    return {"cpu_s": cpu_s, "latencies_ms": LATENCIES_MS}


async def trickle(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    """Insert jobs one at a time on a fixed schedule, so each finds the node idle."""
    await side.open_client()
    try:
        calls_ms: list[float] = []
        started = time.perf_counter()
        for index in range(args.jobs):
            delay = started + index / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            call = time.perf_counter()
            await side.insert_one({"i": index, "t": time.time()})
            calls_ms.append((time.perf_counter() - call) * 1000)
        return {"elapsed_s": time.perf_counter() - started, "insert_calls_ms": calls_ms}
    finally:
        await side.close_client()


async def run_command(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    if args.command == "setup":
        await side.setup()
        return {"setup": True}
    if args.command == "drain":
        return await drain(side, args)
    if args.command == "serve":
        return await serve(side, args)
    return await trickle(side, args)


def main(make_side: Callable[[argparse.Namespace], Side]) -> None:
    args = parse_args()
    side = make_side(args)
    coroutine: Coroutine[Any, Any, dict[str, Any]] = run_command(side, args)
    if args.loop == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        result = uvloop.run(coroutine)
    else:
        result = asyncio.run(coroutine)
    result.update(
        library=side.library,
        version=side.version,
        python=platform.python_version(),
        loop=args.loop,
    )
    emit(result)
