"""The chaos run's long form: jobs and three-step workflows on ``bridge worker`` processes that
are SIGKILLed every few seconds, one of them frozen (SIGSTOP) past its rescue, while the
database (a cluster of the run's own on a spare port, never the shared server) is restarted
once with ``pg_ctl -m fast`` and once with ``-m immediate``. It then checks that nothing was
lost or left stuck, that every duplicate run is explained by a kill, a freeze or an outage,
that no outcome was applied to an attempt other than its own and that no workflow step ran
twice at once, and prints the figures ``docs/reliability.md`` quotes. Exit status 1 when a
check fails.

    python benchmarks/chaos.py --jobs 10000 --workflows 1000 --nodes 3 --duration 120

The short form of the same run is ``tests/chaos/test_chaos.py`` (``python -m pytest -m chaos``).
``CHAOS_KEEP=1`` keeps the scratch directory (node logs, the bodies' records) for a look.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.chaos.run import ChaosConfig, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workflows", type=int, default=1_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--duration", type=float, default=120.0, help="fault phase, seconds")
    parser.add_argument("--kill-min", type=float, default=2.0)
    parser.add_argument("--kill-max", type=float, default=5.0)
    parser.add_argument(
        "--job-ms",
        type=int,
        default=None,
        help="mean job body, ms (default: spread the jobs over the phase)",
    )
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--workflow-concurrency", type=int, default=10)
    parser.add_argument("--rescue-after", type=float, default=5.0)
    parser.add_argument("--rescue-interval", type=float, default=1.0)
    parser.add_argument("--settle-timeout", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    config = ChaosConfig(
        jobs=options.jobs,
        workflows=options.workflows,
        nodes=options.nodes,
        duration=options.duration,
        kill_every=(options.kill_min, options.kill_max),
        job_ms=options.job_ms,
        concurrency=options.concurrency,
        workflow_concurrency=options.workflow_concurrency,
        rescue_after=options.rescue_after,
        rescue_interval=options.rescue_interval,
        settle_timeout=options.settle_timeout,
        seed=options.seed,
    )
    report = run_chaos(config)
    print(report.summary())
    return 1 if report.all_failures else 0


if __name__ == "__main__":
    sys.exit(main())
