"""Workflow benchmark: Python-owned Hephaestus workflows on one bridge node.

    python benchmarks/bench_workflows.py                # print the table (about 5 minutes)
    python benchmarks/bench_workflows.py --write-docs   # ... and update docs/performance.md

Two workloads, each at queue concurrency 10 and 50, each run in a fresh child process
(``_workflow_side.py``: one ``bridge.jobs.node.Node`` with the HephaestusOban workers of one
``WorkflowRunner``; ``--no-coalesce`` makes it ``WorkflowRunner(coalesce=False)``, a
transaction a job, for comparison) against a database this script creates and drops:

- ``fanout``: one workflow at a time, start → 100 parallel no-op steps → join → Done
  (``--fanout-workflows`` of them per run);
- ``linear``: ``--linear-workflows`` (1,000) three-step workflows started in one transaction.

Per run it records wall time, steps executed, statements sent (counted on the client,
``_workflow_count.py``), transactions (server side from ``pg_stat_database``, and client side),
instances left unfinished, the process's CPU (step bodies apart), and the runner's batches
(one drain per kind on the node's loop: pre-checks, recordings, advances). The table shows
medians over ``--runs`` runs next to the genuine HephaestusOban figures from
tests/data/golden/README.md. :data:`METHOD` says how, in words that go into the docs
verbatim. The Python ``oban`` package has no workflows, so unlike ``bench_jobs.py`` there is
no Python peer to run side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from _docs_section import replace_section
from psycopg import sql
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DOCS = REPO / "docs" / "performance.md"
SECTION = "## Workflows"
SIDE = HERE / "_workflow_side.py"
WORKLOADS = ("fanout", "linear")
DASH = "\u2013"

# Genuine HephaestusOban 0.5.0 (Oban 2.23.1, one BEAM node, local PostgreSQL 15, 2 cores), from
# tests/data/golden/README.md: steps/s, workflows/s and unfinished from the 2026-12-03 re-measure
# (the faster machine of the same kind, one run per row unless noted); statements per step from
# the first measure (not re-counted on 2026-12-03). Not measured here.
GOLDEN: dict[tuple[str, int], dict[str, str]] = {
    ("fanout", 10): {
        "steps": f"{DASH} (join never ran, 2 of 2 runs)",
        "workflows": DASH,
        "statements": "14.5\u201315",
        "statements_mid": "14.75",
        "unfinished": "1 of 1, twice",
    },
    ("fanout", 50): {
        "steps": "146 / 171 (2 runs)",
        "steps_median": "158.5",
        "workflows": DASH,
        "statements": "14.2",
        "statements_mid": "14.2",
        "unfinished": "0",
    },
    ("linear", 10): {
        "steps": "191",
        "steps_median": "191",
        "workflows": "64",
        "workflows_median": "64",
        "statements": "30",
        "statements_mid": "30",
        "unfinished": "0 of 1,000",
    },
    ("linear", 50): {
        "steps": "225",
        "steps_median": "225",
        "workflows": "75",
        "workflows_median": "75",
        "statements": "30",
        "statements_mid": "30",
        "unfinished": "5 of 1,000",
    },
}

METHOD = """\
How it was measured (`benchmarks/bench_workflows.py`, child process `_workflow_side.py`):

- **One Python node**: each run is a fresh process holding one `bridge.jobs.node.Node` (defaults:
  plugins, node pool, poll interval) serving the runner's queue `bench_workflows` at the given
  concurrency, with `bridge.workflows.run.workers.register` wiring AdvanceWorker, ExecuteStepWorker
  and ResumeWorker to one `WorkflowRunner` (its pool for one-job paths: {pool}; each batch
  drain opens an async connection of its own). The three job
  bodies are coroutines on the node's event loop (`run_advance`, `run_execute_step`,
  `run_resume`): a job waits there, holding no thread, while its database work is done for it.
  Steps are plain `def` no-ops returning `StepOk("ok")`; a step's body is the only part of a
  job that takes a thread, one of the runner's own pool (`_execute_body`, at most
  `step_threads` = 100). The database is made for the benchmark (`bench_workflows_<pid>` on the
  server of `--url`), migrated with bridge's schema, truncated and checkpointed before every
  run, and dropped at the end.
