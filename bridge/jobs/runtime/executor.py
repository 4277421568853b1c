"""Run one claimed job and turn what happened into the row update Oban would make.

The row updates themselves are :mod:`bridge.jobs.runtime.acks` (Oban's executor + Basic engine
decision table); here is where a body runs and what ends it: a timeout errors like an exception
(``Oban.TimeoutError``); an unregistered worker errors with Oban's "unknown worker" text (never
an import).

A job's timeout runs from the moment its code starts, as in Oban, which starts every job in its
own process at once: a sync body's clock starts in its thread, and sync bodies never wait for a
thread (:class:`JobThreads`). A thread cannot be stopped, so a sync body that times out (or is
killed by ``pkill``) runs on after its outcome was decided; :meth:`JobExecutor.lingering_body`
hands it to the producer, which keeps the job's slot until the thread returns.

A worker declared ``executor="process"`` runs in a child process of the node's
:class:`ProcessPool` instead: its clock starts when a child has it, and a timeout or a pkill
kills the child, so nothing runs on; a child that dies on its own fails its job with Oban's
crash entry. Its outcomes are built by the same functions, so the rows are the same. An
executor made without a pool (``bridge.testing``'s) runs such a body on a thread instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Any

from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry, WorkerSpec
from bridge.jobs.runtime.acks import Ack, error_ack, outcome_to_ack, raised_ack, result_ack
from bridge.jobs.runtime.exits import crash_text
from bridge.jobs.runtime.process_pool import BodyTimedOut, ChildDied, ProcessPool
from bridge.wire import errors as wire_errors
from bridge.wire.timefmt import utc_now

__all__ = ["Ack", "JobExecutor", "error_ack", "outcome_to_ack"]

log = logging.getLogger("bridge.jobs")


class _Deadline(Exception):
    """The job's own timeout passed (a ``TimeoutError`` the worker raises is an ordinary error)."""


def _resolve(future: asyncio.Future[float], value: float) -> None:
    if not future.done():
        future.set_result(value)


