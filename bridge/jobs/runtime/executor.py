"""Run one claimed job and turn what happened into the row update Oban would make.

The decision table is Oban's executor + Basic engine (2.23.1): success -> completed; an
exception or ``Error`` -> retryable with backoff, or discarded once ``attempt >=
max_attempts``; ``Cancel`` -> cancelled with an entry; ``Discard`` -> discarded with an entry;
``Snooze`` -> scheduled later with ``max_attempts + 1``; a timeout errors like an exception; an
unregistered worker errors with Oban's "unknown worker" text (never an import).

A job's timeout runs from the moment its code starts, as in Oban, which starts every job in its
own process at once: a sync body's clock starts in its thread, and sync bodies never wait for a
thread (:class:`JobThreads`). A thread cannot be stopped, so a sync body that times out (or is
killed by ``pkill``) runs on after its outcome was decided; :meth:`JobExecutor.lingering_body`
hands it to the producer, which keeps the job's slot until the thread returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bridge.jobs.client.job import Job
from bridge.jobs.client.outcome import Cancel, Discard, Error, Ok, Snooze
from bridge.jobs.client.registry import Registry, WorkerSpec
from bridge.wire import backoff as wire_backoff
from bridge.wire import errors as wire_errors
from bridge.wire.recorded import encode_recorded
from bridge.wire.timefmt import utc_now

log = logging.getLogger("bridge.jobs")


@dataclass
class Ack:
    """The final write for one attempt; ``None`` fields are left as they are in the row."""

    id: int
    state: str
    completed_at: datetime | None = None
    discarded_at: datetime | None = None
    cancelled_at: datetime | None = None
    scheduled_at: datetime | None = None
    max_attempts_inc: int = 0
    error: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    # The attempt this outcome belongs to, as its claim wrote it (attempt, attempted_by = [node,
    # producer uuid]): the write applies only while the row still carries both.
    attempt: int = 0
    attempted_by: list[str] | None = None
    # For logs and telemetry, not written.
    worker: str = ""
    kind: str = ""
    duration: float = 0.0
    detail: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Deadline(Exception):
    """The job's own timeout passed (a ``TimeoutError`` the worker raises is an ordinary error)."""


def _resolve(future: asyncio.Future[float], value: float) -> None:
    if not future.done():
        future.set_result(value)


def error_ack(job: Job, spec: WorkerSpec | None, entry: dict[str, Any], now: datetime) -> Ack:
    """retryable with backoff, or discarded when attempts are used up (Oban's handle_exhausted)."""
    if job.attempt >= job.max_attempts:
        return Ack(job.id or 0, "discarded", discarded_at=now, error=entry, kind="discard")
    if spec is not None and spec.backoff is not None:
        seconds = int(spec.backoff(job))
    else:
        seconds = wire_backoff.default_backoff(job.attempt, job.max_attempts)
    return Ack(
        job.id or 0,
        "retryable",
        scheduled_at=now + timedelta(seconds=seconds),
        error=entry,
        kind="error",
    )


def outcome_to_ack(job: Job, spec: WorkerSpec, result: Any, now: datetime) -> Ack:
    """Map a worker's return value to its row update; pure, for tests and for the runtime."""
    job_id = job.id or 0
    if isinstance(result, Snooze):
        return Ack(
            job_id,
            "scheduled",
            scheduled_at=now + timedelta(seconds=result.seconds),
            max_attempts_inc=1,
            kind="snooze",
        )
    if isinstance(result, Cancel):
        entry = wire_errors.result_entry(job.worker, "cancel", result.reason, job.attempt, now)
        return Ack(job_id, "cancelled", cancelled_at=now, error=entry, kind="cancel")
    if isinstance(result, Discard):
        entry = wire_errors.result_entry(job.worker, "discard", result.reason, job.attempt, now)
        return Ack(job_id, "discarded", discarded_at=now, error=entry, kind="discard")
    if isinstance(result, Error):
        entry = wire_errors.result_entry(job.worker, "error", result.reason, job.attempt, now)
        return error_ack(job, spec, entry, now)
    meta = None
    if spec.recorded and isinstance(job.meta, dict):
        value = result.value if isinstance(result, Ok) else result
        meta = encode_recorded(value)
    elif spec.recorded:
        # A row written by hand with meta that is not an object (Oban's changeset casts meta to
        # a map, and an Elixir node cannot load such a row): there is nowhere to put the keys.
        # Merged with ||, jsonb would make the array [..., {"recorded": ...}], so the meta is
        # left as written and nothing is recorded.
        log.warning(
            "job %s (%s): output not recorded: its meta is a JSON %s, not an object",
            job_id,
            job.worker,
            _json_kind(job.meta),
        )
    return Ack(job_id, "completed", completed_at=now, meta=meta, kind="success", detail=result)


class JobExecutor:
    """Runs jobs: async workers on the loop, sync ones on threads (:class:`JobThreads`)."""

    def __init__(self, registry: Registry, threads: Executor) -> None:
        self.registry = registry
        self.threads = threads
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
                entry = wire_errors.exception_entry(exc, job.attempt, utc_now())
                return error_ack(job, spec, entry, utc_now())
            try:
                return outcome_to_ack(job, spec, result, utc_now())
            except Exception as exc:  # e.g. a recorded value too large or not encodable
                entry = wire_errors.exception_entry(exc, job.attempt, utc_now())
                return error_ack(job, spec, entry, utc_now())
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


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else type(value).__name__


def _claimed_by(ack: Ack, job: Job) -> Ack:
    """Stamp an outcome with the attempt that produced it, as the claim wrote it."""
    ack.attempt = job.attempt
    ack.attempted_by = job.attempted_by
    ack.worker = job.worker
    return ack
