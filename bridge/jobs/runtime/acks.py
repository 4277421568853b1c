"""A job's outcome as the row update Oban would make: pure functions of the job, its worker and
what its body returned or raised.

Shared by every place a body runs: the node's executor (on the loop or a thread), the child
processes of ``executor="process"`` workers (:mod:`bridge.jobs.runtime.process_child`), and the
supervisor's crash entries, so one body leaves the same row wherever it ran.

The decision table is Oban's executor + Basic engine (2.23.1): success -> completed; an
exception or ``Error`` -> retryable with backoff, or discarded once ``attempt >=
max_attempts``; ``Cancel`` -> cancelled with an entry; ``Discard`` -> discarded with an entry;
``Snooze`` -> scheduled later with ``max_attempts + 1``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from bridge.jobs.client.job import Job
from bridge.jobs.client.outcome import Cancel, Discard, Error, Ok, Snooze
from bridge.jobs.client.registry import WorkerSpec
from bridge.wire import backoff as wire_backoff
from bridge.wire import errors as wire_errors
from bridge.wire.recorded import encode_recorded
from bridge.wire.timefmt import utc_now

log = logging.getLogger("bridge.jobs")

# The runtime's own source files: their frames are left out of a body's error entry.
RUNTIME_DIR = Path(__file__).resolve().parent


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


def raised_ack(job: Job, spec: WorkerSpec | None, exc: BaseException) -> Ack:
    """The outcome of a body (or of storing its result) that raised ``exc``: its entry carries
    the frames of the code that raised, never the runtime's own (which differ between a thread
    and a child process, and move with every edit of the runtime)."""
    exc.with_traceback(without_runtime_frames(exc.__traceback__))
    now = utc_now()
    return error_ack(job, spec, wire_errors.exception_entry(exc, job.attempt, now), now)


def result_ack(job: Job, spec: WorkerSpec, result: Any) -> Ack:
    """``outcome_to_ack`` now, or the error of a result that cannot be stored (a recorded value
    too large or not encodable)."""
    try:
        return outcome_to_ack(job, spec, result, utc_now())
    except Exception as exc:
        return raised_ack(job, spec, exc)


def without_runtime_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without the entries of frames running the runtime's own files."""
    kept: list[TracebackType] = []
    while tb is not None:
        if not Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(RUNTIME_DIR):
            kept.append(tb)
        tb = tb.tb_next
    head: TracebackType | None = None
    for entry in reversed(kept):
        entry.tb_next = head
        head = entry
    return head


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else type(value).__name__
