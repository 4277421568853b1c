"""Group the database work of concurrent job threads into one transaction (group commit).

The runner's job bodies run in a node's worker threads, one job each. Their database work is
small (a few statements) and each statement costs the client a round trip of CPU and a commit
costs the server an fsync, so ten threads each sending their own transactions spend most of the
process's one GIL on psycopg. A :class:`Coalescer` lets whichever thread arrives first run one
batch for itself and every thread that arrived meanwhile, while the others sleep; when it is done
it hands the next batch to one of those that arrived during its run. No thread of its own, no
timer: under light load a batch is one item and costs a lock and an event more than before.

A batch function gets the items in arrival order and returns one outcome per item: a value, or
an exception instance, which is raised in that item's thread (and so becomes that job's error).
If the batch function itself raises, every item of the batch gets that exception.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[Sequence[T]], Sequence["R | BaseException"]]


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "event", "item", "value")

    def __init__(self, item: T) -> None:
        self.item = item
        self.event = threading.Event()
        self.done = False
        self.value: R | None = None
        self.error: BaseException | None = None

    def settle(self, outcome: R | BaseException) -> None:
        if isinstance(outcome, BaseException):
            self.error = outcome
        else:
            self.value = outcome
        self.done = True

    def outcome(self) -> R:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class Coalescer(Generic[T, R]):
    """Runs ``batch`` over the items concurrent threads submit, at most ``max_batch`` a call."""

    def __init__(self, batch: BatchFn[T, R], *, max_batch: int = 100) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._batch = batch
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Slot[T, R]] = []
        self._busy = False
        # For benchmarks and tests: how many batches ran and how many items they held.
        self.batches = 0
        self.items = 0
        self.busy_s = 0.0

    def submit(self, item: T) -> R:
        """Run ``item`` in a batch and return its outcome (or raise its exception)."""
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            lead = not self._busy
            self._busy = True
        if not lead:
            slot.event.wait()
            if slot.done:
                return slot.outcome()
        # Leading: our slot is at the head of the queue, so it is in the batch we take.
        self._lead()
        return slot.outcome()

    def _lead(self) -> None:
        with self._lock:
            batch = self._queue[: self.max_batch]
            del self._queue[: len(batch)]
        started = time.perf_counter()
        try:
            outcomes: Sequence[R | BaseException] = self._batch([s.item for s in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(
                    f"batch returned {len(outcomes)} outcomes for {len(batch)} items"
                )
        except BaseException as exc:  # every item learns why; KeyboardInterrupt included
            outcomes = [exc] * len(batch)
        self.batches += 1
        self.items += len(batch)
        self.busy_s += time.perf_counter() - started
        for slot, outcome in zip(batch, outcomes, strict=True):
            slot.settle(outcome)
        with self._lock:
            if self._queue:
                self._queue[0].event.set()  # not done: it wakes to lead
            else:
                self._busy = False
        for slot in batch[1:]:
            slot.event.set()


class _LoopQueue(Generic[T, R]):
    __slots__ = ("items", "tasks")

    def __init__(self) -> None:
        self.items: list[tuple[T, asyncio.Future[R]]] = []
        self.tasks: set[asyncio.Task[None]] = set()  # the running drains


class AsyncCoalescer(Generic[T, R]):
    """:class:`Coalescer` for job bodies that are coroutines on a node's event loop.

    The items wait on the loop, not in threads of their own; ``parallel`` threads per
    coalescer run the batches on sync connections. While the batches run, the next ones
    gather.
    A job cancelled while it waits (a ``pkill``) stops waiting; its item still runs with the
    batch it is in, as a thread would have run on.
    """

    def __init__(
        self, batch: BatchFn[T, R], *, max_batch: int = 100, parallel: int = 1, name: str = ""
    ) -> None:
        if max_batch < 1 or parallel < 1:
            raise ValueError(f"max_batch and parallel must be >= 1: {max_batch}, {parallel}")
        self._batch = batch
        self.max_batch = max_batch
        self.parallel = parallel
        self._name = name or "bridge-batch"
        self._thread: ThreadPoolExecutor | None = None
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue[T, R]] = (
            weakref.WeakKeyDictionary()
        )
        self.batches = 0
        self.items = 0
        self.busy_s = 0.0

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue()
        future: asyncio.Future[R] = loop.create_future()
        queue.items.append((item, future))
        if len(queue.tasks) < self.parallel:
            task = loop.create_task(self._drain(loop, queue), name=f"{self._name}-drain")
            queue.tasks.add(task)
            task.add_done_callback(queue.tasks.discard)
        return await future

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    async def _drain(self, loop: asyncio.AbstractEventLoop, queue: _LoopQueue[T, R]) -> None:
        try:
            while queue.items:
                batch = queue.items[: self.max_batch]
                del queue.items[: len(batch)]
                if self._thread is None:
                    self._thread = ThreadPoolExecutor(self.parallel, thread_name_prefix=self._name)
                started = time.perf_counter()
                try:
                    outcomes: Sequence[R | BaseException] = await loop.run_in_executor(
                        self._thread, self._batch, [item for item, _ in batch]
                    )
                    if len(outcomes) != len(batch):
                        raise RuntimeError(
                            f"batch returned {len(outcomes)} outcomes for {len(batch)} items"
                        )
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except BaseException as exc:
                    outcomes = [exc] * len(batch)
                self.batches += 1
                self.items += len(batch)
                self.busy_s += time.perf_counter() - started
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its job was cancelled meanwhile
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        except asyncio.CancelledError:
            for _, future in queue.items:  # the loop is closing: nobody is left to run them
                future.cancel()
            queue.items.clear()
            raise
        finally:
            # Before any other callback runs (no await since the queue was seen empty): a
            # submit from now on sees one drain fewer and starts its own.
            queue.tasks.discard(asyncio.current_task())
