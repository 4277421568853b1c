"""Queue control across the language line: each side's signals are obeyed by the other.

The fixture sends Oban's payloads (`Oban.pause_queue/2`, `resume_queue/2`, `scale_queue/2`,
`pause_all_queues/2`, node-targeted variants) to a Python node; Python sends the same payloads
with ``bridge.jobs.client.admin`` to the fixture's producer. `Oban.cancel_job/2` from either
side kills a job executing on the other (pkill) and the row ends as the genuine stack left it
(golden/cancel-job). "Not claimed while paused" is checked after a later signal has been obeyed:
notifications arrive in order, so by then the insert's wake-up has been handled too.
"""

from __future__ import annotations

from typing import Any

import psycopg

from bridge import Job, insert
from bridge.jobs.client.admin import cancel_jobs, send_signal, signal_payload
from bridge.jobs.client.registry import Registry
from bridge.jobs.node import Node
from bridge.wire import notify
from interop_tests.fixture import ElixirFixture, wait_until
from interop_tests.support import (
    ECHO,
    assert_row_like,
    echo_registry,
    eventually,
    golden_lines,
    in_thread,
)
from tests.jobs.support import job_row, running_node

Conn = psycopg.Connection[Any]
GOLDEN_CANCELLED = golden_lines("cancel-job/s9_oban_jobs.jsonl")[1]
NAMES = {"Realstack.SleepWorker": ECHO}


def node_for(database_url: str, schema: str, queues: dict[str, int], name: str) -> Any:
    registry: Registry = echo_registry()
    return running_node(database_url, schema, queues, registry, node=name, plugins=[])


async def wait_producer(node: Node, queue: str, what: str, **state: Any) -> None:
    def matches() -> bool:
        producer = node.producers[queue]
        return all(getattr(producer, key) == value for key, value in state.items())

    await eventually(matches, timeout=10, what=f"{what}: {queue} with {state}")


async def test_fixture_pauses_scales_and_resumes_a_python_queue(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    async with node_for(database_url, schema, {"py": 2, "other": 1}, "py-1") as node:
        await in_thread(fx.call, "signal", action="pause", queue="py")
        await wait_producer(node, "py", "an untargeted pause", paused=True)
        assert node.producers["other"].paused is False

        [job] = await in_thread(fx.enqueue, [{"worker": ECHO, "queue": "py", "args": {}}])
        await in_thread(fx.call, "signal", action="scale", queue="py", limit=3)
        await wait_producer(node, "py", "an untargeted scale while paused", limit=3, paused=True)
        # A pause and a scale aimed at another node are ignored; one aimed at us is obeyed.
        await in_thread(fx.call, "signal", action="resume", queue="py", node="py-2")
        await in_thread(fx.call, "signal", action="scale", queue="py", limit=9, node="py-2")
        await in_thread(fx.call, "signal", action="scale", queue="py", limit=4, node="py-1")
        await wait_producer(node, "py", "a scale targeted at this node", limit=4, paused=True)
        assert job_row(database_url, schema, job["id"])["state"] == "available"
        assert node.producers["py"].claimed == 0

        await in_thread(fx.call, "signal", action="pause_all")
        await wait_producer(node, "other", "pause_all", paused=True)
        await in_thread(fx.call, "signal", action="resume", queue="py", node="py-1")
        await wait_producer(node, "py", "a resume targeted at this node", paused=False)
        row = await eventually(
            lambda: (r := job_row(database_url, schema, job["id"]))["state"] == "completed" and r,
            what="the job to run once its queue was resumed",
        )
        assert row["attempted_by"][0] == "py-1"
        assert node.check_queue("py") == {
            "queue": "py",
            "limit": 4,
            "paused": False,
            "node": "py-1",
            "uuid": node.producers["py"].uuid,
            "running": [],
        }
        await in_thread(fx.call, "signal", action="resume_all")
        await wait_producer(node, "other", "resume_all", paused=False)


def test_python_pauses_scales_and_resumes_an_elixir_queue(
    fx: ElixirFixture, conn: Conn, schema: str
) -> None:
    fx.call("start_queue", queue="ex", limit=2)

    def check() -> dict[str, Any]:
        queue: dict[str, Any] = fx.call("check_queue", queue="ex")["queue"]
        return queue

    send_signal(conn, schema, signal_payload("pause", "ex"))
    wait_until(lambda: check()["paused"], what="the fixture to obey Python's pause")
    job = insert(conn, Job.new(ECHO, {}, queue="ex"), prefix=schema)
    send_signal(conn, schema, signal_payload("scale", "ex", limit=5))
    wait_until(lambda: check()["limit"] == 5, what="the fixture to obey Python's scale")
    send_signal(conn, schema, signal_payload("resume", "ex", node="elsewhere"))
    send_signal(conn, schema, signal_payload("scale", "ex", node="vm", limit=3))
    wait_until(lambda: check()["limit"] == 3, what="a scale targeted at node vm")
    assert check()["paused"] is True  # the resume for node `elsewhere` was not for it
    assert fx.jobs([job.id or 0])[0]["state"] == "available"

    send_signal(conn, schema, signal_payload("resume", "ex", node="vm"))
    row = wait_until(
        lambda: (r := fx.jobs([job.id or 0])[0])["state"] == "completed" and r,
        what="the fixture to run the job once Python resumed the queue",
    )
    assert row["attempted_by"][0] == "vm"


def test_signal_payloads_are_byte_identical(fx: ElixirFixture) -> None:
    """What Python sends for each queue call is exactly what the fixture (Oban) sends."""
    calls: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"action": "pause", "queue": "q"}, signal_payload("pause", "q")),
        ({"action": "resume", "queue": "q"}, signal_payload("resume", "q")),
        ({"action": "scale", "queue": "q", "limit": 7}, signal_payload("scale", "q", limit=7)),
        (
            {"action": "scale", "queue": "q", "limit": 2, "node": "n1"},
            signal_payload("scale", "q", limit=2, node="n1"),
        ),
        ({"action": "pause", "queue": "q", "node": "n1"}, signal_payload("pause", "q", node="n1")),
        ({"action": "start", "queue": "q", "limit": 2}, signal_payload("start", "q", limit=2)),
        ({"action": "stop", "queue": "q"}, signal_payload("stop", "q")),
    ]
    for fixture_call, payload in calls:
        [sent] = fx.call("signal", **fixture_call)["payloads"]
        assert notify.encode(payload) == sent, fixture_call


