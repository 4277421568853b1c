"""The job record: one ``oban_jobs`` row, as both languages read and write it."""

from __future__ import annotations

import json
import math
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


class UndecodableJobError(UndecodableRowError):
    """A job read back (``admin.list_jobs``/``get_job``, a unique insert's duplicate) holding
    a value no Python object can (see :class:`UndecodableRowError`), its message naming the
    job: a caller gets the job's id instead of the driver's error."""

    def __init__(self, error: UndecodableRowError) -> None:
        super().__init__(error.job, error.problems)
        self.args = (f"job {error.job.id}: {error}",)


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
        """Refuse, before any SQL, what Oban's changeset or the table would refuse, and what
        would be stored other than as given (NaN as ``null``, ``True`` as ``1``): the message
        names the field and the path to the value, e.g. ``args["a"][3]``."""
        if not self._plainly_valid():
            self._check()

    def _plainly_valid(self) -> bool:
        """True when :meth:`_check` would certainly pass: every field of the exact type it
        should have and in range, text PostgreSQL stores, plain JSON (:func:`_plainly_valid`).
        One quick pass for what nearly every job is; anything else goes to :meth:`_check`,
        which alone words the errors (a bulk insert validates every job again)."""
        worker, queue, tags = self.worker, self.queue, self.tags
        return (
            type(worker) is str
            and 0 < len(worker) < 128
            and _text_problem(worker) is None
            and type(queue) is str
            and 0 < len(queue) < 128
            and _text_problem(queue) is None
            and type(self.max_attempts) is int
            and 0 < self.max_attempts <= _INT4_MAX
            and type(self.priority) is int
            and 0 <= self.priority <= 9
            and (self.scheduled_at is None or type(self.scheduled_at) is datetime)
            and type(tags) is list
            and (not tags or all(type(tag) is str and _text_problem(tag) is None for tag in tags))
            and type(self.args) is dict
            and type(self.meta) is dict
            and (not self.args or _plainly_valid(self.args, 0))
            and (not self.meta or _plainly_valid(self.meta, 0))
        )

    def _check(self) -> None:
        """Every check of :meth:`validate`, field by field, raising the first problem."""
        if not isinstance(self.worker, str) or not 0 < len(self.worker) < 128:
            raise JobValidationError(f"worker must be 1..127 characters, got {self.worker!r}")
        if not isinstance(self.queue, str) or not 0 < len(self.queue) < 128:
            raise JobValidationError(f"queue must be 1..127 characters, got {self.queue!r}")
        if not isinstance(self.args, dict):
            raise JobValidationError(f"args must be a JSON object, got {type(self.args).__name__}")
        if not isinstance(self.meta, dict):
            raise JobValidationError(f"meta must be a JSON object, got {type(self.meta).__name__}")
        if not _is_int(self.max_attempts) or self.max_attempts < 1:
            raise JobValidationError(f"max_attempts must be > 0, got {self.max_attempts!r}")
        if self.max_attempts > _INT4_MAX:
            raise JobValidationError(
                f"max_attempts must be at most {_INT4_MAX} (PostgreSQL's integer), "
                f"got {self.max_attempts!r}"
            )
        if not _is_int(self.priority) or not 0 <= self.priority <= 9:
            raise JobValidationError(f"priority must be 0..9, got {self.priority!r}")
        if self.scheduled_at is not None and not isinstance(self.scheduled_at, datetime):
            raise JobValidationError(
                f"scheduled_at must be a datetime, got {type(self.scheduled_at).__name__}"
            )
        if not isinstance(self.tags, list):
            raise JobValidationError(f"tags must be a list, got {type(self.tags).__name__}")
        _check_text(self.worker, "worker")
        _check_text(self.queue, "queue")
        for index, tag in enumerate(self.tags):
            if not isinstance(tag, str):
                raise JobValidationError(f"tags[{index}] is a {type(tag).__name__}, not a str")
            _check_text(tag, f"tags[{index}]")
        # The plain case (what nearly every job holds) in one quick pass; anything else, valid
        # or not, through the full walk, which alone words the errors.
        if not _plainly_valid(self.args, 0):
            check_json_value(self.args, "args")
        if not _plainly_valid(self.meta, 0):
            check_json_value(self.meta, "meta")

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


# The largest value of PostgreSQL's integer, the type of max_attempts and priority.
_INT4_MAX = 2**31 - 1