- **Batches**: {batches}
- **Warm-up**: before anything is timed or counted, each run completes one three-step
  workflow (the runner's pool opens on first use), then waits 1.2 s for statistics to settle.
- **fan-out**: start → 100 parallel no-op steps → join → `Hephaestus.Steps.Done`, i.e. 103 step
  executions per workflow; {fanout} workflows one after the other per run, each timed from the
  `start()` call to its instance being seen `completed`; steps/s = steps / summed time.
- **1,000 three-step workflows**: first → second → Done (3 step executions each, matching the
  3.0 steps per workflow of the reference figures); all {linear:,} `start()` calls in one
  client transaction (so they become visible at once), timed from the first call to every
  instance being seen `completed` (the inserting transaction, {linear_insert}, is inside).
- **Completion** is seen without polling: a node listener wakes the waiter when an instance's
  `Done` step job finishes (with inline advance its own transaction completed the instance;
  without, when that instance's next AdvanceWorker job finishes); the waiter then checks the
  rows (and also every 250 ms as a fallback). Those checks
  run on a connection of their own and are excluded from every count below.
- **Statements** are counted on the client, in the benchmark process, by wrapping psycopg's
  `Cursor.execute/executemany/copy` (sync and async; `Connection.execute` goes through them):
  every statement the node (claim, acks, plugins), the runner (its batches and one-job paths)
  and the starting client send in the measured window. `BEGIN`/`COMMIT`/`SAVEPOINT` that
  psycopg sends itself (`conn.transaction()`, `conn.commit()`) are counted apart ("+ tx"),
  since whether the reference counted them is not stated; a `BEGIN` sent inside a
  simple-protocol query with the locks (and the batch's first read) is part of that one
  statement. pg_stat_statements would count on the server, but it needs
  `shared_preload_libraries` and so a restart of a server other work shares; it is not loaded
  here.
- **Transactions** are counted on the server: the `xact_commit + xact_rollback` delta of the
  benchmark's own database in `pg_stat_database`, read through a connection to another
  database (so reading adds nothing), minus the completion polls. Before the closing reading
  every connection of the process is closed and its backend gone, because a backend flushes
  its statistics for certain only when it exits (an idle one may hold them for 10 s); so the
  delta also holds the node's shutdown and its background work in the window (stager, peers:
  a few transactions a second). It is higher than the client-side count (a `BEGIN`, or a
  statement sent on an idle autocommit connection) by about one per insert notification:
  the node's LISTEN backend reads each batch of notifications in a transaction of its own,
  which no client sends.
- **CPU and waiting**: process CPU (`getrusage`, all threads) per step. In the benchmark process
  only, the step body (`_execute_body`, in the runner's threads) is wrapped to record its thread
  CPU (`time.thread_time`); "the rest" is process CPU minus that: the node's event loop, which
  now also runs the runner's batches (their SQL rendering, row decoding and encoding, the engine),
  the coroutine job bodies, claims, acks, notifications, the connection pools and the starting
  client. Each coalescer's batch function is wrapped to record its wall time per batch (from
  its call to its return on the loop: round trips, the commit, waiting for locks, and the loop's
  other work interleaved), and each job body its wall time from the worker's call to its return
  (waiting for its batches and its step body included); on the shared loop their CPU cannot
  be told apart. Job bodies per batch are the coalescers' own counts, less the warm-up's
  batches (one job each). The runner module's `lock_instance` and `begin_locked` (BEGIN and the
  lock in one round trip) are wrapped too, but only the one-job paths call them (a failure path,
  every job with `--no-coalesce`); they are shown apart only when any was called.
- **Unfinished**: instances not `completed` when the run ended (each run waits up to
  {timeout:g} s), with any unprocessed step results and the state of every job of the run.
- Ratios are of medians: ours / reference, so above 1 is better for steps/s and workflows/s and
  worse for statements per step.
"""

BATCHES = """\
concurrent jobs' database work is grouped by the runner's coalescers
  (`bridge.workflows.store.coalesce.AsyncCoalescer`): the step jobs' pre-checks (each instance once,
  with which of the asked steps already have a result: one statement), the step results'
  recordings, the advances and, with inline advance (the default), the step jobs' own
  advances (each result written processed and its instance advanced in one transaction under
  the exclusive lock: the recordings' and advances' batches then hold only the starts'
  advances). Each has one drain task on the node's event loop that runs one
  batch at a time, on an async connection of its own, over every job that submitted since its
  last batch began (at most 100); while one runs, the next gathers. A recording or advance
  batch is one transaction (`bridge/workflows/store/batch.py`): `BEGIN`, every instance's
  advisory lock (shared for recordings, exclusive for advances, in key order) and the first
  read in one simple-protocol round trip (psycopg `AsyncClientCursor`, values bound on the
  client), then one prepared statement holding every write and its `NOTIFY`, then `COMMIT`.
  A batch that meets a failure path (a discarded step job) or an error is rolled back and its
  jobs run one at a time (`storage.py`'s statements, in the runner's threads)."""

NO_BATCHES = """\
none: these runs use `WorkflowRunner(coalesce=False)` (`--no-coalesce`), so
  every job sends its own statements in a transaction of its own (`storage.py`'s one-job
  statements, `BEGIN` and the instance lock in one round trip), in one of the runner's threads,
  while the job waits on the loop."""


class BenchError(RuntimeError):
    """A run failed or could not be started; the message says which and why."""


@dataclass
class Runs:
    """Every run's JSON, per (workload, concurrency)."""

    results: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, key: tuple[str, int], result: dict[str, Any]) -> None:
        self.results.setdefault(key, []).append(result)