def test_python_cancel_kills_a_job_running_in_the_fixture(
    fx: ElixirFixture, conn: Conn, schema: str
) -> None:
    [job] = fx.enqueue([{"worker": ECHO, "queue": "golden", "args": {"sleep": 5000}}])
    fx.call("start_queue", queue="golden", limit=1)
    wait_until(
        lambda: fx.call("check_queue", queue="golden")["queue"]["running"] == [job["id"]],
        what="the job to run in the fixture",
    )
    assert cancel_jobs(conn, schema, [job["id"]]) == [job["id"]]
    row = wait_until(
        lambda: (r := fx.jobs([job["id"]])[0])["errors"] and r,
        what="the fixture to ack the killed job",
    )
    assert_row_like(row, GOLDEN_CANCELLED, NAMES, other_args=True)
    assert fx.call("check_queue", queue="golden")["queue"]["running"] == []


async def test_fixture_cancel_kills_a_job_running_in_python(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    # Node `vm`, as in the golden capture, so attempted_by compares whole.
    async with node_for(database_url, schema, {"golden": 1}, "vm") as node:
        [job] = await in_thread(
            fx.enqueue, [{"worker": ECHO, "queue": "golden", "args": {"sleep": 5000}}]
        )
        await eventually(
            lambda: job["id"] in node.producers["golden"].running, what="Python to run the job"
        )
        reply = await in_thread(fx.call, "cancel_job", job_id=job["id"])
        assert reply["cancelled"] == [{"id": job["id"], "queue": "golden", "state": "executing"}]
        assert reply["payloads"] == [f'{{"action":"pkill","job_id":{job["id"]}}}']
        row = await eventually(
            lambda: (r := fx.jobs([job["id"]])[0])["errors"] and r,
            what="Python to ack the killed job",
        )
        assert node.producers["golden"].running == {}
    assert_row_like(row, GOLDEN_CANCELLED, NAMES, other_args=True)
