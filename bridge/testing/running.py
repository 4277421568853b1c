"""Running a job in a test through the node's own executor, so the outcome is the one a node
would store: :class:`~bridge.jobs.runtime.executor.JobExecutor` decides it, nothing here
re-decides it.

Two things a test needs that a node does not: the exception a worker raised (Oban's
``safe: false`` re-raises it after the outcome is decided), kept by :class:`CapturingRegistry`
without changing the error entry; and sync bodies that see the test's context variables (the
testing mode), run by :class:`ContextThreads` on the node's own thread kind.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry, WorkerSpec
from bridge.jobs.runtime.executor import Ack
from bridge.jobs.runtime.threads import JobThreads

# Oban's drain and executor name an attempt's outcome by these keys (Oban.Queue.Drainer counts
# them: %{success:, failure:, discard:, cancelled:, snoozed:}); an exhausted failure is
# ``discard``. Keyed by the executor's Ack.kind.
RESULT_OF_KIND = {
    "success": "success",
    "error": "failure",
    "unknown_worker": "failure",
    "discard": "discard",
    "cancel": "cancelled",
    "snooze": "snoozed",
}
RESULT_KEYS = ("success", "failure", "discard", "cancelled", "snoozed")


@dataclass(frozen=True)
class Outcome:
    """One attempt's outcome, as the executor decided it.

    ``result`` is Oban's name for it (``success``, ``failure``, ``discard``, ``cancelled``,
    ``snoozed``), ``state`` the row state a node writes (``completed``, ``retryable``,
    ``discarded``, ``cancelled``, ``scheduled``), ``value`` what the worker returned (None when
    it raised), ``error`` the error entry appended to the row's ``errors``, ``recorded`` the meta
    keys a ``recorded`` worker's output adds."""

    job: Job
    result: str
    state: str
    value: Any = None
    error: dict[str, Any] | None = None
    scheduled_at: datetime | None = None
    recorded: dict[str, Any] | None = None
    exception: BaseException | None = None

    @classmethod
    def of(cls, job: Job, ack: Ack, exception: BaseException | None) -> Outcome:
        return cls(
            job=job,
            result=RESULT_OF_KIND.get(ack.kind, "failure"),
            state=ack.state,
            value=ack.detail if ack.kind == "success" else None,
            error=ack.error,
            scheduled_at=ack.scheduled_at,
            recorded=ack.meta,
            exception=exception,
        )


class CapturingRegistry(Registry):
    """A view of ``inner`` that keeps the exception a worker's body raised, for Oban's
    ``safe: false`` (raise it to the test) — without a frame of its own in the traceback, so
    the error entry the executor writes is the one a node writes, frame for frame.

    An async body runs as a task of its own, which the executor awaits as it would the
    coroutine (the task's steps add no Python frame); a sync body's exception is taken from its
    thread's future by :class:`ContextThreads`, which reports it here."""

    def __init__(self, inner: Registry) -> None:
        super().__init__()
        self.inner = inner
        self.raised: BaseException | None = None

    def resolve(self, name: str) -> WorkerSpec | None:
        spec = self._workers.get(name)
        if spec is None:
            found = self.inner.resolve(name)
            if found is None:
                return None
            spec = found if not found.is_async else replace(found, perform=self._task(found))
            self._workers[name] = spec
        return spec

    def take(self) -> BaseException | None:
        """The exception of the last run, forgotten once taken."""
        raised, self.raised = self.raised, None
        return raised

    def keep(self, future: asyncio.Future[Any] | Future[Any]) -> None:
        """Done callback: keep what the body raised (a cancellation is the executor's doing)."""
        if future.cancelled():
            return
        error = future.exception()
        if error is not None and not isinstance(error, asyncio.CancelledError):
            self.raised = error

    def _task(self, spec: WorkerSpec) -> Callable[[Job], Any]:
        perform = spec.perform

        def perform_as_task(job: Job) -> Any:
            task = asyncio.ensure_future(perform(job))
            task.add_done_callback(self.keep)
            return task

        return perform_as_task


class ContextThreads(Executor):
    """The node's :class:`JobThreads`, each sync body run in a copy of the submitter's context
    (``Context.run`` adds no frame): a body sees the testing mode of the test that ran it, and
    its exception is handed to ``registry`` (see :class:`CapturingRegistry`)."""

    def __init__(self, registry: CapturingRegistry | None = None) -> None:
        self.registry = registry
        self.threads = JobThreads(keep=1, name="bridge-testing-job")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        context = contextvars.copy_context()
        future = self.threads.submit(context.run, fn, *args, **kwargs)
        if self.registry is not None:
            future.add_done_callback(self.registry.keep)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.threads.shutdown(wait=wait, cancel_futures=cancel_futures)
