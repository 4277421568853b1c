"""One measured run of the workflow benchmark, in a process of its own.

Run by ``bench_workflows.py`` as ``python benchmarks/_workflow_side.py WORKLOAD --url ...``; it
prints one JSON line. The process is the Python node: a ``bridge.jobs.node.Node`` serving the
runner's queue at ``--concurrency`` with the three HephaestusOban workers registered for one
``WorkflowRunner`` (as ``tests/workflows/run/test_runner.py`` wires them), defaults untouched except
where an option says otherwise. Statements are counted in this process by
``_workflow_count`` (client side); transactions also on the server, from ``pg_stat_database``
read through a connection to *another* database so that reading adds nothing to the count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import _workflow_count
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import bridge
from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry
from bridge.jobs.node import Node, NodeConfig
from bridge.workflows import DONE, Context, Instance, StepOk, Workflow, step
from bridge.workflows.model.definition import DONE_STEP_NAME
from bridge.workflows.run import core as runner_core
from bridge.workflows.run.runner import ADVANCE_WORKER, EXECUTE_STEP_WORKER, WorkflowRunner
from bridge.workflows.run.workers import register

QUEUE = "bench_workflows"
CONFIG_KEY = "bench"
FANOUT_WIDTH = 100
STATS_SETTLE = 1.2  # s: an idle backend flushes its statistics a second after the last flush
FINISHED = ("completed", "failed")
FALLBACK_POLL = 0.25  # s: completion check when no Done-then-advance was seen


def _noop(instance: Instance, config: Any, context: Context) -> StepOk:
    return StepOk("ok")


def _steps(prefix: str, count: int) -> list[Any]:
    return [
        step(name=f"Elixir.Bench.Steps.{prefix}{i:03d}", events=["ok"])(_noop) for i in range(count)
    ]


def fanout_workflow(width: int = FANOUT_WIDTH) -> Workflow:
    """start → ``width`` parallel no-op steps → join → Done: ``width + 3`` step executions."""
    start = step(name="Elixir.Bench.Steps.Start", events=["ok"])(_noop)
    join = step(name="Elixir.Bench.Steps.Join", events=["ok"])(_noop)
    branches = _steps("Branch", width)
    return Workflow(
        name="Elixir.Bench.Flows.Fanout",
        start=start,
        transitions=[
            (start, "ok", branches),
            *((branch, "ok", join) for branch in branches),
            (join, "ok", DONE),
        ],
    )


def linear_workflow() -> Workflow:
    """first → second → Done: three step executions, as golden/README.md's three-step flows."""
    first, second = _steps("Linear", 2)
    return Workflow(
        name="Elixir.Bench.Flows.Linear",
        start=first,
        transitions=[(first, "ok", second), (second, "ok", DONE)],
    )


FANOUT = fanout_workflow()
LINEAR = linear_workflow()
STEPS_PER = {FANOUT.name: FANOUT_WIDTH + 3, LINEAR.name: 3}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sys_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def stats_url(url: str) -> str:
    """The same server, but the maintenance database: reading stats there adds no xacts here."""
    dbname = conninfo_to_dict(url).get("dbname")
    other = "template1" if dbname == "postgres" else "postgres"
    return make_conninfo(url, dbname=other)


def db_xacts(stats: psycopg.Connection[Any], dbname: str) -> int:
    stats.execute("SELECT pg_stat_clear_snapshot()")
    row = stats.execute(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (dbname,)
    ).fetchone()
    assert row is not None
    return int(row[0])


async def backends_gone(stats: psycopg.Connection[Any], dbname: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = stats.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = "
            "'client backend'",
            (dbname,),
        ).fetchone()
        if row is not None and row[0] == 0:
            return
        await asyncio.sleep(0.02)