# database ------------------------------------------------------------------------------------


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """Create an empty database with bridge's schema, drop it afterwards whatever happened."""
    name = f"bench_workflows_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(admin_url, dbname=name)
    try:
        # Installed by a child with the tree under test on its path, as every run is.
        subprocess.run([sys.executable, "-c", _INSTALL, url], env=child_env(), check=True)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


_INSTALL = """
import sys, psycopg
from bridge.schema import install
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    install(conn)
"""


def reset(url: str) -> None:
    """Empty every table and flush dirty pages, so each run starts from the same state."""
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


def server_facts(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        facts = {}
        for name in ("server_version", "synchronous_commit", "shared_buffers"):
            value = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            facts[name] = str(value[0]) if value else "?"
    return facts


# runs ----------------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The bridge under test is the tree this script lives in, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


def run_side(argv: list[str], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.run(
                argv,
                env=child_env(),
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                check=False,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{shlex.join(argv)} did not finish in {timeout:.0f} s") from exc
        if proc.returncode != 0:
            err.seek(0)
            tail = "\n".join(err.read().strip().splitlines()[-15:])
            raise BenchError(f"{shlex.join(argv)} exited {proc.returncode}:\n{tail}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    raise BenchError(f"{shlex.join(argv)} printed no result")


def side_argv(args: argparse.Namespace, url: str, workload: str, concurrency: int) -> list[str]:
    count = args.fanout_workflows if workload == "fanout" else args.linear_workflows
    argv = [
        sys.executable,
        str(SIDE),
        workload,
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--workflows",
        str(count),
        "--timeout",
        str(args.timeout),
    ]
    if args.runner_pool:
        argv += ["--runner-pool", str(args.runner_pool)]
    if args.no_coalesce:
        argv.append("--no-coalesce")
    if args.no_inline_advance:
        argv.append("--no-inline-advance")
    return argv


def measure(args: argparse.Namespace, url: str) -> Runs:
    runs = Runs()
    for run in range(args.runs):
        for workload in WORKLOADS:
            for concurrency in args.concurrency:
                reset(url)
                argv = side_argv(args, url, workload, concurrency)
                result = run_side(argv, timeout=args.timeout * 2 + 60)
                runs.add((workload, concurrency), result)
                log(f"run {run + 1}/{args.runs} {workload:6} c{concurrency:<3} " + brief(result))
    return runs


def brief(result: dict[str, Any]) -> str:
    m = metrics(result)
    text = (
        f"{m['steps_per_s']:7.1f} steps/s  {m['statements']:5.1f} stmts/step "
        f"(+{m['tx_commands']:.1f} tx)  {m['server_xacts']:4.1f} xacts/step  "
        f"unfinished {result['unfinished']}"
    )
    if result["workload"] == "linear":
        text += f"  {m['workflows_per_s']:.1f} workflows/s"
    return text


# numbers -------------------------------------------------------------------------------------


def metrics(result: dict[str, Any]) -> dict[str, float]:
    steps = max(1, int(result["steps"]))
    counts = result["counts"]
    statements = sum(counts["statements"].values())
    tx_commands = sum(counts["tx_commands"].values())
    return {
        "steps_per_s": steps / result["wall_s"],
        "workflows_per_s": result["workflows"] / result["wall_s"],
        "statements": statements / steps,
        "tx_commands": tx_commands / steps,
        "with_tx": (statements + tx_commands) / steps,
        "server_xacts": result["server_xacts"] / steps,
        "client_xacts": sum(counts["transactions"].values()) / steps,
        "cpu_ms": result["cpu_s"] / steps * 1000,
    }


def median_of(results: list[dict[str, Any]], name: str) -> float:
    return statistics.median(metrics(r)[name] for r in results)


def spread(results: list[dict[str, Any]], name: str, fmt: str) -> str:
    values = [metrics(r)[name] for r in results]
    text = format(statistics.median(values), fmt)
    if len(values) > 1:
        text += f" <sub>{min(values):{fmt}}\u2013{max(values):{fmt}}</sub>"
    return text


def unfinished(results: list[dict[str, Any]]) -> str:
    left = sum(int(r["unfinished"]) for r in results)
    total = sum(int(r["workflows"]) for r in results)
    return f"{left} of {total:,}"


# Needles in the text ``_workflow_count.label`` makes of a statement, first match wins. The
# batches' (storage_batch.py) come first: their first read is a simple-protocol query that
# starts with BEGIN and the locks, and their texts contain the one-job statements' needles.
LABELS = (
    (  # inline advance, one round trip (store.batch.apply_if_unchanged): after BEGIN
        "SELECT set_config('…', coalesce(jsonb_agg(t.id)",
        "try the locks of the batch's instances unchanged since their pre-check",
    ),
    (
        "WITH seen AS MATERIALIZED",
        "write results + instances + step jobs + NOTIFY where unchanged since the pre-check",
    ),
    (
        "BEGIN; WITH got AS MATERIALIZED",
        "BEGIN + locks tried + load instances FOR UPDATE and take pending results of the batch",
    ),
    (
        "BEGIN; SELECT pg_advisory_xact_lock_shared(…); SELECT",
        "BEGIN + locks (shared) + load activity of the batch's instances",
    ),
    (
        "BEGIN; SELECT pg_advisory_xact_lock(…); SELECT",
        "BEGIN + locks + load instances FOR UPDATE and take pending results of the batch",
    ),
    (  # the same for a batch of one instance: its one lock, then the read
        "BEGIN; SELECT pg_advisory_xact_lock(…); WITH taken",
        "BEGIN + locks + load instances FOR UPDATE and take pending results of the batch",
    ),
    (
        "WITH input AS ( SELECT * FROM unnest(",
        "insert the batch's results + their advance jobs (guarded) + NOTIFY",
    ),
    (
        "WITH saved AS ( UPDATE workflow_instances AS w",
        "save the batch's instances + insert their step jobs + NOTIFY",
    ),
    (
        "ARRAY(SELECT DISTINCT r.step_ref FROM hephaestus_step_results",
        "load the batch's instances + which steps have results",
    ),
    ("BEGIN; SELECT pg_advisory_xact_lock", "BEGIN + advisory lock (one-job path)"),
    ("WITH taken AS", "load instance FOR UPDATE + discarded? + take pending results"),
    ("jsonb_build_object('…', state->'…')", "load status and active steps"),
    (
        "i.workflow_version, (EXISTS (SELECT 1 FROM hephaestus_step_results",
        "load instance + has the step a result?",
    ),
    ("WITH job AS", "insert job + NOTIFY (+ unstarted advance?)"),
    ("WITH result AS", "insert step result + advance job if none unstarted + NOTIFY"),
    ("WITH saved AS", "save instance + insert step job + NOTIFY"),
    ("pg_advisory_xact_lock", "advisory lock"),
    ("FROM workflow_instances WHERE id = %s FOR UPDATE", "load instance FOR UPDATE"),
    ("SELECT id, workflow, status, state", "load instance"),
    ("INSERT INTO workflow_instances", "insert instance"),
    ("UPDATE workflow_instances", "save instance"),
    ("SELECT 1 FROM hephaestus_step_results", "has the step a result?"),
    ("INSERT INTO hephaestus_step_results", "insert step result"),
    ("FROM hephaestus_step_results", "read step results"),
    ("UPDATE hephaestus_step_results SET processed", "mark results processed"),
    ("SELECT 1 FROM oban_jobs WHERE state IN", "unstarted advance job?"),
    ("SELECT 1 FROM oban_jobs WHERE state =", "discarded step job?"),
    ("INSERT INTO oban_jobs", "insert job(s)"),
    ("COPY oban_jobs", "COPY jobs"),
    ("nextval(pg_get_serial_sequence", "reserve job ids (for COPY)"),
    ("pg_notify", "NOTIFY (insert)"),
    ("WITH subset AS", "claim jobs"),
    ("UPDATE oban_jobs AS j SET state = x.state", "write job outcomes (group commit)"),
)


def statement_name(label: str) -> str:
    origin, _, text = label.partition(": ")
    for needle, name in LABELS:
        if needle in text:
            return f"{origin}: {name}"
    return f"{origin}: other ({re.sub(r'[|`]', ' ', text[:50])}…)"


def breakdown(results: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Statements per step by kind, averaged over the runs."""
    total: Counter[str] = Counter()
    steps = sum(max(1, int(r["steps"])) for r in results)
    for result in results:
        for label, count in result["counts"]["top"]:
            total[statement_name(label)] += count
        for origin, count in result["counts"]["tx_commands"].items():
            total[f"{origin}: BEGIN/COMMIT/SAVEPOINT"] += count
    return [(name, count / steps) for name, count in total.most_common()]


def ratio(ours: float, reference: str) -> str:
    try:
        ref = float(reference.replace(",", ""))
    except ValueError:
        return DASH
    return f"{ours / ref:.2f}\u00d7" if ref else DASH


def table(runs: Runs) -> str:
    head = (
        "| workload | concurrency | steps/s | reference steps/s | ratio | workflows/s "
        "| reference workflows/s | ratio | statements per step (+ tx commands) "
        "| reference statements per step | ratio | transactions per step (server) "
        "| unfinished | reference unfinished |"
    )
    lines = [head, "|" + "---|" * 14]
    for (workload, concurrency), results in sorted(runs.results.items()):
        names = {
            "fanout": "one workflow: start → 100 parallel → join → done",
            "linear": f"{results[0]['workflows']:,} three-step workflows started at once",
        }
        golden = GOLDEN.get((workload, concurrency), {})
        steps = median_of(results, "steps_per_s")
        statements = median_of(results, "statements")
        if workload == "linear":
            flows = spread(results, "workflows_per_s", ".1f")
            flows_ratio = ratio(median_of(results, "workflows_per_s"), golden["workflows_median"])
        else:
            flows, flows_ratio = DASH, DASH
        lines.append(
            f"| {names[workload]} | {concurrency} | {spread(results, 'steps_per_s', ',.0f')} "
            f"| {golden.get('steps', DASH)} | {ratio(steps, golden.get('steps_median', DASH))} "
            f"| {flows} | {golden.get('workflows', DASH)} | {flows_ratio} "
            f"| {spread(results, 'statements', '.1f')} "
            f"(+ {median_of(results, 'tx_commands'):.1f}) "
            f"| {golden.get('statements', DASH)} "
            f"| {ratio(statements, golden.get('statements_mid', DASH))} "
            f"| {spread(results, 'server_xacts', '.2f')} "
            f"| {unfinished(results)} | {golden.get('unfinished', DASH)} |"
        )
    return "\n".join(lines)


def breakdown_table(runs: Runs, concurrency: int) -> str:
    lines = [
        f"Statements per step by kind, concurrency {concurrency}, mean over the runs:",
        "",
        "| statement (origin: what) | fan-out | three-step |",
        "|---|---:|---:|",
    ]
    per = {w: dict(breakdown(runs.results.get((w, concurrency), []))) for w in WORKLOADS}
    names = sorted(
        set(per["fanout"]) | set(per["linear"]),
        key=lambda n: -(per["fanout"].get(n, 0) + per["linear"].get(n, 0)),
    )
    for name in names:
        fan = per["fanout"].get(name, 0.0)
        lin = per["linear"].get(name, 0.0)
        if fan < 0.005 and lin < 0.005:
            continue
        lines.append(f"| {name} | {fan:.2f} | {lin:.2f} |")
    return "\n".join(lines)


def extra_rows(runs: Runs) -> str:
    lines = [
        "| workload | concurrency | node process CPU ms per step | client-counted transactions "
        "per step | statements + tx commands per step |",
        "|---|---|---:|---:|---:|",
    ]
    for (workload, concurrency), results in sorted(runs.results.items()):
        lines.append(
            f"| {workload} | {concurrency} | {spread(results, 'cpu_ms', '.1f')} "
            f"| {median_of(results, 'client_xacts'):.2f} "
            f"| {median_of(results, 'with_tx'):.1f} |"
        )
    return "\n".join(lines)


ADVANCE = "HephaestusOban.AdvanceWorker"
EXECUTE = "HephaestusOban.ExecuteStepWorker"
LOCK = "instance lock"
BODY = "step body"
# The runner's coalescers, as the side names them: its ``coalesced`` keys and "<kind> batch".
KINDS = ("precheck", "record", "advance", "inline")
KIND_NAMES = {
    "precheck": "step pre-checks",
    "record": "recordings",
    "advance": "advances",
    "inline": "inline advances",
}


def batch_timing(kind: str) -> str:
    return f"{kind} batch"


def timing(result: dict[str, Any], name: str, field: str) -> float:
    row = result.get("timings", {}).get(name) or {}
    return float(row.get(field, 0.0))


def pooled(results: list[dict[str, Any]], name: str, field: str, per: str) -> float:
    """``field`` of timing ``name`` summed over the runs, per step (``per="steps"``) or per
    call of that timing (``per="calls"``); 0 when there is nothing to divide by."""
    total = sum(timing(r, name, field) for r in results)
    if per == "steps":
        count = sum(max(1, int(r["steps"])) for r in results)
    else:
        count = int(sum(timing(r, name, "calls") for r in results))
    return total / count if count else 0.0


def timed_cpu_ms(result: dict[str, Any]) -> float:
    """Thread CPU of what the side times apart: the step bodies (the batches run on the loop)."""
    return timing(result, BODY, "cpu_ms")


def rest_per_step(results: list[dict[str, Any]]) -> float:
    """Process CPU minus the step bodies' thread CPU, per step, runs pooled."""
    cpu = sum(float(r["cpu_s"]) * 1000 - timed_cpu_ms(r) for r in results)
    return cpu / sum(max(1, int(r["steps"])) for r in results)


def process_per_step(results: list[dict[str, Any]]) -> float:
    cpu = sum(float(r["cpu_s"]) * 1000 for r in results)
    return cpu / sum(max(1, int(r["steps"])) for r in results)


def batch_items(result: dict[str, Any], kind: str) -> tuple[int, int]:
    """(batches, job bodies) of one coalescer in the measured window.

    The coalescers count from the runner's start, so their counts hold the warm-up's batches;
    the warm-up is one three-step workflow, run alone, so each of its batches holds one job.
    The measured batches are those the side timed.
    """
    counts = result.get("coalesced", {}).get(kind) or {}
    batches = int(timing(result, batch_timing(kind), "calls"))
    warmup = max(0, int(counts.get("batches", 0)) - batches)
    items = max(batches, int(counts.get("items", 0)) - warmup)
    return batches, items


def lock_calls(results: list[dict[str, Any]]) -> float:
    return sum(timing(r, LOCK, "calls") for r in results)


def batched(results: list[dict[str, Any]]) -> bool:
    """Whether any coalescer ran a batch in these runs' measured windows."""
    return any(timing(r, batch_timing(k), "calls") for r in results for k in KINDS)


def dash_or(value: float, fmt: str, present: bool) -> str:
    return format(value, fmt) if present else DASH


def time_table(runs: Runs) -> str:
    """Per step, where the process's CPU went; per job, how long each kind of job took."""
    show_lock = any(lock_calls(results) for results in runs.results.values())
    head = (
        "| workload | concurrency | CPU ms per step: step bodies (threads) | the rest: the "
        "node's loop (batches, coroutine job bodies, claims, acks, notifications), pools "
        "| process total | wall ms per job: advance | execute step |"
    )
    columns = 7
    if show_lock:
        head += " one-job paths: BEGIN + instance lock, calls per step | wall ms per call |"
        columns += 2
    lines = [
        "CPU per step is summed over the runs, so the columns add up to the total; wall time per "
        "job is from the worker's call to its return:",
        "",
        head,
        "|---|---|" + "---:|" * (columns - 2),
    ]
    if not any(batched(results) for results in runs.results.values()):
        lines[0] += " (no batches ran: the jobs' own statements, sent from the runner's threads,"
        lines[0] += " are in the rest)"
    for (workload, concurrency), results in sorted(runs.results.items()):
        row = (
            f"| {workload} | {concurrency} "
            f"| {pooled(results, BODY, 'cpu_ms', 'steps'):.2f} "
            f"| {rest_per_step(results):.2f} | {process_per_step(results):.2f} "
            f"| {pooled(results, ADVANCE, 'wall_ms', 'calls'):.1f} "
            f"| {pooled(results, EXECUTE, 'wall_ms', 'calls'):.1f} |"
        )
        if show_lock:
            steps = sum(max(1, int(r["steps"])) for r in results)
            row += (
                f" {lock_calls(results) / steps:.3f} "
                f"| {pooled(results, LOCK, 'wall_ms', 'calls'):.2f} |"
            )
        lines.append(row)
    return "\n".join(lines)


def batch_table(runs: Runs) -> str:
    """Per coalescer: how many batches, how many job bodies each held, how long each took."""
    lines = [
        "The runner's batches, summed over the runs (one drain per kind on the node's loop runs "
        "one batch at a time):",
        "",
        "| workload | concurrency | batches of | batches per run | job bodies per batch (mean) "
        "| wall ms per batch | busy (batch wall time / run wall time) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    if not any(batched(results) for results in runs.results.values()):
        return "The runner's batches: none (no coalescer ran a batch in the measured window)."
    for (workload, concurrency), results in sorted(runs.results.items()):
        wall_ms = sum(float(r["wall_s"]) * 1000 for r in results)
        for kind in KINDS:
            batches, items = map(sum, zip(*(batch_items(r, kind) for r in results), strict=True))
            name = batch_timing(kind)
            busy = sum(timing(r, name, "wall_ms") for r in results)
            lines.append(
                f"| {workload} | {concurrency} | {KIND_NAMES[kind]} "
                f"| {batches / len(results):,.0f} "
                f"| {dash_or(items / max(1, batches), '.1f', batches > 0)} "
                f"| {dash_or(pooled(results, name, 'wall_ms', 'calls'), '.2f', batches > 0)} "
                f"| {dash_or(busy / max(1.0, wall_ms), '.0%', batches > 0)} |"
            )
    return "\n".join(lines)


def leftovers(runs: Runs) -> list[str]:
    notes = []
    for (workload, concurrency), results in sorted(runs.results.items()):
        for index, result in enumerate(results, 1):
            if result["unfinished"] or result["unprocessed_results"]:
                notes.append(
                    f"- {workload} c{concurrency} run {index}: {result['unfinished']} unfinished, "
                    f"instances {result['instances_by_status']}, "
                    f"{result['unprocessed_results']} unprocessed results, "
                    f"jobs {result['jobs_by_state']}"
                )
            if result["steps"] != result["expected_steps"]:
                notes.append(
                    f"- {workload} c{concurrency} run {index}: {result['steps']} steps executed, "
                    f"{result['expected_steps']} expected"
                )
    return notes


def machine(url: str, load_before: str, load_after: str) -> list[str]:
    facts = server_facts(url)
    cpu = "?"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return [
        f"- machine: {platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
        f"PostgreSQL {facts['server_version']} on the same host "
        f"(synchronous_commit={facts['synchronous_commit']}, "
        f"shared_buffers={facts['shared_buffers']}); Python {platform.python_version()}",
        f"- load average (1/5/15 min) before: {load_before}; after: {load_after}",
    ]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def report(
    args: argparse.Namespace, runs: Runs, loads: tuple[str, str], command: str, elapsed: float
) -> str:
    first = next(iter(runs.results.values()))[0]
    left = leftovers(runs)
    lines = [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command}` ({elapsed / 60:.1f} minutes)",
        f"- bridge {first.get('bridge', '?')}, {runner_mode(args)}, "
        f"{args.runs} runs per row (median, range in small "
        "print); reference columns copied from tests/data/golden/README.md (genuine "
        "HephaestusOban 0.5.0 on Oban 2.23.1, one BEAM node, same machine kind: steps/s, "
        "workflows/s and unfinished from its 2026-12-03 re-measure, statements per step from "
        "the first measure), not measured here",
        *machine(args.url, *loads),
        "",
        table(runs),
        "",
        extra_rows(runs),
        "",
        time_table(runs),
        "",
        batch_table(runs),
        "",
        "Unfinished instances, unprocessed results or missing steps: "
        + ("none in any run." if not left else ""),
        *left,
        "",
        breakdown_table(runs, args.concurrency[0]),
    ]
    return "\n".join(lines)


def runner_mode(args: argparse.Namespace) -> str:
    advance = (
        "**an AdvanceWorker job per step result, HephaestusOban's job rows "
        "(`--no-inline-advance`)**"
        if args.no_inline_advance
        else "step jobs applying their own results (inline advance, the default)"
    )
    if args.no_coalesce:
        return (
            "**runner with `coalesce=False` (`--no-coalesce`): a transaction per job, no "
            f"batches**, {advance}"
        )
    return f"runner coalescing concurrent jobs' database work (the default), {advance}"


def docs_section(body: str, args: argparse.Namespace, runs: Runs) -> str:
    inserts = [r["insert_s"] for (w, _), rs in runs.results.items() if w == "linear" for r in rs]
    linear_insert = f"median {statistics.median(inserts):.1f} s" if inserts else "not run"
    method = METHOD.format(
        pool=f"{args.runner_pool} connections"
        if args.runner_pool
        else "the default, at most 10 connections; 50 at concurrency 50 made no difference",
        fanout=args.fanout_workflows,
        linear=args.linear_workflows,
        linear_insert=linear_insert,
        timeout=args.timeout,
        batches=NO_BATCHES if args.no_coalesce else BATCHES,
    )
    return (
        f"{SECTION}\n\n"
        "Generated by `python benchmarks/bench_workflows.py --write-docs`; rerun it rather than "
        "editing the generated part by hand. The Python `oban` package has no workflows, so "
        "there is nothing to run side by side with it here; the reference is the genuine "
        "Elixir stack.\n\n"
        f"{body}\n\n{method}"
    )


# command line --------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_url() -> str:
    for name in ("BRIDGE_DATABASE_URL", "DATABASE_URL"):
        value = os.environ.get(name)
        if value:
            return value
    return DEFAULT_URL


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="The database role must be allowed to create databases: one is made and dropped.",
    )
    parser.add_argument("--url", default=default_url(), help="admin URL (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--fanout-workflows", type=int, default=5, help="fan-outs per run")
    parser.add_argument("--linear-workflows", type=int, default=1_000)
    parser.add_argument(
        "--runner-pool", type=int, default=0, help="runner pool size (default: the runner's own)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per run, seconds")
    parser.add_argument(
        "--no-coalesce",
        action="store_true",
        help="run WorkflowRunner(coalesce=False): a transaction a job, for comparison",
    )
    parser.add_argument(
        "--no-inline-advance",
        action="store_true",
        help="run WorkflowRunner(inline_advance=False): an AdvanceWorker job per step result",
    )
    parser.add_argument("--write-docs", action="store_true", help=f"update {SECTION} of docs")
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--json", type=Path, default=None, help="also dump every run here")
    args = parser.parse_args(argv)
    for name in ("runs", "fanout_workflows", "linear_workflows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if any(c < 1 for c in args.concurrency):
        parser.error("--concurrency values must be at least 1")
    return args


FINDINGS = "### Where the time and the statements go"


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/bench_workflows.py", *(argv or sys.argv[1:])])
    load_before = load_average()
    started = time.perf_counter()
    with fresh_database(args.url) as url:
        runs = measure(args, url)
    elapsed = time.perf_counter() - started
    body = report(args, runs, (load_before, load_average()), command, elapsed)
    out(body)
    if args.json is not None:
        dump = {f"{w}.c{c}": results for (w, c), results in runs.results.items()}
        args.json.write_text(json.dumps(dump, indent=1))
    if args.write_docs:
        replace_section(args.docs, SECTION, docs_section(body, args, runs), FINDINGS)
        log(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"bench_workflows: {exc}")
        sys.exit(1)
