"""The cron plugin on real PostgreSQL: Oban's rows and names, one insert per slot, leader only.

Minutes are driven by an injected clock, so no test waits for a real minute boundary.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry, worker
from bridge.jobs.plugins.cron import (
    Cron,
    CronEntry,
    CronEntryError,
    CronError,
    build_job,
    entry_name,
    parse_entry,
    slot_lock_key,
)
from bridge.jobs.plugins.peer import Peer
from bridge.wire.atom import Atom
from tests.jobs.support import job_json, running_node
from tests.support.beam import run_elixir

Conn = psycopg.Connection[tuple[object, ...]]
GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden" / "cron"

# The crontab of golden/cron: [{"* * * * *", Realstack.CronWorker}, {"* * * * *",
# Realstack.CronWorker, [args: %{"k" => "v"}, priority: 1, tags: ["cron-tag"], max_attempts: 3]}]
# with the worker declared `use Oban.Worker, queue: :golden` (its rows are in queue "golden").
GOLDEN_DEFAULTS = {"queue": "golden"}
GOLDEN_OPTS: dict[str, Any] = {
    "args": {"k": "v"},
    "priority": 1,
    "tags": ["cron-tag"],
    "max_attempts": 3,
}


def golden_entries() -> list[CronEntry]:
    return [
        CronEntry("* * * * *", "Realstack.CronWorker", defaults=GOLDEN_DEFAULTS),
        CronEntry("* * * * *", "Realstack.CronWorker", GOLDEN_OPTS, defaults=GOLDEN_DEFAULTS),
    ]


def golden_rows() -> list[dict[str, Any]]:
    lines = (GOLDEN / "s4_oban_jobs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


class FakeClock:
    """A settable wall clock; ``queue`` holds values for the next calls, then ``now`` rules."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.queue: list[datetime] = []

    def __call__(self) -> datetime:
        return self.queue.pop(0) if self.queue else self.now


SLOT = datetime(2030, 5, 6, 7, 8, tzinfo=UTC)  # a Monday


def jobs_table(prefix: str) -> sql.Composed:
    return sql.SQL("{}.oban_jobs").format(sql.Identifier(prefix))


def cron_rows(conn: Conn, prefix: str) -> list[tuple[Any, ...]]:
    query = sql.SQL(
        "SELECT meta->>'cron_name', inserted_at FROM {} WHERE meta ? 'cron' ORDER BY id"
    ).format(jobs_table(prefix))
    return conn.execute(query).fetchall()


def insert_elixir_row(conn: Conn, prefix: str, name: str, inserted_at: datetime) -> None:
    """A row as Oban's Cron writes it (golden/cron), inserted by "the Elixir side"."""
    meta = {"cron": True, "cron_tz": "Etc/UTC", "cron_expr": "* * * * *", "cron_name": name}
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (state, queue, worker, args, meta, inserted_at, scheduled_at) "
            "VALUES ('available', 'golden', 'Realstack.CronWorker', '{{}}', %s, %s, %s)"
        ).format(jobs_table(prefix)),
        (json.dumps(meta), inserted_at, inserted_at),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(SLOT - timedelta(seconds=30))


def next_minute(clock: FakeClock, seconds: float = 5.0) -> datetime:
    """Move the clock ``seconds`` into the next minute and return that minute."""
    minute = clock.now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    clock.now = minute + timedelta(seconds=seconds)
    return minute


# -- names ------------------------------------------------------------------------------------


def test_cron_names_are_those_oban_wrote_in_golden_rows() -> None:
    names = [entry.name for entry in golden_entries()]
    assert names == [row["meta"]["cron_name"] for row in golden_rows()]
    assert names == ["64857449", "46152194"]
    # the worker's own defaults are not part of the name, as in Oban
    assert CronEntry("* * * * *", "Realstack.CronWorker").name == "64857449"
    # Worker.to_string drops the Elixir. prefix of a module name
    assert CronEntry("* * * * *", "Elixir.Realstack.CronWorker").name == "64857449"


