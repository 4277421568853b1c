"""How ``bridge worker`` logs: ``text`` lines for people, or ``json``, one object per line for a
log pipeline.

Job events (``bridge.jobs.runtime.telemetry``'s default logger) carry Oban's default-logger keys
on the record; the JSON format puts them at the top level of the line, as Oban's JSON logger
does, and the text format renders them as ``job:stop worker=… id=… state=… duration=…ms``.
Neither may fail on what a job's args hold (integers beyond 64 bits, deep nesting): a record
that cannot be written whole is written with its args and meta summarised, never dropped.
"""

from __future__ import annotations

import json
import logging
import reprlib
import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from bridge.cli.output import json_text
from bridge.jobs.runtime.telemetry import EVENT_ATTRIBUTE
from bridge.wire import jsonfmt

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def job_event(record: logging.LogRecord) -> dict[str, Any] | None:
    event = getattr(record, EVENT_ATTRIBUTE, None)
    return event if isinstance(event, dict) else None


def _milliseconds(microseconds: Any) -> str:
    if isinstance(microseconds, int | float):
        return f"{microseconds / 1000:.1f}ms"
    return str(microseconds)


def event_text(event: dict[str, Any]) -> str:
    """``job:stop worker=W id=1 queue=q attempt=1 state=success duration=3.2ms queue_time=…``."""
    parts = [str(event.get("event", "job"))]
    for key in ("worker", "id", "queue", "attempt", "state"):
        if key in event:
            parts.append(f"{key}={event[key]}")
    for key in ("duration", "queue_time"):
        if key in event:
            parts.append(f"{key}={_milliseconds(event[key])}")
    if event.get("error"):
        parts.append(f"error={json.dumps(str(event['error']), ensure_ascii=False)}")
    return " ".join(parts)


class TextFormatter(logging.Formatter):
    """Human lines; a job event is shown as ``event key=value …`` instead of raw JSON."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        event = job_event(record)
        if event is not None:
            record = logging.makeLogRecord(
                {**record.__dict__, "msg": event_text(event), "args": None}
            )
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger`` and ``message`` (plus
    ``exception``); a job event has Oban's keys at the top level instead of a message."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        event = job_event(record)
        if event is not None:
            line.update(event)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return dumps_line(line)


# Deepest nesting a log line keeps: log shippers and their parsers stop far short of what a jsonb
# column holds (Python's json ~1,000 levels, orjson 254), so a job whose args nest deeper is
# logged with them summarised; the row itself keeps everything (``bridge jobs show``).
LOG_LINE_DEPTH = 254


def dumps_line(line: dict[str, Any]) -> str:
    """``line`` as JSON any consumer reads; args or meta nested past ``LOG_LINE_DEPTH`` (or that
    no encoder writes) are summarised with ``reprlib`` rather than the line lost."""
    try:  # the common case; orjson itself refuses nesting past 254 levels
        return orjson.dumps(line, default=str).decode()
    except TypeError:
        pass
    try:  # integers beyond 64 bits, or nesting past orjson's limit
        text = json_text(line, lenient=True)
        if jsonfmt.depth(text) <= LOG_LINE_DEPTH:
            return text
    except (RecursionError, ValueError, TypeError):
        pass
    summary = reprlib.Repr()
    summary.maxlevel = 4
    safe = {
        key: value if isinstance(value, str | int | float | bool | None) else summary.repr(value)
        for key, value in line.items()
    }
    return json_text(safe, lenient=True)


def configure_logging(
    log_format: str, level_name: str | None, *, verbose: int = 0, stream: IO[str] | None = None
) -> None:
    """Send every log record to ``stream`` (stderr) in ``log_format`` at ``level_name``.

    The level applies to bridge's own loggers; other libraries stay at warnings unless -vv. The
    stream handlers ``logging.basicConfig`` installed (the root command's) are replaced; any
    other handler (a test's capture, an embedder's) is left in place."""
    level = _LEVELS[level_name] if level_name else logging.DEBUG if verbose >= 2 else logging.INFO
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose >= 2 else max(level, logging.WARNING))
    logging.getLogger("bridge").setLevel(level)
    for name in ("bridge.jobs", "bridge.node"):  # levels a previous configuration may have set
        logging.getLogger(name).setLevel(logging.NOTSET)
