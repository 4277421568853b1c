"""Who is running: the live nodes of both languages and the queues they serve.

Nothing records which nodes run: they announce themselves. :func:`observe` listens for a
bounded time to what they send (``oban_sonar`` pings, ``oban_gossip`` check-ins), then reads
``oban_peers`` (leadership) and the queues' job counts, keeping apart what each fact came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from bridge.jobs import queries
from bridge.wire import notify

# How often nodes announce themselves: Oban's Sonar and bridge's ping every 15 s; Oban Web's
# oban_met (and a Python node started with --gossip) sends every queue's check every 0.75 s
# (OSS Oban 2.23 alone sends no gossip at all).
SONAR_INTERVAL = 15.0
GOSSIP_INTERVAL = 0.75

_PEERS = """
SELECT name, node, to_jsonb(started_at) #>> '{{}}', to_jsonb(expires_at) #>> '{{}}',
       expires_at > (now() AT TIME ZONE 'UTC')
FROM {prefix}.oban_peers ORDER BY name, node
"""

# Jobs waiting in each queue (available, scheduled, retryable), and executing ones with the node
# that claimed them (attempted_by's first element): the one trace an Elixir node that sends no
# gossip leaves of what it serves.
_QUEUE_JOBS = """
SELECT queue, state::text, CASE WHEN state = 'executing' THEN attempted_by[1] END, count(*)
FROM {prefix}.oban_jobs WHERE state IN ('available', 'executing', 'scheduled', 'retryable')
GROUP BY 1, 2, 3
"""


@dataclass(frozen=True)
class CheckIn:
    """One queue on one node, from its latest gossip message (``Oban.check_queue/1``'s shape)."""

    node: str
    queue: str
    instance: str | None = None  # the Oban instance name (``Oban``), part of the node's ident
    limit: int | None = None
    paused: bool | None = None
    running: int | None = None
    uuid: str | None = None

    @property
    def ident(self) -> str | None:
        """What a signal aimed at this node carries (``Oban.vm``), when the name is known."""
        return f"{self.instance}.{self.node}" if self.instance else None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> CheckIn | None:
        node, queue = payload.get("node"), payload.get("queue")
        if not isinstance(node, str) or not isinstance(queue, str):
            return None
        name, limit, paused = payload.get("name"), payload.get("limit"), payload.get("paused")
        running, uuid = payload.get("running"), payload.get("uuid")
        return cls(
            node=node,
            queue=queue,
            instance=name if isinstance(name, str) else None,
            limit=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
            paused=paused if isinstance(paused, bool) else None,
            running=len(running) if isinstance(running, list) else None,
            uuid=uuid if isinstance(uuid, str) else None,
        )


@dataclass(frozen=True)
class PeerRow:
    """An ``oban_peers`` row: ``node`` leads instance name ``name`` until ``expires_at``."""

    name: str
    node: str
    started_at: str | None
    expires_at: str | None
    live: bool


@dataclass
class Cluster:
    """What ``observe`` heard and read: the live nodes of both languages and their queues."""

    waited: float
    pings: dict[str, int] = field(default_factory=dict)  # node -> sonar pings heard
    checkins: dict[tuple[str, str, str | None], CheckIn] = field(default_factory=dict)
    peers: list[PeerRow] = field(default_factory=list)
    available: dict[str, int] = field(default_factory=dict)  # queue -> available jobs
    scheduled: dict[str, int] = field(default_factory=dict)  # queue -> scheduled jobs
    retryable: dict[str, int] = field(default_factory=dict)  # queue -> retryable jobs
    # (queue, node) -> executing jobs
    executing: dict[tuple[str, str], int] = field(default_factory=dict)
    unreadable: int = 0  # notifications that were not Oban's shape

    def hear(self, channel: str, raw: str) -> None:
        """Take one notification on ``sonar`` or ``gossip``; anything else is ignored."""
        try:
            payload = notify.decode(raw)
        except notify.NotificationDecodeError:
            self.unreadable += 1
            return
        if channel == "sonar":
            node = payload.get("node")
            if isinstance(node, str):
                self.pings[node] = self.pings.get(node, 0) + 1
            else:
                self.unreadable += 1
        elif channel == "gossip":
            # oban_met's examiner sends {"checks": [...]}; Oban's Gossip plugin before 2.23 sent
            # one check per message.
            found = payload.get("checks")
            items = found if isinstance(found, list) else [payload]
            for item in items:
                check = CheckIn.from_payload(item) if isinstance(item, dict) else None
                if check is None:
                    self.unreadable += 1
                else:  # the latest message per producer wins
                    self.checkins[(check.node, check.queue, check.uuid)] = check

    def nodes(self) -> list[str]:
        """Every node seen alive: pinging, checking in, leading an unexpired peer row, or
        running jobs right now."""
        names = set(self.pings) | {c.node for c in self.checkins.values()}
        names |= {p.node for p in self.peers if p.live}
        names |= {node for _, node in self.executing if node}
        return sorted(names)

    def queues_of(self, node: str) -> list[CheckIn]:
        return sorted((c for c in self.checkins.values() if c.node == node), key=lambda c: c.queue)

    def serving(self, queue: str) -> list[CheckIn]:
        """The check-ins of ``queue`` (every queue for ``*``), by node."""
        found = (c for c in self.checkins.values() if queue == "*" or c.queue == queue)
        return sorted(found, key=lambda c: (c.node, c.queue))


def observe(conn: psycopg.Connection[Any], prefix: str, wait: float) -> Cluster:
    """Listen ``wait`` seconds to the sonar and gossip channels, then read ``oban_peers`` and
    the queues' job counts. ``conn`` must be in autocommit mode (notifications arrive only
    outside a transaction)."""
    cluster = Cluster(waited=wait)
    if wait > 0:
        channels = {notify.channel(prefix, name): name for name in ("sonar", "gossip")}
        for full in channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(full)))
        try:
            for note in conn.notifies(timeout=wait):
                cluster.hear(channels.get(note.channel, ""), note.payload)
        finally:
            conn.execute("UNLISTEN *")
    rows = conn.execute(queries.render(_PEERS, prefix)).fetchall()
    cluster.peers = [PeerRow(*row) for row in rows]
    for queue, state, node, count in conn.execute(queries.render(_QUEUE_JOBS, prefix)):
        waiting = {
            "available": cluster.available,
            "scheduled": cluster.scheduled,
            "retryable": cluster.retryable,
        }.get(state)
        if waiting is not None:
            waiting[queue] = waiting.get(queue, 0) + count
        else:
            key = (queue, node or "")  # "": attempted_by empty (a row set by hand)
            cluster.executing[key] = cluster.executing.get(key, 0) + count
    return cluster