# Each case: a Python entry, and the term Oban's entry_name/1 hashes for the matching Elixir
# crontab tuple (options map with string keys, args keys stringified, values untouched).
NAME_CASES: list[tuple[CronEntry, str]] = [
    (
        CronEntry("0 * * * *", "MyApp.HourlyWorker", {"args": {Atom("custom"): "arg"}}),
        '{"0 * * * *", "MyApp.HourlyWorker", %{"args" => %{"custom" => "arg"}}}',
    ),
    (
        CronEntry(
            "0 12 * * MON",
            "MyApp.MondayWorker",
            {"queue": Atom("scheduled"), "tags": ["mondays"]},
        ),
        '{"0 12 * * MON", "MyApp.MondayWorker", %{"queue" => :scheduled, "tags" => ["mondays"]}}',
    ),
    (
        CronEntry("0 12 * * MON", "MyApp.MondayWorker", {"queue": "scheduled"}),
        '{"0 12 * * MON", "MyApp.MondayWorker", %{"queue" => "scheduled"}}',
    ),
    (
        CronEntry(
            "@daily",
            "badge_forge.generator.GenerateBadge",
            {
                "args": {"n": 1, "nested": {"x": [1, 2.5, None, True]}},
                "max_attempts": 1,
                "meta": {"team": "py"},
            },
        ),
        '{"@daily", "badge_forge.generator.GenerateBadge", %{"args" => %{"n" => 1, '
        '"nested" => %{"x" => [1, 2.5, nil, true]}}, "max_attempts" => 1, '
        '"meta" => %{"team" => "py"}}}',
    ),
    (
        CronEntry("*/5 9-17 * * 1-5", "Wörker", {"args": {"ключ": "значение"}, "priority": 9}),
        '{"*/5 9-17 * * 1-5", "Wörker", %{"args" => %{"ключ" => "значение"}, "priority" => 9}}',
    ),
]


@pytest.fixture(scope="module")
def beam_names() -> list[str]:
    terms = ", ".join(term for _, term in NAME_CASES)
    out = run_elixir(f"for t <- [{terms}], do: IO.puts(:erlang.phash2(t))")
    return out.decode().split()


@pytest.mark.parametrize("index", range(len(NAME_CASES)))
def test_cron_names_agree_with_the_beam(index: int, beam_names: list[str]) -> None:
    entry, _ = NAME_CASES[index]
    assert entry.name == beam_names[index]


def test_entry_name_stringifies_only_top_level_keys() -> None:
    assert entry_name("* * * * *", "W", {Atom("args"): {Atom("a"): 1}}) == entry_name(
        "* * * * *", "W", {"args": {"a": 1}}
    )
    # nested atom keys are hashed as atoms, as Oban leaves them
    assert entry_name("* * * * *", "W", {"args": {"a": {Atom("b"): 1}}}) != entry_name(
        "* * * * *", "W", {"args": {"a": {"b": 1}}}
    )


# -- building jobs (pure) ----------------------------------------------------------------------


