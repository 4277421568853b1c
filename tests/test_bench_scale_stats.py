"""The arithmetic behind benchmarks/bench_scale_out.py's figures (no database, no timing).

The scale-out figures are only as good as the way ``/proc`` is read, the CPU of backends that
come and go is added up, and "no queue starves" is turned into numbers; those parts are pure and
checked here on hand-made inputs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_scale_stats", BENCHMARKS / "_scale_stats.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


stats = _load()


def _stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, start: int) -> str:
    # Fields 3..22 of proc(5): state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt,
    # majflt, cmajflt, utime, stime, cutime, cstime, priority, nice, num_threads, itrealvalue,
    # starttime; then a few more that the parser must ignore.
    rest = ["S", ppid, 1, 1, 0, -1, 4194368, 10, 0, 0, 0, utime, stime, 99, 99, 20, 0, 1, 0, start]
    return f"{pid} ({comm}) " + " ".join(str(v) for v in rest) + " 1000 200 18446744073709551615\n"


def test_a_proc_stat_line_is_read_from_the_last_parenthesis() -> None:
    line = _stat_line(4242, "odd) name (x", ppid=2204, utime=150, stime=25, start=777)
    stat = stats.parse_proc_stat(line)
    # children's times (cutime, cstime: 99) are not the process's own
    assert (stat.pid, stat.ppid, stat.cpu_ticks, stat.start_ticks) == (4242, 2204, 175, 777)
    with pytest.raises(ValueError):
        stats.parse_proc_stat("no parenthesis here")


def test_cpu_of_processes_that_come_and_go_counts_each_from_its_own_start() -> None:
    readings = [
        {(10, 1): 100, (11, 1): 50},  # start of the window
        {(10, 1): 130, (11, 1): 60, (12, 5): 7},  # 12 was born in the window
        {(10, 1): 170, (12, 5): 20, (11, 9): 4},  # 11 exited; its pid came back as a new one
    ]
    # 10: 70; old 11: 10 (to its last reading); 12: 20 from zero; new 11: 4 from zero
    assert stats.cpu_ticks_over(readings) == 70 + 10 + 20 + 4
    assert stats.cpu_ticks_over([]) == 0


def test_wait_fractions_count_active_samples_and_a_lock_wait_once() -> None:
    sample = stats.BackendSample
    found = stats.wait_fractions(
        [
            sample("active", None, None, False),
            sample("active", "Lock", "transactionid", True),  # both views: one lock wait
            sample("active", None, None, True),  # an ungranted lock seen only in pg_locks
            sample("active", "LWLock", "WALWrite", False),
            sample("idle", "Client", "ClientRead", False),  # not active: not counted
        ]
    )
    assert found["active_samples"] == 4
    assert found["lock_wait_samples"] == 2
    assert found["lock_wait_fraction"] == 0.5
    assert found["by_type"] == {"CPU": 0.5, "LWLock": 0.25, "Lock": 0.25}
    assert found["by_event"] == {"Lock:transactionid": 1, "LWLock:WALWrite": 1}


def test_fairness_figures_show_a_starved_queue_and_not_a_served_one() -> None:
    interleaved = [i / 10 for i in range(100)]  # one completion every 0.1 s over 10 s
    fair = stats.queue_fairness({"a": interleaved, "b": [t + 0.05 for t in interleaved]}, 10.0)
    assert fair["worst_share"] == pytest.approx(0.5)
    assert fair["finish_spread"] == pytest.approx(0.005)
    assert max(fair["max_gap_s"].values()) == pytest.approx(0.1)

    # "b" gets nothing until "a" has run out at 5 s, then all of its jobs
    starved = stats.queue_fairness(
        {"a": [i / 20 for i in range(1, 101)], "b": [5 + i / 20 for i in range(1, 101)]}, 10.0
    )
    assert starved["worst_share"] == 0.0
    assert starved["max_gap_s"]["b"] == pytest.approx(5.05)
    assert starved["finish_spread"] == pytest.approx(0.5)
    assert starved["slice_shares"][0] == {"a": 1.0, "b": 0.0}
