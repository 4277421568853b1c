"""wait_for_job / wait_for_instance on real rows a real node and the workflow runner leave: they
return the row once it gets there, and say where it got instead (fast when it cannot move)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bridge import Job, insert
from bridge.testing import (
    run_workflow,
    wait_for_instance,
    wait_for_instance_async,
    wait_for_job,
    wait_for_job_async,
)
from bridge.testing.node import NodeHandle, start_node
from tests.testing.test_workflow_helpers import FLOW
from tests.testing.workers import REGISTRY

WORKER = "tests.testing.Outcomes"


@pytest.fixture
def node(database_url: str, oban_prefix: str) -> Iterator[NodeHandle]:
    handle = start_node(database_url, oban_prefix, {"outcomes": 5}, registry=REGISTRY)
    yield handle
    handle.stop()


def put(url: str, prefix: str, args: dict[str, Any]) -> Job:
    with psycopg.connect(url, autocommit=True) as conn:
        return insert(conn, Job.new(WORKER, args, queue="outcomes"), prefix=prefix)


def test_by_id_returns_the_row_once_completed(
    node: NodeHandle, database_url: str, oban_prefix: str
) -> None:
    job = put(database_url, oban_prefix, {"do": "ok", "n": 1})
    done = wait_for_job(database_url, job, prefix=oban_prefix)
    assert (done.id, done.state, done.attempt) == (job.id, "completed", 1)
    assert wait_for_job(database_url, job.id, prefix=oban_prefix, state="completed").id == job.id


def test_by_id_fails_at_once_on_another_final_state(
    node: NodeHandle, database_url: str, oban_prefix: str
) -> None:
    job = put(database_url, oban_prefix, {"do": "cancel"})
    # the timeout is long: only the fail-fast path gives this message
    with pytest.raises(AssertionError) as failed:
        wait_for_job(database_url, job, prefix=oban_prefix, timeout=60)
    text = str(failed.value)
    assert text.startswith(f"job {job.id} is cancelled, a final state, expected completed: ")
    assert "attempt 1/20; last error (attempt 1): ** (Oban.PerformError)" in text
    assert 'failed with {:cancel, "not wanted"}' in text


def test_by_id_times_out_showing_the_state_and_last_error(
    node: NodeHandle, database_url: str, oban_prefix: str
) -> None:
    job = put(database_url, oban_prefix, {"do": "raise"})
    wait_for_job(database_url, job, prefix=oban_prefix, state="retryable")
    with pytest.raises(AssertionError) as failed:
        wait_for_job(database_url, job, prefix=oban_prefix, timeout=0.2)
    text = str(failed.value)
    assert text.startswith(f"job {job.id} is still retryable after 0.2s, expected completed: ")
    assert "last error (attempt 1): ** (ValueError) asked to fail on attempt 1" in text
    with pytest.raises(AssertionError, match=r"job 999999 is not in \S+\.oban_jobs"):
        wait_for_job(database_url, 999999, prefix=oban_prefix, timeout=0.05)


def test_by_filters_waits_for_a_job_inserted_later(
    node: NodeHandle, database_url: str, oban_prefix: str
) -> None:
    thread = threading.Thread(
        target=lambda: (time.sleep(0.2), put(database_url, oban_prefix, {"do": "ok", "k": 7}))
    )
    thread.start()
    try:
        done = wait_for_job(database_url, prefix=oban_prefix, worker=WORKER, args={"k": 7})
    finally:
        thread.join()
    assert (done.state, done.args) == ("completed", {"do": "ok", "k": 7})


def test_by_filters_shows_the_matching_jobs_in_other_states(
    node: NodeHandle, database_url: str, oban_prefix: str
) -> None:
    job = put(database_url, oban_prefix, {"do": "discard", "k": 8})
    wait_for_job(database_url, job, prefix=oban_prefix, state="discarded")
    with pytest.raises(AssertionError) as failed:
        wait_for_job(database_url, prefix=oban_prefix, args={"k": 8}, timeout=0.1)
    lines = str(failed.value).splitlines()
    assert lines[:4] == [
        "Expected a job matching:",
        "    args={'k': 8}",
        f"to be completed within 0.1s (in {oban_prefix}.oban_jobs).",
        "The 1 matching it are in other states:",
    ]
    assert lines[4].startswith(f"    #{job.id} discarded {WORKER} queue=outcomes")
    assert 'failed with {:discard, "bad input"}' in lines[4]
    with pytest.raises(AssertionError) as failed:
        wait_for_job(database_url, prefix=oban_prefix, args={"k": 9}, timeout=0.05)
    assert "differs: args.k is 8, expected 9" in str(failed.value)
    with pytest.raises(TypeError, match="a job or filters, not both"):
        wait_for_job(database_url, job, prefix=oban_prefix, args={"k": 8})


def test_wait_for_instance(database_url: str, oban_prefix: str) -> None:
    run_workflow(database_url, FLOW, {"n": 2}, id="w::ok", prefix=oban_prefix)
    state = wait_for_instance(database_url, "w::ok", prefix=oban_prefix)
    assert (state.status, state.context["steps"]["render"]) == ("completed", {"pages": 6})
    run_workflow(
        database_url, FLOW, {"n": -2}, id="w::failed", prefix=oban_prefix, with_scheduled=True
    )
    with pytest.raises(AssertionError) as failed:
        wait_for_instance(database_url, "w::failed", prefix=oban_prefix, timeout=60)
    assert str(failed.value).startswith(
        "workflow instance 'w::failed' (Elixir.T.Flow) is failed, a final status, expected "
        "completed; "
    )
    assert wait_for_instance(database_url, "w::failed", prefix=oban_prefix, status="failed")
    with pytest.raises(AssertionError, match=r"no workflow instance 'nope' in \S+ after 0.05s"):
        wait_for_instance(database_url, "nope", prefix=oban_prefix, timeout=0.05)


async def test_async_twins(node: NodeHandle, database_url: str, oban_prefix: str) -> None:
    job = put(database_url, oban_prefix, {"do": "ok", "k": 10})
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
        assert (await wait_for_job_async(aconn, job, prefix=oban_prefix)).state == "completed"
        found = await wait_for_job_async(database_url, prefix=oban_prefix, args={"k": 10})
        assert found.id == job.id
        with pytest.raises(AssertionError, match="not in"):
            await wait_for_job_async(aconn, 999999, prefix=oban_prefix, timeout=0.05)
        with pytest.raises(AssertionError, match="no workflow instance 'x'"):
            await wait_for_instance_async(aconn, "x", prefix=oban_prefix, timeout=0.05)