class Timings:
    """Per job kind (and for the instance lock): calls, thread CPU and wall time, in ms.

    Thread CPU (``time.thread_time``) is what the job body itself burns; wall minus CPU is
    time spent waiting: on PostgreSQL, on the instance lock, or for the GIL.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.table: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, cpu: float, wall: float) -> None:
        if self.enabled:
            with self._lock:
                row = self.table.setdefault(name, [0, 0.0, 0.0])
                row[0] += 1
                row[1] += cpu * 1000
                row[2] += wall * 1000

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.thread_time() - cpu0, time.perf_counter() - wall0)

        return call

    def timed_async(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            wall0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(name, 0.0, time.perf_counter() - wall0)

        return call

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            name: {"calls": n, "cpu_ms": cpu, "wall_ms": wall}
            for name, (n, cpu, wall) in sorted(self.table.items())
        }


TIMINGS = Timings()


def timed_registry(runner: WorkflowRunner) -> Registry:
    """The runner's three workers, each wrapped to time its calls; nothing else changes.

    The workers and the coalescers' batches are coroutines on the node's loop, so they are
    timed for wall time only (their CPU cannot be told apart there); the step bodies run in the
    runner's threads and are timed for thread CPU too.
    """
    plain = Registry()
    timed = Registry()
    for spec in register(plain, runner):
        perform = TIMINGS.timed_async(spec.name, spec.perform) if spec.is_async else None
        timed.register(replace(spec, perform=perform or TIMINGS.timed(spec.name, spec.perform)))
    for name, coalescer in coalescers(runner).items():
        coalescer._batch = TIMINGS.timed_async(f"{name} batch", coalescer._batch)
    runner._execute_body = TIMINGS.timed("step body", runner._execute_body)  # type: ignore[method-assign]
    opener = runner._aopen

    async def counted_open() -> Any:  # the batch drains' connections count as the runner's
        conn = await opener()
        _workflow_count.COUNTER.runners.add(id(conn))
        return conn

    for coalescer in coalescers(runner).values():
        coalescer._open = counted_open
    # The instance lock, as the runner's shared paths call it: wall time here is waiting for it.
    names = vars(runner_core)
    for name in ("lock_instance", "begin_locked"):
        if name in names:
            names[name] = TIMINGS.timed("instance lock", names[name])
    return timed


def coalescers(runner: WorkflowRunner) -> dict[str, Any]:
    """The coalescers the registered (coroutine) job bodies use."""
    return {
        "precheck": runner._async_prechecks,
        "record": runner._async_recorders,
        "advance": runner._async_advances,
        "inline": runner._async_inline,
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url: str = args.url
        self.dbname = str(conninfo_to_dict(self.url).get("dbname"))
        pool: dict[str, Any] = {"pool_size": args.runner_pool} if args.runner_pool else {}
        self.runner = WorkflowRunner(
            self.url,
            [FANOUT, LINEAR],
            queue=QUEUE,
            config_key=CONFIG_KEY,
            coalesce=not args.no_coalesce,
            inline_advance=not args.no_inline_advance,
            **pool,
        )
        self.registry = timed_registry(self.runner)
        self.node: Node | None = None
        self.watch: psycopg.AsyncConnection[Any] | None = None
        self.client: psycopg.Connection[Any] | None = None
        self.polls = 0  # completion polls in the measured window: server xacts not ours
        self.done_steps: set[Any] = set()
        self.ended: set[Any] = set()
        self.wake = asyncio.Event()
        self.counter = _workflow_count.install()

    async def start_node(self) -> None:
        options: dict[str, Any] = {}
        if self.args.switch_interval is not None:
            options["switch_interval"] = self.args.switch_interval or None
        config = NodeConfig(
            url=self.url, queues={QUEUE: self.args.concurrency}, registry=self.registry, **options
        )
        self.node = Node(config)
        self.node.listeners.append(self._on_ack)
        await self.node.start()
        await asyncio.wait_for(self.node.notifier.connected.wait(), 10)

    async def stop(self) -> None:
        """Close every connection of this process to the benchmark database (idempotent)."""
        if self.watch is not None:
            await self.watch.close()
            self.watch = None
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.node is not None:
            await self.node.stop()
            self.node = None
        self.runner.close()

    # waiting, on a connection the counter ignores

    def _on_ack(self, job: Job, ack: Any) -> None:
        """Node listener: an advance after the instance's Done step is when it may have ended.

        Waking the waiter only then (and on a slow fallback timer) keeps completion polling
        out of the measured process's CPU and out of the server's transaction count.
        """
        instance_id = job.args.get("instance_id")
        if job.worker == EXECUTE_STEP_WORKER and job.args.get("step_ref") == DONE_STEP_NAME:
            if self.runner.inline_advance:  # the Done step's own transaction ended the instance
                self.ended.add(instance_id)
                self.wake.set()
            else:
                self.done_steps.add(instance_id)
        elif job.worker == ADVANCE_WORKER and instance_id in self.done_steps:
            self.done_steps.discard(instance_id)
            self.ended.add(instance_id)
            self.wake.set()

    async def wait_finished(self, pattern: str, count: int, timeout: float) -> bool:
        """Wait until ``count`` instances whose id is LIKE ``pattern`` are finished."""
        assert self.watch is not None
        deadline = time.monotonic() + timeout
        check = True
        while True:
            self.wake.clear()
            if check or len(self.ended) >= count:
                if self.counter.enabled:
                    self.polls += 1
                cur = await self.watch.execute(
                    "SELECT count(*) FROM workflow_instances WHERE id LIKE %s AND status = ANY(%s)",
                    (pattern, list(FINISHED)),
                )
                row = await cur.fetchone()
                if row is not None and row[0] >= count:
                    return True
            if time.monotonic() > deadline:
                return False
            try:
                await asyncio.wait_for(self.wake.wait(), FALLBACK_POLL)
                check = False
            except TimeoutError:
                check = True

    def start_many(self, client: psycopg.Connection[Any], flow: Workflow, ids: list[str]) -> None:
        """Start every instance in one transaction: they become visible at once."""
        with client.transaction():
            for instance_id in ids:
                self.runner.start(client, flow, {}, id=instance_id)

    # the workloads

    async def run(self) -> dict[str, Any]:
        await self.start_node()
        try:
            self.client = client = psycopg.connect(self.url, autocommit=True)
            self.counter.clients.add(id(client))
            self.watch = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            self.counter.ignored.add(id(self.watch))
            # Warm-up: the runner's pool opens on first use; one small workflow opens it
            # and loads every code path before anything is timed or counted.
            await self._timed(client, LINEAR, ["warmup"], "warmup", timeout=30)
            return await self._measured(client)
        finally:
            await self.stop()

    async def _measured(self, client: psycopg.Connection[Any]) -> dict[str, Any]:
        args = self.args
        flow = FANOUT if args.workload == "fanout" else LINEAR
        with psycopg.connect(stats_url(self.url), autocommit=True) as stats:
            await asyncio.sleep(STATS_SETTLE)
            xacts0 = db_xacts(stats, self.dbname)
            cpu0 = cpu_seconds()
            sys0 = sys_seconds()
            self.counter.enabled = True
            TIMINGS.enabled = True
            per_workflow: list[float] = []
            insert_s = 0.0
            if args.workload == "fanout":
                for k in range(args.workflows):
                    one = f"m-{k}"
                    per_workflow.append(await self._timed(client, flow, [one], one, args.timeout))
                wall_s = sum(per_workflow)
            else:
                ids = [f"m-{k}" for k in range(args.workflows)]
                t0 = time.perf_counter()
                self.start_many(client, flow, ids)
                insert_s = time.perf_counter() - t0
                wall_s = await self._wait("m-%", len(ids), args.timeout) - t0
            self.counter.enabled = False
            TIMINGS.enabled = False
            cpu_s = cpu_seconds() - cpu0
            sys_s = sys_seconds() - sys0
            # A backend keeps statistics pending for up to 10 s once idle, but flushes them
            # all when it exits: close every connection, wait for the backends to be gone.
            await self.stop()
            await backends_gone(stats, self.dbname)
            server_xacts = db_xacts(stats, self.dbname) - xacts0 - self.polls
        outcome = self._outcome(flow)
        counts = self.counter.summary()
        return {
            "workload": args.workload,
            "concurrency": args.concurrency,
            "runner_pool": self.runner.pool_size,
            "workflows": args.workflows,
            "wall_s": wall_s,
            "insert_s": insert_s,
            "per_workflow_s": per_workflow,
            "cpu_s": cpu_s,
            "sys_s": sys_s,
            "server_xacts": server_xacts,
            "completion_polls": self.polls,
            "counts": counts,
            "timings": TIMINGS.summary(),
            "coalesced": self.coalesced(),
            **outcome,
        }

    def coalesced(self) -> dict[str, dict[str, int]]:
        """Batches the runner's coalescers ran and the job bodies they held (warm-up included)."""
        parts = coalescers(self.runner)
        return {
            name: {"batches": c.batches, "items": c.items, "busy_s": round(c.busy_s, 3)}
            for name, c in parts.items()
        }

    async def _timed(
        self,
        client: psycopg.Connection[Any],
        flow: Workflow,
        ids: list[str],
        pattern: str,
        timeout: float,
    ) -> float:
        t0 = time.perf_counter()
        self.start_many(client, flow, ids)
        return await self._wait(pattern, len(ids), timeout) - t0

    async def _wait(self, pattern: str, count: int, timeout: float) -> float:
        """Wait for the instances to finish and return the time they were seen finished."""
        self.ended.clear()
        await self.wait_finished(pattern, count, timeout)
        return time.perf_counter()

    def _outcome(self, flow: Workflow) -> dict[str, Any]:
        """What the rows say after the run: steps executed, instances and results left over."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            by_status: dict[str, int] = dict(
                conn.execute(
                    "SELECT status, count(*) FROM workflow_instances WHERE id LIKE 'm-%'"
                    " GROUP BY status"
                ).fetchall()
            )
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE event <> '__async__'),"
                " count(*) FILTER (WHERE NOT processed)"
                " FROM hephaestus_step_results WHERE instance_id LIKE 'm-%'"
            ).fetchone()
            jobs: dict[str, int] = dict(
                conn.execute(
                    "SELECT state::text, count(*) FROM oban_jobs"
                    " WHERE args->>'instance_id' LIKE 'm-%' GROUP BY state"
                ).fetchall()
            )
        assert row is not None
        unfinished = sum(n for status, n in by_status.items() if status != "completed")
        return {
            "steps": int(row[0]),
            "expected_steps": STEPS_PER[flow.name] * self.args.workflows,
            "unprocessed_results": int(row[1]),
            "instances_by_status": by_status,
            "jobs_by_state": jobs,
            "unfinished": unfinished,
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One run of benchmarks/bench_workflows.py.")
    parser.add_argument("workload", choices=["fanout", "linear"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--workflows", type=int, default=5)
    parser.add_argument("--runner-pool", type=int, default=0, help="0: the runner's default")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="NodeConfig.switch_interval (0: leave the interpreter's); default: the node's",
    )
    parser.add_argument("--profile", default="", help="pstats dump (yappi if installed)")
    parser.add_argument(
        "--no-coalesce",
        action="store_true",
        help="WorkflowRunner(coalesce=False): a transaction a job",
    )
    parser.add_argument(
        "--no-inline-advance",
        action="store_true",
        help="WorkflowRunner(inline_advance=False): an AdvanceWorker job per step result",
    )
    return parser.parse_args(argv)


def profiled(bench: Bench, path: str) -> dict[str, Any]:
    """Run under yappi (CPU clock, every thread) if installed, else cProfile (main thread)."""
    try:
        import yappi  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            return asyncio.run(bench.run())
        finally:
            profiler.disable()
            profiler.dump_stats(path)
    yappi.set_clock_type("cpu")
    yappi.start()
    try:
        return asyncio.run(bench.run())
    finally:
        yappi.stop()
        yappi.get_func_stats().save(path, type="pstat")


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> None:
    args = parse_args(argv)
    bench = Bench(args)
    result = profiled(bench, args.profile) if args.profile else asyncio.run(bench.run())
    result.update(bridge=bridge.__version__, python=platform.python_version())
    out(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
