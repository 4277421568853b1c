"""A node's child processes for ``executor="process"`` workers: each runs one job body at a
time and can be killed, which a thread cannot.

What a thread cannot give and a child can: a timeout or a ``pkill`` that stops the body (the
child is killed with SIGKILL, its job gets the same entry a thread's would, and a new child
takes its place), a body that cannot take the node down with it (a child that dies on its own —
``os._exit``, a segfault, the OOM killer — fails only its own job, with Oban's crash entry), and
memory that is given back (``max_jobs_per_child`` replaces a child after that many jobs).

Children are started by multiprocessing's ``forkserver`` method: each is forked from a small
single-threaded server process, never from the node, whose threads (job bodies, psycopg) could
hold locks a fork would copy in their taken state; a fork from the server is much quicker than
a ``spawn`` (a fresh interpreter per child) and shares the server's imported modules. At most
``size`` children exist at once; they are started when first needed and kept. A job waits for a
free child when all are busy: its timeout runs from the moment a child has it, as a thread's
runs from the moment its body starts.

The event loop watches each busy child's pipe and process sentinel itself (``add_reader``): a
child's answer, or its death, wakes the loop once, and the next waiting job is handed to it in
that same wake-up. (A first version waited on a thread per job; under load every extra wake-up
cost the children CPU time between jobs.)
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import multiprocessing
import os
import threading
import weakref
from collections import deque
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry
from bridge.jobs.runtime.acks import Ack
from bridge.jobs.runtime.process_child import Request, child_main

log = logging.getLogger("bridge.process_pool")

START_METHOD = "forkserver"
READY_TIMEOUT = 120.0  # seconds a new child may take importing the workers' modules
STOP_TIMEOUT = 5.0  # seconds a closing child gets to exit before it is killed


class BodyTimedOut(Exception):
    """The job's timeout passed while its child ran it; the child was killed."""


class ChildDied(Exception):
    """The child running the job ended on its own (``returncode`` as ``Popen`` gives it)."""

    def __init__(self, returncode: int) -> None:
        super().__init__(f"child process ended with {returncode}")
        self.returncode = returncode


class ChildStartError(RuntimeError):
    """A child process could not be started or died before it was ready."""


