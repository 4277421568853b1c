"""The Stager stages on the leader only, as Oban 2.23's ``Oban.Stager`` does
(``stage_and_notify/2``: a follower sends no staging statement), and a follower's queues still
run what becomes available, since its producers poll on their own."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg
from psycopg import sql

from bridge import Job, Registry, insert, worker
from bridge.jobs.plugins.peer import Peer
from bridge.jobs.plugins.stager import Stager
from bridge.wire import notify
from bridge.wire.timefmt import utc_now
from tests.jobs.support import job_row, running_node, wait_for_state

Conn = psycopg.Connection[tuple[object, ...]]

# Long enough for ten ticks of a 0.1 s Stager and five polls of the nodes' 0.2 s producers.
QUIET_WINDOW = 1.0


def make_registry() -> Registry:
    registry = Registry()

    @worker(name="t.Ok", queue="q", registry=registry)
    def ok(job: Job) -> None:
        return None

    @worker(name="t.FailsOnce", queue="q", backoff=lambda job: 1, registry=registry)
    def fails_once(job: Job) -> None:
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")

    return registry


REGISTRY = make_registry()


class CountingStager(Stager):
    """A Stager that records each tick it runs and the queues each staged."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(interval=interval)
        self.staged: list[list[str]] = []

    async def tick(self) -> list[str]:
        queues = await super().tick()
        self.staged.append(queues)
        return queues


def hold_leadership(conn: Conn, prefix: str, node: str) -> None:
    """Another Python node leads ``Bridge`` for the next five minutes."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_peers VALUES ('Bridge', %s, now() at time zone 'utc', "
            "now() at time zone 'utc' + interval '5 minutes')"
        ).format(sql.Identifier(prefix)),
        (node,),
    )


def step_down(conn: Conn, prefix: str, node: str) -> None:
    """What a stopping leader does (``Peer.stop``): delete its row and say so on ``leader``."""
    conn.execute(
        sql.SQL("DELETE FROM {}.oban_peers WHERE name = 'Bridge' AND node = %s").format(
            sql.Identifier(prefix)
        ),
        (node,),
    )
    conn.execute(
        "SELECT pg_notify(%s, %s)",
        (notify.channel(prefix, "leader"), notify.encode({"down": "Bridge"})),
    )


def due_job(conn: Conn, prefix: str) -> int:
    """A ``scheduled`` job already due: any leader's next round stages it."""
    job = insert(
        conn,
        Job.new("t.Ok", {}, queue="q", scheduled_at=utc_now() - timedelta(seconds=1)),
        prefix=prefix,
    )
    assert job.id is not None
    return job.id


async def test_a_follower_does_not_stage_until_it_leads(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    hold_leadership(conn, oban_prefix, "py-other")
    stager, peer = CountingStager(), Peer()
    async with running_node(
        database_url, oban_prefix, {"q": 1}, REGISTRY, node="py-1", plugins=[stager, peer]
    ) as node:
        assert await peer.tick() is False
        job_id = due_job(conn, oban_prefix)
        # Neither its own rounds nor a direct call stage anything while another node leads.
        assert await stager.tick() == []
        await asyncio.sleep(QUIET_WINDOW)
        assert job_row(database_url, oban_prefix, job_id)["state"] == "scheduled"
        assert all(queues == [] for queues in stager.staged)

        # The leader stops: this node elects at once, and its first round as leader stages.
        step_down(conn, oban_prefix, "py-other")
        row = await wait_for_state(database_url, oban_prefix, job_id, {"completed"})
        assert node.is_leader()
        assert ["q"] in stager.staged
    assert row["attempted_by"][0] == "py-1"


async def test_of_two_nodes_only_the_leader_stages(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    leader_stager, follower_stager = CountingStager(), CountingStager()
    async with running_node(
        database_url,
        oban_prefix,
        {"other": 1},
        REGISTRY,
        node="a",
        plugins=[leader_stager, Peer()],
    ) as leader:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not leader.is_leader():
            assert loop.time() - start < 10, "the first node never led"
            await asyncio.sleep(0.05)
        follower_peer = Peer()
        async with running_node(
            database_url,
            oban_prefix,
            {"q": 1},
            REGISTRY,
            node="b",
            plugins=[follower_stager, follower_peer],
        ):
            assert await follower_peer.tick() is False
            # The job's queue runs only on the follower; the leader's round stages it and its
            # oban_insert wakes the follower's queue.
            staged_id = due_job(conn, oban_prefix)
            staged = await wait_for_state(database_url, oban_prefix, staged_id, {"completed"})
            # A job made available with no notification at all still runs there: the
            # follower's producer polls on its own, so its queue never waits on a stager.
            silent_id = insert_available_silently(conn, oban_prefix)
            silent = await wait_for_state(database_url, oban_prefix, silent_id, {"completed"})
    assert staged["attempted_by"][0] == silent["attempted_by"][0] == "b"
    assert ["q"] in leader_stager.staged
    assert follower_stager.staged == []  # the follower never ran a round


def insert_available_silently(conn: Conn, prefix: str) -> int:
    """An ``available`` row written without the ``oban_insert`` NOTIFY an insert sends."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_jobs (worker, queue, args, state) "
            "VALUES ('t.Ok', 'q', '{{}}', 'available') RETURNING id"
        ).format(sql.Identifier(prefix))
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


async def test_a_lone_node_runs_a_scheduled_job_and_a_retry(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    scheduled = insert(conn, Job.new("t.Ok", {}, queue="q", schedule_in=0.5), prefix=oban_prefix)
    flaky = insert(conn, Job.new("t.FailsOnce", {}, queue="q"), prefix=oban_prefix)
    assert scheduled.id is not None and flaky.id is not None
    # The default plugins: its Peer makes it leader of Bridge, so its Stager stages.
    async with running_node(database_url, oban_prefix, {"q": 2}, REGISTRY, node="py-1") as node:
        done = await wait_for_state(database_url, oban_prefix, scheduled.id, {"completed"})
        retried = await wait_for_state(database_url, oban_prefix, flaky.id, {"completed"})
        assert node.is_leader()
    assert done["attempt"] == 1
    assert retried["attempt"] == 2
    assert len(retried["errors"]) == 1


async def test_a_node_without_a_peer_plugin_leads_and_stages(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    # No Peer: the node counts as alone and leads (Node.is_leader), so a Stager listed without
    # one still stages, even while another node leads Bridge.
    hold_leadership(conn, oban_prefix, "py-other")
    stager = CountingStager()
    async with running_node(
        database_url, oban_prefix, {"q": 1}, REGISTRY, node="py-1", plugins=[stager]
    ) as node:
        job_id = due_job(conn, oban_prefix)
        row = await wait_for_state(database_url, oban_prefix, job_id, {"completed"})
        assert node.is_leader()
    assert ["q"] in stager.staged
    assert row["attempted_by"][0] == "py-1"
