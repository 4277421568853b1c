"""Scale-out benchmark: 1, 2 and 4 ``bridge worker`` nodes draining one PostgreSQL database.

    python benchmarks/bench_scale_out.py                 # table on stdout (about 4 minutes)
    python benchmarks/bench_scale_out.py --write-docs    # ... and the "## Scale-out" section
    python benchmarks/bench_scale_out.py --nodes 1,2 --noop-jobs 4000 --cpu-jobs 0   # quick

"More nodes on the same PostgreSQL" is how an Oban user grows past one machine, so each node
here is a separate ``bridge worker`` process with a ``--node`` name of its own, started by this
script exactly as it would be started on another machine: no supervisor between them, nothing
shared but the database. (``bridge worker --processes N`` also runs N ordinary nodes, but under
one supervisor on one host: the way to use a machine's cores, not the way to add machines.)

For each node count and workload, in a fresh database this script creates and drops:

1. the jobs are written as ``scheduled`` an hour ahead, then the nodes are started and the
   script waits until every node's LISTEN connection is up (start-up is not timed);
2. the script makes every job ``available`` in one statement and notifies each queue (what the
   Stager does, but at once: a node's Stager makes at most 5,000 jobs a second available, and
   every node runs one, so leaving it to them would cap one node's figure and lift it with the
   node count);
3. until every job is completed, a thread samples ``pg_stat_activity``/``pg_locks`` and
   ``/proc`` every ``--sample-interval`` seconds (``_scale_probe.py``);
4. the figures are read from the rows (first ``attempted_at`` .. last ``completed_at``), the
   samples and ``pg_stat_database``.

Workloads: ``noop``, ``--noop-jobs`` no-op jobs spread evenly over ``--queues`` queues (equal
backlogs, for fairness), ``--noop-limit`` per queue per node; ``cpu``, ``bench_cpu.py``'s
~20 ms pure-Python burn, ``--cpu-jobs`` jobs in one queue at ``--cpu-limit`` per node. What
each column means is written out in :data:`METHOD` (it goes into the docs verbatim).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOCS = REPO / "docs" / "performance.md"
SECTION = "## Scale-out"
KEEP_AFTER = "### What this says"
CLK_TCK = os.sysconf("SC_CLK_TCK")

sys.path.insert(0, str(HERE))
from _cpu_burn import burn  # noqa: E402
from _docs_section import replace_section  # noqa: E402
from _scale_probe import Probe, as_reading, read_stat  # noqa: E402
from _scale_stats import cpu_ticks_over, queue_fairness, wait_fractions  # noqa: E402
from bench_cpu import fresh_database  # noqa: E402
from bench_jobs import default_url, load_average, machine  # noqa: E402

PG_STAT_COLUMNS = (
    "xact_commit",
    "xact_rollback",
    "blks_read",
    "blks_hit",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "deadlocks",
)


class BenchError(RuntimeError):
    """A node failed or a drain did not finish; the message says which and why."""


@dataclass(frozen=True)
class Workload:
    key: str
    worker: str
    queues: tuple[str, ...]
    jobs: int
    limit: int
    burn_rounds: int = 0

    def queue_option(self) -> str:
        return ",".join(f"{q}:{self.limit}" for q in self.queues)


def calibrate(burn_ms: float) -> int:
    """Rounds of ``burn`` that take ``burn_ms`` of CPU on this interpreter (fastest of five).

    Timed with this process's CPU clock, not the wall clock (``bench_cpu.py`` uses the wall
    clock): on a shared machine the wall clock also counts the time other processes held the
    core, which would make ``n``, and so every job, smaller the busier the machine.
    """
    probe = 200_000
    best = min(_cpu_timed(probe) for _ in range(5))
    return max(1, int(probe * burn_ms / 1000 / best))


def _cpu_timed(n: int) -> float:
    started = time.process_time()
    burn(n)
    return time.process_time() - started


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# one measurement -----------------------------------------------------------------------------


def insert_jobs(conn: psycopg.Connection[Any], work: Workload) -> None:
    """The backlog, round-robin over the queues, due in an hour: no Stager touches it."""
    conn.execute(
        """INSERT INTO oban_jobs (state, queue, worker, args, max_attempts, scheduled_at)
           SELECT 'scheduled', (%(queues)s::text[])[1 + g %% cardinality(%(queues)s::text[])],
                  %(worker)s, jsonb_build_object('n', %(n)s::int, 'i', g), 20,
                  now() + interval '1 hour'
           FROM generate_series(0, %(jobs)s - 1) AS g""",
        {
            "queues": list(work.queues),
            "worker": work.worker,
            "n": work.burn_rounds,
            "jobs": work.jobs,
        },
    )


def start_nodes(
    url: str, work: Workload, count: int, errs: list[IO[str]], files: ExitStack
) -> list[subprocess.Popen[bytes]]:
    """``count`` separate ``bridge worker`` processes, each a node; their stderr in ``errs``."""
    nodes = []
    for index in range(1, count + 1):
        argv = [
            "bridge",
            "--database-url",
            url,
            "worker",
            "-q",
            work.queue_option(),
            "--node",
            f"scale-{index}",
            "--app-dir",
            str(HERE),
            "-w",
            "_scale_workers",
            "--log-level",
            "warning",
        ]
        # Closed by ``files`` once the nodes have stopped, whatever happened.
        err = files.enter_context(tempfile.TemporaryFile("w+"))  # noqa: SIM115
        errs.append(err)
        nodes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err))
    return nodes


def stop_nodes(nodes: Sequence[subprocess.Popen[bytes]]) -> None:
    for node in nodes:
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def _check_alive(nodes: Sequence[subprocess.Popen[bytes]], errs: Sequence[IO[str]]) -> None:
    for index, (node, err) in enumerate(zip(nodes, errs, strict=True), start=1):
        if node.poll() is not None:
            err.seek(0)
            tail = "\n".join(err.read().strip().splitlines()[-10:])
            raise BenchError(f"node scale-{index} exited {node.returncode}:\n{tail}")


def wait_listening(
    conn: psycopg.Connection[Any],
    nodes: Sequence[subprocess.Popen[bytes]],
    errs: Sequence[IO[str]],
    timeout: float,
) -> None:
    """Until every node's notifier has LISTENed (it starts before the node's producers)."""
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(nodes, errs)
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query ILIKE 'LISTEN %'"
        ).fetchone()
        if row is not None and row[0] >= len(nodes):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"only {row[0] if row else 0} of {len(nodes)} nodes listened")
        time.sleep(0.2)


def release(conn: psycopg.Connection[Any], work: Workload) -> None:
    """Every job available at once, each queue woken, in one transaction."""
    with conn.transaction():
        conn.execute("UPDATE oban_jobs SET state = 'available' WHERE state = 'scheduled'")
        for queue in work.queues:
            payload = json.dumps({"queue": queue}, separators=(",", ":"))
            conn.execute("SELECT pg_notify('public.oban_insert', %s)", (payload,))


def wait_drained(
    conn: psycopg.Connection[Any],
    nodes: Sequence[subprocess.Popen[bytes]],
    errs: Sequence[IO[str]],
    timeout: float,
) -> int:
    """Poll (cheaply, through the state index) until no job is left to run; returns polls."""
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        polls += 1
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM oban_jobs"
            " WHERE state IN ('scheduled', 'available', 'executing', 'retryable'))"
        ).fetchone()
        if row is not None and not row[0]:
            return polls
        _check_alive(nodes, errs)
        if time.monotonic() > deadline:
            raise BenchError(f"the drain did not finish within {timeout:.0f} s")
        time.sleep(0.1)


def pg_stat_database(conn: psycopg.Connection[Any], dbname: str) -> dict[str, int]:
    columns = ", ".join(PG_STAT_COLUMNS)
    row = conn.execute(
        f"SELECT {columns} FROM pg_stat_database WHERE datname = %s",
        (dbname,),
    ).fetchone()
    assert row is not None
    return {name: int(value or 0) for name, value in zip(PG_STAT_COLUMNS, row, strict=True)}


def measure(args: argparse.Namespace, work: Workload, count: int, round_no: int) -> dict[str, Any]:
    dbname = f"bench_scale_{os.getpid()}_{work.key}_{count}_{round_no}"
    load_before = os.getloadavg()
    with fresh_database(args.url, dbname) as url:
        install = subprocess.run(
            ["bridge", "--database-url", url, "schema", "install"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if install.returncode != 0:
            tail = "\n".join(install.stderr.strip().splitlines()[-5:])
            raise BenchError(f"`bridge schema install` exited {install.returncode}:\n{tail}")
        errs: list[IO[str]] = []
        nodes: list[subprocess.Popen[bytes]] = []
        probe: Probe | None = None
        files = ExitStack()
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                insert_jobs(conn, work)
                nodes = start_nodes(url, work, count, errs, files)
                wait_listening(conn, nodes, errs, args.start_timeout)
                time.sleep(args.settle)  # producers' first (empty) fetch, plugins' first tick
                own_pid = conn.info.backend_pid
                probe = Probe(
                    args.url, dbname, [n.pid for n in nodes], {own_pid}, args.sample_interval
                )
                stats_before = pg_stat_database(probe.conn, dbname)
                stage_before = read_stat(own_pid)
                probe.start()
                release(conn, work)
                stage_after = read_stat(own_pid)
                polls = wait_drained(conn, nodes, errs, args.timeout)
                probe.stop()
            stop_nodes(nodes)
            time.sleep(0.5)  # the nodes' backends flush their statistics as they exit
            stats_after = pg_stat_database(probe.conn, dbname)
            with psycopg.connect(url) as conn:
                rows = conn.execute(
                    "SELECT queue, attempted_by[1], state::text,"
                    " extract(epoch FROM attempted_at)::float8,"
                    " extract(epoch FROM completed_at)::float8 FROM oban_jobs"
                ).fetchall()
        finally:
            stop_nodes(nodes)
            files.close()
            if probe is not None:
                probe.close()
    stage_ticks = (
        stage_after.cpu_ticks - stage_before.cpu_ticks if stage_before and stage_after else 0
    )
    result = summarise(work, count, rows, probe, stats_before, stats_after, polls, stage_ticks)
    result.update(round=round_no, load_before=load_before, load_after=os.getloadavg())
    return result


def summarise(
    work: Workload,
    count: int,
    rows: Sequence[tuple[Any, ...]],
    probe: Probe,
    stats_before: dict[str, int],
    stats_after: dict[str, int],
    polls: int,
    stage_ticks: int,
) -> dict[str, Any]:
    completed = [r for r in rows if r[2] == "completed"]
    start = min(r[3] for r in rows if r[3] is not None)
    end = max(r[4] for r in completed)
    window = end - start
    by_queue: dict[str, list[float]] = {q: [] for q in work.queues}
    by_node: dict[str, int] = {}
    for queue, node, _, _, done in completed:
        by_queue[queue].append(done - start)
        by_node[node] = by_node.get(node, 0) + 1
    samples = probe.samples
    wall = samples[-1]["t"] - samples[0]["t"]

    def cpu_s(field: str) -> float:
        return cpu_ticks_over([as_reading(s[field]) for s in samples]) / CLK_TCK

    busy0, total0 = samples[0]["machine_ticks"]
    busy1, total1 = samples[-1]["machine_ticks"]
    stats = {k: stats_after[k] - stats_before[k] for k in PG_STAT_COLUMNS}
    # The driver's own transactions in the window: the release and each completion poll.
    stats["xact_commit"] -= polls + 1
    db_cpu = cpu_s("db_ticks")
    backends_seen = len({(r[0], r[1]) for s in samples for r in s["db_ticks"]})
    node_cpu = cpu_s("node_ticks")
    return {
        "workload": work.key,
        "nodes": count,
        "jobs": work.jobs,
        "completed": len(completed),
        "window_s": window,
        "jobs_per_s": len(completed) / window if window > 0 else 0.0,
        "wall_s": wall,
        "db_cpu_s": db_cpu,
        "background_cpu_s": cpu_s("background_ticks"),
        "node_cpu_s": node_cpu,
        "probe_cpu_s": cpu_s("probe_ticks"),
        "release_cpu_s": stage_ticks / CLK_TCK,
        "db_ms_per_job": db_cpu * 1000 / work.jobs,
        "node_ms_per_job": node_cpu * 1000 / work.jobs,
        "db_cores": db_cpu / wall if wall > 0 else 0.0,
        "machine_busy": (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0,
        "db_backends_seen": backends_seen,
        # each backend's delta is whole ticks read twice: off by up to one tick each
        "db_ms_per_job_error": backends_seen * 1000 / CLK_TCK / work.jobs,
        "waits": wait_fractions(probe.backends),
        "fairness": queue_fairness(by_queue, window) if len(work.queues) > 1 else None,
        "per_node": by_node,
        "pg_stat_database": stats,
        "samples": samples,
    }


# the run -------------------------------------------------------------------------------------


def workloads(args: argparse.Namespace, burn_rounds: int) -> list[Workload]:
    found = []
    if args.noop_jobs:
        queues = tuple(f"q{i}" for i in range(1, args.queues + 1))
        found.append(Workload("noop", "bench.ScaleNoop", queues, args.noop_jobs, args.noop_limit))
    if args.cpu_jobs:
        found.append(
            Workload("cpu", "bench.ScaleBurn", ("cpu",), args.cpu_jobs, args.cpu_limit, burn_rounds)
        )
    return found


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    burn_rounds = (args.burn_rounds or calibrate(args.burn_ms)) if args.cpu_jobs else 0
    results = []
    for round_no in range(args.rounds):
        order = args.nodes if round_no % 2 == 0 else args.nodes[::-1]
        for work in workloads(args, burn_rounds):
            for count in order:
                result = measure(args, work, count, round_no)
                results.append(result)
                log(
                    f"round {round_no + 1} {work.key:4} nodes={count}: "
                    f"{result['jobs_per_s']:8,.1f} jobs/s  "
                    f"PG {result['db_ms_per_job']:.3f} ms/job ({result['db_cores']:.2f} cores)  "
                    f"nodes {result['node_ms_per_job']:.3f} ms/job  "
                    f"lock waits {result['waits']['lock_wait_fraction']:.1%}  "
                    f"machine {result['machine_busy']:.0%}  "
                    f"load {result['load_before'][0]:.1f}->{result['load_after'][0]:.1f}"
                )
    return results, burn_rounds


# output --------------------------------------------------------------------------------------


Getter = Callable[[dict[str, Any]], float]


def pick(results: Sequence[dict[str, Any]], workload: str, nodes: int) -> list[dict[str, Any]]:
    return [r for r in results if r["workload"] == workload and r["nodes"] == nodes]


def median_of(results: Sequence[dict[str, Any]], workload: str, nodes: int, get: Getter) -> float:
    return statistics.median(get(r) for r in pick(results, workload, nodes))


TIMES = "\u00d7"  # multiplication sign
DASH = "\u2013"  # en dash, for ranges


def cell(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """The median, then the range over rounds in small print when there is more than one."""
    if not values:
        return "\u2014"
    text = fmt(statistics.median(values))
    if len(values) > 1:
        text += f" <sub>{fmt(min(values))}{DASH}{fmt(max(values))}</sub>"
    return text


def rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ms(v: float) -> str:
    return f"{v:.3f}"


def pct(v: float) -> str:
    return f"{v:.1%}" if v < 0.1 else f"{v:.0%}"


def times(v: float) -> str:
    return f"{v:.2f}{TIMES}"


def two(v: float) -> str:
    return f"{v:.2f}"


def whole(v: float) -> str:
    return f"{v:.0f}"


def speedups(results: Sequence[dict[str, Any]], workload: str, nodes: int) -> list[float]:
    """Each round's jobs/s at ``nodes`` over the median at 1 node."""
    if not pick(results, workload, 1):
        return []
    one = median_of(results, workload, 1, lambda r: r["jobs_per_s"])
    return [r["jobs_per_s"] / one for r in pick(results, workload, nodes)]


