"""Running a job in a test through the node's own executor, so the outcome is the one a node
would store: :class:`~bridge.jobs.runtime.executor.JobExecutor` decides it, nothing here
re-decides it.

Two things a test needs that a node does not: the exception a worker raised (Oban's
``safe: false`` re-raises it after the outcome is decided), kept by :class:`CapturingRegistry`;
and sync bodies that see the test's context variables (the testing mode), run by
:class:`ContextThreads`.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry, WorkerSpec
from bridge.jobs.runtime.executor import Ack

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
    """A view of ``inner`` whose workers keep the last exception their body raised (then raise
    it on, so the executor decides the outcome as ever)."""

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
            spec = self._workers[name] = replace(found, perform=self._capture(found))
        return spec

    def take(self) -> BaseException | None:
        """The exception of the last run, forgotten once taken."""
        raised, self.raised = self.raised, None
        return raised

    def _capture(self, spec: WorkerSpec) -> Callable[[Job], Any]:
        perform = spec.perform
        if spec.is_async:

            async def perform_async(job: Job) -> Any:
                try:
                    return await perform(job)
                except BaseException as exc:
                    self.raised = exc
                    raise

            return perform_async

        def perform_sync(job: Job) -> Any:
            try:
                return perform(job)
            except BaseException as exc:
                self.raised = exc
                raise

        return perform_sync


class ContextThreads(Executor):
    """A thread per sync body, run in a copy of the submitter's context: a body sees the
    testing mode (a ContextVar) of the test that ran it, as async bodies do."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        context = contextvars.copy_context()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(context.run(fn, *args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name="bridge-testing-job", daemon=True).start()
        return future
