"""Group the database work of concurrent job bodies into one transaction (group commit).

The runner's job bodies are coroutines on a node's event loop, one job each. Their database
work is small (a few statements), each round trip costs the client CPU and a commit costs the
server an fsync, so ten bodies each sending their own transactions spend most of the process's
one core on psycopg. An :class:`AsyncCoalescer` queues what the bodies submit and lets one
drain task run a batch for every item queued meanwhile, on a connection of its own; while a
batch runs the next one gathers. No timer: under light load a batch is one item and costs a
future more than a direct call. The drain keeps its connection for ``linger`` seconds of
quiet, then closes it and ends; the next submit starts a new one. A connection that is no longer
``usable`` (the server closed it) is replaced before the next batch.

A batch function gets the connection and the items in arrival order, and returns one outcome
per item: a value, or an exception instance, which is raised in that item's caller (and so
becomes that job's error). If it raises instead, every item of the batch gets that exception
and the connection is closed (it may be broken); the next batch opens another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
C = TypeVar("C")

log = logging.getLogger("bridge.workflows")

BatchFn = Callable[[C, Sequence[T]], Awaitable[Sequence["R | BaseException"]]]


class _LoopQueue(Generic[T, R]):
    __slots__ = ("arrived", "items", "tasks")

    def __init__(self) -> None:
        self.items: list[tuple[T, asyncio.Future[R]]] = []
        self.tasks: set[asyncio.Task[None]] = set()  # the running drains (one at most)
        self.arrived = asyncio.Event()


class AsyncCoalescer(Generic[T, R, C]):
    """Runs ``batch`` over the items that concurrent coroutines submit, ``max_batch`` at most.

    Each event loop gets a queue and a drain of its own (a node runs one loop; tests run many
    one after the other). A caller cancelled while it waits (a ``pkill``) stops waiting; its
    item still runs with the batch it is in, as a thread would have run on.
    """

    def __init__(
        self,
        batch: BatchFn[C, T, R],
        *,
        open: Callable[[], Awaitable[C]],
        close: Callable[[C], Awaitable[None]],
        usable: Callable[[C], bool] = lambda resource: True,
        max_batch: int = 100,
        linger: float = 2.0,
        name: str = "",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._batch = batch
        self._open = open
        self._close = close
        self._usable = usable
        self.max_batch = max_batch
        self.linger = linger
        self._name = name or "bridge-batch"
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue[T, R]] = (
            weakref.WeakKeyDictionary()
        )
        # For benchmarks and tests: how many batches ran, the items they held, their wall time.
        self.batches = 0
        self.items = 0
        self.busy_s = 0.0

    async def submit(self, item: T) -> R:
        """Run ``item`` in a batch and return its outcome (or raise its exception)."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue()
        future: asyncio.Future[R] = loop.create_future()
        queue.items.append((item, future))
        queue.arrived.set()
        if not queue.tasks:
            task = loop.create_task(self._drain(queue), name=f"{self._name}-drain")
            queue.tasks.add(task)
            task.add_done_callback(partial(_drain_done, queue))
        return await future

    async def _drain(self, queue: _LoopQueue[T, R]) -> None:
        resource: C | None = None
        try:
            while True:
                if not queue.items:
                    queue.arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(queue.arrived.wait(), self.linger)
                    if not queue.items:
                        break  # quiet for `linger`: the finally below ends this drain at once
                batch = queue.items[: self.max_batch]
                del queue.items[: len(batch)]
                started = time.perf_counter()
                broken = False
                fatal: BaseException | None = None
                try:
                    if resource is not None and not self._usable(resource):
                        old, resource = resource, None  # e.g. a connection the server closed
                        await self._discard(old)
                    if resource is None:
                        resource = await self._open()
                    outcomes = await self._batch(resource, [item for item, _ in batch])
                    if len(outcomes) != len(batch):
                        raise RuntimeError(
                            f"batch returned {len(outcomes)} outcomes for {len(batch)} items"
                        )
                except asyncio.CancelledError as exc:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():  # this drain is being cancelled
                        for _, future in batch:
                            future.cancel()
                        raise
                    # The batch's own (it awaited something cancelled): a failure of this batch.
                    outcomes, broken = [exc] * len(batch), True
                except BaseException as exc:
                    log.debug("%s: batch of %d failed: %s", self._name, len(batch), exc)
                    outcomes, broken = [exc] * len(batch), True
                    if isinstance(exc, KeyboardInterrupt | SystemExit):
                        fatal = exc
                self.batches += 1
                self.items += len(batch)
                self.busy_s += time.perf_counter() - started
                _settle(batch, outcomes)
                if broken:  # only now, with every caller answered, wait for the close
                    spent, resource = resource, None
                    await self._discard(spent)
                if fatal is not None:
                    raise fatal
        except asyncio.CancelledError:
            _cancel_queued(queue)  # the loop is closing: nobody is left to run them
            raise
        finally:
            # Before any other callback runs (no await since the queue was seen empty): a
            # submit from now on finds no drain and starts one.
            current = asyncio.current_task()
            if current is not None:
                queue.tasks.discard(current)
            await self._discard(resource)

    async def _discard(self, resource: C | None) -> None:
        if resource is not None:
            try:
                await self._close(resource)
            except Exception as exc:
                log.debug("%s: closing its connection failed: %s", self._name, exc)


def _settle(batch: Sequence[tuple[object, asyncio.Future[R]]], outcomes: Sequence[object]) -> None:
    for (_, future), outcome in zip(batch, outcomes, strict=True):
        if future.done():  # its caller was cancelled meanwhile
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)  # type: ignore[arg-type]


def _cancel_queued(queue: _LoopQueue[T, R]) -> None:
    for _, future in queue.items:
        future.cancel()
    queue.items.clear()


def _drain_done(queue: _LoopQueue[T, R], task: asyncio.Task[None]) -> None:
    """A drain cancelled before it ever ran never reached its ``finally``: forget it, and cancel
    what it would have run (as a drain cancelled while running does), unless another drain
    already serves the queue."""
    queue.tasks.discard(task)
    if task.cancelled() and not queue.tasks:
        _cancel_queued(queue)