def test_jobs_take_worker_defaults_then_entry_options() -> None:
    registry = Registry()

    @worker(
        name="py.Report", queue="reports", max_attempts=5, priority=2, tags=["a"], registry=registry
    )
    def report(job: Job) -> None:
        return None

    spec = registry.resolve("py.Report")
    plain = build_job(CronEntry("@hourly", "py.Report"), "Etc/UTC", spec)
    assert (plain.queue, plain.max_attempts, plain.priority, plain.tags) == ("reports", 5, 2, ["a"])
    entry = CronEntry(
        "@hourly",
        "py.Report",
        {"queue": Atom("urgent"), "priority": 0, "tags": [" B "], "meta": {"x": 1}},
    )
    custom = build_job(entry, "Europe/Paris", spec)
    assert (custom.queue, custom.max_attempts, custom.priority, custom.tags) == (
        "urgent",
        5,
        0,
        ["b"],
    )
    assert custom.meta == {
        "x": 1,
        "cron": True,
        "cron_expr": "@hourly",
        "cron_name": entry.name,
        "cron_tz": "Europe/Paris",
    }
    # an Elixir worker this process does not know: Oban's defaults unless told otherwise
    elixir = build_job(CronEntry("@hourly", "MyApp.Worker"), "Etc/UTC", None)
    assert (elixir.queue, elixir.max_attempts, elixir.priority, elixir.tags) == (
        "default",
        20,
        0,
        [],
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CronEntry("* * * * 7", "W"), "out of range: 0..6"),
        (lambda: CronEntry("* * * * *", ""), "worker must be"),
        (lambda: CronEntry("* * * * *", "W", {"unique": {"period": 60}}), "unsupported opts"),
        (lambda: CronEntry("* * * * *", "W", defaults={"args": {}}), "args belong in opts"),
        (lambda: CronEntry("* * * * *", "W", {"priority": 10}), "priority must be 0..9"),
        (lambda: CronEntry("* * * * *", "W", {"max_attempts": 0}), "max_attempts must be"),
        (lambda: CronEntry("* * * * *", "W", {"priority": True}), "must be an integer"),
        (lambda: CronEntry("* * * * *", "W", {"tags": "a"}), "list of strings"),
        (lambda: CronEntry("* * * * *", "W", {"args": [1]}), "args must be a JSON object"),
        (lambda: CronEntry("* * * * *", "W", {"queue": 5}), "queue of W must be"),
        (lambda: CronEntry("* * * * *", "W", [1]), "opts must be a mapping"),  # type: ignore[arg-type]
        (lambda: CronEntry.of(("* * * * *",)), "expected crontab entry"),
        (lambda: parse_entry("* * * * MyWorker"), "expected '<expression> <worker>"),
        (lambda: parse_entry("* * * * * W {bad"), "not JSON"),
        (lambda: parse_entry("* * * * * W [1]"), "must be a JSON object"),
        (lambda: Cron([], timezone="Mars/Olympus"), "unknown timezone"),
        (lambda: Cron([], delay=59), "delay must be between"),
        (lambda: Cron([], delay="5"), "delay must be a number"),  # type: ignore[arg-type]
        (lambda: Cron([], lock_timeout=0), "lock_timeout must be positive"),
    ],
)
def test_bad_entries_and_settings_are_refused(make: Any, message: str) -> None:
    with pytest.raises(CronError, match=message):
        make()


def test_command_line_entries() -> None:
    simple = parse_entry("* * * * * MyApp.Worker")
    assert (simple.expression, simple.worker, dict(simple.opts)) == (
        "* * * * *",
        "MyApp.Worker",
        {},
    )
    nick = parse_entry('@daily py.Report {"args": {"a": [1, 2]}, "queue": "reports"}')
    assert (nick.expression, nick.worker) == ("@daily", "py.Report")
    assert nick.opts == {"args": {"a": [1, 2]}, "queue": "reports"}
    # the expression keeps its own spacing: it is hashed into cron_name and stored in cron_expr
    spaced = parse_entry("0  9 * * MON-FRI  MyApp.Worker")
    assert spaced.expression == "0  9 * * MON-FRI"
    assert isinstance(parse_entry("* * * * * W").name, str)
    with pytest.raises(CronEntryError):
        parse_entry("61 * * * * W")


def test_slot_lock_keys_are_per_prefix_entry_and_minute() -> None:
    key = slot_lock_key("public", "64857449", SLOT)
    assert -(2**63) <= key < 2**63
    assert key == slot_lock_key("public", "64857449", SLOT + timedelta(seconds=59))
    assert key != slot_lock_key("public", "64857449", SLOT + timedelta(minutes=1))
    assert key != slot_lock_key("public", "46152194", SLOT)
    assert key != slot_lock_key("other", "64857449", SLOT)


# -- on PostgreSQL -------------------------------------------------------------------------------


