"""What a chaos run must show, computed from the rows left at the end, the lines the job and step
bodies wrote (``chaos_app.record``) and the faults the driver did. Pure functions: no I/O.

A *run* is one start line of a body; a *duplicate* is any run after the first of the same job
(or of the same step of the same instance) other than a retry the worker asked for by raising.
A duplicate is explained when, between the earlier run's start and the later run's start, the
earlier run's process was killed or frozen (its outcome could not be stored in time) or the
database was down (its outcome could not be stored before the lifeline rescued it). Anything
else is a defect, as is a job not in the state its worker chose, a job or step run left
unfinished, an outcome that is not the one of the attempt the row carries, and two runs of one
step executing at the same moment.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.chaos.fleet import Fault

Record = Mapping[str, Any]
FINAL_JOB_STATES = ("completed", "cancelled", "discarded")
# completed_at is the acking node's clock when the body returned; the body's end line is written
# just before it returns, on the same host clock.
CLOCK_SLACK = 0.05


@dataclass
class Findings:
    """Everything a run found: ``failures`` must be empty; the rest is measured."""

    failures: list[str] = field(default_factory=list)
    runs: int = 0
    duplicates: int = 0
    explained: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rescue_latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def fail(self, message: str) -> None:
        self.failures.append(message)


def outages(faults: Iterable[Fault]) -> list[tuple[float, float]]:
    """(down, up) wall-clock windows of the database."""
    windows, down = [], None
    for fault in faults:
        if fault.kind == "db-down":
            down = fault.t
        elif fault.kind == "db-up" and down is not None:
            windows.append((down, fault.t))
            down = None
    return windows


def freezes(faults: Iterable[Fault]) -> dict[int, list[tuple[float, float]]]:
    """pid -> (frozen, thawed) windows."""
    out: dict[int, list[tuple[float, float]]] = defaultdict(list)
    started: dict[int, float] = {}
    for fault in faults:
        if fault.kind == "freeze":
            started[fault.pid] = fault.t
        elif fault.kind in ("thaw", "kill") and fault.pid in started:
            out[fault.pid].append((started.pop(fault.pid), fault.t))
    return out


# A job a node claimed just before it was frozen starts its body right after the thaw: within
# this many seconds of SIGCONT (the node's loop catching up), long after its re-run started.
STALE_START = 5.0


def explain(stale: Record, rerun: Record, faults: Sequence[Fault]) -> Fault | None:
    """The fault that made ``rerun`` run what ``stale`` (an older attempt) also ran: a kill or
    freeze of the stale run's process between the two starts; or a freeze of it during which
    the re-run started, the stale run starting only after the thaw (claimed, then frozen before
    its body began); else a database outage around them; else None."""
    pid, start, until = stale["pid"], stale["t"], rerun["t"]
    for fault in faults:
        interrupting = fault.kind in ("kill", "freeze", "exit")
        if interrupting and fault.pid == pid and start <= fault.t <= until:
            return fault
    for frozen, thawed in freezes(faults).get(pid, []):
        if frozen <= until <= thawed <= start <= thawed + STALE_START:
            return Fault("freeze", frozen, pid)
    for down, up in outages(faults):
        if down <= max(start, until) and up >= min(start, until):
            return Fault("db-restart", down)
    return None


def _note_duplicate(
    findings: Findings, what: str, earlier: Record, later: Record, faults: Sequence[Fault]
) -> None:
    """``earlier`` ran an older attempt than ``later`` (for steps, whose lines carry no
    attempt, it started earlier; either may then be the stale one)."""
    findings.duplicates += 1
    rerun = later
    cause = explain(earlier, later, faults)
    if cause is None and "attempt" not in earlier:
        rerun = earlier
        cause = explain(later, earlier, faults)
    if cause is None:
        findings.fail(
            f"{what}: run at {earlier['t']:.3f} by pid {earlier['pid']} was run again at "
            f"{later['t']:.3f} by pid {later['pid']} with no kill, freeze or outage in between"
        )
        return
    kind = cause.kind
    if cause.detail.startswith("leader"):
        renamed = "renamed" in cause.detail
        kind = "kill of the leader" + (", back under a new name" if renamed else ", back as itself")
    findings.explained[kind] += 1
    findings.rescue_latency[kind].append(rerun["t"] - cause.t)


def check_jobs(
    rows: Sequence[Mapping[str, Any]], records: Sequence[Record], faults: Sequence[Fault]
) -> Findings:
    """``rows``: every job of the run with id, state, attempt, attempted_by, errors, args and
    finished_at (completed_at or cancelled_at as epoch seconds, or None)."""
    findings = Findings()
    starts: dict[int, list[Record]] = defaultdict(list)
    ends: dict[tuple[int, int, str], Record] = {}
    for line in records:
        if line["k"] == "job_start":
            starts[line["job"]].append(line)
        elif line["k"] == "job_end":
            ends[(line["job"], line["attempt"], line["uuid"])] = line
    for row in rows:
        job = row["id"]
        runs = sorted(starts.get(job, []), key=lambda r: (r["attempt"], r["t"]))
        findings.runs += len(runs)
        expected = "cancelled" if row["args"].get("cancel") else "completed"
        if row["state"] not in FINAL_JOB_STATES:
            findings.fail(f"job {job}: stuck {row['state']} (attempt {row['attempt']})")
            continue
        if row["state"] != expected:
            findings.fail(f"job {job}: lost: {row['state']}, its worker chose {expected}")
            continue
        for earlier, later in itertools.pairwise(runs):
            if earlier["attempt"] == later["attempt"]:
                findings.fail(f"job {job}: attempt {later['attempt']} started twice")
                continue
            end = ends.get((job, earlier["attempt"], earlier["uuid"]))
            if end is not None and end["outcome"] == "raised":
                continue  # the retry the worker asked for
            _note_duplicate(findings, f"job {job}", earlier, later, faults)
        _check_applied_once(findings, row, runs, ends)
    return findings


def _check_applied_once(
    findings: Findings,
    row: Mapping[str, Any],
    runs: Sequence[Record],
    ends: Mapping[tuple[int, int, str], Record],
) -> None:
    """The finished row carries the outcome of its own attempt and no other: that attempt's
    run ended as the row says, before the row was finished, and no later attempt started;
    each error entry is the failure of the attempt it names."""
    job, attempt = row["id"], row["attempt"]
    producer = (row["attempted_by"] or ["?", "?"])[1]
    end = ends.get((job, attempt, producer))
    wanted = "cancel" if row["state"] == "cancelled" else "ok"
    if end is None or end["outcome"] != wanted:
        findings.fail(
            f"job {job}: {row['state']} by attempt {attempt} ({producer}), whose run "
            + ("never ended" if end is None else f"ended {end['outcome']}")
        )
    elif row["finished_at"] is not None and end["t"] > row["finished_at"] + CLOCK_SLACK:
        findings.fail(
            f"job {job}: {row['state']} at {row['finished_at']:.3f}, before attempt {attempt}'s "
            f"run ended ({end['t']:.3f}): another attempt's outcome was applied"
        )
    if runs and max(r["attempt"] for r in runs) > attempt:
        findings.fail(f"job {job}: an attempt after {attempt} ran, yet {row['state']} is kept")
    raised = {a for (j, a, _), e in ends.items() if j == job and e["outcome"] == "raised"}
    named = [entry.get("attempt") for entry in row["errors"]]
    if row["state"] == "cancelled":
        named = named[:-1]  # the cancel's own entry, checked above
    for entry_attempt in named:
        if entry_attempt not in raised or named.count(entry_attempt) > 1:
            findings.fail(f"job {job}: error entries {named}, raised attempts {sorted(raised)}")
            break


def check_workflows(
    instances: Sequence[Mapping[str, Any]],
    steps: Sequence[str],
    records: Sequence[Record],
    faults: Sequence[Fault],
    ended_at: float,
) -> Findings:
    """Every instance completed through every step; no two runs of one step of one instance
    executing at the same moment (a frozen process executes nothing, so its frozen time is
    left out of its run; a killed one stops at the kill); every duplicate run explained."""
    findings = Findings()
    frozen = freezes(faults)
    killed = {f.pid: f.t for f in faults if f.kind in ("kill", "exit")}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for line in sorted(records, key=lambda r: r["t"]):
        run_key = (line.get("instance", ""), line.get("step", ""))
        if line["k"] == "step_start":
            runs[run_key].append({**line, "end": None})
        elif line["k"] == "step_end":
            open_runs = [r for r in runs[run_key] if r["pid"] == line["pid"] and r["end"] is None]
            if open_runs:
                open_runs[-1]["end"] = line["t"]
    for instance in instances:
        if instance["status"] != "completed":
            findings.fail(f"workflow {instance['id']}: stuck {instance['status']}")
        for key in steps:
            found = runs.get((str(instance["id"]), key), [])
            findings.runs += len(found)
            if not any(r["end"] is not None for r in found):
                findings.fail(f"workflow {instance['id']}: step {key} never ran to its end")
            for earlier, later in itertools.pairwise(found):
                _note_duplicate(findings, f"workflow {instance['id']} step {key}", earlier,
                                later, faults)  # fmt: skip
            _check_never_at_once(findings, instance["id"], key, found, frozen, killed, ended_at)
    return findings


def _executing(
    run: Mapping[str, Any],
    frozen: Mapping[int, list[tuple[float, float]]],
    killed: Mapping[int, float],
    ended_at: float,
) -> list[tuple[float, float]]:
    """The spans during which the run was executing: start to end (or its process's kill, or
    the end of the run), less the spans its process was frozen."""
    stop = run["end"] if run["end"] is not None else killed.get(run["pid"], ended_at)
    spans = [(run["t"], stop)]
    for down, up in frozen.get(run["pid"], []):
        spans = [piece for a, b in spans for piece in ((a, min(b, down)), (max(a, up), b))]
        spans = [(a, b) for a, b in spans if b > a]
    return spans


def _check_never_at_once(
    findings: Findings,
    instance: str,
    key: str,
    found: Sequence[Mapping[str, Any]],
    frozen: Mapping[int, list[tuple[float, float]]],
    killed: Mapping[int, float],
    ended_at: float,
) -> None:
    spans = [(_executing(run, frozen, killed, ended_at), run) for run in found]
    for i, (mine, run) in enumerate(spans):
        for theirs, other in spans[i + 1 :]:
            if any(a < d and c < b for a, b in mine for c, d in theirs):
                findings.fail(
                    f"workflow {instance} step {key}: pids {run['pid']} and {other['pid']} "
                    "executed it at the same time"
                )


def latency_summary(values: Sequence[float]) -> str:
    """``n=…, min/median/max … s`` of rescue latencies."""
    if not values:
        return "n=0"
    return (
        f"n={len(values)}, min {min(values):.1f} s, median {statistics.median(values):.1f} s, "
        f"max {max(values):.1f} s"
    )
