"""Node plugins: periodic maintenance that Oban runs as plugins (stager, lifeline, pruner, cron,
leadership). Each is safe beside the Elixir side's own copies.

A plugin sees its node through :class:`NodeView`, the few things plugins use, so plugins sit
below :mod:`bridge.jobs.node` (which starts them) instead of importing it: arrows point down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from bridge.jobs.client.registry import Registry
from bridge.jobs.runtime.notifier import Handler
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
    @property
    def plugins(self) -> Sequence[Plugin]: ...
    def is_leader(self) -> bool: ...
    def wake(self, queue: str) -> None: ...
    def listen(self, handler: Handler) -> None:
        """Also hand ``handler`` what the node's one LISTEN connection hears."""


# How often a leader-only plugin re-reads ``is_leader()`` while it waits to lead, in case the
# news of leadership comes from something other than the Peer plugin (which wakes it at once).
LEADERSHIP_RECHECK = 1.0


class Plugin:
    """A task run every ``interval`` seconds while the node runs; errors are logged, not fatal.

    A ``leader_only`` plugin (stager, lifeline, pruner, ...) ticks only while its node leads,
    and its first tick comes as soon as the node knows it leads, not an interval after start:
    the Peer plugin calls :meth:`wake_up` on every plugin when leadership changes hands. Ticking
    first and asking later would make every new node wait a whole interval before its first
    rescue.
    """

    name = "plugin"
    leader_only = False

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.node: NodeView | None = None
        self._woken = asyncio.Event()

    def wake_up(self) -> None:
        """Run the next tick now rather than at the end of the interval (if it may run)."""
        self._woken.set()

    def start(self, node: NodeView) -> None:
        self.node = node
        self._task = asyncio.create_task(self._loop(), name=f"bridge-plugin-{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        node = self.node
        assert node is not None
        while True:
            # Cleared before looking, so news arriving during a tick cuts the next pause short.
            self._woken.clear()
            if self.leader_only and not node.is_leader():
                await self._pause(LEADERSHIP_RECHECK)
                continue
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("plugin %s failed: %s: %s", self.name, type(exc).__name__, exc)
            await self._pause(self.next_interval())

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when :meth:`wake_up` is called."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)

    def next_interval(self) -> float:
        return self.interval

    async def tick(self) -> Any:
        raise NotImplementedError
