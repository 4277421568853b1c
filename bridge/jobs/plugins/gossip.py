"""Broadcast each queue's check on ``oban_gossip``, as Oban's Gossip plugin did before 2.23.

OSS Oban 2.23 no longer sends gossip itself (golden ``peers-and-leader/``), but tools that watch
``oban_gossip`` read one message per producer in ``Oban.check_queue/1``'s shape; Python queues
show up there beside Elixir ones.
"""

from __future__ import annotations

from typing import Any

from bridge.jobs import queries
from bridge.jobs.plugins import Plugin
from bridge.wire import notify
from bridge.wire.timefmt import format_utc


class Gossip(Plugin):
    name = "gossip"

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(interval)

    def checks(self) -> list[dict[str, Any]]:
        node = self.node
        assert node is not None
        out = []
        for producer in node.producers.values():
            check = producer.check()
            out.append(
                {
                    "limit": check["limit"],
                    "name": node.config.name,
                    "node": check["node"],
                    "paused": check["paused"],
                    "queue": check["queue"],
                    "running": check["running"],
                    "started_at": format_utc(producer.started_at),
                    "updated_at": format_utc(producer.updated_at),
                    "uuid": check["uuid"],
                }
            )
        return out

    async def tick(self) -> int:
        node = self.node
        assert node is not None
        checks = self.checks()
        if not checks:
            return 0
        channel = notify.channel(node.prefix, "gossip")
        async with node.pool.connection() as conn, conn.transaction():
            for check in checks:
                await conn.execute(
                    queries.NOTIFY, {"channel": channel, "payload": notify.encode(check)}
                )
        return len(checks)
