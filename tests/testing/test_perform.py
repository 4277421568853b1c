"""perform_job: a worker run on a job built as an insert builds it, the executor's outcome."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.testing import build_job, perform_job, perform_job_async
from tests.testing.workers import REGISTRY, Outcomes, async_echo


def test_success_returns_the_value_and_the_job_as_claimed() -> None:
    outcome = perform_job(Outcomes, {"id": (1, 2)}, meta={"trace": "t"}, tags=[" A ", "b", "a"])
    assert (outcome.result, outcome.state, outcome.error) == ("success", "completed", None)
    # args through a JSON round trip (a tuple arrives as a row's list); tags as Oban stores them
    assert outcome.value == {
        "seen": {"id": [1, 2]},
        "attempt": 1,
        "meta": {"trace": "t"},
        "tags": ["a", "b"],
    }
    job = outcome.job
    assert (job.queue, job.max_attempts, job.attempt, job.state) == ("outcomes", 3, 1, "executing")
    assert job.id is not None and job.attempted_at is not None and job.scheduled_at is not None


@pytest.mark.parametrize(
    ("action", "result", "state"),
    [
        ("snooze", "snoozed", "scheduled"),
        ("cancel", "cancelled", "cancelled"),
        ("discard", "discard", "discarded"),
        ("error", "failure", "retryable"),
    ],
)
def test_each_outcome_is_named_as_oban_names_it(action: str, result: str, state: str) -> None:
    outcome = perform_job(Outcomes, {"do": action})
    assert (outcome.result, outcome.state) == (result, state)
    if action == "snooze":
        assert outcome.scheduled_at is not None and outcome.error is None
    else:
        assert outcome.error is not None and outcome.error["attempt"] == 1


def test_error_entries_are_oban_s() -> None:
    outcome = perform_job(Outcomes, {"do": "cancel"})
    assert outcome.error is not None
    assert outcome.error["error"] == (
        '** (Oban.PerformError) tests.testing.Outcomes failed with {:cancel, "not wanted"}'
    )


def test_a_raise_is_raised_unless_safe() -> None:
    with pytest.raises(ValueError, match="asked to fail on attempt 1"):
        perform_job(Outcomes, {"do": "raise"})
    outcome = perform_job(Outcomes, {"do": "raise"}, safe=True, attempt=2)
    assert (outcome.result, outcome.state) == ("failure", "retryable")
    assert isinstance(outcome.exception, ValueError)
    assert outcome.error is not None
    assert outcome.error["error"].startswith("** (ValueError) asked to fail on attempt 2")


def test_the_last_attempt_is_discarded() -> None:
    outcome = perform_job(Outcomes, {"do": "raise"}, safe=True, attempt=3)
    assert (outcome.result, outcome.state) == ("discard", "discarded")


def test_an_invalid_job_fails_with_the_insert_s_reason() -> None:
    with pytest.raises(AssertionError, match=r"valid job: args\[\"x\"\] is nan"):
        perform_job(Outcomes, {"x": float("nan")})
    with pytest.raises(AssertionError, match=r"priority must be 0\.\.9, got 12"):
        perform_job(Outcomes, {}, priority=12)
    with pytest.raises(AssertionError, match=r"attempt within 1\.\.max_attempts \(3\), got 4"):
        perform_job(Outcomes, {}, attempt=4)


def test_a_worker_by_name_and_an_unknown_name() -> None:
    outcome = perform_job("tests.testing.Outcomes", {}, registry=REGISTRY)
    assert outcome.result == "success"
    with pytest.raises(AssertionError, match=r"no worker is registered as 'Nope\.Worker'"):
        perform_job("Nope.Worker", {}, registry=REGISTRY)


def test_build_job_takes_the_claim_s_fields() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    job = build_job(Outcomes, {"a": 1}, id=77, attempt=2, scheduled_at=at, priority=4)
    assert (job.id, job.attempt, job.priority) == (77, 2, 4)
    assert job.scheduled_at == datetime(2026, 1, 2, 3, 4, 5)  # naive UTC, as the table holds it


async def test_async_worker_and_recorded_output() -> None:
    outcome = await perform_job_async(async_echo, {"n": 1})
    assert outcome.value == {"echo": {"n": 1}}
    assert outcome.recorded is not None and "recorded" in outcome.recorded
    with pytest.raises(RuntimeError, match="use perform_job_async there"):
        perform_job(async_echo, {})
