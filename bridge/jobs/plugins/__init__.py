"""Node plugins: periodic maintenance that Oban runs as plugins (stager, lifeline, pruner, cron,
leadership). Each is safe beside the Elixir side's own copies."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from bridge.jobs.runtime.tasks import cancel_and_wait

if TYPE_CHECKING:
    from bridge.jobs.node import Node

log = logging.getLogger("bridge.plugins")


class Plugin:
    """A task run every ``interval`` seconds while the node runs; errors are logged, not fatal."""

    name = "plugin"

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.node: Node | None = None

    def start(self, node: Node) -> None:
        self.node = node
        self._task = asyncio.create_task(self._loop(), name=f"bridge-plugin-{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("plugin %s failed: %s: %s", self.name, type(exc).__name__, exc)
            await asyncio.sleep(self.next_interval())

    def next_interval(self) -> float:
        return self.interval

    async def tick(self) -> Any:
        raise NotImplementedError
