"""Jobs benchmark: bridge side by side with the ``oban`` package (Oban for Python).

One command measures both libraries in one run on the same PostgreSQL::

    python benchmarks/bench_jobs.py                # print the table
    python benchmarks/bench_jobs.py --write-docs   # ... and update docs/performance.md

Each library runs in its own child process (``_bridge_side.py`` with this interpreter,
``_oban_py_side.py`` with the Python >= 3.12 virtualenv that ``run.sh`` makes), each in a fresh
database this script creates and drops, so neither ever sees the other's tables. Between runs
every table is truncated and PostgreSQL checkpointed, so each run starts from the same state.
What is measured, and how, is written out in :data:`METHOD` (it goes into the docs verbatim).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import psycopg
from _docs_section import replace_section
from psycopg import sql
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_OBAN_PYTHON = REPO / ".bench-venv-oban" / "bin" / "python"
DOCS = REPO / "docs" / "performance.md"
SECTION = "## Jobs"

BRIDGE = "bridge"
OBAN = "oban"


class BenchError(RuntimeError):
    """A side failed, timed out or could not be started; the message says which and why."""


@dataclass(frozen=True)
class Scenario:
    """One drain configuration: a node at ``concurrency`` empties a table of no-op jobs."""

    key: str
    concurrency: int
    sync_worker: bool = False
    async_commit: bool = False
    bridge_only: bool = False

    def side_args(self) -> list[str]:
        args = ["--concurrency", str(self.concurrency)]
        if self.sync_worker:
            args.append("--sync-worker")
        if self.async_commit:
            args.append("--async-commit")
        return args


SCENARIOS = (
    Scenario("c10", 10),
    Scenario("c50", 50),
    Scenario("c50_async_commit", 50, async_commit=True, bridge_only=True),
    Scenario("c50_sync", 50, sync_worker=True, bridge_only=True),
)

# Genuine Elixir Oban 2.23 on this machine kind, from tests/data/golden/README.md (2 cores,
# local PostgreSQL 15, one BEAM node, 10,000 no-op jobs, median of 3 runs). Not measured here.
GOLDEN: dict[str, str] = {
    "insert": "13,900",
    "drain_c10": "790",
    "drain_c50": "1,700",
    "latency_p50": "≈ 9",
    "latency_p99": "≈ 16",
    "cpu_c10": "0.50 (BEAM)",
    "cpu_c50": "0.35 (BEAM)",
}


@dataclass
class Samples:
    """Per-run values of every metric, per side; the table shows their medians."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, side: str, metric: str, value: float) -> None:
        self.values.setdefault((side, metric), []).append(value)

    def median(self, side: str, metric: str) -> float | None:
        found = self.values.get((side, metric))
        return statistics.median(found) if found else None

    def spread(self, side: str, metric: str) -> tuple[float, float] | None:
        found = self.values.get((side, metric))
        return (min(found), max(found)) if found and len(found) > 1 else None


@dataclass(frozen=True)
class Row:
    label: str
    metric: str
    unit: str  # "rate", "ms" or "cpu": how to format, and which way is better
    golden: str = "—"


ROWS = (
    Row("bulk insert, jobs/s (batches of 1,000)", "insert", "rate", GOLDEN["insert"]),
    Row("drain, jobs/s, concurrency 10", "drain_c10", "rate", GOLDEN["drain_c10"]),
    Row("drain, jobs/s, concurrency 50", "drain_c50", "rate", GOLDEN["drain_c50"]),
    Row("drain, jobs/s, concurrency 50, `async_commit=True`", "drain_c50_async_commit", "rate"),
    Row("drain, jobs/s, concurrency 50, sync worker (threads)", "drain_c50_sync", "rate"),
    Row("drain from first claim, jobs/s, concurrency 10", "claim_c10", "rate"),
    Row("drain from first claim, jobs/s, concurrency 50", "claim_c50", "rate"),
    Row(
        "insert call → worker start p50, ms (idle node)", "latency_p50", "ms", GOLDEN["latency_p50"]
    ),
    Row(
        "insert call → worker start p99, ms (idle node)", "latency_p99", "ms", GOLDEN["latency_p99"]
    ),
    Row("`attempted_at - inserted_at` p50, ms (same jobs)", "row_latency_p50", "ms"),
    Row("`attempted_at - inserted_at` p99, ms (same jobs)", "row_latency_p99", "ms"),
    Row("single insert call p50, ms (same jobs)", "insert_call_p50", "ms"),
    Row("worker CPU s per 1,000 jobs, concurrency 10", "cpu_c10", "cpu", GOLDEN["cpu_c10"]),
    Row("worker CPU s per 1,000 jobs, concurrency 50", "cpu_c50", "cpu", GOLDEN["cpu_c50"]),
    Row("worker CPU s per 1,000 jobs, concurrency 50, sync worker", "cpu_c50_sync", "cpu"),
)

