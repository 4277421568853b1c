"""CPU-bound benchmark: jobs that each burn ~20 ms of pure-Python CPU, drained by one node.

    python benchmarks/bench_cpu.py                      # every mode, 2,000 jobs, 1 round
    python benchmarks/bench_cpu.py --modes threads,processes --rounds 3
    python benchmarks/bench_cpu.py --json out.json

Modes (each in a fresh database this script creates and drops):

- ``threads``: ``bridge worker -q cpu:LIMIT`` with a sync worker: one process, bodies on threads.
- ``processes``: ``bridge worker --processes N -q cpu:LIMIT``: N nodes, one per process.
- ``executor``: one ``bridge worker --process-pool N`` with the same sync body declared
  ``@worker(..., executor="process")``: one node, bodies in its N child processes.
- ``pool``: one ``bridge worker`` whose async worker awaits a ``ProcessPoolExecutor`` of N
  processes (the prototype of a per-worker process pool, measured against ``processes``).
- ``oban``: the ``oban`` package (its virtualenv, see README.md), an async worker burning on
  its event loop, ``Oban(queues={"cpu": LIMIT})``.
- ``celery``: Celery's prefork pool, N children, the machine's Redis as broker
  (``_cpu_celery_side.py``, in a virtualenv of its own: ``--celery-python``, see README.md;
  skipped with a line when that virtualenv is missing). No database: its figure is timed from
  the tasks' own start and end marks, the same span the rows give the other modes.

The jobs are written straight into ``oban_jobs`` as ``scheduled`` a few seconds ahead, before
the node starts, so every node is up when they become due and start-up is not timed. The figure
is jobs / (last ``completed_at`` - first ``attempted_at``), read from the rows. ``n`` (the burn
rounds per job) is calibrated once per run so one burn takes ``--burn-ms`` on this interpreter;
every mode gets the same ``n``. The ideal is cores x 1000 / burn-ms jobs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_OBAN_PYTHON = REPO / ".bench-venv-oban" / "bin" / "python"
MODES = ("threads", "processes", "executor", "pool", "oban", "celery")
DEFAULT_CELERY_PYTHON = REPO / ".bench-venv-celery" / "bin" / "python"
DEFAULT_CELERY_BROKER = "redis://127.0.0.1:6379/15"
LEAD_SECONDS = 8.0  # jobs become due this long after insert: every node is up by then

sys.path.insert(0, str(HERE))
from _cpu_burn import burn  # noqa: E402


def calibrate(burn_ms: float) -> int:
    """Rounds of ``burn`` that take ``burn_ms`` on this interpreter (fastest of five)."""
    probe = 200_000
    best = min(_timed(probe) for _ in range(5))
    return max(1, int(probe * burn_ms / 1000 / best))


def _timed(n: int) -> float:
    started = time.perf_counter()
    burn(n)
    return time.perf_counter() - started


@contextmanager
def fresh_database(url: str, name: str) -> Iterator[str]:
    """A database of its own for one measurement, dropped afterwards even on failure."""
    with psycopg.connect(url, autocommit=True) as admin:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(url)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def install_schema(mode: str, url: str, oban_python: Path) -> None:
    if mode == "oban":
        script = (
            "import sys, psycopg; from oban.schema import install_sql; "
            "c = psycopg.connect(sys.argv[1], autocommit=True); c.execute(install_sql())"
        )
        subprocess.run([str(oban_python), "-c", script, url], check=True)
    else:
        subprocess.run(
            ["bridge", "--database-url", url, "schema", "install"],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def insert_jobs(url: str, worker: str, jobs: int, n: int) -> None:
    """``jobs`` rows due LEAD_SECONDS from now, as an insert would write them."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO oban_jobs (state, queue, worker, args, max_attempts, scheduled_at)
               SELECT 'scheduled', 'cpu', %s, jsonb_build_object('n', %s::int, 'i', g), 20,
                      now() + make_interval(secs => %s)
               FROM generate_series(1, %s) g""",
            (worker, n, LEAD_SECONDS, jobs),
        )


def command(mode: str, url: str, args: argparse.Namespace) -> tuple[list[str], str]:
    """The node's command line and the worker name its jobs carry."""
    if mode == "oban":
        script = (
            "import sys, asyncio; sys.path.insert(0, sys.argv[1]); "
            "import _cpu_oban_side as m; asyncio.run(m.main(sys.argv[2], int(sys.argv[3])))"
        )
        return [
            str(args.oban_python),
            "-c",
            script,
            str(HERE),
            url,
            str(args.limit),
        ], "_cpu_oban_side.Burn"
    base = [
        "bridge",
        "--database-url",
        url,
        "worker",
        "-q",
        f"cpu:{args.limit}",
        "--app-dir",
        str(HERE),
        "-w",
        "_cpu_bridge_workers",
        "--log-level",
        "warning",
    ]
    if mode == "processes":
        return [*base, "--processes", str(args.processes)], "bench.Burn"
    if mode == "executor":
        return [*base, "--process-pool", str(args.processes)], "bench.BurnProcess"
    if mode == "pool":
        return base, "bench.BurnPool"
    return base, "bench.Burn"


