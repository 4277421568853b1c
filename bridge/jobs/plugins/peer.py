"""Leadership in ``oban_peers``, as Oban's Database peer does it, under this node's own name.

Oban elects one leader per instance name: whoever holds the unexpired row for that name. Python
nodes elect under their own name (default ``"Bridge"``), so a Python leader and an Elixir leader
never contend, and each side's leader-only plugins (stager, lifeline, pruner, cron) keep running.

Handover is as quick as Oban's lease allows. A leader that stops deletes its row and NOTIFYs
``leader`` ``{"down": name}``; the other nodes hear it and hold an election at once (as Oban's
peer does), so a graceful stop hands over within milliseconds. A leader that dies without a
word (SIGKILL, lost host) leaves its row until it expires, ``interval`` seconds after its last
renewal (it renews every ``interval / 2``); a follower schedules its next election for that
expiry rather than a whole interval later, so it leads at most ``interval`` seconds after the
death. Whenever leadership changes, every plugin of the node is woken, so leader-only plugins
run at once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from bridge.jobs import queries
from bridge.jobs.plugins import NodeView, Plugin
from bridge.wire import notify
from bridge.wire.timefmt import utc_now

log = logging.getLogger("bridge.plugins")

DELETE_EXPIRED = "DELETE FROM {prefix}.oban_peers WHERE name = %(name)s AND expires_at < %(now)s"

# Insert our row, or extend it if we already lead; a row held by another node is left alone.
UPSERT_PEER = """
INSERT INTO {prefix}.oban_peers AS p (name, node, started_at, expires_at)
VALUES (%(name)s, %(node)s, %(now)s, %(expires_at)s)
ON CONFLICT (name) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE p.node = EXCLUDED.node
RETURNING p.node
"""

HOLDER_EXPIRES = "SELECT expires_at FROM {prefix}.oban_peers WHERE name = %(name)s"

# A follower's election comes this long after the holder's row expires (DELETE_EXPIRED wants
# expires_at strictly in the past), and never sooner than this after the previous one.
EXPIRY_MARGIN = 0.05

DELETE_SELF = "DELETE FROM {prefix}.oban_peers WHERE name = %(name)s AND node = %(node)s"


class Peer(Plugin):
    name = "peer"

    def __init__(self, peer_name: str = "Bridge", interval: float = 30.0) -> None:
        super().__init__(interval)
        self.peer_name = peer_name
        self.leader = False
        self.holder_expires_at: datetime | None = None  # the other leader's, when following

    def start(self, node: NodeView) -> None:
        node.listen(self._on_leader)  # through the node's own LISTEN connection
        super().start(node)

    def _on_leader(self, channel: str, payload: dict[str, Any]) -> None:
        """A leader of our name stepped down: elect now, not at the next interval."""
        if channel == "leader" and payload.get("down") == self.peer_name and not self.leader:
            self.wake_up()

    async def tick(self) -> bool:
        node = self.node
        assert node is not None
        now = utc_now()
        params: dict[str, Any] = {
            "name": self.peer_name,
            "node": node.config.node,
            "now": now,
            "expires_at": now + timedelta(seconds=self.interval),
        }
        async with node.pool.connection() as conn, conn.transaction():
            await conn.execute(queries.render(DELETE_EXPIRED, node.prefix), params)
            cur = await conn.execute(queries.render(UPSERT_PEER, node.prefix), params)
            leader = (await cur.fetchone()) is not None
            self.holder_expires_at = None
            if not leader:
                cur = await conn.execute(queries.render(HOLDER_EXPIRES, node.prefix), params)
                row = await cur.fetchone()
                self.holder_expires_at = row[0] if row is not None else None
        self._set_leader(leader)
        return self.leader

    def _set_leader(self, leader: bool) -> None:
        """Record leadership; on a change, wake every plugin so leader-only ones act at once."""
        if leader == self.leader:
            return
        self.leader = leader
        node = self.node
        assert node is not None
        log.info(
            "node %s %s leadership of %s",
            node.config.node,
            "took" if leader else "lost",
            self.peer_name,
        )
        for plugin in node.plugins:
            if plugin is not self:
                plugin.wake_up()

    def next_interval(self) -> float:
        """A leader renews twice as often as its lease, as Oban's ``leader_boost`` does; a
        follower elects again when the leader's lease runs out, or after ``interval``."""
        if self.leader:
            return self.interval / 2
        if self.holder_expires_at is None:
            return self.interval
        remaining = (self.holder_expires_at - utc_now()).total_seconds() + EXPIRY_MARGIN
        return min(self.interval, max(EXPIRY_MARGIN, remaining))

    async def stop(self) -> None:
        await super().stop()
        node = self.node
        if node is None or not self.leader:
            return
        params = {"name": self.peer_name, "node": node.config.node}
        async with node.pool.connection() as conn, conn.transaction():
            await conn.execute(queries.render(DELETE_SELF, node.prefix), params)
            await conn.execute(
                queries.NOTIFY,
                {
                    "channel": notify.channel(node.prefix, "leader"),
                    "payload": notify.encode({"down": self.peer_name}),
                },
            )
        self._set_leader(False)