METHOD = """\
What each row measures (both libraries the same way, each in a child process of its own and a
fresh database of its own on the same PostgreSQL; every table truncated and PostgreSQL
checkpointed before each run; median of {runs} runs, with the range over the runs in small print;
the ratio is of the medians, so above 1 is better for bridge in jobs/s rows and worse in ms and
CPU rows):

- **bulk insert**: {jobs:,} jobs for a no-op worker, args `{{"i": n}}`, inserted in batches of
  {batch:,} with the library's bulk call (bridge `insert_all_async`, oban `Oban.enqueue_many`) on
  one connection, building the job objects included. Median over the inserts that precede the
  concurrency 10 and 50 drains ({insert_runs} samples).
- **drain**: those {jobs:,} jobs are already in the table; the clock starts just before the node's
  `start()` (pool opening and start-up included, as in tests/data/golden/README.md) and stops when a
  `count(*)` of `completed` rows, polled every 2 ms once every worker has returned, reaches
  {jobs:,}. The node serves one queue at the given concurrency with the library's defaults
  (plugins, pool, poll interval). The worker is `async def` and does nothing but count itself.
  The sync-worker row is bridge's plain `def` worker, run in its thread pool; oban has no
  equivalent (a plain function given to its `@job` runs on the event loop itself).
- **drain from first claim**: the same runs, timed from the earliest `attempted_at` to the moment
  above, i.e. without node start-up.
- **latency**: an idle node (concurrency 10) listens; a second process of the same library
  inserts {latency_jobs} jobs one at a time (one transaction each, with the library's single-insert
  call: bridge `insert_async`, oban `Oban.enqueue`) at {latency_rate:g} jobs/s. Each job carries
  the wall-clock time taken just before the insert call; the worker notes the time it is entered.
  p50 and p99 per run of those differences. The `attempted_at - inserted_at` rows are the same
  jobs read back from the table; they depend on where each library takes its timestamps (bridge:
  Python clock before the INSERT and before the claim; oban: the database's `now()` in both
  statements) and are shown only to explain the difference. "Single insert call" is how long
  the inserting process waited for each of those insert calls (commit included).
- **worker CPU**: user + system CPU of the node process (`getrusage(RUSAGE_SELF)`, all threads)
  over the drain window, per 1,000 jobs. PostgreSQL's own CPU is not included.

Why they differ, by construction rather than by tuning: bridge's bulk insert is one `COPY` per
batch, oban's `enqueue_many` one `INSERT` statement per job; bridge writes job outcomes in
group commits (one `UPDATE` for everything that finished since the producer's last write, in the
same round trip and transaction as the claim that refills their slots), oban one `UPDATE` per
job, all in one transaction per producer cycle; both claim with one `UPDATE … FOR UPDATE SKIP
LOCKED` per cycle. The latency rows are dominated by round trips to PostgreSQL and the insert's own
commit (a round trip to an idle backend costs about 0.5 ms here), not by either runtime's own work.

bridge runs on the stdlib asyncio loop (what `bridge worker` uses); oban runs on {oban_loop} (what
`oban start` uses when uvloop is installed, and it is one of its dependencies). The Elixir Oban
column is copied from tests/data/golden/README.md: it was measured on a machine of the same
kind with the same workload, not in this run; its CPU figures are BEAM CPU (that README adds
that PostgreSQL used about as much again), and its drain figures include about 1 s of BEAM
start-up.
"""


