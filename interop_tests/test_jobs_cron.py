"""Cron on both sides for the same schedule: what each order of evaluation leaves per slot.

The fixture runs `Fixture.Cron`, a mirror of `Oban.Plugins.Cron` 2.23.1 (no lock, no check:
the leader inserts every due entry); Python runs `bridge.jobs.plugins.cron.Cron` (slot lock,
then a look for the slot's row). Both have the same crontab — golden/cron's two entries plus
entries with other expressions, an atom option and meta — so both name every entry alike. A
slot is (entry, minute); minutes are chosen, never waited for: the fixture evaluates a given
instant on command (`cron.evaluate` / `cron.race`), the Python plugin is given a clock.

What docs/cron.md ("Guarantees") claims, checked slot by slot:

* Oban's row committed before Python's evaluation starts → one row, Elixir's;
* Python's evaluation committed before Oban's starts → two rows, one from each side (Oban
  inserts whatever is there: the documented way a slot runs twice);
* overlapping evaluations → one or two rows, never two from one side, never none;
* every row is the row Oban's cron writes (golden columns and meta, byte for byte).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge.jobs.client.registry import Registry
from bridge.jobs.plugins.cron import Cron, CronEntry
from bridge.wire.atom import Atom
from interop_tests.fixture import CommandFailed, ElixirFixture
from interop_tests.support import in_thread
from tests.jobs.support import running_node

# golden/cron as tests/ holds it (interop_tests/data/golden has no cron capture)
GOLDEN_CRON = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden" / "cron"
GOLDEN_MINUTE = "2026-11-23T01:06:00.402203"  # inserted_at of golden/cron's rows
RAN = {"state", "attempt", "attempted_at", "attempted_by", "completed_at"}  # golden rows ran


@dataclass(frozen=True)
class Entry:
    """One crontab line as both sides spell it (atoms as ``Atom`` here, ``{"atom": …}`` there)."""

    expr: str
    worker: str
    opts: dict[str, Any]
    worker_opts: dict[str, Any]

    def python(self) -> CronEntry:
        return CronEntry(self.expr, self.worker, self.opts, defaults=self.worker_opts)

    def fixture(self) -> dict[str, Any]:
        return {
            "expr": self.expr,
            "worker": self.worker,
            "opts": to_fixture(self.opts),
            "worker_opts": to_fixture(self.worker_opts),
        }


def to_fixture(value: Any) -> Any:
    if isinstance(value, Atom):
        return {"atom": str(value)}
    if isinstance(value, dict):
        return {key: to_fixture(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_fixture(item) for item in value]
    return value


# golden/cron: `use Oban.Worker, queue: :golden` and the crontab in its s4_notes.jsonl.
GOLDEN_ENTRIES = [
    Entry("* * * * *", "Realstack.CronWorker", {}, {"queue": Atom("golden")}),
    Entry(
        "* * * * *",
        "Realstack.CronWorker",
        {"args": {"k": "v"}, "priority": 1, "tags": ["cron-tag"], "max_attempts": 3},
        {"queue": Atom("golden")},
    ),
]
ENTRIES = [
    *GOLDEN_ENTRIES,
    Entry("*/3 * * * *", "Elixir.Fixture.Echo", {"queue": Atom("cron")}, {}),
    Entry("*/7 9-17 * * MON-FRI", "Fixture.Echo", {"meta": {"team": "ops"}}, {"max_attempts": 5}),
    Entry("0,30 */2 * JAN,JUL,DEC *", "Fixture.Echo", {"args": {"n": [1, 2.5, None]}}, {}),
    Entry("@hourly", "Fixture.Echo", {"tags": ["Hourly", " x "]}, {"priority": 2}),
]

# The Python plugin's clock: each evaluation runs in a task of its own with its own instant.
NOW: ContextVar[datetime] = ContextVar("now", default=datetime(2031, 1, 1, tzinfo=UTC))


def golden_rows() -> list[dict[str, Any]]:
    lines = (GOLDEN_CRON / "s4_oban_jobs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@functools.cache
def golden_by_name() -> dict[str, dict[str, Any]]:
    return {row["meta"]["cron_name"]: row for row in golden_rows()}


def minutes(count: int, seed: int) -> list[datetime]:
    """Distinct minutes of 2031, seeded; each evaluated 0.4 s in, where Oban's rows land."""
    rng = random.Random(seed)
    start = datetime(2031, 1, 1, tzinfo=UTC)
    picked = rng.sample(range(365 * 24 * 60), count)
    return [start + timedelta(minutes=m, seconds=0.402203) for m in picked]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def naive_iso(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat()


def slot_rows(url: str, prefix: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every cron row by slot (cron_name, minute), with ``meta_text``: jsonb's own text."""
    query = sql.SQL(
        "SELECT row_to_json(j)::text, j.meta::text FROM {}.oban_jobs j ORDER BY j.id"
    ).format(sql.Identifier(prefix))
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for text, meta_text in conn.execute(query).fetchall():
            row = {**json.loads(text), "meta_text": meta_text}
            minute = row["inserted_at"][:16]
            found.setdefault((row["meta"]["cron_name"], minute), []).append(row)
    return found


def row_differences(ours: dict[str, Any], theirs: dict[str, Any], skip: set[str]) -> list[str]:
    keys = (set(ours) | set(theirs)) - skip
    return [
        f"{key}: {ours.get(key)!r} != {theirs.get(key)!r}"
        for key in sorted(keys)
        if ours.get(key) != theirs.get(key)
    ]


def golden_differences(row: dict[str, Any]) -> list[str]:
    """For a row of a golden entry: every column the insert wrote, and jsonb's meta text."""
    golden = golden_by_name().get(row["meta"]["cron_name"])
    if golden is None:
        return []
    diffs = row_differences(row, golden, RAN | {"id", "inserted_at", "scheduled_at", "meta_text"})
    if row["meta_text"] != json.dumps(golden["meta"]):
        diffs.append(f"meta text {row['meta_text']} != {json.dumps(golden['meta'])}")
    if (row["state"], row["attempt"], row["inserted_at"]) != ("available", 0, row["scheduled_at"]):
        diffs.append(f"state/attempt/timestamps {row['state']}, {row['attempt']}")
    return diffs


def start_both(fx: ElixirFixture, entries: list[Entry]) -> Cron:
    names = fx.call("cron.start", crontab=[e.fixture() for e in entries])["names"]
    cron = Cron([e.python() for e in entries], clock=NOW.get)
    assert names == [entry.name for entry in cron.entries], "the two sides name entries apart"
    return cron


async def python_evaluates(cron: Cron, moment: datetime) -> tuple[list[int], int, int]:
    """The plugin's evaluation of ``moment``'s minute with its clock at ``moment``."""
    NOW.set(moment)
    started = time.time_ns() // 1000
    jobs = await cron.insert_slot(moment.replace(second=0, microsecond=0))
    return [job.id for job in jobs if job.id is not None], started, time.time_ns() // 1000


def due_names(cron: Cron, moment: datetime) -> set[str]:
    return {entry.name for entry in cron.due(moment.replace(second=0, microsecond=0))}


# -- the rows ----------------------------------------------------------------------------------


def test_fixture_cron_writes_golden_rows_and_names(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    names = fx.call("cron.start", crontab=[e.fixture() for e in GOLDEN_ENTRIES])["names"]
    golden = golden_rows()
    assert names == [row["meta"]["cron_name"] for row in golden] == ["64857449", "46152194"]
    fx.call("listen", channels=["insert"])
    reply = fx.call("cron.evaluate", at=GOLDEN_MINUTE + "Z")
    assert reply["leader"] is True and len(reply["jobs"]) == 2
    heard = fx.heard("insert", at_least=1, timeout_ms=2000)
    golden_notify = [
        json.loads(line) for line in (GOLDEN_CRON / "s4_notify.jsonl").read_text().splitlines()
    ]
    assert [h["payload"] for h in heard] == [
        n["payload"] for n in golden_notify if n.get("channel") == "public.oban_insert"
    ]

    rows = [rows[0] for rows in slot_rows(database_url, schema).values()]
    for row, want in zip(rows, golden, strict=True):
        diffs = row_differences(row, want, RAN | {"id", "meta_text"})
        assert not diffs, f"fixture cron row for {want['meta']['cron_name']}: {diffs}"
        # jsonb's text of the meta, byte for byte (golden rows embed it as PostgreSQL wrote it)
        assert row["meta_text"] == json.dumps(want["meta"]), want["meta"]["cron_name"]
        assert (row["state"], row["attempt"], row["attempted_by"]) == ("available", 0, None)

    # Oban's Cron inserts only on the leader
    fx.call("cron.start", crontab=[e.fixture() for e in GOLDEN_ENTRIES], leader=False)
    follower = fx.call("cron.evaluate", at=GOLDEN_MINUTE + "Z")
    assert (follower["leader"], follower["jobs"]) == (False, [])
    assert sum(len(r) for r in slot_rows(database_url, schema).values()) == 2


def test_fixture_cron_reboot_entries_and_bad_settings(fx: ElixirFixture) -> None:
    """Oban fires @reboot at the first evaluation as leader, then drops it (discard_reboots)."""
    reboot = Entry("@reboot", "Fixture.Echo", {"args": {"boot": True}}, {})
    names = fx.call(
        "cron.start", crontab=[reboot.fixture(), *(e.fixture() for e in GOLDEN_ENTRIES)]
    )
    assert names["names"][0] == reboot.python().name
    first = fx.call("cron.evaluate", at="2031-03-04T05:06:00.5Z")["jobs"]
    again = fx.call("cron.evaluate", at="2031-03-04T05:07:00.5Z")["jobs"]
    assert [row["meta"]["cron_expr"] for row in first] == ["@reboot", "* * * * *", "* * * * *"]
    assert [row["meta"]["cron_expr"] for row in again] == ["* * * * *", "* * * * *"]
    with pytest.raises(CommandFailed, match="unrecognized cron expression: L"):
        fx.call("cron.start", crontab=[{"expr": "0 0 L * *", "worker": "W"}])
    with pytest.raises(CommandFailed, match="only Etc/UTC"):
        fx.call("cron.start", crontab=[], timezone="Europe/Paris")
    with pytest.raises(CommandFailed, match="unsupported cron option"):
        fx.call("cron.start", crontab=[{"expr": "@daily", "worker": "W", "opts": {"unique": 1}}])


def test_entry_names_agree_with_the_fixture(fx: ElixirFixture) -> None:
    """Oban's entry_name/1 in the VM and Python's, for the crontab above and nested atoms."""
    cases = [
        *ENTRIES,
        Entry("@daily", "MyApp.W", {"args": {"a": Atom("x"), "b": [Atom("y")]}}, {}),
        Entry("0 9 * * MON", "MyApp.W", {"queue": "reports", "priority": 9}, {}),
        Entry("0 9 * * MON", "MyApp.W", {"queue": Atom("reports"), "priority": 9}, {}),
    ]
    vm = [
        fx.call("cron.entry_name", expr=e.expr, worker=e.worker, opts=to_fixture(e.opts))["name"]
        for e in cases
    ]
    ours = [e.python().name for e in cases]
    assert ours == vm
    assert len(set(vm)) == len(vm)  # an atom and a binary queue name two different schedules


# -- one side after the other ------------------------------------------------------------------


async def test_each_order_one_after_the_other(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    """Elixir then Python: one row per slot. Python then Elixir: two (docs/cron.md says so)."""
    cron = start_both(fx, ENTRIES)
    moments = minutes(80, seed=7)
    elixir_first = moments[:40]  # the other 40: python first
    inserted: dict[str, set[int]] = {"elixir": set(), "python": set()}
    due: dict[str, set[str]] = {}
    async with running_node(database_url, schema, {}, Registry(), node="py", plugins=[cron]):
        for moment in moments:
            first, second = ("elixir", "python") if moment in elixir_first else ("python", "elixir")
            for side in (first, second):
                if side == "elixir":
                    reply = await in_thread(fx.call, "cron.evaluate", at=iso(moment))
                    inserted["elixir"].update(row["id"] for row in reply["jobs"])
                    elixir_names = {row["meta"]["cron_name"] for row in reply["jobs"]}
                else:
                    ids, _, _ = await python_evaluates(cron, moment)
                    inserted["python"].update(ids)
            due[naive_iso(moment)[:16]] = due_names(cron, moment)
            assert elixir_names == due_names(cron, moment), f"{moment}: due entries differ"

    rows = slot_rows(database_url, schema)
    problems: list[str] = []
    figures: Counter[str] = Counter()
    for moment in moments:
        minute = naive_iso(moment)[:16]
        order = "elixir first" if moment in elixir_first else "python first"
        for name in due[minute]:
            found = rows.pop((name, minute), [])
            sides = sorted("elixir" if r["id"] in inserted["elixir"] else "python" for r in found)
            figures[f"{order}: {len(found)} row(s)"] += 1
            want = ["elixir"] if order == "elixir first" else ["elixir", "python"]
            if sides != want:
                problems.append(f"slot {name} @ {minute} ({order}): rows from {sides}, want {want}")
            if len(found) == 2:
                diffs = row_differences(found[0], found[1], {"id"})
                if diffs:
                    problems.append(
                        f"slot {name} @ {minute}: python and elixir rows differ {diffs}"
                    )
            for row in found:
                diffs = golden_differences(row)
                if diffs:
                    problems.append(f"slot {name} @ {minute}: row {row['id']} vs golden {diffs}")
    problems += [f"row outside any due slot: {key}" for key in rows]
    print(f"\ncron, one side after the other: {len(moments)} minutes; {dict(figures)}")
    assert not problems, "\n".join(problems[:20])


# -- both sides at once ------------------------------------------------------------------------

RACE_MINUTES = 100
SPACING_US = 25_000
LEAD_US = 500_000
# Python's start relative to Elixir's, in microseconds (negative: Python first).
OFFSETS_US = [
    -20_000,
    -10_000,
    -5_000,
    -2_000,
    -1_000,
    0,
    0,
    0,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
]


def classify(py_started: int, py_ended: int, ex_started: int, ex_ended: int) -> str:
    if ex_ended < py_started:
        return "elixir committed before python started"
    if py_ended < ex_started:
        return "python committed before elixir started"
    return "overlapping"


async def test_both_sides_evaluate_the_same_slots_at_once(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    fx.connect(database_url, schema, node="vm", pool_size=4)
    cron = start_both(fx, ENTRIES)
    moments = minutes(RACE_MINUTES, seed=11)
    rng = random.Random(5)
    ex_start = [time.time_ns() // 1000 + LEAD_US + i * SPACING_US for i in range(RACE_MINUTES)]
    py_start = [start + rng.choice(OFFSETS_US) for start in ex_start]

    async def python_at(index: int) -> tuple[list[int], int, int]:
        await asyncio.sleep(max(0.0, py_start[index] / 1e6 - time.time()))
        return await python_evaluates(cron, moments[index])

    async with running_node(
        database_url, schema, {}, Registry(), node="py", plugins=[cron], pool_size=6
    ):
        elixir = asyncio.ensure_future(
            in_thread(
                fx.call,
                "cron.race",
                at=[iso(m) for m in moments],
                start_us=ex_start,
                timeout_ms=30_000,
            )
        )
        python = await asyncio.gather(*(python_at(i) for i in range(RACE_MINUTES)))
        elixir_results = (await elixir)["results"]

    rows = slot_rows(database_url, schema)
    problems: list[str] = []
    figures: Counter[str] = Counter()
    for index, moment in enumerate(moments):
        minute = naive_iso(moment)[:16]
        py_ids, py_started, py_ended = python[index]
        ex = elixir_results[index]
        ex_ids = {row["id"] for row in ex["jobs"]}
        when = classify(py_started, py_ended, ex["started_us"], ex["ended_us"])
        for name in due_names(cron, moment):
            found = rows.pop((name, minute), [])
            from_elixir = [r for r in found if r["id"] in ex_ids]
            from_python = [r for r in found if r["id"] in py_ids]
            figures[f"{when}: {len(found)} row(s)"] += 1
            where = f"slot {name} @ {minute} ({when})"
            if (
                len(from_elixir) != 1
                or len(from_python) > 1
                or len(found) != len(from_elixir) + len(from_python)
            ):
                problems.append(
                    f"{where}: {len(from_elixir)} elixir, {len(from_python)} python, "
                    f"{len(found)} rows"
                )
            elif when.startswith("elixir") and from_python:
                problems.append(f"{where}: python inserted after elixir's row was committed")
            elif when.startswith("python") and not from_python:
                problems.append(f"{where}: python's committed row is missing")
            if len(found) == 2:
                diffs = row_differences(found[0], found[1], {"id", "inserted_at", "scheduled_at"})
                if diffs:
                    problems.append(f"{where}: python and elixir rows differ {diffs}")
            for row in found:
                diffs = golden_differences(row)
                if diffs:
                    problems.append(f"{where}: row {row['id']} vs golden {diffs}")
    problems += [f"row outside any due slot: {key}" for key in rows]
    print(
        f"\ncron, both sides at once: {RACE_MINUTES} minutes, "
        f"{sum(figures.values())} slots; {dict(sorted(figures.items()))}"
    )
    assert not problems, "\n".join(problems[:20])
    assert any(k.startswith("overlapping") for k in figures), "no evaluation overlapped"
