"""Make due ``scheduled`` and ``retryable`` jobs ``available``, as Oban's Stager does.

Same statement as the Basic engine's ``stage_jobs`` (newest first, 5,000 a run, every second).
Running beside an Elixir leader's stager is harmless: a row can only become available once that
matters. Staged queues are announced on ``oban_insert`` so idle Elixir queues wake too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bridge.jobs import queries
from bridge.jobs.client.unique_insert import RELEASE_STALE
from bridge.jobs.plugins import Plugin
from bridge.wire import notify
from bridge.wire.timefmt import utc_now

STAGE_JOBS = """
WITH due AS (
    SELECT id FROM {prefix}.oban_jobs
    WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= %(now)s
    ORDER BY scheduled_at DESC, id DESC
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {prefix}.oban_jobs AS j SET state = 'available'
FROM due WHERE j.id = due.id
RETURNING j.queue
"""


class Stager(Plugin):
    name = "stager"

    def __init__(self, interval: float = 1.0, limit: int = 5000) -> None:
        super().__init__(interval)
        self.limit = limit

    async def tick(self) -> list[str]:
        node = self.node
        assert node is not None
        params: dict[str, Any] = {"now": utc_now(), "limit": self.limit}
        async with node.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(queries.render(STAGE_JOBS, node.prefix), params)
            staged = {row[0] for row in await cur.fetchall()}
            stale = {"before": params["now"] - timedelta(seconds=60)}
            cur = await conn.execute(queries.render(RELEASE_STALE, node.prefix), stale)
            staged |= {row[0] for row in await cur.fetchall() if row[1] == "available"}
            queues = sorted(staged)
            channel = notify.channel(node.prefix, "insert")
            for queue in queues:
                await conn.execute(
                    queries.NOTIFY, {"channel": channel, "payload": notify.encode({"queue": queue})}
                )
        for queue in queues:
            node.wake(queue)
        return queues