# The deepest JSON value an insert takes, counting the args or meta object itself as level 1.
# PostgreSQL's jsonb parser recurses once per level and stops at max_stack_depth: about 15,000
# levels at the default 2MB, but only about 650 at the smallest setting (100kB), and Python's
# json encoder (which writes what orjson cannot, past 255 levels) stops near 1,000 at the
# default recursion limit. 512 is below both, whatever the server's settings.
MAX_JSON_DEPTH = 512

_NUL_OR_SURROGATE = re.compile("[\x00\ud800-\udfff]")


def _is_int(value: Any) -> bool:
    # bool is an int to Python, but Oban's changeset refuses true for an integer field, and
    # COPY would write the text "True".
    return isinstance(value, int) and not isinstance(value, bool)


def _text_problem(text: str) -> str | None:
    """What in ``text`` a jsonb or text column cannot store, or None."""
    if text.isascii() and "\x00" not in text:
        return None
    found = _NUL_OR_SURROGATE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "holds a NUL character (\\u0000), which PostgreSQL cannot store in text or jsonb"
    return (
        f"holds a surrogate (\\u{ord(found.group()):04x}), which is not a Unicode character "
        "and cannot be encoded as UTF-8"
    )


def _check_text(text: str, where: str) -> None:
    problem = _text_problem(text)
    if problem is not None:
        raise JobValidationError(f"{where} {problem}")


def _abridged(path: str, keep: int = 60) -> str:
    return path if len(path) <= 2 * keep else f"{path[:keep]}…{path[-keep:]}"


def _segment(key: Any) -> str:
    # ASCII-only JSON text, so a NUL or a surrogate in a key prints as an escape.
    return "[" + json.dumps(key) + "]"


# How deep :func:`_plainly_valid` looks (it recurses) before leaving a value to the full walk.
_QUICK_DEPTH = 32


def _plainly_valid(value: Any, depth: int) -> bool:
    """True when :func:`check_json_value` would certainly accept ``value``: only the exact
    types dict (str keys), list, tuple, str, int, bool, None and finite float, text PostgreSQL
    stores, at most :data:`_QUICK_DEPTH` levels. False means "look closer", not "invalid":
    subclasses, deep values and every problem go to the full walk, which builds the paths its
    messages need; this pass builds none, which is where the time of a validation went."""
    kind = type(value)
    if kind is str:
        return _text_problem(value) is None
    if kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if depth >= _QUICK_DEPTH:
        return False
    if kind is dict:
        for key, child in value.items():
            if type(key) is not str or (
                not (key.isascii() and "\x00" not in key) and _text_problem(key) is not None
            ):
                return False
            # Scalar members checked here rather than in a call each: most members are.
            child_kind = type(child)
            if child_kind is str:
                if not (child.isascii() and "\x00" not in child) and _text_problem(child):
                    return False
            elif not (child_kind is int or child_kind is bool or child is None) and not (
                _plainly_valid(child, depth + 1)
            ):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_plainly_valid(child, depth + 1) for child in value)
    return False


def check_json_value(value: Any, name: str) -> None:
    """Raise :class:`JobValidationError` unless ``value`` is stored as JSON exactly as given:
    dicts with str keys, lists and tuples, str, int, finite float, bool and None, no text
    PostgreSQL refuses (NUL, lone surrogates) and at most :data:`MAX_JSON_DEPTH` levels.
    Iterative, so any depth is reported rather than overflowing the stack."""
    stack: list[tuple[Any, str, int]] = [(value, name, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, path)
        elif item is None or isinstance(item, bool | int):
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise JobValidationError(
                    f"{path} is {item!r}, which JSON cannot represent; use null or a string"
                )
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_JSON_DEPTH:
                raise JobValidationError(
                    f"{_abridged(path)} is nested deeper than {MAX_JSON_DEPTH} levels, more "
                    "than PostgreSQL's jsonb accepts at every max_stack_depth setting"
                )
            children: list[tuple[Any, str, int]] = []
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise JobValidationError(
                            f"{path} has a key of type {type(key).__name__} ({key!r}): JSON "
                            "object keys are strings"
                        )
                    where = path + _segment(key)
                    problem = _text_problem(key)
                    if problem is not None:
                        raise JobValidationError(f"{where}: the key {problem}")
                    children.append((child, where, depth + 1))
            else:
                children = [
                    (child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item)
                ]
            stack.extend(reversed(children))  # popped in document order: the first problem
        else:
            raise JobValidationError(
                f"{path} is of type {type(item).__name__}, which is not a JSON value (use "
                "dict, list, str, int, float, bool or None)"
            )


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    from datetime import UTC

    return moment.astimezone(UTC).replace(tzinfo=None)
