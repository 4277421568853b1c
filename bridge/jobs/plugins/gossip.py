"""Opt-in: announce this node's queues on ``oban_gossip`` as Oban Web's ``oban_met`` does, so
Oban Web lists Python queues beside Elixir ones.

What a 2.23 system sends there (read from the sources, none of it guessed):

- OSS Oban 2.23.1 sends nothing: ``Oban.Plugins.Gossip`` is a deprecated no-op (its ``init``
  returns ``:ignore``), and the golden capture ``peers-and-leader/`` holds no gossip. So a Python
  node sends nothing either unless told to (``NodeConfig.gossip``, ``bridge worker --gossip``).
- With Oban Web installed, its ``oban_met`` package (1.x, the one Oban Web 2.x depends on) runs
  ``Oban.Met.Examiner`` on every node: every 750 ms it asks each local producer for
  ``Oban.check_queue/1`` and, if there is any, sends ONE notification
  ``%{checks: [check, ...]}`` on ``:gossip``; every node's examiner stores the checks it hears
  (keyed by node, name and queue, 30 s TTL), and ``Oban.Met.checks/1`` is where Oban Web's queue
  pages read them.
- A check is the Basic engine's producer meta (``Oban.Engines.Basic.init/2`` + ``check_meta/3``;
  golden ``peers-and-leader/s8_check_queue.txt``): ``limit, name, node, paused, queue,
  refresh_interval (60000), running (job ids), shutdown_started_at, started_at, updated_at,
  uuid``. The examiner replaces an atom ``name`` with ``inspect(name)``, so the default instance
  is spelled ``"Oban"`` (not Jason's ``"Elixir.Oban"``); ``:my_oban`` for an atom name.
- Oban's notifier encodes it with Elixir's JSON (keys of a small map in sorted order,
  ``DateTime`` as ISO-8601 with six fractional digits and ``Z``); over 512 bytes it is
  compressed (:mod:`bridge.wire.notify` says which form bridge sends).

Oban Web's charts come from other messages (``oban_met``'s ``:metrics``, from each node's job
telemetry); Python nodes do not send those, so their jobs count in the queue and state totals
(read from ``oban_jobs``) but not in the execution charts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.jobs import queries
from bridge.jobs.plugins import Plugin
from bridge.wire import notify
from bridge.wire.timefmt import format_utc

# Oban.Met.Examiner's default interval.
INTERVAL = 0.75
# Oban.Engines.Basic's default refresh_interval (ms): how often a producer touches updated_at.
REFRESH_INTERVAL_MS = 60_000


def producer_check(
    *,
    name: str,
    node: str,
    queue: str,
    limit: int,
    paused: bool,
    running: list[int],
    uuid: str,
    started_at: datetime,
    updated_at: datetime,
    shutdown_started_at: datetime | None = None,
) -> dict[str, Any]:
    """``Oban.check_queue/1`` of a Basic-engine producer as the examiner sends it; pure.
    ``name`` is the instance name as ``inspect`` prints it (``Oban``, ``:my_oban``)."""
    return {
        "limit": limit,
        "name": name,
        "node": node,
        "paused": paused,
        "queue": queue,
        "refresh_interval": REFRESH_INTERVAL_MS,
        "running": sorted(running),
        "shutdown_started_at": (
            format_utc(shutdown_started_at) if shutdown_started_at is not None else None
        ),
        "started_at": format_utc(started_at),
        "updated_at": format_utc(updated_at),
        "uuid": uuid,
    }


def examiner_payload(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """The one message a node's examiner sends per round: ``{"checks": [...]}``; pure."""
    return {"checks": checks}


class Gossip(Plugin):
    """Every ``interval`` seconds, one ``oban_gossip`` message with every queue's check."""

    name = "gossip"

    def __init__(self, interval: float = INTERVAL) -> None:
        super().__init__(interval)

    def checks(self) -> list[dict[str, Any]]:
        node = self.node
        assert node is not None
        return [
            producer_check(
                name=node.config.name,
                node=producer.node,
                queue=producer.queue,
                limit=producer.limit,
                paused=producer.paused,
                running=list(producer.running),
                uuid=producer.uuid,
                started_at=producer.started_at,
                updated_at=producer.updated_at,
                shutdown_started_at=producer.shutdown_started_at,
            )
            for producer in node.producers.values()
        ]

    async def tick(self) -> int:
        """Send this round's message (none when the node serves no queue, as the examiner);
        the number of checks sent."""
        node = self.node
        assert node is not None
        checks = self.checks()
        if not checks:
            return 0
        payload = notify.encode(examiner_payload(checks))
        async with node.pool.connection() as conn:
            await conn.execute(
                queries.NOTIFY,
                {"channel": notify.channel(node.prefix, "gossip"), "payload": payload},
            )
        return len(checks)
