"""Periodic jobs, inserted as ``Oban.Plugins.Cron`` inserts them, without ever firing a slot twice.

Rows look Elixir-made: one job per entry whose expression matches the minute, the worker's
defaults overridden by the entry's options, and meta ``{"cron": true, "cron_expr", "cron_tz",
"cron_name"}`` where ``cron_name`` is Oban's ``entry_name/1``: ``phash2({expr, worker,
opts})`` of the crontab tuple. An Elixir node and a Python node configured with the same entry
therefore name it identically, which is what lets us recognise Elixir's insert of a slot.

A slot is (entry, UTC minute). Only the node's leader evaluates a slot, and it does so in one
transaction that first takes an advisory lock per slot, then looks for a row with the entry's
``cron_name`` inserted in that minute, and inserts only the entries that have none. Python nodes
therefore never insert a slot twice, even while two of them believe they lead. Oban's own Cron
takes no lock and checks nothing, so beside it we can only wait: we evaluate ``delay`` seconds
into the minute, after Oban's insert normally committed (docs/cron.md states what remains).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from psycopg.rows import dict_row

from bridge.jobs import queries
from bridge.jobs.client.insert_rows import insert_notifications, insert_params
from bridge.jobs.client.job import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    Job,
    JobValidationError,
)
from bridge.jobs.client.registry import WorkerSpec
from bridge.jobs.plugins import NodeView, Plugin
from bridge.jobs.plugins.cron_expression import (
    DEFAULT_TIMEZONE,
    CronExpression,
    CronExpressionError,
    local_time,
    parse,
)
from bridge.jobs.plugins.cron_expression import timezone as find_zone
from bridge.wire.phash2 import phash2

log = logging.getLogger("bridge.plugins.cron")

# The job options a crontab entry may carry here. Oban accepts every Job option; unique,
# replace and scheduling options are not supported on this side (yet), so they are refused
# rather than silently dropped.
ENTRY_OPTIONS = ("args", "queue", "priority", "max_attempts", "tags", "meta")
DEFAULT_DELAY = 5.0
MAX_DELAY = 50.0
MINUTE = timedelta(minutes=1)

EXISTING_SLOTS = """
SELECT n.name FROM unnest(%(names)s::text[]) AS n(name)
WHERE EXISTS (
    SELECT 1 FROM {prefix}.oban_jobs AS j
    WHERE j.meta @> jsonb_build_object('cron', true, 'cron_name', n.name)
      AND j.inserted_at >= %(start)s AND j.inserted_at < %(end)s
)
"""

SLOT_LOCK = "SELECT pg_advisory_xact_lock(%(key)s)"
LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %(timeout)s, true)"


class CronError(ValueError):
    """A crontab or cron plugin setting that cannot work."""


class CronEntryError(CronError):
    """A crontab entry that Oban would refuse, or that uses an option this side lacks."""


def worker_string(worker: str) -> str:
    """Oban's ``Worker.to_string/1``: a module's name without the ``Elixir.`` prefix."""
    return worker.removeprefix("Elixir.")


def entry_name(expression: str, worker: str, opts: Mapping[str, Any]) -> str:
    """Oban's ``Plugins.Cron.entry_name/1``: the decimal ``phash2`` of the crontab tuple.

    Oban hashes ``{expr, worker_string, opts}`` with the keyword options turned into a map with
    string keys, and the top-level keys of ``args`` turned into strings too; nothing else is
    converted, so option values must be the Elixir terms themselves (``Atom("reports")`` for
    ``queue: :reports``).
    """
    term: dict[str, Any] = {str(key): value for key, value in opts.items()}
    if isinstance(term.get("args"), Mapping):
        term["args"] = {str(key): value for key, value in term["args"].items()}
    return str(phash2((expression, worker_string(worker), term)))


@dataclass(frozen=True, eq=False)
class CronEntry:
    """One crontab line: ``{expression, worker}`` or ``{expression, worker, opts}`` in Oban.

    ``opts`` are the tuple's options (they are hashed into ``cron_name``). ``defaults`` stand in
    for ``use Oban.Worker, queue: ...`` of a worker this process does not register (an Elixir
    one); a registered Python worker's own defaults are used when ``defaults`` is empty. They
    are not hashed, exactly as Oban does not hash the worker's options.
    """

    expression: str
    worker: str
    opts: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    parsed: CronExpression = field(init=False)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.worker, str) or not self.worker:
            raise CronEntryError(f"worker must be a non-empty string, got {self.worker!r}")
        try:
            parsed = parse(self.expression)
        except CronExpressionError as exc:
            raise CronEntryError(f"{self.expression!r}: {exc}") from exc
        for label, options in (("opts", self.opts), ("defaults", self.defaults)):
            if not isinstance(options, Mapping):
                raise CronEntryError(f"{label} must be a mapping, got {type(options).__name__}")
            unknown = sorted(str(key) for key in options if key not in ENTRY_OPTIONS)
            if unknown:
                raise CronEntryError(
                    f"unsupported {label} {', '.join(unknown)} for {self.worker} "
                    f"(supported: {', '.join(ENTRY_OPTIONS)})"
                )
        if "args" in self.defaults:
            raise CronEntryError("args belong in opts, not in the worker's defaults")
        # Own copies: the name is computed once, so later changes to the caller's dicts must
        # not make it disagree with the options actually used.
        object.__setattr__(self, "opts", dict(self.opts))
        object.__setattr__(self, "defaults", dict(self.defaults))
        object.__setattr__(self, "parsed", parsed)
        object.__setattr__(self, "name", entry_name(self.expression, self.worker, self.opts))
        build_job(self, DEFAULT_TIMEZONE)  # refuse bad options now, not at the first slot

    @classmethod
    def of(cls, item: CronEntry | Sequence[Any]) -> CronEntry:
        """From an entry or an Oban-style tuple ``(expression, worker[, opts])``."""
        if isinstance(item, CronEntry):
            return item
        if isinstance(item, Sequence) and not isinstance(item, str) and len(item) in (2, 3):
            opts = item[2] if len(item) == 3 else {}
            return cls(item[0], item[1], opts)
        raise CronEntryError(
            "expected crontab entry to be an (expression, worker) or "
            f"(expression, worker, options) tuple, got: {item!r}"
        )


_CLI_ENTRY = re.compile(
    r"\s*(@\S+|\S+\s+\S+\s+\S+\s+\S+\s+\S+)\s+(\S+)(?:\s+(\S.*?))?\s*", re.ASCII | re.DOTALL
)


def parse_entry(text: str) -> CronEntry:
    """A command-line entry: ``"<expression> <worker> [<JSON object of options>]"``.

    The expression is a nickname (``@daily``) or five fields, kept with its own spacing since
    it is hashed into ``cron_name``. JSON strings are Elixir binaries: an Elixir entry written
    ``queue: :reports`` hashes differently from ``{"queue": "reports"}``.
    """
    match = _CLI_ENTRY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise CronEntryError(f"expected '<expression> <worker> [<json options>]', got {text!r}")
    expression, worker, options = match.groups()
    opts: Any = {}
    if options:
        try:
            opts = orjson.loads(options)
        except orjson.JSONDecodeError as exc:
            raise CronEntryError(f"options of {worker} are not JSON: {exc}") from exc
        if not isinstance(opts, dict):
            raise CronEntryError(f"options of {worker} must be a JSON object, got {options!r}")
    return CronEntry(expression, worker, opts)


def build_job(entry: CronEntry, tz_name: str, spec: WorkerSpec | None = None) -> Job:
    """The job Oban's ``build_changeset`` makes: worker defaults, then the entry's options.

    Options replace defaults whole (``Worker.merge_opts``); the cron keys are then merged into
    the meta, so an entry's own meta keeps its other keys.
    """
    merged: dict[str, Any] = {
        "queue": DEFAULT_QUEUE,
        "max_attempts": DEFAULT_MAX_ATTEMPTS,
        "priority": DEFAULT_PRIORITY,
        "tags": [],
        "meta": {},
    }
    if spec is not None and not entry.defaults:
        merged.update(
            queue=spec.queue,
            max_attempts=spec.max_attempts,
            priority=spec.priority,
            tags=list(spec.tags),
        )
    merged.update(entry.defaults)
    merged.update(entry.opts)
    args = merged.pop("args", {})
    meta = merged["meta"]
    if not isinstance(meta, Mapping):
        raise CronEntryError(f"meta of {entry.worker} must be a mapping, got {meta!r}")
    tags = merged["tags"]
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise CronEntryError(f"tags of {entry.worker} must be a list of strings, got {tags!r}")
    for key in ("max_attempts", "priority"):
        if isinstance(merged[key], bool) or not isinstance(merged[key], int):
            raise CronEntryError(f"{key} of {entry.worker} must be an integer, got {merged[key]!r}")
    queue = merged["queue"]
    if not isinstance(queue, str):
        raise CronEntryError(f"queue of {entry.worker} must be a string or Atom, got {queue!r}")
    cron_meta = {"cron": True, "cron_expr": entry.expression, "cron_name": entry.name}
    try:
        return Job.new(
            worker_string(entry.worker),
            args,
            queue=str(queue),
            max_attempts=merged["max_attempts"],
            priority=merged["priority"],
            tags=tags,
            meta={**dict(meta), **cron_meta, "cron_tz": tz_name},
        )
    except JobValidationError as exc:
        raise CronEntryError(f"{entry.worker}: {exc}") from exc


def floor_minute(moment: datetime) -> datetime:
    """The UTC minute containing ``moment`` (aware, or naive meaning UTC), as an aware value."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def slot_lock_key(prefix: str, name: str, slot: datetime) -> int:
    """The advisory lock (a signed 64-bit key) that serialises one slot among Python nodes.

    Oban's own locks are phash2 sums below 2^29; a 64-bit digest will not meet them by chance,
    and a collision would only make two evaluations wait for each other.
    """
    minute = floor_minute(slot).strftime("%Y-%m-%dT%H:%M")
    digest = hashlib.blake2b(
        f"bridge.cron\0{prefix}\0{name}\0{minute}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _utc_clock() -> datetime:
    return datetime.now(UTC)


class Cron(Plugin):
    """Oban's Cron for a Python node; see the module docstring for the slot guarantee.

    ``clock`` returns the current time (aware, or naive UTC); tests drive minutes with it.
    ``delay`` is how many seconds into each minute the slot is evaluated: 0 is fine when no
    Elixir node runs these entries, otherwise leave Oban time to insert first.
    """

    name = "cron"

    def __init__(
        self,
        crontab: Iterable[CronEntry | Sequence[Any]],
        *,
        timezone: str = DEFAULT_TIMEZONE,
        delay: float = DEFAULT_DELAY,
        lock_timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(interval=60.0)
        self.entries = [CronEntry.of(item) for item in crontab]
        self.timezone = timezone
        self.zone = _zone(timezone)
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise CronError(f"delay must be a number of seconds, got {delay!r}")
        if not 0 <= delay <= MAX_DELAY:
            raise CronError(f"delay must be between 0 and {MAX_DELAY} seconds, got {delay}")
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, int | float):
            raise CronError(f"lock_timeout must be a number of seconds, got {lock_timeout!r}")
        if not lock_timeout > 0:
            raise CronError(f"lock_timeout must be positive, got {lock_timeout!r}")
        self.delay = timedelta(seconds=delay)
        self.lock_timeout = lock_timeout
        self.clock = clock or _utc_clock
        self.last_slot: datetime | None = None

    def now(self) -> datetime:
        moment = self.clock()
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    def start(self, node: NodeView) -> None:
        # Oban's first evaluation is at the next minute boundary, never in the starting minute.
        self.last_slot = floor_minute(self.now())
        super().start(node)

    def next_interval(self) -> float:
        now = self.now()
        slot = floor_minute(now)
        if self.last_slot is not None and slot <= self.last_slot:
            slot += MINUTE
        return max(0.01, (slot + self.delay - now).total_seconds())

    def due(self, slot: datetime) -> list[CronEntry]:
        local = local_time(slot, self.zone)
        return [entry for entry in self.entries if entry.parsed.matches(local)]

    async def tick(self) -> list[Job]:
        now = self.now()
        slot = floor_minute(now)
        if self.last_slot is not None and slot <= self.last_slot:
            return []
        if now < slot + self.delay:
            return []
        self.last_slot = slot
        node = self.node
        assert node is not None
        if not node.is_leader():
            return []
        jobs = await self.insert_slot(slot)
        # Oban drops @reboot entries after its first evaluation as leader.
        self.entries = [entry for entry in self.entries if not entry.parsed.reboot]
        for queue in sorted({job.queue for job in jobs}):
            node.wake(queue)
        return jobs

    async def insert_slot(self, slot: datetime) -> list[Job]:
        """Insert the slot's due entries that no node (Python or Elixir) has inserted yet."""
        node = self.node
        assert node is not None
        due = self.due(slot)
        if not due:
            return []
        prefix = node.prefix
        registry = node.config.registry
        keys = sorted({slot_lock_key(prefix, entry.name, slot) for entry in due})
        start = slot.replace(tzinfo=None)
        async with node.pool.connection() as conn, conn.transaction():
            timeout = f"{int(self.lock_timeout * 1000)}ms"
            await conn.execute(LOCK_TIMEOUT, {"timeout": timeout})
            for key in keys:  # one order everywhere, so two evaluations cannot deadlock
                await conn.execute(SLOT_LOCK, {"key": key})
            cur = await conn.execute(
                queries.render(EXISTING_SLOTS, prefix),
                {"names": sorted({e.name for e in due}), "start": start, "end": start + MINUTE},
            )
            taken = {row[0] for row in await cur.fetchall()}
            now = self.now()
            if now >= slot + MINUTE:
                # Our row would fall outside the slot's minute, where no other node would see
                # it: better to miss a late slot than to risk running it twice.
                log.warning("cron slot %s evaluated too late (%s); skipped", slot, now)
                return []
            jobs = [
                build_job(entry, self.timezone, registry.resolve(worker_string(entry.worker)))
                for entry in due
                if entry.name not in taken
            ]
            if not jobs:
                return []
            params = insert_params(jobs, now.replace(tzinfo=None))
            async with conn.cursor(row_factory=dict_row) as insert:
                await insert.execute(queries.render(queries.INSERT_JOBS, prefix), params)
                rows = await insert.fetchall()
                for note in insert_notifications(prefix, rows):
                    await insert.execute(queries.NOTIFY, note)
        inserted = [Job.from_row(row) for row in rows]
        log.info(
            "cron slot %s: inserted %s", slot.strftime("%Y-%m-%d %H:%M"), [j.id for j in inserted]
        )
        return inserted


def _zone(name: str) -> ZoneInfo:
    try:
        return find_zone(name)
    except CronExpressionError as exc:
        raise CronError(str(exc)) from exc


__all__ = [
    "Cron",
    "CronEntry",
    "CronEntryError",
    "CronError",
    "build_job",
    "entry_name",
    "floor_minute",
    "parse_entry",
    "slot_lock_key",
    "worker_string",
]
