"""How late a job left executing by a dead node is rescued, with real nodes and real rows.

The bound the docs state: within ``rescue_after + rescue_interval``, plus, when the leader
itself died without a word, the time its ``oban_peers`` row takes to expire. Each test asserts
an upper bound with generous slack, far below the old behaviour (a new node always waited a
whole 60 s interval; a follower took up to 30 s to notice that a leader had stopped).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bridge.jobs.client.registry import Registry
from bridge.jobs.node import Node, NodeConfig
from bridge.jobs.plugins.lifeline import Lifeline, default_interval
from bridge.jobs.plugins.peer import Peer
from tests.jobs.support import job_row, running_node, wait_for_state
from tests.support.cli import ROOT, bridge_script, run_bridge

Conn = psycopg.Connection[tuple[object, ...]]


def orphan(conn: Conn, prefix: str, *, age: float = 0.0, queue: str = "orphans") -> int:
    """A job claimed ``age`` seconds ago by a producer of a node that died: never acked."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_jobs (worker, queue, state, attempt, max_attempts, "
            "attempted_at, attempted_by) VALUES ('Dead.Worker', %s, 'executing', 1, 5, "
            "(now() at time zone 'utc') - make_interval(secs => %s), ARRAY['dead-node', %s]) "
            "RETURNING id"
        ).format(sql.Identifier(prefix)),
        (queue, age, str(uuid.uuid4())),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def leader_of(conn: Conn, prefix: str, name: str = "Bridge") -> str | None:
    row = conn.execute(
        sql.SQL("SELECT node FROM {}.oban_peers WHERE name = %s").format(sql.Identifier(prefix)),
        (name,),
    ).fetchone()
    return None if row is None else str(row[0])


async def until(predicate: object, timeout: float) -> float:
    """Seconds until ``predicate()`` holds; AssertionError after ``timeout``."""
    assert callable(predicate)
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def test_default_interval_is_a_tenth_of_rescue_after_between_1_and_60_seconds() -> None:
    assert [default_interval(s) for s in (0.5, 5, 30, 300, 600, 3600)] == [
        1.0,
        1.0,
        3.0,
        30.0,
        60.0,
        60.0,
    ]
    assert Lifeline(rescue_after=30).interval == 3.0
    assert Lifeline(rescue_after=30, interval=7).interval == 7


