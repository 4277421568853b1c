"""Leadership, sonar and gossip as Oban nodes write and read them."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bridge.jobs.client.registry import Registry
from bridge.jobs.plugins.gossip import Gossip
from bridge.jobs.plugins.peer import Peer
from bridge.jobs.plugins.sonar import Sonar
from tests.jobs.support import as_elixir_json, golden_check, running_node

Conn = psycopg.Connection[tuple[object, ...]]
GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden" / "peers-and-leader"


def golden_notifications(channel: str) -> list[str]:
    out = []
    for line in (GOLDEN / "s8_notify.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("channel") == f"public.oban_{channel}":
            out.append(record["payload"])
    return out


def listen(url: str, prefix: str, channel: str) -> psycopg.Connection[tuple[object, ...]]:
    listener = psycopg.connect(url, autocommit=True)
    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"{prefix}.oban_{channel}")))
    return listener


async def test_peer_row_and_leader_down_like_oban(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    # An Elixir leader already holds "Oban": a Python node leads under its own name beside it.
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_peers VALUES ('Oban', 'vm', now() at time zone 'utc', "
            "now() at time zone 'utc' + interval '30 seconds')"
        ).format(sql.Identifier(oban_prefix))
    )
    listener = listen(database_url, oban_prefix, "leader")
    try:
        peer = Peer(peer_name="Bridge")
        async with running_node(
            database_url, oban_prefix, {"q": 1}, Registry(), node="py-1", plugins=[peer]
        ) as node:
            assert await peer.tick() is True
            assert node.is_leader()
            with conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(
                    sql.SQL("SELECT * FROM {}.oban_peers ORDER BY name").format(
                        sql.Identifier(oban_prefix)
                    )
                ).fetchall()
        down = [n.payload for n in listener.notifies(timeout=1.0, stop_after=1)]
    finally:
        listener.close()
    golden = json.loads(
        (GOLDEN / "s8_oban_peers_snapshots.jsonl").read_text().splitlines()[0].split(" ", 1)[1]
    )
    bridge_row = next(r for r in rows if r["name"] == "Bridge")
    assert set(bridge_row) == set(golden)
    assert bridge_row["node"] == "py-1"
    # started_at stays from the first election; each renewal moves expires_at to now + 30 s.
    lease = bridge_row["expires_at"] - bridge_row["started_at"]
    assert timedelta(seconds=30) <= lease < timedelta(seconds=31)
    assert [r["name"] for r in rows] == ["Bridge", "Oban"]  # the Elixir leader is untouched
    # Same shape as Oban's {"down":"Oban"} when its leader stops.
    assert golden_notifications("leader")[-1] == '{"down":"Oban"}'
    assert down == ['{"down":"Bridge"}']
    remaining = conn.execute(
        sql.SQL("SELECT name FROM {}.oban_peers").format(sql.Identifier(oban_prefix))
    ).fetchall()
    assert remaining == [("Oban",)]


async def test_second_python_node_does_not_take_leadership(
    oban_prefix: str, database_url: str
) -> None:
    first, second = Peer(), Peer()
    async with (
        running_node(database_url, oban_prefix, {"q": 1}, Registry(), node="a", plugins=[first]),
        running_node(database_url, oban_prefix, {"q": 1}, Registry(), node="b", plugins=[second]),
    ):
        assert await first.tick() is True
        assert await second.tick() is False
        assert await first.tick() is True


async def test_sonar_ping_and_default_node_sends_no_gossip(
    oban_prefix: str, database_url: str
) -> None:
    sonar_listener = listen(database_url, oban_prefix, "sonar")
    gossip_listener = listen(database_url, oban_prefix, "gossip")
    try:
        async with running_node(
            database_url, oban_prefix, {"golden": 2}, Registry(), node="vm"
        ) as node:  # the default plugins
            assert [type(p).__name__ for p in node.plugins] == ["Stager", "Peer", "Sonar"]
            [sonar] = [p for p in node.plugins if isinstance(p, Sonar)]
            await sonar.tick()
            await asyncio.sleep(1.0)  # longer than oban_met's 0.75 s round
        pings = [n.payload for n in sonar_listener.notifies(timeout=0.5)]
        gossip = [n.payload for n in gossip_listener.notifies(timeout=0.5)]
    finally:
        sonar_listener.close()
        gossip_listener.close()
    # Byte-identical to an Elixir node named "vm" pinging.
    assert set(pings) == set(golden_notifications("sonar")[:1]) == {'{"node":"vm","ping":true}'}
    # OSS Oban 2.23.1 sends nothing on oban_gossip (its Gossip plugin is a no-op); neither do we.
    assert gossip == []


async def test_gossip_sends_oban_mets_examiner_payload(oban_prefix: str, database_url: str) -> None:
    gossip_listener = listen(database_url, oban_prefix, "gossip")
    try:
        async with running_node(
            database_url, oban_prefix, {"golden": 2}, Registry(), node="vm", gossip=True
        ) as node:
            [gossip] = [p for p in node.plugins if isinstance(p, Gossip)]
            assert gossip.interval == 0.75  # Oban.Met.Examiner's interval
            assert await gossip.tick() == 1
            producer = node.producers["golden"]
        raw = [n.payload for n in gossip_listener.notifies(timeout=1.0)]
    finally:
        gossip_listener.close()
    assert raw
    payload = json.loads(raw[-1])
    [check] = payload["checks"]  # one message per round, every queue's check in it
    assert list(payload) == ["checks"]
    golden = {key: as_elixir_json(value) for key, value in golden_check().items()}
    assert list(check) == sorted(golden)  # the same keys, in Elixir's small-map order
    assert check["name"] == golden["name"] == "Oban"  # inspect(Oban), as the examiner sends it
    assert check["refresh_interval"] == golden["refresh_interval"] == 60000
    assert check["shutdown_started_at"] is golden["shutdown_started_at"] is None
    for key in ("started_at", "updated_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", check[key])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(golden[key]))
    assert (check["node"], check["queue"], check["limit"], check["paused"]) == (
        "vm",
        "golden",
        2,
        False,
    )
    assert (check["uuid"], check["running"]) == (producer.uuid, [])
    # Plain JSON below 512 bytes, keys sorted as Elixir writes a small map.
    assert raw[-1].startswith(
        '{"checks":[{"limit":2,"name":"Oban","node":"vm","paused":false,"queue":"golden",'
        '"refresh_interval":60000,"running":[],"shutdown_started_at":null,"started_at":"'
    )


async def test_pruner_deletes_what_obans_pruner_deletes(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    from bridge.jobs.plugins.pruner import Pruner

    ident = sql.Identifier(oban_prefix)
    old = "now() at time zone 'utc' - interval '2 minutes'"
    conn.execute(
        sql.SQL(
            "INSERT INTO {p}.oban_jobs (worker, state, scheduled_at, completed_at, cancelled_at, "
            "discarded_at) VALUES "
            f"('old-completed', 'completed', {old}, {old}, NULL, NULL), "
            f"('old-cancelled', 'cancelled', now() at time zone 'utc', NULL, {old}, NULL), "
            f"('old-discarded', 'discarded', now() at time zone 'utc', NULL, NULL, {old}), "
            "('new-completed', 'completed', now() at time zone 'utc', now() at time zone 'utc', "
            "NULL, NULL), "
            f"('old-available', 'available', {old}, NULL, NULL, NULL), "
            f"('old-retryable', 'retryable', {old}, NULL, NULL, NULL)"
        ).format(p=ident)
    )
    pruner = Pruner(max_age=60)
    async with running_node(database_url, oban_prefix, {"q": 1}, Registry(), plugins=[pruner]):
        await pruner.tick()
    left = [
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT worker FROM {}.oban_jobs ORDER BY id").format(ident)
        ).fetchall()
    ]
    # Finished jobs older than max_age go, each aged by its own timestamp; nothing else does.
    assert left == ["new-completed", "old-available", "old-retryable"]


async def test_a_follower_elects_again_when_the_leaders_lease_ends(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    # Another Python node holds "Bridge" for 4 more seconds, then is gone without a word.
    ident = sql.Identifier(oban_prefix)
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_peers VALUES ('Bridge', 'py-other', now() at time zone 'utc', "
            "now() at time zone 'utc' + interval '4 seconds')"
        ).format(ident)
    )
    peer = Peer()
    async with running_node(
        database_url, oban_prefix, {"q": 1}, Registry(), node="py-1", plugins=[peer]
    ) as node:
        assert await peer.tick() is False
        assert 3 < peer.next_interval() < 4.5  # the lease's end, not the 30 s interval
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not node.is_leader():
            assert loop.time() - start < 8, "no election at the lease's end"
            await asyncio.sleep(0.05)
        assert loop.time() - start < 4 + 2


async def test_the_pruner_prunes_as_soon_as_its_node_leads(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    from bridge.jobs.plugins.pruner import Pruner

    old = "now() at time zone 'utc' - interval '2 minutes'"
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_jobs (worker, state, scheduled_at, completed_at) "
            f"VALUES ('old-completed', 'completed', {old}, {old})"
        ).format(sql.Identifier(oban_prefix))
    )
    # Its interval is 30 s: only a first look at the moment of leadership prunes in time.
    async with running_node(
        database_url,
        oban_prefix,
        {"q": 1},
        Registry(),
        plugins=[Peer(), Pruner(max_age=60, interval=30)],
    ):
        loop = asyncio.get_running_loop()
        start = loop.time()
        count = sql.SQL("SELECT count(*) FROM {}.oban_jobs").format(sql.Identifier(oban_prefix))
        while conn.execute(count).fetchone() != (0,):
            assert loop.time() - start < 5, "not pruned"
            await asyncio.sleep(0.05)
