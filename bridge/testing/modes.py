"""Testing modes: what an insert does inside a test.

``with mode("inline") as recorded:`` — as Oban's ``testing: :inline`` (``Oban.Engines.Inline``)
does, a job for a ``@worker`` of this process runs at once, in the caller's thread of control,
and no row is written: ``insert`` returns the job as the attempt left it (``completed``,
``retryable`` with its error entry, ``scheduled`` when snoozed, ...; ``id`` None), and a
worker's exception is raised from ``insert`` (Oban runs inline jobs ``safe: false``). Jobs for
any other worker (an Elixir one, the workflow runner's) are inserted for real, so
``assert_enqueued`` and an Elixir node see them.

``with mode("manual") as recorded:`` — every insert is written as ever and nothing runs (the
same as no mode at all; it undoes an enclosing inline mode).

Either way ``recorded.jobs`` lists every job inserted in the block, as ``insert`` returned it,
and ``recorded.outcomes`` what each inline run decided. The mode is a context variable: code
the block runs (async tasks it creates, sync worker bodies) sees it, a node started elsewhere
does not. The hook is :data:`bridge.jobs.client.enqueue.INTERCEPTOR`.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.jobs.client import enqueue
from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry, WorkerSpec, default_registry
from bridge.jobs.runtime.executor import JobExecutor
from bridge.testing.running import CapturingRegistry, ContextThreads, Outcome
from bridge.wire import jsonfmt
from bridge.wire.timefmt import utc_now

MODES = ("inline", "manual")

# Oban's inline engine stamps attempted_by with the node's name alone.
INLINE_NODE = "inline"


@dataclass
class Recorded:
    """What was inserted inside a ``mode`` block."""

    mode: str
    jobs: list[Job] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


def _inline_spec(registry: Registry, job: Job) -> WorkerSpec | None:
    """The ``@worker`` that runs ``job`` inline, or None: only workers defined with the
    decorator (its target carries the spec), never the workflow runner's or a delegation
    host's, which run on a node or a drain."""
    spec = registry.resolve(job.worker)
    if spec is None or getattr(spec.target, "spec", None) is not spec:
        return None
    return spec


def _claimed(job: Job) -> Job:
    """The job as Oban's inline engine hands it to the worker: attempt 1, attempted now."""
    now = utc_now()
    job.validate()
    return replace(
        job,
        args=jsonfmt.loads(jsonfmt.dumps(job.args)),
        meta=jsonfmt.loads(jsonfmt.dumps(job.meta)),
        attempt=1,
        attempted_by=[INLINE_NODE],
        attempted_at=now,
        scheduled_at=now,
        inserted_at=job.inserted_at or now,
        state="executing",
        errors=list(job.errors),
    )


def _finished(outcome: Outcome) -> Job:
    """The job as the attempt left it (``Oban.Engines.Inline.complete_job``)."""
    job = outcome.job
    now = utc_now()
    changes: dict[str, Any] = {"state": outcome.state}
    if outcome.error is not None:
        changes["errors"] = [*job.errors, outcome.error]
    if outcome.state == "completed":
        changes["completed_at"] = now
    elif outcome.state == "discarded":
        changes["discarded_at"] = now
    elif outcome.state == "cancelled":
        changes["cancelled_at"] = now
    elif outcome.scheduled_at is not None:
        changes["scheduled_at"] = outcome.scheduled_at
    if outcome.recorded:
        changes["meta"] = {**job.meta, **outcome.recorded}
    return replace(job, **changes)


class _Interceptor:
    """Receives the inserts made inside a mode block (``enqueue.INTERCEPTOR``)."""

    def __init__(self, recorded: Recorded, registry: Registry) -> None:
        self.recorded = recorded
        self.registry = registry

    def _plan(self, jobs: Sequence[Job]) -> list[WorkerSpec | None]:
        if self.recorded.mode == "manual":
            return [None] * len(jobs)
        return [_inline_spec(self.registry, job) for job in jobs]

    async def _perform(self, spec: WorkerSpec, job: Job) -> Job:
        one = Registry()
        one.register(spec)
        capturing = CapturingRegistry(one)
        claimed = _claimed(job)
        threads = ContextThreads(capturing)
        try:
            ack = await JobExecutor(capturing, threads).run(claimed)
        finally:
            threads.shutdown(wait=False)
        raised = capturing.take()
        outcome = Outcome.of(claimed, ack, raised)
        self.recorded.outcomes.append(outcome)
        if raised is not None:
            raise raised
        return _finished(outcome)

    def _perform_sync(self, spec: WorkerSpec, job: Job) -> Job:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._perform(spec, job))
        # A sync insert from code on a running loop: the job runs on a loop of its own thread,
        # in this context, while this thread waits for it as a sync insert would.
        box: dict[str, Any] = {}
        context = contextvars.copy_context()

        def run() -> None:
            try:
                box["job"] = context.run(asyncio.run, self._perform(spec, job))
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=run, name="bridge-inline-job")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["job"]  # type: ignore[no-any-return]

    def insert_all(self, conn: Any, jobs: Sequence[Job], prefix: str) -> list[Job]:
        out: list[Job | None] = []
        written: list[Job] = []
        plan = self._plan(jobs)
        for job, spec in zip(jobs, plan, strict=True):
            out.append(self._perform_sync(spec, job) if spec is not None else None)
        others = [job for job, spec in zip(jobs, plan, strict=True) if spec is None]
        if others:
            token = enqueue.INTERCEPTOR.set(None)
            try:
                if len(others) == 1 and others[0].unique is not None:
                    written = [enqueue.insert(conn, others[0], prefix=prefix)]
                else:
                    written = enqueue.insert_all(conn, others, prefix=prefix)
            finally:
                enqueue.INTERCEPTOR.reset(token)
        return self._merge(out, written)

    async def insert_all_async(self, conn: Any, jobs: Sequence[Job], prefix: str) -> list[Job]:
        out: list[Job | None] = []
        written: list[Job] = []
        plan = self._plan(jobs)
        for job, spec in zip(jobs, plan, strict=True):
            out.append(await self._perform(spec, job) if spec is not None else None)
        others = [job for job, spec in zip(jobs, plan, strict=True) if spec is None]
        if others:
            token = enqueue.INTERCEPTOR.set(None)
            try:
                if len(others) == 1 and others[0].unique is not None:
                    written = [await enqueue.insert_async(conn, others[0], prefix=prefix)]
                else:
                    written = await enqueue.insert_all_async(conn, others, prefix=prefix)
            finally:
                enqueue.INTERCEPTOR.reset(token)
        return self._merge(out, written)

    def _merge(self, performed: list[Job | None], written: list[Job]) -> list[Job]:
        rest = iter(written)
        jobs = [job if job is not None else next(rest) for job in performed]
        self.recorded.jobs.extend(jobs)
        return jobs


@contextmanager
def mode(name: str, *, registry: Registry | None = None) -> Iterator[Recorded]:
    """Run the block in testing mode ``name`` (``"inline"`` or ``"manual"``); see the module's
    docstring. ``registry`` holds the workers inline mode runs (the default registry)."""
    if name not in MODES:
        raise ValueError(f"testing mode must be one of {', '.join(MODES)}, got {name!r}")
    recorded = Recorded(name)
    token = enqueue.INTERCEPTOR.set(_Interceptor(recorded, registry or default_registry))
    try:
        yield recorded
    finally:
        enqueue.INTERCEPTOR.reset(token)