async def test_a_node_started_after_the_orphan_rescues_it_within_rescue_after_plus_interval(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    # The default interval for rescue_after=2 is 1 s: rescued by about 3 s after the claim.
    job = orphan(conn, oban_prefix)
    created = time.monotonic()
    async with running_node(
        database_url,
        oban_prefix,
        {"elsewhere": 1},
        Registry(),
        node="py-new",
        plugins=[Peer(), Lifeline(rescue_after=2)],
    ):
        await wait_for_state(database_url, oban_prefix, job, {"available"}, timeout=20)
    assert time.monotonic() - created < 2 + 1 + 3  # rescue_after + interval + slack
    row = job_row(database_url, oban_prefix, job)
    assert (row["attempt"], row["errors"], row["attempted_by"][0]) == (1, [], "dead-node")


async def test_first_look_comes_as_soon_as_the_node_leads_not_an_interval_later(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    # Already rescuable when the node starts; the 30 s interval must not delay the first look.
    job = orphan(conn, oban_prefix, age=10)
    started = time.monotonic()
    async with running_node(
        database_url,
        oban_prefix,
        {"elsewhere": 1},
        Registry(),
        node="py-new",
        plugins=[Peer(), Lifeline(rescue_after=5, interval=30)],
    ):
        await wait_for_state(database_url, oban_prefix, job, {"available"}, timeout=20)
    assert time.monotonic() - started < 5


async def test_a_graceful_leader_stop_hands_over_at_once_and_the_new_leader_rescues(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    # The leader has no lifeline; the follower's looks every 30 s, and its peer re-elects every
    # 30 s: only the `leader` NOTIFY and the wake-up on leadership can make this quick.
    a = Node(
        NodeConfig(
            url=database_url,
            queues={"q": 1},
            prefix=oban_prefix,
            registry=Registry(),
            node="py-a",
            plugins=[Peer()],
            shutdown_grace=2,
        )
    )
    await a.start()
    stopped = False
    try:
        await until(a.is_leader, 10)
        follower = Peer()
        async with running_node(
            database_url,
            oban_prefix,
            {"elsewhere": 1},
            Registry(),
            node="py-b",
            plugins=[follower, Lifeline(rescue_after=1, interval=30)],
        ) as b:
            await until(lambda: follower.holder_expires_at is not None, 10)
            # the node's LISTEN connection, which hears `leader` for its Peer
            await asyncio.wait_for(b.notifier.connected.wait(), 10)
            assert not b.is_leader()
            job = orphan(conn, oban_prefix, age=5)
            await asyncio.sleep(0.5)
            assert job_row(database_url, oban_prefix, job)["state"] == "executing"
            await a.stop()
            stopped = True
            handover = await until(b.is_leader, 10)
            assert handover < 2
            await wait_for_state(database_url, oban_prefix, job, {"available"}, timeout=3)
            assert leader_of(conn, oban_prefix) == "py-b"
    finally:
        if not stopped:
            await a.stop()


def worker_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL")}
    env["BRIDGE_DATABASE_URL"] = database_url
    return env


@contextmanager
def bridge_worker(
    database_url: str, prefix: str, scratch: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``bridge --prefix P worker ARGS`` run as a user runs it (from outside the repository);
    killed afterwards if it still runs."""
    scratch.mkdir(exist_ok=True)
    assert ROOT not in scratch.resolve().parents
    process = subprocess.Popen(
        [bridge_script(), "--prefix", prefix, "worker", *args],
        cwd=scratch,
        env={**worker_env(database_url), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.fixture
def killed_leader(oban_prefix: str, database_url: str, tmp_path: Path) -> Iterator[int]:
    """A `bridge worker` subprocess leading ``Bridge``: yields its pid; killed afterwards."""
    with bridge_worker(
        database_url, oban_prefix, tmp_path / "scratch", "-q", "q:1", "--node", "py-doomed"
    ) as process:
        yield process.pid


async def test_bridge_worker_started_after_the_orphan_rescues_it_in_rescue_after_plus_interval(
    conn: Conn, oban_prefix: str, database_url: str, tmp_path: Path
) -> None:
    # --rescue-after 2 gives a 1 s interval: rescued about 3 s after the claim (plus start-up).
    job = orphan(conn, oban_prefix)
    created = time.monotonic()
    args = ("-q", "elsewhere:1", "--node", "py-new", "--rescue-after", "2")
    with bridge_worker(database_url, oban_prefix, tmp_path / "scratch", *args):
        await wait_for_state(database_url, oban_prefix, job, {"available"}, timeout=30)
    assert time.monotonic() - created < 2 + 1 + 6  # rescue_after + interval + start-up slack


async def test_rescue_interval_from_the_environment_is_the_lifelines(
    conn: Conn, oban_prefix: str, database_url: str, tmp_path: Path
) -> None:
    # rescue_after 100 would look every 10 s by default; BRIDGE_RESCUE_INTERVAL=1 looks each
    # second, so a job that becomes rescuable after start-up is rescued within about a second.
    job = orphan(conn, oban_prefix, age=95)
    created = time.monotonic()
    args = ("-q", "elsewhere:1", "--node", "py-new", "--rescue-after", "100")
    env = {"BRIDGE_RESCUE_INTERVAL": "1"}
    with bridge_worker(database_url, oban_prefix, tmp_path / "scratch", *args, env=env):
        await wait_for_state(database_url, oban_prefix, job, {"available"}, timeout=30)
    assert time.monotonic() - created < 5 + 1 + 3


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ("--rescue-interval", "5"),
            {},
            "Invalid value for --rescue-interval: the lifeline is off: give --rescue-after too, "
            "or drop --rescue-interval",
        ),
        (
            ("--rescue-after", "5"),
            {"BRIDGE_RESCUE_INTERVAL": "0"},
            "environment variable BRIDGE_RESCUE_INTERVAL='0': must be a positive number",
        ),
    ],
)
def test_rescue_interval_refused_with_one_line(
    tmp_path: Path, database_url: str, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_bridge(
        "worker",
        "-q",
        "a",
        *args,
        cwd=tmp_path,
        env={"BRIDGE_DATABASE_URL": database_url, **env},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"Error: {message}"


def test_help_states_the_rescue_bound(tmp_path: Path) -> None:
    result = run_bridge("worker", "--help", cwd=tmp_path, env={"COLUMNS": "200"})
    text = " ".join(result.stdout.split())
    assert (
        "A job left executing by a dead node is available again within rescue-after + "
        "rescue-interval seconds, plus up to 30 s (the leader's lease) when the leader itself "
        "was killed." in text
    )
    assert "BRIDGE_RESCUE_INTERVAL rescue_interval rescue_after/10, 1-60" in text


async def test_a_killed_leader_is_replaced_when_its_lease_expires(
    conn: Conn, oban_prefix: str, database_url: str, killed_leader: int
) -> None:
    await until(lambda: leader_of(conn, oban_prefix) == "py-doomed", 30)
    # Start the follower a third into the lease, so that its periodic elections (every 30 s
    # from its start) fall well after the lease's end: only an election timed to the expiry
    # takes over within the slack below.
    await asyncio.sleep(10)
    follower = Peer()
    async with running_node(
        database_url,
        oban_prefix,
        {"elsewhere": 1},
        Registry(),
        node="py-survivor",
        plugins=[follower, Lifeline(rescue_after=1, interval=60)],
    ) as survivor:
        await until(lambda: follower.holder_expires_at is not None, 10)
        job = orphan(conn, oban_prefix, age=5)
        os.kill(killed_leader, signal.SIGKILL)
        # The dead leader's row says when it may be taken over: no later than 30 s from now.
        expires_at = conn.execute(
            sql.SQL(
                "SELECT extract(epoch FROM expires_at - (now() at time zone 'utc')) "
                "FROM {}.oban_peers WHERE name = 'Bridge'"
            ).format(sql.Identifier(oban_prefix))
        ).fetchone()
        assert expires_at is not None
        lease_left = float(str(expires_at[0]))
        assert lease_left <= 30.5
        takeover = await until(survivor.is_leader, 40)
        # Within a moment of the lease's end, not at the follower's next 30 s election.
        assert takeover < max(lease_left, 0) + 2.5
        await wait_for_state(database_url, oban_prefix, job, {"available"}, timeout=3)
    assert leader_of(conn, oban_prefix) is None  # the survivor stepped down on its way out


async def test_orphans_are_rescued_while_nodes_are_killed_every_few_seconds(
    conn: Conn, oban_prefix: str, database_url: str, tmp_path: Path
) -> None:
    # Two `bridge worker`s at a time; every 2-5 s the oldest is SIGKILLed (leader or not) and a
    # new one starts. Each node lives far less than the old 60 s first interval. The bound:
    # rescue_after + interval + one lease (30 s) if a killed leader held it, plus start-up.
    rescue_after = 3
    jobs = [orphan(conn, oban_prefix) for _ in range(3)]
    created = time.monotonic()
    pick = random.Random(7)
    env = worker_env(database_url)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    alive: list[subprocess.Popen[bytes]] = []
    started = 0

    def spawn() -> None:
        nonlocal started
        started += 1
        args = ["-q", "elsewhere:1", "--node", f"py-churn-{started}"]
        alive.append(
            subprocess.Popen(
                [bridge_script(), "--prefix", oban_prefix, "worker", *args],
                cwd=scratch,
                env={**env, "BRIDGE_RESCUE_AFTER": str(rescue_after)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def rescued() -> bool:
        return all(job_row(database_url, oban_prefix, j)["state"] == "available" for j in jobs)

    try:
        spawn()
        spawn()
        next_kill = time.monotonic() + pick.uniform(2, 5)
        while not rescued():
            assert time.monotonic() - created < rescue_after + 1 + 30 + 8, "not rescued"
            if time.monotonic() >= next_kill:
                alive.pop(0).kill()
                spawn()
                next_kill = time.monotonic() + pick.uniform(2, 5)
            await asyncio.sleep(0.1)
    finally:
        for process in alive:
            process.kill()
            process.wait(10)
    assert started > 2  # nodes were killed while the orphans waited
