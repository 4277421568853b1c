"""The chaos run's short form, in the normal suite: 600 jobs and 50 three-step workflows on three
``bridge worker`` processes, SIGKILLed every 2-5 s, one frozen past its rescue, the database (a
cluster of this run's own, never the shared server) restarted with ``-m fast`` and with
``-m immediate``. About 40 s on two cores; the long form is ``benchmarks/chaos.py``.

What fails it (``tests/support/chaos/checks.py``): a job not in the state its worker chose
(lost) or not finished (stuck), a workflow instance not completed, a duplicate run that no
kill, freeze or outage explains, a finished row whose outcome is not the one of the attempt it
carries (a late outcome applied), two runs of one step executing at the same moment, and a node
that ends by itself. Nothing here asserts a time: latencies and throughput are printed.
"""

from __future__ import annotations

import pytest

from tests.support.chaos.run import ChaosConfig, ChaosReport, run_chaos

pytestmark = pytest.mark.chaos

SHORT = ChaosConfig(jobs=600, workflows=50, nodes=3, duration=25.0, settle_timeout=90.0, seed=14)


@pytest.fixture(scope="module")
def report() -> ChaosReport:
    result = run_chaos(SHORT)
    print("\n" + result.summary())
    return result


def test_every_planned_fault_happened(report: ChaosReport) -> None:
    kinds = [fault.kind for fault in report.faults]
    assert kinds.count("kill") >= 3
    assert [f.detail for f in report.faults if f.kind == "db-down"] == ["fast", "immediate"]
    assert kinds.count("freeze") == kinds.count("thaw") == 1
    assert not report.failures, report.summary()


def test_no_job_lost_stuck_unexplained_or_applied_to_another_attempt(report: ChaosReport) -> None:
    assert report.jobs.runs >= SHORT.jobs
    assert report.jobs.failures == [], report.summary()


def test_every_workflow_completes_and_no_step_runs_twice_at_once(report: ChaosReport) -> None:
    assert report.counts["workflows_completed"] == SHORT.workflows, report.summary()
    assert report.workflows.failures == [], report.summary()