async def test_rows_are_the_rows_oban_cron_writes(
    oban_prefix: str, database_url: str, clock: FakeClock
) -> None:
    listener = psycopg.connect(database_url, autocommit=True)
    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"{oban_prefix}.oban_insert")))
    try:
        cron = Cron(golden_entries(), clock=clock)
        async with running_node(
            database_url, oban_prefix, {}, Registry(), node="py-1", plugins=[cron]
        ):
            assert await cron.tick() == []  # the starting minute is never evaluated
            minute = next_minute(clock)
            jobs = await cron.tick()
        inserts = [n.payload for n in listener.notifies(timeout=1.0, stop_after=1)]
    finally:
        listener.close()
    assert len(jobs) == 2
    rows = [job_json(database_url, oban_prefix, job.id) for job in jobs if job.id is not None]
    golden_notify = [
        json.loads(line)
        for line in (GOLDEN / "s4_notify.jsonl").read_text().splitlines()
        if '"channel"' in line
    ]
    assert inserts == [n["payload"] for n in golden_notify if n["channel"] == "public.oban_insert"]
    # golden rows were run afterwards; these columns are what the insert wrote
    ran = {"state", "attempt", "attempted_at", "attempted_by", "completed_at"}
    for row, golden in zip(rows, golden_rows(), strict=True):
        assert set(row) == set(golden)
        for key in set(golden) - ran - {"id", "inserted_at", "scheduled_at"}:
            assert row[key] == golden[key], key
        for key in set(golden) - ran:
            assert type(row[key]) is type(golden[key]), key
        assert (row["state"], row["attempt"], row["attempted_by"]) == ("available", 0, None)
        assert row["inserted_at"] == row["scheduled_at"]
        inserted = datetime.fromisoformat(row["inserted_at"]).replace(tzinfo=UTC)
        assert minute <= inserted < minute + timedelta(minutes=1)


async def test_two_python_nodes_insert_a_slot_once(
    conn: Conn, oban_prefix: str, database_url: str, clock: FakeClock
) -> None:
    first = Cron(golden_entries(), clock=clock)
    second = Cron(golden_entries(), clock=clock)
    async with (
        running_node(database_url, oban_prefix, {}, Registry(), node="a", plugins=[first]),
        running_node(database_url, oban_prefix, {}, Registry(), node="b", plugins=[second]),
    ):
        next_minute(clock)
        together = await asyncio.gather(first.tick(), second.tick())
        next_minute(clock, seconds=30)
        one_by_one = [await first.tick(), await second.tick()]
    assert sorted(len(jobs) for jobs in together) == [0, 2]
    assert sorted(len(jobs) for jobs in one_by_one) == [0, 2]
    assert len(cron_rows(conn, oban_prefix)) == 4


async def test_a_node_waits_for_a_slot_another_node_is_inserting(
    oban_prefix: str, database_url: str, clock: FakeClock
) -> None:
    entry = CronEntry("* * * * *", "Realstack.CronWorker", defaults=GOLDEN_DEFAULTS)
    cron = Cron([entry], clock=clock)
    async with running_node(database_url, oban_prefix, {}, Registry(), plugins=[cron]):
        minute = next_minute(clock)
        key = slot_lock_key(oban_prefix, entry.name, minute)
        # "Another node" holds the slot's lock and has inserted, but not committed yet.
        with psycopg.connect(database_url) as other:
            other.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            insert_elixir_row(other, oban_prefix, entry.name, minute.replace(tzinfo=None))
            tick = asyncio.create_task(cron.tick())
            await wait_for_lock_waiter(other, key)
            other.commit()
        jobs = await asyncio.wait_for(tick, 10)
    assert jobs == []
    with psycopg.connect(database_url, autocommit=True) as check:
        assert len(cron_rows(check, oban_prefix)) == 1


async def wait_for_lock_waiter(conn: Conn, key: int) -> None:
    """Until some backend waits for advisory lock ``key`` (its halves in classid/objid)."""
    unsigned = key % 2**64
    query = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1"
    )
    for _ in range(500):
        with psycopg.connect(conn.info.dsn, autocommit=True) as probe:
            row = probe.execute(query, (unsigned >> 32, unsigned & 0xFFFFFFFF)).fetchone()
        if row is not None and row[0] == 1:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the plugin never waited for the slot lock")


async def test_an_elixir_insert_of_the_slot_makes_python_skip_it(
    conn: Conn, oban_prefix: str, database_url: str, clock: FakeClock
) -> None:
    plain, with_args = golden_entries()
    cron = Cron([plain, with_args], clock=clock)
    async with running_node(database_url, oban_prefix, {}, Registry(), plugins=[cron]):
        minute = next_minute(clock)
        naive = minute.replace(tzinfo=None)
        # Oban inserted `plain` 0.4 s into the minute; older rows and other entries don't count.
        insert_elixir_row(conn, oban_prefix, plain.name, naive + timedelta(seconds=0.4))
        insert_elixir_row(conn, oban_prefix, with_args.name, naive - timedelta(seconds=1))
        insert_elixir_row(conn, oban_prefix, "12345", naive + timedelta(seconds=1))
        jobs = await cron.tick()
        assert [job.meta["cron_name"] for job in jobs] == [with_args.name]
        # next minute: Oban inserted nothing (say its leader was down), so Python does both
        next_minute(clock)
        assert len(await cron.tick()) == 2


