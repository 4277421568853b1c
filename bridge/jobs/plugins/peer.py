"""Leadership in ``oban_peers``, as Oban's Database peer does it, under this node's own name.

Oban elects one leader per instance name: whoever holds the unexpired row for that name. Python
nodes elect under their own name (default ``"Bridge"``), so a Python leader and an Elixir leader
never contend, and each side's leader-only plugins (lifeline, pruner, cron) keep running.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bridge.jobs import queries
from bridge.jobs.plugins import Plugin
from bridge.wire import notify
from bridge.wire.timefmt import utc_now

DELETE_EXPIRED = "DELETE FROM {prefix}.oban_peers WHERE name = %(name)s AND expires_at < %(now)s"

# Insert our row, or extend it if we already lead; a row held by another node is left alone.
UPSERT_PEER = """
INSERT INTO {prefix}.oban_peers AS p (name, node, started_at, expires_at)
VALUES (%(name)s, %(node)s, %(now)s, %(expires_at)s)
ON CONFLICT (name) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE p.node = EXCLUDED.node
RETURNING p.node
"""

DELETE_SELF = "DELETE FROM {prefix}.oban_peers WHERE name = %(name)s AND node = %(node)s"


class Peer(Plugin):
    name = "peer"

    def __init__(self, peer_name: str = "Bridge", interval: float = 30.0) -> None:
        super().__init__(interval)
        self.peer_name = peer_name
        self.leader = False

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
            self.leader = (await cur.fetchone()) is not None
        return self.leader

    def next_interval(self) -> float:
        """A leader re-checks twice as often, as Oban's ``leader_boost`` does."""
        return self.interval / 2 if self.leader else self.interval

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
        self.leader = False
