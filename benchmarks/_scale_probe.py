"""What ``bench_scale_out.py`` watches while the nodes drain: PostgreSQL's backends and CPU.

A :class:`Probe` looks, every ``interval`` seconds from a thread of its own and a connection to
the *admin* database (so its own queries never count as the benchmark database's), at:

- ``pg_stat_activity`` for every backend of the benchmark's database: state, wait event, and
  whether ``pg_locks`` holds an ungranted lock for it (claim contention would show here);
- ``/proc/<pid>/stat`` of those backends, of the server's background processes (checkpointer,
  WAL writer, ...: shared with every other database on the server) and of the node processes,
  for CPU time; and ``/proc/stat`` for how busy the whole machine was.

The driver also calls :meth:`Probe.sample` itself right before the jobs become available and
right after the last one completed, so the CPU figures span exactly that window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
from _scale_stats import BackendSample, ProcessKey, ProcStat, parse_proc_stat

ACTIVITY_SQL = """
SELECT a.pid, a.datname IS NULL AS background, a.backend_type, a.state,
       a.wait_event_type, a.wait_event, w.pid IS NOT NULL AS lock_wait
FROM pg_stat_activity AS a
LEFT JOIN (SELECT DISTINCT pid FROM pg_locks WHERE NOT granted) AS w ON w.pid = a.pid
WHERE a.datname = %(db)s OR (a.datname IS NULL AND a.backend_type <> 'client backend')
"""


def read_stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat``, or None when the process is gone (or was never there)."""
    try:
        return parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def read_many(pids: Iterable[int]) -> dict[ProcessKey, int]:
    found: dict[ProcessKey, int] = {}
    for pid in pids:
        stat = read_stat(pid)
        if stat is not None:
            found[stat.key] = stat.cpu_ticks
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine from ``/proc/stat``, all cores."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Probe:
    """Samples of one drain; :attr:`samples` is the full record, one dict per look."""

    def __init__(
        self, admin_url: str, dbname: str, node_pids: list[int], exclude: set[int], interval: float
    ) -> None:
        self.dbname = dbname
        self.node_pids = node_pids
        self.exclude = set(exclude)  # the driver's own connections to the benchmark database
        self.interval = interval
        self.conn = psycopg.connect(admin_url, autocommit=True)
        self.own_pid = self.conn.info.backend_pid
        own = read_stat(self.own_pid)
        self.postmaster = own.ppid if own is not None else None
        self.samples: list[dict[str, Any]] = []
        self.backends: list[BackendSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._origin = time.monotonic()

    def sample(self) -> dict[str, Any]:
        """One look at everything; appended to :attr:`samples` and returned."""
        rows = self.conn.execute(ACTIVITY_SQL, {"db": self.dbname}).fetchall()
        at = time.monotonic() - self._origin
        backends = [r for r in rows if not r[1] and r[0] not in self.exclude]
        background = [r[0] for r in rows if r[1]]
        if self.postmaster is not None:
            background.append(self.postmaster)
        busy, total = machine_ticks()
        record: dict[str, Any] = {
            "t": round(at, 4),
            # pid, backend_type, state, wait_event_type, wait_event, waiting on a lock
            "backends": [[r[0], r[2], r[3], r[4], r[5], bool(r[6])] for r in backends],
            "db_ticks": _listed(read_many(r[0] for r in backends)),
            "background_ticks": _listed(read_many(background)),
            "node_ticks": _listed(read_many(self.node_pids)),
            "probe_ticks": _listed(read_many([self.own_pid])),
            "machine_ticks": [busy, total],
        }
        self.samples.append(record)
        self.backends.extend(
            BackendSample(state=r[3], wait_event_type=r[4], wait_event=r[5], waiting_on_lock=r[6])
            for r in backends
        )
        return record

    def start(self) -> None:
        self._origin = time.monotonic()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="scale-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then take the closing sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def close(self) -> None:
        self.conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def _listed(readings: dict[ProcessKey, int]) -> list[list[int]]:
    """JSON-friendly form of a reading: [pid, start_ticks, cpu_ticks] rows."""
    return [[pid, start, ticks] for (pid, start), ticks in sorted(readings.items())]


def as_reading(rows: list[list[int]]) -> dict[ProcessKey, int]:
    return {(pid, start): ticks for pid, start, ticks in rows}