async def test_non_leaders_insert_nothing(
    conn: Conn, oban_prefix: str, database_url: str, clock: FakeClock
) -> None:
    held = sql.SQL(
        "INSERT INTO {}.oban_peers VALUES ('Bridge', 'other-node', now() at time zone 'utc', "
        "now() at time zone 'utc' + interval '1 hour')"
    ).format(sql.Identifier(oban_prefix))
    conn.execute(held)
    peer = Peer(peer_name="Bridge")
    cron = Cron(golden_entries(), clock=clock)
    async with running_node(
        database_url, oban_prefix, {}, Registry(), node="py-1", plugins=[peer, cron]
    ) as node:
        assert await peer.tick() is False
        assert not node.is_leader()
        next_minute(clock)
        assert await cron.tick() == []
        assert cron_rows(conn, oban_prefix) == []
        # once it leads, the next minute is inserted
        conn.execute(sql.SQL("DELETE FROM {}.oban_peers").format(sql.Identifier(oban_prefix)))
        assert await peer.tick() is True
        next_minute(clock)
        assert len(await cron.tick()) == 2


async def test_minutes_are_evaluated_once_after_the_delay(
    oban_prefix: str, database_url: str, clock: FakeClock
) -> None:
    cron = Cron(golden_entries()[:1], clock=clock, delay=5)
    async with running_node(database_url, oban_prefix, {}, Registry(), plugins=[cron]):
        clock.now = SLOT + timedelta(seconds=2)
        assert cron.next_interval() == pytest.approx(3.0)
        assert await cron.tick() == []  # too early: Oban may still be inserting
        clock.now = SLOT + timedelta(seconds=5)
        assert len(await cron.tick()) == 1
        assert await cron.tick() == []  # a minute is evaluated once
        clock.now = SLOT + timedelta(seconds=20)
        assert cron.next_interval() == pytest.approx(45.0)


async def test_a_slot_reached_too_late_is_skipped(
    conn: Conn, oban_prefix: str, database_url: str, clock: FakeClock
) -> None:
    cron = Cron(golden_entries(), clock=clock)
    async with running_node(database_url, oban_prefix, {}, Registry(), plugins=[cron]):
        minute = next_minute(clock)
        # the lock wait took us past the minute: the row would land outside its slot
        clock.queue = [minute + timedelta(seconds=5), minute + timedelta(seconds=61)]
        assert await cron.tick() == []
    assert cron_rows(conn, oban_prefix) == []


async def test_reboot_entries_fire_once_and_timezones_apply(
    conn: Conn, oban_prefix: str, database_url: str, clock: FakeClock
) -> None:
    registry = Registry()
    crontab = [
        ("@reboot", "py.Boot"),
        # 09:00 in Paris is 07:00 UTC in summer
        ("0 9 * * *", "py.Morning", {"args": {"hello": "world"}}),
    ]
    clock.now = datetime(2030, 7, 1, 6, 59, 30, tzinfo=UTC)
    cron = Cron(crontab, timezone="Europe/Paris", clock=clock)
    async with running_node(database_url, oban_prefix, {}, registry, plugins=[cron]):
        first = names_of(await tick_next(cron, clock))
        second = names_of(await tick_next(cron, clock))
    assert first == [("py.Boot", "@reboot"), ("py.Morning", "0 9 * * *")]
    assert second == []
    row = conn.execute(
        sql.SQL("SELECT meta->>'cron_tz', args FROM {} WHERE worker = 'py.Morning'").format(
            jobs_table(oban_prefix)
        )
    ).fetchone()
    assert row is not None
    assert row[0] == "Europe/Paris"
    assert row[1] == {"hello": "world"}


async def tick_next(cron: Cron, clock: FakeClock) -> list[Job]:
    next_minute(clock)
    return await cron.tick()


def names_of(jobs: list[Job]) -> list[tuple[str, str]]:
    return sorted((job.worker, job.meta["cron_expr"]) for job in jobs)
