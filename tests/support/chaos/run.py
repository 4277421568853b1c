"""One chaos run, start to end: a PostgreSQL cluster of its own on a spare port, ``bridge
worker`` processes killed, frozen and cut off from the database for a bounded time, then the
rows and the bodies' own records checked (:mod:`tests.support.chaos.checks`).

Used by ``tests/chaos/test_chaos.py`` (short form) and ``benchmarks/chaos.py`` (long form).
The fault phase lasts ``duration`` seconds: a SIGKILL of a random node every ``kill_every``
seconds (started again at once), a ``pg_ctl -m fast`` restart at 20 % of it, a SIGSTOP of a
node that is not the leader at about 35 % (preferably one running a slow job, so that the
job's re-run is still running when the node thaws), held ``rescue_after + rescue_interval + 3``
seconds, then SIGCONT, and a ``-m immediate`` restart at 75 %. Then the run settles until
every job and instance has finished, or ``settle_timeout`` passes.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.job import Job
from tests.support.chaos import checks
from tests.support.chaos.fleet import Fault, Fleet
from tests.support.cli import bridge_script
from tests.support.cluster import Cluster

APP = Path(__file__).with_name("chaos_app.py")
JOB_WORKER = "chaos_app.chaos_job"
JOB_QUEUE = "chaos"
WORKFLOW_QUEUE = "bridge_workflows"
FINAL = ("completed", "cancelled", "discarded")


@dataclass(frozen=True)
class ChaosConfig:
    """Sizes and timings of a run (seconds unless named ``_ms``)."""

    jobs: int = 600
    workflows: int = 50
    nodes: int = 3
    duration: float = 25.0
    kill_every: tuple[float, float] = (2.0, 5.0)
    job_ms: int | None = None  # None: spread the jobs over ~70 % of the phase (at most 1 s)
    slow_share: float = 0.02  # jobs that sleep 2-3.5 s, to be re-run when a frozen node thaws
    step_ms: int = 30
    concurrency: int = 5
    workflow_concurrency: int = 10
    rescue_after: float = 5.0  # longer than the slowest job: the lifeline rescues by age
    rescue_interval: float = 1.0
    repair_after: float = 3.0
    down_for: float = 1.0
    settle_timeout: float = 90.0
    seed: int = 0

    def mean_job_ms(self) -> int:
        if self.job_ms is not None:
            return self.job_ms
        slots = self.nodes * self.concurrency
        spread = int(slots * 0.7 * self.duration * 1000 / max(1, self.jobs))
        return max(1, min(spread, 1000))  # at most 1.5 s: far below rescue_after


@dataclass
class ChaosReport:
    config: ChaosConfig
    jobs: checks.Findings
    workflows: checks.Findings
    faults: list[Fault]
    failures: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    load: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def all_failures(self) -> list[str]:
        return [*self.failures, *self.jobs.failures, *self.workflows.failures]

    def summary(self) -> str:
        """The figures docs/reliability.md quotes, one per line."""
        kinds = [f.kind for f in self.faults]
        c, t = self.config, self.timings
        lines = [
            f"sizes: {c.jobs} jobs, {c.workflows} three-step workflows, {c.nodes} nodes, "
            f"fault phase {c.duration:.0f} s, seed {c.seed}",
            f"faults: {kinds.count('kill')} SIGKILLs, {kinds.count('freeze')} freeze(s), "
            f"{kinds.count('db-down')} database restarts (fast, immediate), "
            f"{kinds.count('exit')} nodes that ended by themselves",
            f"load average before/after: {self.load.get('before')} / {self.load.get('after')}",
        ]
        for name, found in (("jobs", self.jobs), ("workflow steps", self.workflows)):
            lines.append(
                f"{name}: {found.runs} runs, {found.duplicates} duplicates "
                f"(explained: {dict(found.explained)}), {len(found.failures)} failures"
            )
            for kind, values in sorted(found.rescue_latency.items()):
                lines.append(f"  re-run after {kind}: {checks.latency_summary(values)}")
        lines.append(
            f"jobs: lost {self.counts.get('jobs_lost', 0)}, stuck "
            f"{self.counts.get('jobs_stuck', 0)}; workflows completed "
            f"{self.counts.get('workflows_completed', 0)}/{c.workflows}"
        )
        if t.get("jobs_span"):
            lines.append(
                f"job throughput: {c.jobs / t['jobs_span']:.1f} jobs/s over {t['jobs_span']:.1f} s "
                f"(bodies sleep {c.mean_job_ms()} ms on average: ceiling "
                f"{c.nodes * c.concurrency * 1000 / c.mean_job_ms():.0f} jobs/s)"
            )
        if t.get("workflows_span"):
            lines.append(
                f"workflows: {c.workflows} completed over {t['workflows_span']:.1f} s "
                f"(started evenly over {0.7 * c.duration:.0f} s)"
            )
        lines.append(f"settled {t.get('settle', 0):.1f} s after the fault phase")
        lines.extend(f"FAILURE: {line}" for line in self.all_failures[:50])
        return "\n".join(lines)


def _connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=5)


def _retry(url: str, action: Any, attempts: int = 60) -> Any:
    """``action(conn)`` on a fresh connection, retried while the database restarts."""
    for attempt in range(attempts):
        try:
            with _connect(url) as conn:
                return action(conn)
        except psycopg.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    return None


def _jobs(config: ChaosConfig, rng: random.Random) -> list[Job]:
    mean = config.mean_job_ms()
    out = []
    for _ in range(config.jobs):
        roll = rng.random()
        args: dict[str, Any] = {"ms": int(mean * rng.uniform(0.5, 1.5))}
        if roll < config.slow_share:
            args["ms"] = rng.randint(2000, 3500)
            args["slow"] = True
        elif roll < config.slow_share + 0.05:
            args["fail_first"] = True
        elif roll < config.slow_share + 0.07:
            args["cancel"] = True
        out.append(Job.new(JOB_WORKER, args, queue=JOB_QUEUE, max_attempts=25))
    return out


def _read_records(directory: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in directory.glob("*.jsonl"):
        for text in path.read_text().splitlines():
            if text:
                lines.append(json.loads(text))
    return lines


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=UTC).timestamp()


@contextmanager
def _scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bridge-chaos-"))
    try:
        yield path
    finally:
        if os.environ.get("CHAOS_KEEP"):
            print(f"chaos scratch kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


class _Run:
    """The state of one run; :func:`run_chaos` drives it."""

    def __init__(self, config: ChaosConfig, cluster: Cluster, scratch: Path) -> None:
        self.config = config
        self.cluster = cluster
        self.url = cluster.url
        self.scratch = scratch
        self.records = scratch / "records"
        self.records.mkdir()
        self.rng = random.Random(config.seed)
        shutil.copy(APP, scratch / "chaos_app.py")
        args = ["--rescue-after", str(config.rescue_after),
                "--rescue-interval", str(config.rescue_interval),
                "--wait-for-database", "120", "--grace", "5"]  # fmt: skip
        if config.jobs:
            args += ["--queues", f"{JOB_QUEUE}:{config.concurrency}", "--workers", "chaos_app"]
        if config.workflows:
            args += ["--workflows", "chaos_app",
                     "--workflow-concurrency", str(config.workflow_concurrency),
                     "--workflow-repair-after", str(config.repair_after)]  # fmt: skip
        self.fleet = Fleet(self.url, scratch, self.records, args, config.nodes)
        self.workflow_ids: list[str] = []
        self.runner: Any = None

    # -- set-up ----------------------------------------------------------------------------

    def install(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL")}
        result = subprocess.run(
            [bridge_script(), "--database-url", self.url, "schema", "install"],
            cwd=self.scratch, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"bridge schema install failed: {result.stderr.strip()}")
        if self.config.jobs:
            jobs = _jobs(self.config, self.rng)
            with psycopg.connect(self.url) as plain:  # bridge's calls take tuple rows
                insert_all(plain, jobs)
        if self.config.workflows:
            # The driver imports the run's own app module (written above), never a row's.
            sys.path.insert(0, str(self.scratch))
            try:
                app = importlib.import_module("chaos_app")
            finally:
                sys.path.remove(str(self.scratch))
            from bridge.workflows.run.runner import WorkflowRunner

            self.workflow = app.WORKFLOWS[0]
            self.steps = list(app.STEPS)
            self.runner = WorkflowRunner(self.url, [self.workflow])

    def start_workflows(self, upto: int) -> None:
        """Start instances until ``upto`` exist (the driver's share of the load, paced)."""
        upto = min(upto, self.config.workflows)
        while len(self.workflow_ids) < upto:
            ident = f"chaos-{len(self.workflow_ids):05d}"
            try:
                with psycopg.connect(self.url, connect_timeout=5) as conn:
                    self.runner.start(conn, self.workflow, {"ms": self.config.step_ms}, id=ident)
            except psycopg.OperationalError:
                return  # the database is restarting: the next tick starts it
            self.workflow_ids.append(ident)

    # -- the fault phase -------------------------------------------------------------------

    def leader(self) -> str | None:
        with suppress(psycopg.Error), _connect(self.url) as conn:
            row = conn.execute("SELECT node FROM oban_peers WHERE name = 'Bridge'").fetchone()
            return None if row is None else str(row["node"])
        return None

    def _in_flight_slow(self) -> dict[int, tuple[int, int]]:
        """pid -> (job, attempt) of a slow job whose run has started and not ended."""
        lines = _read_records(self.records)
        ended = {(r["job"], r["attempt"]) for r in lines if r["k"] == "job_end"}
        return {
            r["pid"]: (r["job"], r["attempt"])
            for r in lines
            if r["k"] == "job_start" and r.get("slow") and (r["job"], r["attempt"]) not in ended
        }

    def _rerun_started(self, job: int, attempt: int) -> bool:
        return any(
            r["k"] == "job_start" and r["job"] == job and r["attempt"] > attempt
            for r in _read_records(self.records)
        )

    def freeze_target(self, prefer_slow: bool) -> tuple[str, tuple[int, int] | None] | None:
        """A node that is not the leader, preferably one running a slow job right now (with
        that job and attempt)."""
        leader = self.leader()
        fleet = self.fleet
        candidates = [n for n in fleet.running if fleet.name(n) != leader and n not in fleet.frozen]
        if not candidates:
            return None
        if not prefer_slow:
            return self.rng.choice(sorted(candidates)), None
        busy = self._in_flight_slow()
        for node in sorted(candidates):
            if self.fleet.pid(node) in busy:
                return node, busy[self.fleet.pid(node)]
        return None

    def _thaw_now(self, frozen: tuple[str, float, tuple[int, int] | None], elapsed: float) -> bool:
        """Past the rescue: once the slow job's re-run has started elsewhere (so its late
        outcome meets a running re-run), else ``rescue_after + rescue_interval + 3`` s; never
        later than one more leader lease (30 s) on top."""
        c = self.config
        held = elapsed - frozen[1]
        past_rescue = c.rescue_after + c.rescue_interval + 3
        if held >= past_rescue + 30:
            return True
        if frozen[2] is None:
            return held >= past_rescue
        return held >= c.rescue_after and self._rerun_started(*frozen[2])

    def restart_database(self, mode: str) -> None:
        self.fleet.faults.append(Fault("db-down", time.time(), detail=mode))
        self.cluster.restart(mode, down_for=self.config.down_for)  # type: ignore[arg-type]
        self.fleet.faults.append(Fault("db-up", time.time(), detail=mode))

    def fault_phase(self) -> None:
        c = self.config
        start = time.monotonic()
        at = {"fast": 0.2 * c.duration, "freeze": 0.35 * c.duration, "immediate": 0.75 * c.duration}
        next_kill = self.rng.uniform(*c.kill_every)
        frozen: tuple[str, float, tuple[int, int] | None] | None = None
        done: set[str] = set()
        planned = {"fast", "immediate"} | ({"freeze"} if c.nodes > 1 else set())

        def busy(elapsed: float) -> bool:
            # Every planned fault happens, even when one delayed another past the phase's end.
            pending = frozen is not None or not planned <= done
            return elapsed < c.duration or (pending and elapsed < 3 * c.duration)

        while busy(elapsed := time.monotonic() - start):
            self.fleet.reap()
            if c.workflows:
                self.start_workflows(int(c.workflows * min(1.0, elapsed / (0.7 * c.duration))) + 1)
            if elapsed >= next_kill and elapsed < c.duration:
                self.fleet.kill_random(self.rng, self.leader())
                next_kill = elapsed + self.rng.uniform(*c.kill_every)
            for mode in ("fast", "immediate"):
                if mode not in done and elapsed >= at[mode] and frozen is None:
                    self.restart_database(mode)
                    done.add(mode)
            if "freeze" in planned - done and elapsed >= at["freeze"]:
                # A slow job on the frozen node makes a late outcome meet a running re-run;
                # after 20 % of the phase more without one, any follower will do.
                late = elapsed >= at["freeze"] + 0.2 * c.duration
                target = self.freeze_target(prefer_slow=c.jobs > 0 and not late)
                if target is not None:
                    self.fleet.freeze(target[0])
                    frozen = (target[0], elapsed, target[1])
                    done.add("freeze")
            if frozen is not None and self._thaw_now(frozen, elapsed):
                self.fleet.thaw(frozen[0])
                frozen = None
            time.sleep(0.1)
        self.start_workflows(c.workflows)

    # -- settling and reading what is left -------------------------------------------------

    def unfinished(self) -> int:
        def count(conn: psycopg.Connection[dict[str, Any]]) -> int:
            jobs = conn.execute(
                "SELECT count(*) AS n FROM oban_jobs WHERE state <> ALL(%s)", (list(FINAL),)
            ).fetchone()
            flows = conn.execute(
                "SELECT count(*) AS n FROM workflow_instances "
                "WHERE status NOT IN ('completed', 'failed')"
            ).fetchone()
            assert jobs is not None and flows is not None
            return int(jobs["n"]) + int(flows["n"])

        try:
            return int(_retry(self.url, count, attempts=1))
        except psycopg.Error:
            return -1

    def settle(self) -> float:
        start = time.monotonic()
        while time.monotonic() - start < self.config.settle_timeout:
            self.fleet.reap()
            if self.unfinished() == 0:
                break
            time.sleep(0.5)
        return time.monotonic() - start

    def rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
        def read(conn: psycopg.Connection[dict[str, Any]]) -> Any:
            jobs = conn.execute(
                "SELECT id, state::text AS state, attempt, attempted_by, errors, args, "
                "completed_at, cancelled_at FROM oban_jobs WHERE worker = %s ORDER BY id",
                (JOB_WORKER,),
            ).fetchall()
            instances = conn.execute(
                "SELECT id, status FROM workflow_instances ORDER BY id"
            ).fetchall()
            left = conn.execute(
                "SELECT queue, worker, state::text AS state, count(*) AS n FROM oban_jobs "
                "WHERE state <> ALL(%s) GROUP BY 1, 2, 3",
                (list(FINAL),),
            ).fetchall()
            return jobs, instances, left

        jobs, instances, left = _retry(self.url, read)
        for row in jobs:
            row["finished_at"] = _epoch(row["completed_at"] or row["cancelled_at"])
        stuck = [f"{r['n']} {r['worker']} jobs left {r['state']} in {r['queue']}" for r in left]
        return jobs, instances, stuck


def run_chaos(config: ChaosConfig) -> ChaosReport:
    """One bounded run on a cluster of its own; everything it started is stopped and removed
    when it returns or raises."""
    with Cluster.create() as cluster, _scratch() as scratch:
        run = _Run(config, cluster, scratch)
        load_before = list(os.getloadavg())
        try:
            run.install()
            began = time.monotonic()
            run.fleet.start_all()
            run.fault_phase()
            fault_phase = time.monotonic() - began
            settle = run.settle()
        finally:
            run.fleet.stop_all()
            if run.runner is not None:
                run.runner.close()
        ended_at = time.time()
        jobs, instances, left = run.rows()
        records = _read_records(run.records)
        faults = run.fleet.faults
        report = ChaosReport(
            config,
            checks.check_jobs(jobs, records, faults),
            checks.check_workflows(instances, getattr(run, "steps", []), records, faults, ended_at),
            faults,
            failures=list(left),
        )
        if len(instances) != config.workflows:
            report.failures.append(f"{len(instances)} instances for {config.workflows} started")
        if len(jobs) != config.jobs:
            report.failures.append(f"{len(jobs)} job rows for {config.jobs} inserted")
        report.failures += [
            f"node {f.node} (pid {f.pid}) ended by itself at {f.t:.1f}: {f.detail}"
            for f in faults
            if f.kind == "exit"
        ]
        report.load = {"before": load_before, "after": list(os.getloadavg())}
        report.timings = {"fault_phase": fault_phase, "settle": settle}
        for kind, prefix in (("jobs_span", "job_"), ("workflows_span", "step_")):
            times = [r["t"] for r in records if r["k"].startswith(prefix)]
            if times:
                report.timings[kind] = max(times) - min(times)
        report.counts = {
            "jobs_lost": sum(1 for j in jobs if j["state"] in FINAL and j["state"] != _expected(j)),
            "jobs_stuck": sum(1 for j in jobs if j["state"] not in FINAL),
            "workflows_completed": sum(1 for i in instances if i["status"] == "completed"),
        }
        return report


def _expected(row: dict[str, Any]) -> str:
    return "cancelled" if row["args"].get("cancel") else "completed"