def node_share(result: dict[str, Any]) -> str:
    shares = sorted(result["per_node"].values())
    total = sum(shares)
    if len(shares) < 2 or not total:
        return "\u2014"
    return f"{shares[0] / total:.0%}{DASH}{shares[-1] / total:.0%}"


def per_job(column: str) -> Getter:
    return lambda r: r["pg_stat_database"][column] / r["jobs"]


def wait_share(kind: str) -> Getter:
    return lambda r: r["waits"]["by_type"].get(kind, 0.0)


@dataclass(frozen=True)
class Column:
    head: str
    get: Getter
    fmt: Callable[[float], str]


NOOP_COLUMNS = (
    Column("jobs/s", lambda r: r["jobs_per_s"], rate),
    Column("PG CPU ms/job", lambda r: r["db_ms_per_job"], ms),
    Column("nodes' CPU ms/job", lambda r: r["node_ms_per_job"], ms),
    Column("PG cores busy", lambda r: r["db_cores"], two),
    Column("machine busy", lambda r: r["machine_busy"], pct),
    Column("lock waits (of active samples)", lambda r: r["waits"]["lock_wait_fraction"], pct),
    Column("LWLock", wait_share("LWLock"), pct),
    Column("IO", wait_share("IO"), pct),
    Column("Client", wait_share("Client"), pct),
    Column("on CPU", wait_share("CPU"), pct),
)
FAIRNESS_COLUMNS = (
    Column("queues' finish spread (of window)", lambda r: r["fairness"]["finish_spread"], pct),
    Column("worst queue share in a 10 % slice", lambda r: r["fairness"]["worst_share"] or 0.0, pct),
    Column(
        "longest gap without a completion, ms",
        lambda r: max(r["fairness"]["max_gap_s"].values()) * 1000,
        whole,
    ),
    Column("commits / job", per_job("xact_commit"), two),
    Column("rows updated / job", per_job("tup_updated"), two),
    Column("buffer hits / job", per_job("blks_hit"), whole),
    Column("deadlocks", lambda r: r["pg_stat_database"]["deadlocks"], whole),
)
CPU_COLUMNS = (
    Column("jobs/s", lambda r: r["jobs_per_s"], rate),
    Column("PG CPU ms/job", lambda r: r["db_ms_per_job"], ms),
    Column("nodes' CPU ms/job", lambda r: r["node_ms_per_job"], ms),
    Column("machine busy", lambda r: r["machine_busy"], pct),
)


