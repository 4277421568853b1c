"""Job events for logs and users' instrumentation, in the shape of Oban's telemetry.

Handlers get ``(event, measurements, metadata)`` for ``job:start``, ``job:stop`` and
``job:exception``, like ``:telemetry`` handlers of ``[:oban, :job, …]``. The default logger
prints the JSON object Oban's ``attach_default_logger/0`` prints (same keys, microsecond
timings), so one log pipeline can read jobs from both languages.
"""

from __future__ import annotations

import json
import logging
import reprlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from bridge.jobs.client.job import Job
    from bridge.jobs.runtime.executor import Ack

log = logging.getLogger("bridge.jobs")

Handler = Callable[[str, dict[str, Any], dict[str, Any]], None]

_handlers: list[Handler] = []

# Oban's stop/exception states for each way an attempt can end.
_EVENT_STATE = {
    "success": ("job:stop", "success"),
    "snooze": ("job:stop", "snoozed"),
    "cancel": ("job:stop", "cancelled"),
    "discard": ("job:exception", "discard"),
    "error": ("job:exception", "failure"),
    "unknown_worker": ("job:exception", "failure"),
}


def attach(handler: Handler) -> None:
    _handlers.append(handler)


def detach(handler: Handler) -> None:
    if handler in _handlers:
        _handlers.remove(handler)


def has_handlers() -> bool:
    return bool(_handlers)


def job_details(job: Job) -> dict[str, Any]:
    return {
        "args": job.args,
        "attempt": job.attempt,
        "id": job.id,
        "max_attempts": job.max_attempts,
        "meta": job.meta,
        "queue": job.queue,
        "tags": job.tags,
        "worker": job.worker,
    }


def stop_event(job: Job, ack: Ack) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The event Oban would emit for this outcome; ``Discard`` returned by a worker is a stop."""
    event, state = _EVENT_STATE.get(ack.kind, ("job:exception", "failure"))
    if ack.kind == "discard" and ack.error is not None and "{:discard," in ack.error["error"]:
        event = "job:stop"
    queue_time = 0
    if job.attempted_at is not None and job.scheduled_at is not None:
        queue_time = int((job.attempted_at - job.scheduled_at).total_seconds() * 1_000_000)
    measurements = {"duration": int(ack.duration * 1_000_000), "queue_time": queue_time}
    metadata = {**job_details(job), "state": state}
    if event == "job:exception" and ack.error is not None:
        metadata["error"] = ack.error["error"].split("\n", 1)[0]
    return event, measurements, metadata


def emit(event: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
    for handler in list(_handlers):
        try:
            handler(event, measurements, metadata)
        except Exception:
            log.exception("telemetry handler %r failed", handler)


# The log record attribute holding a job event's keys, for formatters that write them as
# fields (``bridge worker --log-format json``) or render them (``--log-format text``).
EVENT_ATTRIBUTE = "oban_event"


class EventJson:
    """A job event's message: Oban's JSON object, built only when a handler formats it."""

    __slots__ = ("record",)

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def __str__(self) -> str:
        return event_json(self.record)


def event_json(record: dict[str, Any]) -> str:
    """The event as compact JSON with sorted keys, whatever its args hold.

    orjson refuses integers beyond 64 bits and nesting past 254 levels, which a jsonb column
    holds happily; the standard library writes those, and past its own limits args and meta
    are summarised, so the job's line is never lost."""
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        pass
    try:
        return json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        summary = reprlib.Repr()
        summary.maxlevel = 4
        safe = {
            key: summary.repr(value) if key in ("args", "meta") else value
            for key, value in record.items()
        }
        return json.dumps(safe, sort_keys=True, default=str, separators=(",", ":"))


def default_logger(event: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
    """One JSON object per event with Oban's default-logger keys; the keys themselves ride on
    the record (``EVENT_ATTRIBUTE``) for structured formatters."""
    record = {**metadata, **measurements, "event": event, "source": "oban"}
    level = logging.INFO if event != "job:exception" else logging.WARNING
    log.log(level, "%s", EventJson(record), extra={EVENT_ATTRIBUTE: record})


def attach_default_logger() -> None:
    if default_logger not in _handlers:
        attach(default_logger)