class JobExecutor:
    """Runs jobs: async workers on the loop, sync ones on threads (:class:`JobThreads`)."""

    def __init__(
        self, registry: Registry, threads: Executor, processes: ProcessPool | None = None
    ) -> None:
        self.registry = registry
        self.threads = threads
        # Child processes for executor="process" workers. Without one (bridge.testing's
        # perform_job and drain) such a body runs on a thread like any sync body, in the test's
        # own process, where its mocks apply and what it raises can reach the test.
        self.processes = processes
        # Sync bodies still running when their run ended, by id() of the job, until the
        # producer takes them (lingering_body).
        self._lingering: dict[int, asyncio.Future[Any]] = {}

    async def run(self, job: Job) -> Ack:
        started = time.monotonic()
        ack = await self._run(job)
        ack.duration = time.monotonic() - started
        return _claimed_by(ack, job)

    def lingering_body(self, job: Job) -> asyncio.Future[Any] | None:
        """The sync body of ``job``'s run if it was still running when the run ended (timed out,
        killed or stopped), else None; it completes when the thread returns. Asked once, right
        after the run, by the producer, which keeps the job's slot until then."""
        return self._lingering.pop(id(job), None)

    async def _run(self, job: Job) -> Ack:
        spec = self.registry.resolve(job.worker)
        try:
            if spec is None:
                entry = wire_errors.unknown_worker_entry(job.worker, job.attempt, utc_now())
                ack = error_ack(job, None, entry, utc_now())
                ack.kind = "unknown_worker" if ack.state == "retryable" else ack.kind
                return ack
            if not isinstance(job.args, dict):
                # Oban casts args to a map; a row written by hand with other JSON would make an
                # Elixir worker crash on its pattern match. Fail the attempt the same way.
                bad = ValueError(f"args must be a JSON object, got {type(job.args).__name__}")
                entry = wire_errors.exception_entry(bad, job.attempt, utc_now())
                return error_ack(job, spec, entry, utc_now())
            try:
                if spec.executor == "process" and self.processes is not None:
                    return await self._call_process(spec, job)
                result = await self._call(spec, job)
            except _Deadline:
                timeout_ms = int((spec.timeout or 0) * 1000)
                entry = wire_errors.timeout_entry(job.worker, timeout_ms, job.attempt, utc_now())
                return error_ack(job, spec, entry, utc_now())
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                return raised_ack(job, spec, exc)
            # A recorded value too large or not encodable errors the attempt.
            return result_ack(job, spec, result)
        finally:
            log.debug("job %s (%s) finished", job.id, job.worker)

    def killed_ack(self, job: Job) -> Ack:
        """A job stopped by a ``pkill`` signal: Oban records ``{:cancel, :shutdown}``."""
        now = utc_now()
        entry = wire_errors.result_entry(
            job.worker, "cancel", wire_errors.atom("shutdown"), job.attempt, now
        )
        ack = Ack(job.id or 0, "cancelled", cancelled_at=now, error=entry, kind="cancel")
        return _claimed_by(ack, job)

    async def _call(self, spec: WorkerSpec, job: Job) -> Any:
        """The worker's return value; raises what it raised, or _Deadline past its timeout."""
        if not spec.is_async:
            return await self._call_sync(spec, job)
        coro = spec.perform(job)
        if spec.timeout is None:
            return await coro
        try:
            async with asyncio.timeout(spec.timeout) as scope:
                return await coro
        except TimeoutError:
            if scope.expired():
                raise _Deadline from None
            raise

    async def _call_process(self, spec: WorkerSpec, job: Job) -> Ack:
        """Run a sync body in a child process: the outcome the child built, the timeout entry
        once the child was killed at the deadline, or Oban's crash entry when it died on its
        own. A cancellation (pkill, a stop) kills the child and goes on."""
        assert self.processes is not None
        target = spec.target
        try:
            return await self.processes.run(
                target.__module__, target.__qualname__, job, spec.timeout
            )
        except BodyTimedOut:
            raise _Deadline from None
        except ChildDied as died:
            log.error(
                "job %s (%s): its child process died (%s); the job fails with the crash entry",
                job.id,
                job.worker,
                crash_text(died.returncode),
            )
            now = utc_now()
            return error_ack(
                job, spec, wire_errors.entry(job.attempt, now, crash_text(died.returncode)), now
            )

    async def _call_sync(self, spec: WorkerSpec, job: Job) -> Any:
        """Run a sync body on a thread; its timeout runs from the moment it starts there.

        On timeout the outcome is the timeout error, decided now (as Oban does); a thread cannot
        be interrupted, so the body runs on and whatever it returns later is ignored. It is kept
        for lingering_body, as is a body still running when the run is cancelled (pkill, stop).
        """
        loop = asyncio.get_running_loop()
        started: asyncio.Future[float] = loop.create_future()

        def body() -> Any:
            loop.call_soon_threadsafe(_resolve, started, time.monotonic())
            return spec.perform(job)

        handle = self.threads.submit(body)
        done = asyncio.wrap_future(handle, loop=loop)
        try:
            if spec.timeout is None:
                return await asyncio.shield(done)
            await asyncio.wait((started, done), return_when=asyncio.FIRST_COMPLETED)
            if not started.done():  # ended without starting: cancelled by the pool's shutdown
                return await done
            remaining = started.result() + spec.timeout - time.monotonic()
            try:
                async with asyncio.timeout(max(remaining, 0.0)) as scope:
                    return await asyncio.shield(done)
            except TimeoutError:
                if scope.expired():
                    raise _Deadline from None
                raise
        finally:
            if not done.done() and not handle.cancel():
                self._lingering[id(job)] = done


def _claimed_by(ack: Ack, job: Job) -> Ack:
    """Stamp an outcome with the attempt that produced it, as the claim wrote it."""
    ack.attempt = job.attempt
    ack.attempted_by = job.attempted_by
    ack.worker = job.worker
    return ack