def table(
    results: Sequence[dict[str, Any]],
    workload: str,
    nodes: Sequence[int],
    columns: Sequence[Column],
    extra: dict[str, Callable[[int], str]],
) -> list[str]:
    """One markdown table: a row per node count, the ``extra`` columns after the first."""
    heads = ["nodes", columns[0].head, *extra, *(c.head for c in columns[1:])]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---:|" * len(heads)]
    for n in nodes:
        found = pick(results, workload, n)
        if not found:
            continue
        cells = [cell([c.get(r) for r in found], c.fmt) for c in columns]
        lines.append(
            "| "
            + " | ".join([str(n), cells[0], *(f(n) for f in extra.values()), *cells[1:]])
            + " |"
        )
    return lines


def tables(results: Sequence[dict[str, Any]], nodes: Sequence[int], burn_ms: float) -> str:
    out: list[str] = []
    noop = [r for r in results if r["workload"] == "noop"]
    if noop:
        queues = len(noop[0]["fairness"]["queues"])
        out += [f"**No-op drain** ({noop[0]['jobs']:,} jobs over {queues} queues):", ""]
        out += table(
            results,
            "noop",
            nodes,
            NOOP_COLUMNS,
            {f"{TIMES} 1 node": lambda n: cell(speedups(results, "noop", n), times)},
        )
        out += [
            "",
            f"**Fairness and work per job** (the same drains; a fair share is {1 / queues:.0%}"
            " per queue):",
            "",
        ]
        out += table(
            results,
            "noop",
            nodes,
            FAIRNESS_COLUMNS,
            {
                "jobs per node (min\u2013max share)": lambda n: node_share(
                    pick(results, "noop", n)[0]
                )
            },
        )
    cpu = [r for r in results if r["workload"] == "cpu"]
    if cpu:
        cores = os.cpu_count() or 1
        ideal = cores * 1000 / burn_ms
        out += [
            "",
            f"**CPU-bound** ({cpu[0]['jobs']:,} jobs of ~{burn_ms:g} ms pure-Python CPU, one "
            f"queue; the ideal on {cores} cores is {ideal:.0f} jobs/s):",
            "",
        ]
        out += table(
            results,
            "cpu",
            nodes,
            CPU_COLUMNS,
            {
                f"{TIMES} 1 node": lambda n: cell(speedups(results, "cpu", n), times),
                "of ideal": lambda n: cell(
                    [r["jobs_per_s"] / ideal for r in pick(results, "cpu", n)], pct
                ),
                "jobs per node (min\u2013max share)": lambda n: node_share(
                    pick(results, "cpu", n)[0]
                ),
            },
        )
    return "\n".join(out)