# processes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SideCommand:
    """How to start one library's side script."""

    name: str
    python: str
    script: Path
    env: dict[str, str]
    loop: str

    def argv(self, command: str, url: str, extra: Sequence[str]) -> list[str]:
        base = [self.python, str(self.script), command, "--url", url, "--loop", self.loop]
        return [*base, *extra]


def side_commands(args: argparse.Namespace) -> dict[str, SideCommand]:
    bridge_env = dict(os.environ)
    # The bridge under test is the tree this script lives in, whatever is installed.
    bridge_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    oban_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    sides = {
        BRIDGE: SideCommand(BRIDGE, sys.executable, HERE / "_bridge_side.py", bridge_env, "asyncio")
    }
    if not args.skip_oban:
        sides[OBAN] = SideCommand(
            OBAN, str(args.oban_python), HERE / "_oban_py_side.py", oban_env, args.oban_loop
        )
    return sides


def _stderr_tail(stream: TextIO) -> str:
    stream.seek(0)
    lines = stream.read().strip().splitlines()
    return "\n".join(lines[-15:])


def run_side(side: SideCommand, command: str, url: str, extra: Sequence[str]) -> dict[str, Any]:
    """Run one side to completion and return its final JSON line."""
    argv = side.argv(command, url, extra)
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            argv, env=side.env, stdout=subprocess.PIPE, stderr=err, text=True, check=False
        )
        if proc.returncode != 0:
            raise BenchError(
                f"{side.name} {command} exited {proc.returncode}: {shlex.join(argv)}\n"
                + _stderr_tail(err)
            )
    return _last_json(side.name, command, proc.stdout)


def _last_json(name: str, command: str, stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"{name} {command} printed no result: {stdout[-500:]!r}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_latency(
    side: SideCommand, url: str, jobs: int, rate: float
) -> tuple[list[float], list[float]]:
    """Start an idle serving node, then a trickle inserter.

    Returns the node's insert → start latencies and the inserter's insert call durations (ms).
    """
    serve_argv = side.argv("serve", url, ["--jobs", str(jobs), "--concurrency", "10"])
    with tempfile.TemporaryFile("w+") as err:
        server = subprocess.Popen(
            serve_argv, env=side.env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        try:
            assert server.stdout is not None
            ready = server.stdout.readline()
            if '"ready"' not in ready:
                server.wait(timeout=10)
                raise BenchError(f"{side.name} serve did not start:\n{_stderr_tail(err)}")
            time.sleep(0.5)  # let its plugins' first round of queries pass
            inserter = run_side(side, "trickle", url, ["--jobs", str(jobs), "--rate", f"{rate:g}"])
            out, _ = server.communicate(timeout=60)
            if server.returncode != 0:
                raise BenchError(
                    f"{side.name} serve exited {server.returncode}:\n{_stderr_tail(err)}"
                )
            latencies = _last_json(side.name, "serve", out).get("latencies_ms")
            if not isinstance(latencies, list) or len(latencies) != jobs:
                raise BenchError(f"{side.name} serve timed {latencies!r:.80} of {jobs} jobs")
            return [float(x) for x in latencies], [float(x) for x in inserter["insert_calls_ms"]]
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()


# database ------------------------------------------------------------------------------------


@contextmanager
def fresh_databases(admin_url: str, names: Sequence[str]) -> Iterator[dict[str, str]]:
    """Create one empty database per side and drop them afterwards, whatever happened."""
    tag = f"{os.getpid()}"
    dbs = {name: f"bench_jobs_{name}_{tag}" for name in names}
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for db in dbs.values():
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    try:
        yield {name: make_conninfo(admin_url, dbname=db) for name, db in dbs.items()}
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for db in dbs.values():
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
                )


def reset(url: str) -> None:
    """Empty every table of the side's database and flush dirty pages before a run."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        if tables:
            names = sql.SQL(", ").join(sql.Identifier("public", t) for t in tables)
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(names))
        with suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")


def first_claim_seconds(url: str, wall_s: float, started_at: str) -> float:
    """Seconds from the earliest claim to the end of the drain, from the rows themselves."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT min(attempted_at) FROM oban_jobs").fetchone()
    assert row is not None and row[0] is not None
    offset: float = (row[0] - datetime.fromisoformat(started_at)).total_seconds()
    return wall_s - offset


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def row_latencies_ms(url: str) -> tuple[float, float]:
    """p50 and p99 of ``attempted_at - inserted_at`` as each library stamps them."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
            FROM (SELECT extract(epoch FROM attempted_at - inserted_at) * 1000 AS ms
                  FROM oban_jobs WHERE state = 'completed') AS t
            """
        ).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0]), float(row[1])


