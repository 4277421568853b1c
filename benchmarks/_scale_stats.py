"""The arithmetic of ``bench_scale_out.py``, kept apart from the processes and SQL it drives.

Everything here is pure (numbers in, numbers out), so tests/test_bench_scale_stats.py can check
it without a database: how a ``/proc/<pid>/stat`` line is read, how the CPU of processes that
come and go during a drain is added up, how lock waits are counted, and what "no queue starves"
means as figures.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A process is named by (pid, start time in ticks since boot): a pid can be reused within a run.
ProcessKey = tuple[int, int]


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the benchmark uses."""

    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime, in clock ticks (os.sysconf("SC_CLK_TCK") per second)
    start_ticks: int  # when the process started, ticks after boot

    @property
    def key(self) -> ProcessKey:
        return (self.pid, self.start_ticks)


def parse_proc_stat(text: str) -> ProcStat:
    """Read one ``/proc/<pid>/stat`` line.

    The second field, the command in parentheses, may itself hold spaces and parentheses
    (PostgreSQL sets none there, but a Python thread name may), so the fields are counted from
    the *last* ``)``: after it come state (3), ppid (4), ... utime (14), stime (15), ...
    starttime (22), numbered as in proc(5).
    """
    head, _, tail = text.rpartition(")")
    if not head:
        raise ValueError(f"not a /proc stat line: {text[:80]!r}")
    pid = int(head.split("(", 1)[0])
    fields = tail.split()
    # fields[0] is field 3 (state), so field k is fields[k - 3].
    return ProcStat(
        pid=pid,
        ppid=int(fields[4 - 3]),
        cpu_ticks=int(fields[14 - 3]) + int(fields[15 - 3]),
        start_ticks=int(fields[22 - 3]),
    )


def cpu_ticks_over(readings: Sequence[Mapping[ProcessKey, int]]) -> int:
    """CPU ticks a changing set of processes used between the first and the last reading.

    Each reading maps every process seen at that moment to its cumulative CPU ticks. A process
    present in the first reading counts from that reading; one that appears later was born in
    the window and counts from zero (a new process starts with no CPU time). Each counts up to
    the last reading it was seen in, so a process that exits between two readings loses what it
    used since the last one: the caller keeps the readings frequent enough for that to be small.
    """
    if not readings:
        return 0
    baseline = readings[0]
    last_seen: dict[ProcessKey, int] = {}
    for reading in readings:
        last_seen.update(reading)
    return sum(ticks - baseline.get(key, 0) for key, ticks in last_seen.items())


@dataclass(frozen=True)
class BackendSample:
    """One look at one backend of the benchmark's database in ``pg_stat_activity``."""

    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    waiting_on_lock: bool  # an ungranted row in pg_locks for this backend


def wait_fractions(samples: Iterable[BackendSample]) -> dict[str, Any]:
    """How the ``active`` backend samples split between running and each kind of wait.

    ``lock`` is heavyweight-lock waits (``wait_event_type = 'Lock'``, or an ungranted
    ``pg_locks`` row: the same thing seen from two views, counted once): with ``SKIP LOCKED``
    claims these are what claim contention would show as. ``LWLock`` (buffer and WAL
    internals) and ``IO`` (mostly the WAL flush at commit) are counted on their own.
    """
    active = 0
    lock = 0
    by_type: dict[str, int] = {}
    by_event: dict[str, int] = {}
    for sample in samples:
        if sample.state != "active":
            continue
        active += 1
        if sample.wait_event_type == "Lock" or sample.waiting_on_lock:
            lock += 1
        kind = sample.wait_event_type or "CPU"
        by_type[kind] = by_type.get(kind, 0) + 1
        if sample.wait_event_type:
            event = f"{sample.wait_event_type}:{sample.wait_event}"
            by_event[event] = by_event.get(event, 0) + 1
    return {
        "active_samples": active,
        "lock_wait_samples": lock,
        "lock_wait_fraction": lock / active if active else 0.0,
        "by_type": {k: v / active for k, v in sorted(by_type.items())} if active else {},
        "by_event": dict(sorted(by_event.items(), key=lambda item: -item[1])),
    }


def queue_fairness(
    completions: Mapping[str, Sequence[float]], window_s: float, slices: int = 10
) -> dict[str, Any]:
    """Figures that say whether every queue kept being served while all had a backlog.

    ``completions`` holds, per queue, the moments (seconds from the start of the drain) its
    jobs completed; every queue started with the same backlog. Returned:

    - ``finish_s``: when each queue's last job completed, and ``finish_spread``: the time
      between the first and the last queue finishing, as a fraction of the window (0: all
      finished together).
    - ``slice_shares``: each queue's share of the completions in each tenth (``slices``) of the
      window, and ``worst_share``: the smallest share any queue had in a slice that ended
      before the first queue ran out of jobs (a fair share is 1 / number of queues; a starved
      queue would show 0). ``None`` when no slice ended that early.
    - ``max_gap_s``: per queue, the longest time without a completion from the start of the
      drain to its own last job (a starved queue shows a gap as long as the starving).
    """
    queues = sorted(completions)
    if not queues or window_s <= 0:
        return {"queues": queues}
    ordered = {q: sorted(completions[q]) for q in queues}
    finish = {q: (ordered[q][-1] if ordered[q] else 0.0) for q in queues}
    first_done = min(finish.values())
    width = window_s / slices
    shares: list[dict[str, float]] = []
    worst: float | None = None
    for index in range(slices):
        low, high = index * width, (index + 1) * width
        last = index == slices - 1
        counts = {
            q: sum(1 for t in ordered[q] if low <= t < high or (last and t == high)) for q in queues
        }
        total = sum(counts.values())
        shares.append({q: (counts[q] / total if total else 0.0) for q in queues})
        if high <= first_done and total:
            smallest = min(shares[-1].values())
            worst = smallest if worst is None else min(worst, smallest)
    gaps: dict[str, float] = {}
    for q in queues:
        previous = 0.0
        gap = 0.0
        for moment in ordered[q]:
            gap = max(gap, moment - previous)
            previous = moment
        gaps[q] = gap
    return {
        "queues": queues,
        "fair_share": 1 / len(queues),
        "finish_s": finish,
        "finish_spread": (max(finish.values()) - first_done) / window_s,
        "slice_shares": shares,
        "worst_share": worst,
        "max_gap_s": gaps,
    }


def median_and_range(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of the runs of one figure."""
    return statistics.median(values), min(values), max(values)
