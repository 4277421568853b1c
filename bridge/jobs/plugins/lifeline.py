"""Rescue jobs left ``executing`` by a node that died, as Oban's Lifeline (OSS) does.

After ``rescue_after`` a job still ``executing`` goes back to ``available`` (attempt,
attempted_at and attempted_by untouched, no error entry) or, with no attempts left, to
``discarded`` with ``discarded_at`` and no entry (golden ``lifeline/``). Only the leader runs it.

How late a rescue can be: a job becomes rescuable ``rescue_after`` seconds after its attempt
began, and the leader looks every ``interval`` seconds, starting the moment it leads. So it is
rescued within ``rescue_after + interval``, plus, if the leader itself died without a word, the
time its peer row takes to expire (the Peer plugin's interval, 30 s by default).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bridge.jobs import queries
from bridge.jobs.plugins import Plugin
from bridge.wire.timefmt import utc_now

RESCUE = """
UPDATE {prefix}.oban_jobs SET state = 'available'
WHERE state = 'executing' AND attempted_at < %(cut)s AND attempt < max_attempts
RETURNING id, queue
"""

DISCARD = """
UPDATE {prefix}.oban_jobs SET state = 'discarded', discarded_at = %(now)s
WHERE state = 'executing' AND attempted_at < %(cut)s AND attempt >= max_attempts
RETURNING id, queue
"""


def default_interval(rescue_after: float) -> float:
    """A tenth of ``rescue_after``, between 1 and 60 seconds: a rescue comes at most 10 % late
    (60 s, Oban's interval, for the long ``rescue_after`` values where that is plenty), and the
    leader runs the two indexed updates at most once a second."""
    return min(60.0, max(1.0, rescue_after / 10))


class Lifeline(Plugin):
    name = "lifeline"
    leader_only = True

    def __init__(self, rescue_after: float = 3600.0, interval: float | None = None) -> None:
        super().__init__(default_interval(rescue_after) if interval is None else interval)
        self.rescue_after = rescue_after

    async def tick(self) -> dict[str, list[int]]:
        node = self.node
        assert node is not None
        if not node.is_leader():
            return {"rescued": [], "discarded": []}
        now = utc_now()
        params: dict[str, Any] = {"now": now, "cut": now - timedelta(seconds=self.rescue_after)}
        async with node.pool.connection() as conn, conn.transaction():
            rescued = await (
                await conn.execute(queries.render(RESCUE, node.prefix), params)
            ).fetchall()
            discarded = await (
                await conn.execute(queries.render(DISCARD, node.prefix), params)
            ).fetchall()
        for queue in {row[1] for row in rescued}:
            node.wake(queue)
        return {"rescued": [r[0] for r in rescued], "discarded": [r[0] for r in discarded]}