def server_facts(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        facts = {}
        for name in ("server_version", "synchronous_commit", "shared_buffers"):
            value = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            facts[name] = str(value[0]) if value else "?"
    return facts


# the run -------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(
    args: argparse.Namespace, sides: dict[str, SideCommand], urls: dict[str, str]
) -> Samples:
    samples = Samples()
    for name, side in sides.items():
        samples.info[name] = run_side(side, "setup", urls[name], [])
    order = list(sides)
    common = ["--jobs", str(args.jobs), "--batch", str(args.batch)]
    for run in range(args.runs):
        # Alternate which side goes first, so a drift in machine load does not favour one.
        ordered = order if run % 2 == 0 else order[::-1]
        for scenario in SCENARIOS:
            for name in ordered:
                if scenario.bridge_only and name != BRIDGE:
                    continue
                reset(urls[name])
                result = run_side(
                    sides[name], "drain", urls[name], [*common, *scenario.side_args()]
                )
                record_drain(samples, name, scenario, result, args.jobs, urls[name])
                log(
                    f"run {run + 1}/{args.runs} {name:6} {scenario.key:17} "
                    f"insert {args.jobs / result['insert_s']:8,.0f}/s  "
                    f"drain {args.jobs / result['wall_s']:8,.0f}/s  "
                    f"cpu {result['cpu_s']:.2f}s"
                )
        for name in ordered:
            reset(urls[name])
            timed, calls = run_latency(
                sides[name], urls[name], args.latency_jobs, args.latency_rate
            )
            samples.add(name, "insert_call_p50", percentile(calls, 0.5))
            p50, p99 = percentile(timed, 0.5), percentile(timed, 0.99)
            samples.add(name, "latency_p50", p50)
            samples.add(name, "latency_p99", p99)
            row_p50, row_p99 = row_latencies_ms(urls[name])
            samples.add(name, "row_latency_p50", row_p50)
            samples.add(name, "row_latency_p99", row_p99)
            log(
                f"run {run + 1}/{args.runs} {name:6} latency           "
                f"p50 {p50:.1f} ms  p99 {p99:.1f} ms  (rows: {row_p50:.1f} / {row_p99:.1f})"
            )
    return samples


def record_drain(
    samples: Samples, side: str, scenario: Scenario, result: dict[str, Any], jobs: int, url: str
) -> None:
    key = scenario.key
    samples.add(side, f"drain_{key}", jobs / result["wall_s"])
    samples.add(side, f"cpu_{key}", result["cpu_s"] / jobs * 1000)
    if key in ("c10", "c50"):
        samples.add(side, "insert", jobs / result["insert_s"])
        claim_s = first_claim_seconds(url, result["wall_s"], result["started_at"])
        samples.add(side, f"claim_{key}", jobs / claim_s)


# output --------------------------------------------------------------------------------------


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "rate":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.1f}"
    return f"{value:.3f}"


def cell(samples: Samples, side: str, row: Row) -> str:
    """The median, then the range over runs in small print: this machine is shared and noisy."""
    text = fmt(samples.median(side, row.metric), row.unit)
    spread = samples.spread(side, row.metric)
    if spread is not None:
        text += f" <sub>{fmt(spread[0], row.unit)}\u2013{fmt(spread[1], row.unit)}</sub>"
    return text


def ratio(bridge: float | None, oban: float | None) -> str:
    if bridge is None or oban is None or oban == 0:
        return "—"
    return f"{bridge / oban:.2f}x"


