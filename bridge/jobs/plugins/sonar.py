"""Answer Oban's Sonar: ping ``oban_sonar`` with ``{"node": …, "ping": true}``.

Oban 2.23 nodes count the nodes they hear pinging; a lone Elixir node that is not the leader
calls itself ``solitary`` and then its stager wakes only its own producers. Hearing a Python
node makes it ``clustered``, so it announces staged jobs on ``oban_insert`` and Python producers
wake at once. Oban forgets a node after 120 s of silence; we ping every 15 s.
"""

from __future__ import annotations

from bridge.jobs import queries
from bridge.jobs.plugins import Plugin
from bridge.wire import notify


class Sonar(Plugin):
    name = "sonar"

    def __init__(self, interval: float = 15.0) -> None:
        super().__init__(interval)

    async def tick(self) -> None:
        node = self.node
        assert node is not None
        payload = notify.encode({"node": node.config.node, "ping": True})
        async with node.pool.connection() as conn:
            await conn.execute(
                queries.NOTIFY,
                {"channel": notify.channel(node.prefix, "sonar"), "payload": payload},
            )