METHOD = """\
How it measures (`benchmarks/bench_scale_out.py`; details in its docstring and
benchmarks/README.md):

- **Nodes** are separate `bridge worker` processes with their own `--node` names, each with its
  default pool (4 connections + 1 LISTEN) and plugins, all on this one host and this one
  PostgreSQL: more nodes on the same database is how an Oban deployment grows past one
  machine. Each node count gets a fresh database; the jobs are written first as `scheduled`,
  the nodes are started, and once every node LISTENs the script makes all jobs `available` in
  one statement and notifies each queue (start-up is not timed, and the Stager's 5,000 jobs a
  second per node neither caps nor scales the figure). Queue limits are per node, as in Oban:
  {noop_limit} per queue per node for no-op jobs, {cpu_limit} per node for the CPU-bound ones.
- **jobs/s**: completed jobs / (last `completed_at` - first `attempted_at`), from the rows.
- **PG CPU ms/job**: user + system CPU of the PostgreSQL backends serving the benchmark's
  database (found in `pg_stat_activity` at every sample, read from `/proc/<pid>/stat`), from
  the moment the jobs became available until the last one completed, divided by the jobs. A
  backend present at the first sample counts from it, one born later from zero, each up to the
  last sample it was seen in. The script's own connection to the database (the release and the
  completion polls) is left out. Error: the clock tick is 10 ms per process per reading, so
  ± 10 ms times the number of backends (about 5 per node) over the whole drain, and a
  backend that exits mid-drain would lose at most one sample interval of CPU (none did
  exit: the pools keep their connections). Not included: the server's shared background
  processes (checkpointer, WAL writer, background writer), which also serve every other
  database on this server; they are in the JSON (`background_cpu_s`).
- **nodes' CPU ms/job**: the same from `/proc/<pid>/stat` of the node processes (all threads).
- **PG cores busy**: PG CPU over the wall time of the window; **machine busy**: the share of all
  cores busy over the window from /proc/stat, whoever used them (other tenants included).
- **lock waits**: every {interval:g} s a thread on another connection (to the admin database,
  so its queries are not counted as the benchmark's) reads `pg_stat_activity` joined with
  ungranted `pg_locks` for the benchmark database's backends; a backend sample that is
  `active` and waits on a heavyweight lock (`wait_event_type = 'Lock'` or an ungranted lock) is
  a lock wait, shown as a share of all `active` backend samples. Claims use
  `FOR UPDATE SKIP LOCKED`, so contention between nodes would show here first. `LWLock`
  (buffer and WAL internals), `IO` (mostly the WAL flush at commit) and "on CPU" (active, no
  wait event) are the rest of the active samples.
- **fairness**: the queues start with equal backlogs, round-robin by id. "Finish spread" is the
  time between the first and the last queue finishing, as a share of the window; "worst queue
  share" is the smallest share of completions any queue had in any tenth of the window that
  ended before the first queue ran out; "longest gap" is the longest time any queue went
  without a completion, from the start to its own last job. A starved queue would show a
  share near 0 and a gap as long as its starving.
- **commits, rows updated, buffer hits / job**: `pg_stat_database` deltas for the benchmark
  database over the drain (read after the nodes exit, so their last statistics are flushed;
  the node shutdown's few statements are included, the script's polls taken off the commits).
  Each job's row is updated three times: made available (the release, which the Stager would
  do), claimed, and given its outcome.
"""


