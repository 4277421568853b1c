"""Bulk insert: bridge's ``insert_all`` against a raw ``COPY`` of the same rows, in one run.

Each round inserts ``--jobs`` jobs for a no-op worker (args ``{"i": n}``, the jobs table's
workload) in batches of ``--batch``, one transaction per batch, once per variant, the order of
the variants rotating from round to round so that a drifting load favours none; the table is
emptied and PostgreSQL checkpointed before every variant. Variants:

- ``copy``: the floor. ``COPY oban_jobs (state, queue, worker, args, meta, tags, max_attempts,
  priority) FROM STDIN`` of the same rows' text, built before the clock starts; ids and
  timestamps from the columns' defaults. Only PostgreSQL and the wire are timed.
- ``copy_rows``: the same COPY written with psycopg's ``Copy.write_row`` from tuples built
  before the clock: what a raw COPY from Python usually looks like.
- ``insert_all``: ``bridge.insert_all`` on the same connection, the ``Job`` objects built
  before the clock (validation, JSON, ids, COPY, notification timed).
- ``insert_all+build``: the same with ``Job.new`` inside the clock.
- ``async+build``: ``insert_all_async`` with ``WorkerSpec.new`` inside the clock on an async
  connection, as ``bench_jobs.py``'s bulk-insert row.
- ``oban``: the ``oban`` package's bulk call (``Oban.enqueue_many``; it has no insert_all)
  with ``Worker.new`` inside the clock, in a child process of its own interpreter
  (``--oban-python``, see run.sh) and its own fresh database, once per round.

Ratios are per round (each variant against ``copy`` and ``copy_rows`` of the same round), the
median of them printed: above 1 would be faster than the raw COPY. ``--phases`` adds where a
batch's time goes in bridge's path. Nothing here asserts on speed; the figures go into
docs/performance.md by hand.

    python benchmarks/bench_bulk_insert.py --rounds 7 --oban-python .bench-venv-oban/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bridge
from bridge.jobs.client.enqueue import insert_all, insert_all_async
from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import WorkerSpec
from bridge.schema import install

WORKER = "bench.Noop"
RAW_COLUMNS = "(state, queue, worker, args, meta, tags, max_attempts, priority)"
HERE = Path(__file__).resolve().parent


def raw_tuples(first: int, end: int) -> list[tuple[Any, ...]]:
    return [
        ("available", "default", WORKER, json.dumps({"i": i}), "{}", [], 20, 0)
        for i in range(first, end)
    ]


def raw_text(first: int, end: int) -> bytes:
    return b"".join(
        b'available\tdefault\t%s\t{"i":%d}\t{}\t{}\t20\t0\n' % (WORKER.encode(), i)
        for i in range(first, end)
    )


def batches(jobs: int, size: int) -> list[tuple[int, int]]:
    return [(first, min(jobs, first + size)) for first in range(0, jobs, size)]


def reset(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE oban_jobs")
    with suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")


def timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def run_copy(url: str, spans: list[tuple[int, int]]) -> float:
    data = [raw_text(first, end) for first, end in spans]
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn)

        def go() -> None:
            for chunk in data:
                with (
                    conn.transaction(),
                    conn.cursor() as cur,
                    cur.copy(f"COPY oban_jobs {RAW_COLUMNS} FROM STDIN") as copy,
                ):
                    copy.write(chunk)

        return timed(go)


def run_copy_rows(url: str, spans: list[tuple[int, int]]) -> float:
    rows = [raw_tuples(first, end) for first, end in spans]
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn)

        def go() -> None:
            for batch in rows:
                with (
                    conn.transaction(),
                    conn.cursor() as cur,
                    cur.copy(f"COPY oban_jobs {RAW_COLUMNS} FROM STDIN") as copy,
                ):
                    for row in batch:
                        copy.write_row(row)

        return timed(go)


def run_insert_all(url: str, spans: list[tuple[int, int]]) -> float:
    jobs = [[Job.new(WORKER, {"i": i}) for i in range(first, end)] for first, end in spans]
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn)
        return timed(lambda: [insert_all(conn, batch) for batch in jobs] and None)


def run_insert_all_build(url: str, spans: list[tuple[int, int]]) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn)

        def go() -> None:
            for first, end in spans:
                insert_all(conn, [Job.new(WORKER, {"i": i}) for i in range(first, end)])

        return timed(go)


def run_async_build(url: str, spans: list[tuple[int, int]]) -> float:
    spec = WorkerSpec(name=WORKER, perform=lambda job: None, is_async=False)
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn)

    async def go() -> float:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            for first, end in spans:
                await insert_all_async(conn, [spec.new({"i": i}) for i in range(first, end)])
            return time.perf_counter() - started

    return asyncio.run(go())


def run_oban(python: str, url: str, jobs: int, batch: int, command: str = "insert") -> float:
    script = HERE / "_oban_py_bulk.py"
    argv = [python, str(script), command, "--url", url, "--jobs", str(jobs), "--batch", str(batch)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"oban side failed: {done.stderr.strip().splitlines()[-1:]}")
    seconds: float = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    return seconds


LOCAL: dict[str, Callable[[str, list[tuple[int, int]]], float]] = {
    "copy": run_copy,
    "copy_rows": run_copy_rows,
    "insert_all": run_insert_all,
    "insert_all+build": run_insert_all_build,
    "async+build": run_async_build,
}


def phases(url: str, size: int, reps: int) -> dict[str, float]:
    """Microseconds per job of each part of bridge's COPY path for one batch, best of
    ``reps``, one after the other: building, validating, the ids statement, the copies, the
    COPY data, the COPY itself with all its data at once. insert_all overlaps some of them:
    the copies are made while the ids statement runs (pipelined), and the COPY data is written
    piece by piece while PostgreSQL stores the pieces before."""
    from bridge.jobs import queries
    from bridge.jobs.client.enqueue import _id_params
    from bridge.jobs.client.insert_rows import copy_data, shallow_copies

    best: dict[str, float] = {}

    def note(name: str, started: float) -> float:
        now = time.perf_counter()
        best[name] = min(best.get(name, now - started), now - started)
        return now

    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(reps):
            reset(conn)
            started = time.perf_counter()
            jobs = [Job.new(WORKER, {"i": i}) for i in range(size)]
            started = note("Job.new (validation included)", started)
            for job in jobs:
                job.validate()
            started = note("validate again (insert_all does)", started)
            with conn.transaction(), conn.cursor() as cur:
                started = time.perf_counter()
                cur.execute(
                    queries.render(queries.NEXT_JOB_IDS, "public"), _id_params("public", jobs)
                )
                taken = cur.fetchone()
                started = note("ids + notification statement", started)
                assert taken is not None
                fresh = shallow_copies(jobs)
                started = note("copies of the jobs", started)
                data = b"".join(copy_data(fresh, sorted(taken[0]), taken[1]))
                started = note("COPY data (JSON, escaping, ids filled in)", started)
                with cur.copy(queries.render(queries.COPY_JOBS, "public")) as copy:
                    copy.write(data)
                started = note("COPY statement (server)", started)
            note("COMMIT", started)
    return {name: seconds * 1e6 / size for name, seconds in best.items()}


@contextmanager
def fresh_database(admin_url: str, name: str) -> Iterator[str]:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            admin.execute(drop.format(sql.Identifier(name)))


def rotate(items: Sequence[str], by: int) -> list[str]:
    return [*items[by % len(items) :], *items[: by % len(items)]]


def summary(samples: dict[str, list[float]], jobs: int) -> list[str]:
    lines = [
        "| variant | jobs/s (median) | range | / copy (paired) | / copy_rows (paired) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, seconds in samples.items():
        rates = [jobs / s for s in seconds]
        cells = []
        for base in ("copy", "copy_rows"):
            pairs = [b / s for s, b in zip(seconds, samples.get(base, []), strict=False)]
            cells.append(f"{statistics.median(pairs):.2f}" if pairs else "—")
        lines.append(
            f"| {name} | {statistics.median(rates):,.0f} | {min(rates):,.0f}-{max(rates):,.0f} "
            f"| {cells[0]} | {cells[1]} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("BRIDGE_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(LOCAL), help="variants, comma-separated")
    parser.add_argument("--oban-python", help="python of a virtualenv with the oban package")
    parser.add_argument("--phases", action="store_true", help="also where bridge's time goes")
    parser.add_argument("--json", help="write every sample here")
    args = parser.parse_args(argv)
    names = [name for name in args.only.split(",") if name]
    unknown = set(names) - set(LOCAL)
    if unknown:
        parser.error(f"unknown variants: {sorted(unknown)}; known: {sorted(LOCAL)}")
    spans = batches(args.jobs, args.batch)
    samples: dict[str, list[float]] = {name: [] for name in names}
    load_before = os.getloadavg()
    tag = os.getpid()
    with fresh_database(args.url, f"bench_bulk_{tag}") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            install(conn)
        oban_db = fresh_database(args.url, f"bench_bulk_oban_{tag}") if args.oban_python else None
        with oban_db if oban_db is not None else _nothing() as oban_url:
            if oban_url:
                run_oban(args.oban_python, oban_url, args.jobs, args.batch, "setup")
            for round_no in range(args.rounds):
                order = rotate(names, round_no)
                for name in order:
                    samples[name].append(LOCAL[name](url, spans))
                if oban_url:
                    samples.setdefault("oban", []).append(
                        run_oban(args.oban_python, oban_url, args.jobs, args.batch)
                    )
                print(
                    f"round {round_no + 1}: "
                    + ", ".join(f"{n} {args.jobs / s[-1]:,.0f}/s" for n, s in samples.items()),
                    file=sys.stderr,
                )
        found = phases(url, args.batch, 10) if args.phases else {}
    load_after = os.getloadavg()
    print(
        f"bridge {bridge.__version__} ({bridge.__file__}), Python {sys.version.split()[0]}, "
        f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}); {args.jobs:,} jobs in batches "
        f"of {args.batch:,}, {args.rounds} rounds; load average before "
        f"{load_before[0]:.2f}/{load_before[1]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}"
    )
    print("\n".join(summary(samples, args.jobs)))
    for name, micros in found.items():
        print(f"phase: {name}: {micros:.2f} µs/job")
    if args.json:
        record = {"samples": samples, "phases": found, "jobs": args.jobs}
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


@contextmanager
def _nothing() -> Iterator[str]:
    yield ""


if __name__ == "__main__":
    raise SystemExit(main())