def table(samples: Samples, sides: dict[str, SideCommand]) -> str:
    oban_head = "oban (Python)" if OBAN in sides else "oban (Python, skipped)"
    lines = [
        f"| metric | bridge | {oban_head} | bridge / oban "
        "| Elixir Oban 2.23 (from tests/data/golden/README.md, not measured here) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in ROWS:
        b = samples.median(BRIDGE, row.metric)
        o = samples.median(OBAN, row.metric)
        if b is None and o is None:
            continue
        lines.append(
            f"| {row.label} | {cell(samples, BRIDGE, row)} | {cell(samples, OBAN, row)} "
            f"| {ratio(b, o)} | {row.golden} |"
        )
    return "\n".join(lines)


def machine(url: str, load_before: str, load_after: str) -> list[str]:
    facts = server_facts(url)
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [
        f"- machine: {platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
        f"PostgreSQL {facts['server_version']} on the same host "
        f"(synchronous_commit={facts['synchronous_commit']}, "
        f"shared_buffers={facts['shared_buffers']})",
        f"- load average (1/5/15 min) before: {load_before}; after: {load_after}",
    ]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def report(
    args: argparse.Namespace,
    samples: Samples,
    sides: dict[str, SideCommand],
    loads: tuple[str, str],
    command: str,
) -> str:
    versions = ", ".join(
        f"{info['library']} {info['version']} (Python {info['python']}, {info['loop']} loop)"
        for info in samples.info.values()
    )
    lines = [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command}`",
        f"- versions: {versions}",
        *machine(args.url, *loads),
        "",
        table(samples, sides),
    ]
    return "\n".join(lines)


def docs_section(body: str, args: argparse.Namespace) -> str:
    method = METHOD.format(
        runs=args.runs,
        jobs=args.jobs,
        batch=args.batch,
        insert_runs=2 * args.runs,
        latency_jobs=args.latency_jobs,
        latency_rate=args.latency_rate,
        oban_loop=args.oban_loop,
    )
    return (
        f"{SECTION}\n\n"
        "Generated by `benchmarks/run.sh --write-docs` (which runs `benchmarks/bench_jobs.py`); "
        "rerun it rather than editing this section by hand (see benchmarks/README.md).\n\n"
        f"{body}\n\n{method}"
    )


# command line --------------------------------------------------------------------------------


def default_url() -> str:
    for name in ("BRIDGE_DATABASE_URL", "DATABASE_URL"):
        value = os.environ.get(name)
        if value:
            return value
    return DEFAULT_URL


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", default=default_url(), help="admin URL; two databases are made")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per drain run")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--batch", type=int, default=1_000, help="bulk insert batch size")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--latency-rate", type=float, default=50.0, help="jobs/s")
    parser.add_argument("--oban-python", type=Path, default=DEFAULT_OBAN_PYTHON)
    parser.add_argument("--oban-loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--skip-oban", action="store_true", help="measure bridge alone")
    parser.add_argument("--write-docs", action="store_true", help=f"update {SECTION} of docs")
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--json", type=Path, default=None, help="also dump every sample here")
    args = parser.parse_args(argv)
    for name in ("jobs", "runs", "batch", "latency_jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.latency_rate <= 0:
        parser.error("--latency-rate must be positive")
    if not args.skip_oban and not Path(args.oban_python).exists():
        parser.error(
            f"no oban interpreter at {args.oban_python}: run benchmarks/run.sh (it makes "
            ".bench-venv-oban with Python 3.12 and `pip install oban`), pass --oban-python, "
            "or --skip-oban"
        )
    return args


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = parse_args(argv)
    command = os.environ.get("BENCH_COMMAND") or shlex.join(
        ["python", "benchmarks/bench_jobs.py", *(argv or sys.argv[1:])]
    )
    sides = side_commands(args)
    load_before = load_average()
    started = time.perf_counter()
    with fresh_databases(args.url, list(sides)) as urls:
        samples = measure(args, sides, urls)
    load_after = load_average()
    log(f"done in {time.perf_counter() - started:.0f} s")
    body = report(args, samples, sides, (load_before, load_after), command)
    out(body)
    if args.json is not None:
        dump = {f"{side}.{metric}": vals for (side, metric), vals in samples.values.items()}
        args.json.write_text(json.dumps({"samples": dump, "info": samples.info}, indent=2))
    if args.write_docs:
        replace_section(args.docs, SECTION, docs_section(body, args))
        log(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"bench_jobs: {exc}")
        sys.exit(1)
