"""Node plugins: periodic maintenance that Oban runs as plugins (stager, lifeline, pruner, cron,
leadership). Each is safe beside the Elixir side's own copies.

A plugin sees its node through :class:`NodeView`, the few things plugins use, so plugins sit
below :mod:`bridge.jobs.node` (which starts them) instead of importing it: arrows point down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from bridge.jobs.client.registry import Registry
from bridge.jobs.runtime.producer import Producer
from bridge.jobs.runtime.tasks import cancel_and_wait

log = logging.getLogger("bridge.plugins")


class NodeSettings(Protocol):
    """The settings of the node a plugin runs on (:class:`bridge.jobs.node.NodeConfig`)."""

    @property
    def node(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def registry(self) -> Registry: ...


class NodeView(Protocol):
    """What a plugin may use of the node it runs on (:class:`bridge.jobs.node.Node`)."""

    @property
    def prefix(self) -> str: ...
    @property
    def pool(self) -> AsyncConnectionPool[Any]: ...
    @property
    def config(self) -> NodeSettings: ...
    @property
    def producers(self) -> Mapping[str, Producer]: ...
    def is_leader(self) -> bool: ...
    def wake(self, queue: str) -> None: ...


class Plugin:
    """A task run every ``interval`` seconds while the node runs; errors are logged, not fatal."""

    name = "plugin"

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.node: NodeView | None = None

    def start(self, node: NodeView) -> None:
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
