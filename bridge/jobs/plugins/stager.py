"""Make due ``scheduled`` and ``retryable`` jobs ``available``, as Oban's Stager does: on the
leader only.

Same statement as the Basic engine's ``stage_jobs`` (newest first, 5,000 a run, every second).
Oban 2.23's ``Oban.Stager`` stages and notifies only while its node leads; a follower's stager
does nothing but, in its "local" mode (its notifier hears no other node), nudge its own
producers so they poll. Bridge does the same with the leadership of its own peer name
(``Bridge``, see :mod:`bridge.jobs.plugins.peer`): one Python node stages for all, however many
run, instead of every node sending the same UPDATE each second. A node without a Peer plugin
counts as alone and leads (:meth:`bridge.jobs.node.Node.is_leader`), so a node configured
with a Stager and no Peer still stages.

A follower needs no local mode: every Python producer polls its queue on its own every
``poll_interval`` (1 s, as Oban's stager notifies), whether or not an ``oban_insert`` arrives,
so a follower's queues run what is ``available`` even when notifications are lost. Due jobs
become available while any leader stages them: the Python leader, or an Elixir leader, whose
stager stages every queue's jobs. Should the Python leader die without a word, a follower takes
over when its lease ends (at most 30 s, :mod:`bridge.jobs.plugins.peer`); until then only an
Elixir leader stages, as in an Oban cluster whose leader died.

Running beside an Elixir leader's stager is harmless: a row can only become available once.
Staged queues are announced on ``oban_insert`` so idle Elixir queues wake too. The leader also
releases unique inserts whose inserter died midway (``RELEASE_STALE``).
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
    # Oban.Stager's stage_and_notify/2: stage and notify when leader, else no statement at all.
    leader_only = True

    def __init__(self, interval: float = 1.0, limit: int = 5000) -> None:
        super().__init__(interval)
        self.limit = limit

    async def tick(self) -> list[str]:
        """Stage due jobs and announce their queues; on a follower, nothing (an empty list)."""
        node = self.node
        assert node is not None
        if not node.is_leader():  # leadership lost since the loop looked
            return []
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
