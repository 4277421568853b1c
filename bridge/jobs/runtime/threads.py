"""Threads for sync job bodies that never make a body wait for a thread.

A job's timeout runs from the moment its code starts (Oban starts every job in a process of its
own at once), so a sync body must start as soon as its job is claimed: :class:`JobThreads` hands
each body an idle thread or a new one, never a queue behind busy threads. A thread cannot be
stopped, so a timed-out body runs on until it returns; the producer keeps its slot meanwhile
(:meth:`bridge.jobs.runtime.executor.JobExecutor.lingering_body`), which bounds the threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from functools import partial
from typing import Any


class _Item:
    """One body for :class:`JobThreads`, with the future its caller waits on."""

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.future: Future[Any] = Future()
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def run(self) -> Callable[[], None]:
        """Run the body; return what publishes its result to the waiting caller."""
        future = self.future
        if not future.set_running_or_notify_cancel():
            return lambda: None
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            return partial(future.set_exception, exc)
        return partial(future.set_result, result)


class JobThreads(Executor):
    """Threads for sync job bodies: a body starts at once, on an idle thread or a new one.

    A fixed-size pool queues a body while all its threads are busy, and a busy thread may hold a
    body that timed out long ago and has not returned; the queued job would then wait, its
    timeout running, for a thread. Nothing waits here. The number of threads is bounded by the
    producers instead: every sync body that has not returned holds a slot of its queue (timed-out
    and killed ones too, until their thread returns), so the bodies alive at once never outnumber
    the slots the queues have handed out. ``keep`` idle threads stay for reuse (a node keeps as
    many as its queues have slots); a thread that goes idle beyond that exits.
    """

    def __init__(self, keep: int, name: str = "bridge-job") -> None:
        self.keep = keep
        self.name = name
        self._items: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for an item that no submit has promised to them
        self._threads: set[threading.Thread] = set()
        self._count = 0
        self._closed = False

    @property
    def alive(self) -> int:
        """Threads that exist now, running a body or idle."""
        with self._lock:
            return len(self._threads)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        item = _Item(fn, args, kwargs)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._idle:
                self._idle -= 1
                self._items.put(item)
                return item.future
            self._count += 1
            thread = threading.Thread(
                target=self._work, args=(item,), name=f"{self.name}_{self._count}"
            )
            self._threads.add(thread)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._threads.discard(thread)
            raise
        return item.future

    def _work(self, item: _Item | None) -> None:
        try:
            while item is not None:
                publish = item.run()
                item = None
                # Counted idle (or gone) before the caller hears the body returned: the slot it
                # frees may be refilled at once, and that body must find this thread, not a new one.
                with self._lock:
                    stay = not self._closed and self._idle < self.keep
                    if stay:
                        self._idle += 1
                publish()
                del publish
                if not stay:
                    return
                item = self._items.get()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new bodies; idle threads exit, busy ones when their body returns."""
        with self._lock:
            self._closed = True
            waiting, self._idle = self._idle, 0
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._items.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item.future.cancel()
                    waiting += 1  # the thread it was promised to now waits for a stop
        for _ in range(waiting):
            self._items.put(None)
        if wait:
            for thread in threads:
                thread.join()