def findings(results: Sequence[dict[str, Any]], nodes: Sequence[int]) -> list[str]:
    """Sentences computed from this run's figures (rewritten on every run)."""
    lines: list[str] = []
    for key, label in (("noop", "No-op drain"), ("cpu", "CPU-bound drain")):
        parts = [
            f"{n} nodes {statistics.median(speedups(results, key, n)):.2f}{TIMES}"
            for n in nodes
            if n != 1 and pick(results, key, n) and pick(results, key, 1)
        ]
        if parts:
            lines.append(f"- {label}: against 1 node, " + ", ".join(parts) + ".")
    counts = [n for n in nodes if pick(results, "noop", n)]
    if not counts:
        return lines

    def med(n: int, get: Getter) -> float:
        return median_of(results, "noop", n, get)

    def plural(n: int) -> str:
        return f"{n} node{'s' if n > 1 else ''}"

    db = ", ".join(
        f"{med(n, lambda r: r['db_ms_per_job']):.3f} \u00b1 "
        f"{med(n, lambda r: r['db_ms_per_job_error']):.3f} ms at {plural(n)}"
        for n in counts
    )
    per_core = 1 / statistics.median(r["db_ms_per_job"] for r in results if r["workload"] == "noop")
    own = ", ".join(f"{med(n, lambda r: r['node_ms_per_job']):.3f} ms" for n in counts)
    top = counts[-1]
    lines.append(
        f"- PostgreSQL CPU per no-op job (claim, outcome, the nodes' plugins): {db}; the nodes' "
        f"own: {own}. At {plural(top)} PostgreSQL's backends kept "
        f"{med(top, lambda r: r['db_cores']):.2f} of the {os.cpu_count()} cores busy, and the "
        f"machine was {med(top, lambda r: r['machine_busy']):.0%} busy. At this cost one "
        f"core of PostgreSQL CPU serves about {per_core * 1000:,.0f} no-op jobs a second."
    )

    def event_share(r: dict[str, Any], *events: str) -> float:
        active = r["waits"]["active_samples"]
        return sum(r["waits"]["by_event"].get(e, 0) for e in events) / active if active else 0.0

    wal = ", ".join(
        f"{med(n, lambda r: event_share(r, 'LWLock:WALWrite', 'IO:WALSync')):.0%}" for n in counts
    )
    client = ", ".join(
        f"{med(n, lambda r: event_share(r, 'Client:ClientRead')):.0%}" for n in counts
    )
    lines.append(
        f"- Where the backends' time went ({', '.join(map(str, counts))} nodes): waiting for the "
        f"WAL flush at commit (`LWLock:WALWrite` + `IO:WALSync`) {wal} of the active samples; "
        f"waiting for the node to send its next message (`Client:ClientRead`) {client}."
    )
    noop = [r for r in results if r["workload"] == "noop"]
    locks = max(r["waits"]["lock_wait_fraction"] for r in noop)
    lock_events: dict[str, int] = {}
    for r in noop:
        for event, count in r["waits"]["by_event"].items():
            if event.startswith("Lock:"):
                lock_events[event[5:]] = lock_events.get(event[5:], 0) + count
    named = ", ".join(f"`{e}` {c}" for e, c in sorted(lock_events.items(), key=lambda i: -i[1]))
    worst = min(r["fairness"]["worst_share"] or 0.0 for r in noop)
    spread = max(r["fairness"]["finish_spread"] for r in noop)
    gap = max(max(r["fairness"]["max_gap_s"].values()) for r in noop)
    fair = noop[0]["fairness"]["fair_share"]
    lines.append(
        f"- Lock waits: at most {locks:.1%} of active backend samples in any no-op run "
        f"({('by lock type, samples: ' + named) if named else 'none at all'}). No "
        f"queue starved: the smallest share any queue had of any tenth of a run was "
        f"{worst:.0%} (fair: {fair:.0%}), no queue went more than {gap * 1000:.0f} ms without "
        f"a completion, and the queues finished within {spread:.0%} of the window of each other."
    )
    return lines