def default_size() -> int:
    """One child per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class Child:
    """One child process and the node's ends of its pipes."""

    def __init__(self, process: BaseProcess, conn: Connection, lifeline: Connection) -> None:
        self.process = process
        self.conn = conn
        self.lifeline = lifeline
        self.jobs = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def wait_ready(self, timeout: float) -> dict[str, str]:
        """Block until the child has imported its modules; their import errors by module."""
        ready = wait([self.conn, self.process.sentinel], timeout)
        if self.conn in ready:
            try:
                kind, failed = self.conn.recv()
                if kind == "ready":
                    return dict(failed)
            except (EOFError, OSError):
                pass
        self.kill()
        self.reap()
        raise ChildStartError(
            f"a child process did not start ({'timed out' if not ready else 'it exited'})"
        )

    def exchange(
        self, request: Request, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[tuple[str, Any]]:
        """Send one job; a future of ``("ack", Ack)``, or ``("died", returncode)`` once the child
        is gone. The loop watches the pipe and the process's sentinel itself: no thread waits,
        and the answer and the hand-over of the next job happen in one wake-up of the loop."""
        answer: asyncio.Future[tuple[str, Any]] = loop.create_future()
        watched = (self.conn.fileno(), self.process.sentinel)

        def settle() -> None:
            if answer.done():
                return
            for fd in watched:
                loop.remove_reader(fd)
            try:
                answer.set_result(("ack", self.conn.recv()))
            except (EOFError, OSError):
                answer.set_result(("died", self.reap()))

        try:
            self.conn.send(request)
        except (OSError, ValueError):  # its end is closed: the child is gone or going
            self.kill()
            answer.set_result(("died", self.reap()))
            return answer
        for fd in watched:
            loop.add_reader(fd, settle)
        return answer

    def kill(self) -> None:
        """SIGKILL: a Python body ignores nothing and runs no cleanup either way (the default
        SIGTERM action does not run ``finally`` blocks), so a gentler signal would only delay."""
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()

    def reap(self) -> int:
        """Wait for the process to end; its return code. The pipes are closed after it."""
        self.process.join()
        self.close_pipes()
        code = self.process.exitcode
        return code if code is not None else -9

    def stop(self, timeout: float) -> None:
        """Ask an idle child to exit (killed if it has not within ``timeout``)."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.kill()
        self.reap()

    def close_pipes(self) -> None:
        for conn in (self.conn, self.lifeline):
            with contextlib.suppress(OSError):
                conn.close()


class ProcessPool:
    """Up to ``size`` child processes running ``executor="process"`` bodies, one job each.

    ``preload`` names the modules each new child imports before it takes a job (the node passes
    the modules of its process workers), so a body's timeout never pays for them.
    ``max_jobs_per_child`` replaces a child after that many jobs (None: never), which bounds
    what a body that leaks memory can take.
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        max_jobs_per_child: int | None = None,
        preload: list[str] | None = None,
        start_method: str = START_METHOD,
    ) -> None:
        self.size = size if size is not None else default_size()
        if self.size < 1:
            raise ValueError(f"process pool size must be >= 1, got {self.size}")
        if max_jobs_per_child is not None and max_jobs_per_child < 1:
            raise ValueError(f"max_jobs_per_child must be >= 1, got {max_jobs_per_child}")
        self.max_jobs_per_child = max_jobs_per_child
        self.preload = list(preload or [])
        self.start_method = start_method
        # multiprocessing's context for the start method (typed Any: typeshed's BaseContext
        # lacks Process).
        self._context: Any = None
        self._idle: list[Child] = []
        self._busy: set[Child] = set()
        self._live = 0  # children started, starting, busy, idle or dying: never above size
        self._waiters: deque[asyncio.Future[Child | None]] = deque()
        self._answers: dict[Child, asyncio.Future[tuple[str, Any]]] = {}
        self._closed = False
        self.started = 0  # children started since the pool was made (for logs and tests)
        _POOLS.add(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def children(self) -> list[int]:
        """Pids of the children alive now, idle or busy."""
        return [c.pid for c in [*self._idle, *self._busy] if c.pid is not None]

    async def run(self, module: str, qualname: str, job: Job, timeout: float | None) -> Ack:
        """Run one job in a child: its outcome as the child built it.

        Raises :class:`BodyTimedOut` past ``timeout`` (seconds from the moment the child has
        the job) and :class:`ChildDied` when the child ends on its own; on cancellation (pkill,
        a stop) the child is killed before the cancellation goes on. In each case the child is
        replaced by a new one when a job next needs it."""
        child = await self._acquire()
        answer = child.exchange(Request(module, qualname, job), asyncio.get_running_loop())
        self._answers[child] = answer
        answer.add_done_callback(lambda _: self._answers.pop(child, None))
        try:
            if timeout is None:
                kind, value = await asyncio.shield(answer)
            else:
                try:
                    async with asyncio.timeout(timeout) as scope:
                        kind, value = await asyncio.shield(answer)
                except TimeoutError:
                    if scope.expired() and not answer.done():
                        raise BodyTimedOut from None
                    if not answer.done():
                        raise
                    kind, value = answer.result()
        except BaseException:
            if not answer.done():
                child.kill()  # its sentinel ends the exchange: _retire then frees its place
                answer.add_done_callback(lambda _: self._retire(child))
            elif _answered(answer):
                self._release(child)  # it answered as the cancellation came: still good
            else:
                self._retire(child)
            raise
        if kind == "died":
            self._retire(child)
            raise ChildDied(value)
        self._release(child)
        ack: Ack = value
        return ack

    async def close(self) -> None:
        """Stop every child (idle ones are asked to exit, busy ones are killed); no job runs
        here afterwards."""
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        idle, self._idle = self._idle, []
        busy, self._busy = list(self._busy), set()
        for child in busy:
            child.kill()
        answers = [self._answers[c] for c in busy if c in self._answers]
        if answers:  # each ends when its killed child's sentinel fires, which reaps it
            await asyncio.wait(answers, timeout=STOP_TIMEOUT)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(None, child.stop, STOP_TIMEOUT) for child in idle),
            *(loop.run_in_executor(None, child.reap) for child in busy),
            return_exceptions=True,
        )
        _POOLS.discard(self)

    def close_now(self) -> None:
        """Kill every child without waiting (at interpreter exit)."""
        self._closed = True
        for child in [*self._idle, *self._busy]:
            child.kill()
        for child in self._idle:
            child.reap()
        self._idle = []

    # children ------------------------------------------------------------------------------

    async def _acquire(self) -> Child:
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise RuntimeError("the node's process pool is closed")
            if self._idle:
                child = self._idle.pop()
                self._busy.add(child)
                return child
            if self._live < self.size:
                self._live += 1
                start = loop.run_in_executor(None, self._start_child)
                try:
                    child = await asyncio.shield(start)
                except asyncio.CancelledError:
                    start.add_done_callback(self._adopt)  # for the next job that needs one
                    raise
                except BaseException:
                    self._live -= 1
                    self._wake_one()
                    raise
                self._busy.add(child)
                return child
            waiter: asyncio.Future[Child | None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                given = await waiter
            except asyncio.CancelledError:
                given = waiter.result() if waiter.done() and not waiter.cancelled() else None
                if given is not None:  # handed over as we were cancelled: for the next job
                    self._busy.discard(given)
                    self._offer(given)
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if given is not None:
                return given

    def _start_child(self) -> Child:
        """Start one child and wait until it is ready (blocking: runs on a thread)."""
        if self._context is None:
            context = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":
                # Imported once in the fork server, shared by every child it forks. (Python 3.11
                # does not hand the server the main module's path, so "__main__" is a no-op
                # there and each child imports the main module itself.)
                context.set_forkserver_preload(
                    ["__main__", "bridge.jobs.runtime.process_child", *self.preload]
                )
            self._context = context
        ours, theirs = self._context.Pipe(duplex=True)
        lifeline_r, lifeline_w = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=child_main,
            args=(theirs, lifeline_r, self.preload),
            name="bridge-job-child",
            daemon=False,  # a body may start processes of its own
        )
        try:
            process.start()
        finally:
            theirs.close()
            lifeline_r.close()
        child = Child(process, ours, lifeline_w)
        failed = child.wait_ready(READY_TIMEOUT)
        self.started += 1
        for module, error in failed.items():
            log.warning("process pool: a child could not import %s: %s", module, error)
        log.debug("process pool: child %s ready", child.pid)
        return child

    def _release(self, child: Child) -> None:
        """A child that answered: to the next waiter, back to idle, or recycled."""
        self._busy.discard(child)
        child.jobs += 1
        if self.max_jobs_per_child is not None and child.jobs >= self.max_jobs_per_child:
            self._stop_child(child)
            return
        self._offer(child)

    def _adopt(self, start: asyncio.Future[Child]) -> None:
        """A child started for a job that was cancelled meanwhile: the pool keeps it."""
        if start.cancelled() or start.exception() is not None:
            self._live -= 1
            self._wake_one()
        else:
            self._offer(start.result())

    def _stop_child(self, child: Child) -> None:
        self._live -= 1
        threading.Thread(target=child.stop, args=(STOP_TIMEOUT,), daemon=True).start()
        self._wake_one()

    def _offer(self, child: Child) -> None:
        """An idle child: to the first waiter, else kept idle (stopped if the pool is closed)."""
        if self._closed:
            self._stop_child(child)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._busy.add(child)
                waiter.set_result(child)
                return
        self._idle.append(child)

    def _retire(self, child: Child) -> None:
        """A child that was killed or died: reaped, its place free for a new one."""
        self._busy.discard(child)
        if child.process.exitcode is None:
            child.kill()
        child.reap()
        self._live -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        """A place freed: the next waiter may start a child in it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def process_worker_modules(registry: Registry) -> list[str]:
    """The modules of the registry's ``executor="process"`` workers, for a pool to preload."""
    modules = []
    for name in registry.names():
        spec = registry.resolve(name)
        module = getattr(spec.target, "__module__", None) if spec is not None else None
        if spec is not None and spec.executor == "process" and module and module not in modules:
            modules.append(module)
    return modules


def _answered(answer: asyncio.Future[tuple[str, Any]]) -> bool:
    """The child's exchange ended with an outcome (not with the child's death)."""
    return not answer.cancelled() and answer.exception() is None and answer.result()[0] == "ack"


_POOLS: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


@atexit.register
def _close_pools() -> None:
    """Kill the children of pools never closed, before multiprocessing's own exit handler
    joins them (registered earlier, so it runs later) and would wait for ever on idle ones."""
    for pool in list(_POOLS):
        pool.close_now()