def measure_celery(args: argparse.Namespace, n: int, round_no: int) -> dict[str, Any]:
    """The ``celery`` mode: ``_cpu_celery_side.py`` queues, runs and times it in its own
    virtualenv and prints one JSON line."""
    argv = [str(args.celery_python), str(HERE / "_cpu_celery_side.py"), args.celery_broker]
    argv += [str(args.jobs), str(n), str(args.processes), str(args.timeout)]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"mode": "celery", "round": round_no, **result}


def measure(mode: str, args: argparse.Namespace, n: int, round_no: int) -> dict[str, Any]:
    if mode == "celery":
        return measure_celery(args, n, round_no)
    name = f"bench_cpu_{os.getpid()}_{mode}_{round_no}"
    with fresh_database(args.url, name) as url:
        install_schema(mode, url, args.oban_python)
        argv, worker = command(mode, url, args)
        insert_jobs(url, worker, args.jobs, n)
        env = dict(os.environ, BENCH_POOL=str(args.processes))
        load_before = os.getloadavg()[0]
        nodes = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)]
        try:
            done = _wait_completed(url, args.jobs, args.timeout)
        finally:
            for node in nodes:
                node.send_signal(signal.SIGTERM)
            for node in nodes:
                try:
                    node.wait(30)
                except subprocess.TimeoutExpired:
                    node.kill()
                    node.wait()
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM max(completed_at) - min(attempted_at)),"
                " count(*) FILTER (WHERE state = 'completed') FROM oban_jobs"
            ).fetchone()
    assert row is not None
    window = float(row[0] or 0.0)
    rate = args.jobs / window if window else 0.0
    return {
        "mode": mode,
        "round": round_no,
        "completed": int(row[1]),
        "finished": done,
        "window_s": round(window, 3),
        "jobs_per_s": round(rate, 1),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def _wait_completed(url: str, jobs: int, timeout: float) -> bool:
    deadline = time.monotonic() + LEAD_SECONDS + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            query = "SELECT count(*) FROM oban_jobs WHERE state = 'completed'"
            row = conn.execute(query).fetchone()
            if row and row[0] >= jobs:
                return True
            time.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("BRIDGE_DATABASE_URL") or DEFAULT_URL)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--burn-ms", type=float, default=20.0)
    parser.add_argument("--burn-rounds", type=int, default=None, help="n; calibrated when absent")
    parser.add_argument("--limit", type=int, default=10, help="queue limit of each node (10)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--oban-python", type=Path, default=DEFAULT_OBAN_PYTHON)
    parser.add_argument("--celery-python", type=Path, default=DEFAULT_CELERY_PYTHON)
    parser.add_argument("--celery-broker", default=DEFAULT_CELERY_BROKER)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if "celery" in modes and not args.celery_python.exists():
        print(f"# celery skipped: no {args.celery_python} (see benchmarks/README.md)", flush=True)
        modes.remove("celery")
    n = args.burn_rounds or calibrate(args.burn_ms)
    ideal = (os.cpu_count() or 1) * 1000 / args.burn_ms
    print(
        f"# n={n} burn rounds/job; cores={os.cpu_count()}; ideal {ideal:.0f} jobs/s; "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    samples: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        order = modes if round_no % 2 == 0 else list(reversed(modes))
        for mode in order:
            sample = measure(mode, args, n, round_no)
            samples.append(sample)
            print(json.dumps(sample), flush=True)
    print(f"{'mode':10} {'jobs/s (median)':>16} {'range':>16} {'of ideal':>9}")
    for mode in modes:
        rates = [s["jobs_per_s"] for s in samples if s["mode"] == mode]
        print(
            f"{mode:10} {statistics.median(rates):16.1f} {min(rates):7.1f}-{max(rates):<8.1f}"
            f" {statistics.median(rates) / ideal:8.0%}"
        )
    if args.json:
        args.json.write_text(json.dumps({"n": n, "ideal": ideal, "samples": samples}, indent=1))


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        main()