def report(
    args: argparse.Namespace,
    results: Sequence[dict[str, Any]],
    burn_rounds: int,
    loads: tuple[str, str],
    command: str,
    minutes: float,
) -> str:
    import bridge  # the tree beside this script; only for its version

    head = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "bridge"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = f"commit {head or '?'}" + (", bridge/ with uncommitted changes" if dirty else "")
    lines = [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command}` ({minutes:.1f} minutes)",
        f"- bridge {bridge.__version__} ({tree}; Python {sys.version.split()[0]}), {args.rounds} "
        f"round(s) (median, range over rounds in small print when more than one)"
        + (f"; burn n = {burn_rounds:,} rounds per CPU-bound job" if burn_rounds else ""),
        *machine(args.url, *loads),
        "",
        tables(results, args.nodes, args.burn_ms),
        "",
        *findings(results, args.nodes),
    ]
    return "\n".join(lines)


def docs_section(body: str, args: argparse.Namespace) -> str:
    method = METHOD.format(
        noop_limit=args.noop_limit, cpu_limit=args.cpu_limit, interval=args.sample_interval
    )
    return (
        f"{SECTION}\n\n"
        "Generated by `python benchmarks/bench_scale_out.py --write-docs` (issue 18, item 3); "
        "rerun it rather than editing the generated part by hand. The part under "
        f'"{KEEP_AFTER[4:]}" is written by hand and kept by a rerun: re-read it against the '
        "new figures.\n\n"
        f"{body}\n\n{method}"
    )


# command line --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=default_url(), help="admin URL; databases are made")
    parser.add_argument("--nodes", default="1,2,4", help="node counts (1,2,4)")
    parser.add_argument("--noop-jobs", type=int, default=20_000, help="0 skips the no-op drain")
    parser.add_argument("--queues", type=int, default=4, help="no-op queues, equal backlogs")
    parser.add_argument("--noop-limit", type=int, default=10, help="per queue per node (10)")
    parser.add_argument("--cpu-jobs", type=int, default=600, help="0 skips the CPU drain")
    parser.add_argument("--cpu-limit", type=int, default=10, help="per node (10)")
    parser.add_argument("--burn-ms", type=float, default=20.0)
    parser.add_argument("--burn-rounds", type=int, default=None, help="n; calibrated when absent")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (node order alternates)")
    parser.add_argument("--sample-interval", type=float, default=0.05, help="seconds (0.05)")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds after LISTEN (1.5)")
    parser.add_argument("--start-timeout", type=float, default=90.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="per drain, seconds")
    parser.add_argument("--write-docs", action="store_true", help=f"update {SECTION} of docs")
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--json", type=Path, default=None, help="every sample, for analysis")
    args = parser.parse_args(argv)
    try:
        args.nodes = sorted({int(n) for n in args.nodes.split(",") if n.strip()})
    except ValueError:
        parser.error("--nodes takes comma-separated integers, e.g. 1,2,4")
    if not args.nodes or min(args.nodes) < 1:
        parser.error("--nodes needs at least one node count of 1 or more")
    if args.queues < 1 or args.rounds < 1 or args.noop_limit < 1 or args.cpu_limit < 1:
        parser.error("--queues, --rounds and the limits must be at least 1")
    if not args.noop_jobs and not args.cpu_jobs:
        parser.error("nothing to run: --noop-jobs and --cpu-jobs are both 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/bench_scale_out.py", *(argv or sys.argv[1:])])
    load_before = load_average()
    started = time.perf_counter()
    results, burn_rounds = run(args)
    load_after = load_average()
    minutes = (time.perf_counter() - started) / 60
    body = report(args, results, burn_rounds, (load_before, load_after), command, minutes)
    print(body)
    if args.json is not None:
        args.json.write_text(json.dumps({"burn_rounds": burn_rounds, "results": results}))
        log(f"wrote {args.json}")
    if args.write_docs:
        replace_section(args.docs, SECTION, docs_section(body, args), KEEP_AFTER)
        log(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"bench_scale_out: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        with suppress(Exception):
            log("bench_scale_out: interrupted (its databases were dropped)")
        sys.exit(130)
