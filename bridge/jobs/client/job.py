"""The job record: one ``oban_jobs`` row, as both languages read and write it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bridge.wire import jsonfmt

JOB_COLUMNS = (
    "id",
    "state",
    "queue",
    "worker",
    "args",
    "errors",
    "attempt",
    "max_attempts",
    "inserted_at",
    "scheduled_at",
    "attempted_at",
    "completed_at",
    "attempted_by",
    "discarded_at",
    "priority",
    "tags",
    "meta",
    "cancelled_at",
)

# Oban's defaults (Oban.Job): queue "default", max_attempts 20, priority 0.
DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 20
DEFAULT_PRIORITY = 0


# The timestamp columns, read as text where a value could be one Python cannot hold.
TIMESTAMP_COLUMNS = (
    "inserted_at",
    "scheduled_at",
    "attempted_at",
    "completed_at",
    "discarded_at",
    "cancelled_at",
)

# A timestamp as to_jsonb prints it, within a Python datetime's years 1 to 9999 (PostgreSQL also
# prints "infinity", "-infinity", five-digit years and "... BC", none of which a datetime holds).
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?")


class JobValidationError(ValueError):
    """A job that Oban's changeset (or the table's check constraints) would reject."""


class UndecodableRowError(ValueError):
    """A row with a value Python cannot hold: a timestamp outside the years 1 to 9999 (or
    infinite), or JSON beyond what Jason reads (a number past a double's range).

    ``job`` holds every column that did decode, the others empty, so the row can still be ended
    with an error entry; ``problems`` says, per column, what is wrong."""

    def __init__(self, job: Job, problems: list[str]) -> None:
        self.job = job
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass
class Job:
    """A job to insert (``id is None``) or a job read back from the table.

    ``args`` and ``meta`` must be JSON objects: Oban's changeset casts them as maps, and an
    Elixir worker pattern-matches ``%{"key" => ...}`` on them.
    """

    worker: str
    args: dict[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    priority: int = DEFAULT_PRIORITY
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    scheduled_at: datetime | None = None
    state: str = "available"
    id: int | None = None
    attempt: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    inserted_at: datetime | None = None
    attempted_at: datetime | None = None
    completed_at: datetime | None = None
    attempted_by: list[str] | None = None
    discarded_at: datetime | None = None
    cancelled_at: datetime | None = None
    # Set by the uniqueness check: this job already existed and was returned instead.
    conflict: bool = False
    # Unique options (bridge.jobs.client.unique.UniqueOptions) for inserting; not a column.
    unique: Any = None

    @classmethod
    def new(
        cls,
        worker: str,
        args: dict[str, Any] | None = None,
        *,
        queue: str = DEFAULT_QUEUE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        priority: int = DEFAULT_PRIORITY,
        tags: list[str] | None = None,
        meta: dict[str, Any] | None = None,
        scheduled_at: datetime | None = None,
        schedule_in: float | timedelta | None = None,
        now: datetime | None = None,
        unique: Any = None,
    ) -> Job:
        """Build a job to insert, validated as Oban's ``Job.new/2`` changeset validates it."""
        if scheduled_at is not None and schedule_in is not None:
            raise JobValidationError("give scheduled_at or schedule_in, not both")
        if schedule_in is not None:
            from bridge.wire.timefmt import utc_now

            delta = (
                schedule_in
                if isinstance(schedule_in, timedelta)
                else timedelta(seconds=schedule_in)
            )
            scheduled_at = (now or utc_now()) + delta
        if args is not None and not isinstance(args, dict):
            raise JobValidationError(f"args must be a JSON object, got {type(args).__name__}")
        if meta is not None and not isinstance(meta, dict):
            raise JobValidationError(f"meta must be a JSON object, got {type(meta).__name__}")
        job = cls(
            worker=worker,
            args=dict(args) if args is not None else {},
            queue=queue,
            max_attempts=max_attempts,
            priority=priority,
            tags=normalise_tags(tags or []),
            meta=dict(meta) if meta is not None else {},
            scheduled_at=_naive_utc(scheduled_at) if scheduled_at is not None else None,
            state="scheduled" if scheduled_at is not None else "available",
        )
        if unique is not None:
            from bridge.jobs.client.unique import UniqueOptions, UniqueOptionsError

            try:
                job.unique = UniqueOptions.build(unique)
            except UniqueOptionsError as exc:
                raise JobValidationError(f"unique: {exc}") from exc
        job.validate()
        return job

    def validate(self) -> None:
        if not isinstance(self.worker, str) or not 0 < len(self.worker) < 128:
            raise JobValidationError(f"worker must be 1..127 characters, got {self.worker!r}")
        if not isinstance(self.queue, str) or not 0 < len(self.queue) < 128:
            raise JobValidationError(f"queue must be 1..127 characters, got {self.queue!r}")
        if not isinstance(self.args, dict):
            raise JobValidationError(f"args must be a JSON object, got {type(self.args).__name__}")
        if not isinstance(self.meta, dict):
            raise JobValidationError(f"meta must be a JSON object, got {type(self.meta).__name__}")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise JobValidationError(f"max_attempts must be > 0, got {self.max_attempts!r}")
        if not isinstance(self.priority, int) or not 0 <= self.priority <= 9:
            raise JobValidationError(f"priority must be 0..9, got {self.priority!r}")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        """From a ``SELECT *`` row (dict_row); tolerant of the column order Oban left."""
        job = cls(**{name: row[name] for name in JOB_COLUMNS if name in row})
        job.meta = job.meta if job.meta is not None else {}
        job.tags = job.tags if job.tags is not None else []
        return job

    @classmethod
    def from_text_row(cls, row: dict[str, Any]) -> Job:
        """From a row whose jsonb columns (``errors`` element by element) and timestamps come
        as text (``queries.FETCH_JOBS``), decoded here so that no value can fail in the driver
        and one row's failure is its own: :class:`UndecodableRowError` names each column that
        cannot be held, with the rest of the job decoded. JSON is read as Jason reads it (any
        depth, integers of any length)."""
        values = {name: row[name] for name in JOB_COLUMNS if name in row}
        problems: list[str] = []
        for name in ("args", "meta"):
            if values.get(name) is not None:
                values[name] = _json_column(values[name], name, problems, {})
        if values.get("errors") is not None:
            values["errors"] = [
                _json_column(text, f"errors[{index}]", problems, None)
                for index, text in enumerate(values["errors"])
            ]
        for name in TIMESTAMP_COLUMNS:
            if values.get(name) is not None:
                values[name] = _timestamp_column(values[name], name, problems)
        job = cls(**values)
        job.meta = job.meta if job.meta is not None else {}
        job.tags = job.tags if job.tags is not None else []
        job.errors = job.errors if job.errors is not None else []
        if problems:
            raise UndecodableRowError(job, problems)
        return job

    def to_dict(self) -> dict[str, Any]:
        """The row as ``row_to_json`` would show it (for --json output and tests)."""
        from bridge.wire.timefmt import format_naive

        out: dict[str, Any] = {}
        for name in JOB_COLUMNS:
            value = getattr(self, name)
            out[name] = format_naive(value) if isinstance(value, datetime) else value
        return out


def normalise_tags(tags: list[str]) -> list[str]:
    """Oban trims, downcases, drops empty and de-duplicates tags (``Job.normalize_tags``)."""
    seen: list[str] = []
    for tag in tags:
        text = str(tag).strip().lower()
        if text and text not in seen:
            seen.append(text)
    return seen


def _json_column(text: str, name: str, problems: list[str], empty: Any) -> Any:
    try:
        return jsonfmt.loads(text)
    except jsonfmt.JSONDecodeError as exc:
        problems.append(f"{name} cannot be decoded: {exc}")
        return empty


def _timestamp_column(text: str, name: str, problems: list[str]) -> datetime | None:
    if _TIMESTAMP.fullmatch(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # a date PostgreSQL would not print; reported below all the same
    problems.append(f"{name} is {text}, outside the years 1 to 9999 a Python datetime can hold")
    return None


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    from datetime import UTC

    return moment.astimezone(UTC).replace(tzinfo=None)
