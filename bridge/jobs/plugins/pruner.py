"""Delete finished jobs older than ``max_age``, as Oban's Pruner does (leader only).

Completed jobs age by ``scheduled_at``, cancelled by ``cancelled_at``, discarded by
``discarded_at``; at most ``limit`` rows a run. Oban's defaults: 60 s, every 30 s, 10,000.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bridge.jobs import queries
from bridge.jobs.plugins import Plugin
from bridge.wire.timefmt import utc_now

PRUNE = """
DELETE FROM {prefix}.oban_jobs AS j
USING (
    SELECT id FROM {prefix}.oban_jobs
    WHERE (state = 'completed' AND scheduled_at < %(cut)s)
       OR (state = 'cancelled' AND cancelled_at < %(cut)s)
       OR (state = 'discarded' AND discarded_at < %(cut)s)
    LIMIT %(limit)s
) AS x
WHERE j.id = x.id
RETURNING j.id
"""


class Pruner(Plugin):
    name = "pruner"
    leader_only = True

    def __init__(self, max_age: float = 60.0, interval: float = 30.0, limit: int = 10_000) -> None:
        super().__init__(interval)
        self.max_age = max_age
        self.limit = limit

    async def tick(self) -> list[int]:
        node = self.node
        assert node is not None
        if not node.is_leader():
            return []
        params: dict[str, Any] = {
            "cut": utc_now() - timedelta(seconds=self.max_age),
            "limit": self.limit,
        }
        async with node.pool.connection() as conn, conn.transaction():
            rows = await (await conn.execute(queries.render(PRUNE, node.prefix), params)).fetchall()
        return [row[0] for row in rows]
