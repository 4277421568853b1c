"""The chaos run's checks on hand-made records: each failure it must report, and the faults that
explain a duplicate. Pure: no processes, no database."""

from __future__ import annotations

from typing import Any

from tests.support.chaos.checks import check_jobs, check_workflows
from tests.support.chaos.fleet import Fault


def start(job: int, attempt: int, pid: int, t: float, uuid: str = "u") -> dict[str, Any]:
    return {"k": "job_start", "job": job, "attempt": attempt, "pid": pid, "t": t, "uuid": uuid}


def end(job: int, attempt: int, pid: int, t: float, outcome: str = "ok", uuid: str = "u") -> Any:
    return {**start(job, attempt, pid, t, uuid), "k": "job_end", "outcome": outcome}


def row(attempt: int, finished_at: float, uuid: str, state: str = "completed", **extra: Any) -> Any:
    base = {"id": 1, "state": state, "attempt": attempt, "attempted_by": ["n", uuid],
            "errors": [], "args": {}, "finished_at": finished_at}  # fmt: skip
    return {**base, **extra}


def test_a_rerun_after_a_kill_is_an_explained_duplicate_with_its_latency() -> None:
    records = [start(1, 1, 10, 0.0, "a"), start(1, 2, 20, 7.0, "b"), end(1, 2, 20, 8.0, uuid="b")]
    found = check_jobs([row(2, 8.01, "b")], records, [Fault("kill", 1.0, 10, "n")])
    assert (found.failures, found.duplicates, dict(found.explained)) == ([], 1, {"kill": 1})
    assert found.rescue_latency["kill"] == [6.0]


def test_a_rerun_nothing_explains_fails() -> None:
    records = [start(1, 1, 10, 0.0, "a"), start(1, 2, 20, 7.0, "b"), end(1, 2, 20, 8.0, uuid="b")]
    found = check_jobs([row(2, 8.01, "b")], records, [Fault("kill", 1.0, 99, "n")])
    assert len(found.failures) == 1 and "no kill, freeze or outage" in found.failures[0]


def test_a_late_outcome_that_completed_a_running_rerun_fails() -> None:
    # Attempt 1 frozen, attempt 2 re-run; the row was completed at 9.0, before attempt 2 ended.
    records = [start(1, 1, 10, 0.0, "a"), end(1, 1, 10, 8.9, uuid="a"),
               start(1, 2, 20, 7.0, "b"), end(1, 2, 20, 12.0, uuid="b")]  # fmt: skip
    found = check_jobs([row(2, 9.0, "b")], records, [Fault("freeze", 1.0, 10, "n")])
    assert found.failures == [
        "job 1: completed at 9.000, before attempt 2's run ended (12.000): another attempt's "
        "outcome was applied"
    ]


def test_lost_and_stuck_jobs_fail() -> None:
    stuck = check_jobs([row(1, 0.0, "a", state="executing")], [start(1, 1, 10, 0.0, "a")], [])
    assert stuck.failures == ["job 1: stuck executing (attempt 1)"]
    lost = check_jobs([row(1, 0.0, "a", state="discarded")], [start(1, 1, 10, 0.0, "a")], [])
    assert lost.failures == ["job 1: lost: discarded, its worker chose completed"]


def test_an_error_entry_for_an_attempt_that_did_not_raise_fails() -> None:
    records = [start(1, 1, 10, 0.0, "a"), end(1, 1, 10, 1.0, "ok", "a")]
    found = check_jobs([row(1, 1.01, "a", errors=[{"attempt": 1}])], records, [])
    assert found.failures == ["job 1: error entries [1], raised attempts []"]


def step(kind: str, pid: int, t: float) -> dict[str, Any]:
    return {"k": kind, "instance": "i", "step": "first", "pid": pid, "t": t}


def test_two_runs_of_a_step_at_once_fail_unless_one_was_frozen_meanwhile() -> None:
    records = [step("step_start", 10, 0.0), step("step_end", 10, 9.0),
               step("step_start", 20, 6.0), step("step_end", 20, 7.0)]  # fmt: skip
    frozen = [Fault("freeze", 1.0, 10), Fault("thaw", 8.0, 10)]
    ok = check_workflows([{"id": "i", "status": "completed"}], ["first"], records, frozen, 20.0)
    assert (ok.failures, dict(ok.explained)) == ([], {"freeze": 1})
    thawed_early = [Fault("freeze", 1.0, 10), Fault("thaw", 6.5, 10)]
    at_once = check_workflows(
        [{"id": "i", "status": "completed"}], ["first"], records, thawed_early, 20.0
    )
    assert at_once.failures == [
        "workflow i step first: pids 10 and 20 executed it at the same time"
    ]


def test_a_job_claimed_before_a_freeze_and_started_after_the_thaw_is_explained() -> None:
    # Attempt 1 was claimed, the node frozen at 1.0 before the body began; attempt 2 re-ran it
    # at 7.0 elsewhere; after the thaw at 9.0 the frozen node started attempt 1's body at 9.1.
    records = [start(1, 1, 10, 9.1, "a"), end(1, 1, 10, 9.2, uuid="a"),
               start(1, 2, 20, 7.0, "b"), end(1, 2, 20, 8.0, uuid="b")]  # fmt: skip
    faults = [Fault("freeze", 1.0, 10), Fault("thaw", 9.0, 10)]
    found = check_jobs([row(2, 8.01, "b")], records, faults)
    assert (found.failures, dict(found.explained)) == ([], {"freeze": 1})
    assert found.rescue_latency["freeze"] == [6.0]
    # the stale attempt starting long after an earlier thaw is not explained by it
    late = check_jobs([row(2, 8.01, "b")], records, [Fault("freeze", 1.0, 10),
                                                    Fault("thaw", 3.0, 10)])  # fmt: skip
    assert len(late.failures) == 1
