"""Elixir enqueues, Python runs: the rows the fixture reads back are the rows it writes itself.

Every job is enqueued by the fixture twice, as `Oban.insert/2` or `insert_all/2` would: once into
queue `py`, served by a Python node running the Python twin of `Fixture.Echo`
(``support.echo_mirror``), and once into `ex`, served by the fixture's own queue. The two rows of
each pair are then read through the fixture and compared column by column: state, counters,
which timestamps are set and in what order, `attempted_by`, error entries (message, attempt,
`at`, frames). Mirrors Oban's Basic engine acks (complete, error with backoff, discard at max
attempts, cancel, snooze) and `Oban.Job.format_attempt/1`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.jobs.plugins.stager import Stager
from interop_tests.fixture import ElixirFixture
from interop_tests.support import (
    ECHO,
    assert_same_row,
    echo_registry,
    eventually,
    in_thread,
    row_differences,
)
from tests.jobs.support import running_node

PY, EX = "py", "ex"
FINAL = {"completed", "discarded", "cancelled"}

# Args that exercise the JSON both sides write and read; every one completes.
SUCCESSES: list[dict[str, Any]] = [
    {"args": {}},
    {"args": {"ok": 1, "nested": {"a": [1, 2.5, None, "é"]}}},
    {"args": {"name": "Zoë 🦀 ✓", "empty": {}, "list": [], "t": True, "f": False}},
    {"args": {"big": 2**70, "neg": -(2**65), "float": -0.125, "zero": 0}},
    {"args": {"return": {"deep": {"deeper": [[1], {"x": None}]}}}},
    {"args": {"return": "a string"}, "tags": ["Alpha", " beta ", "alpha"], "priority": 3},
    {"args": {"k": "v"}, "meta": {"trace": "abc", "n": [1, 2]}, "max_attempts": 5},
    {"args": {"snooze": 0}},  # snoozed once, then completed (max_attempts 21)
]

# Failures as Python writes them, each next to the fixture's own row for the same job.
FAILURES: dict[str, dict[str, Any]] = {
    "error_string": {"args": {"error": "bad thing"}, "max_attempts": 1},
    "error_atom": {"args": {"error": {"atom": "boom"}}, "max_attempts": 1},
    "error_map": {"args": {"error": {"a": 1, "b": [None, 2.5]}}, "max_attempts": 1},
    "raise_retryable": {"args": {"raise": "kaput"}, "max_attempts": 3},
    "raise_multiline": {"args": {"raise": "line one\nline two"}, "max_attempts": 1},
    "fail_until_discarded": {"args": {"fail": True, "backoff": 0}, "max_attempts": 3},
    "cancel": {"args": {"cancel": "not needed"}},
    "discard": {"args": {"discard": {"atom": "nope"}}},
}
FAILURE_STATES = {
    "error_string": "discarded",
    "error_atom": "discarded",
    "error_map": "discarded",
    "raise_retryable": "retryable",
    "raise_multiline": "discarded",
    "fail_until_discarded": "discarded",
    "cancel": "cancelled",
    "discard": "discarded",
}


def twins(specs: list[dict[str, Any]], queue: str) -> list[dict[str, Any]]:
    return [{"worker": ECHO, **spec, "queue": queue} for spec in specs]


async def enqueue_pairs(fx: ElixirFixture, specs: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Each spec into both queues: the first half with insert/2, the rest with insert_all/2."""
    half = len(specs) // 2 or 1
    ids: dict[str, list[int]] = {}
    for queue in (PY, EX):
        jobs = twins(specs, queue)
        rows = await in_thread(fx.enqueue, jobs[:half])
        if jobs[half:]:
            rows += await in_thread(fx.enqueue, jobs[half:], bulk=True)
        ids[queue] = [row["id"] for row in rows]
    return list(zip(ids[PY], ids[EX], strict=True))


def settled(fx: ElixirFixture, ids: list[int], wanted: dict[int, str]) -> dict[int, Any] | None:
    rows = {row["id"]: row for row in fx.jobs(ids)}
    return rows if all(rows[i]["state"] == wanted[i] for i in ids) else None


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


async def test_python_completes_what_elixir_enqueued(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    plugins = [Stager(interval=0.1)]  # stages the snoozed job in `py` again
    async with running_node(
        database_url, schema, {PY: 5}, echo_registry(), node="py", plugins=plugins
    ) as node:
        pairs = await enqueue_pairs(fx, SUCCESSES)
        await in_thread(fx.call, "start_queue", queue=EX, limit=5)
        ids = [i for pair in pairs for i in pair]
        rows = await eventually(
            lambda: settled(fx, ids, dict.fromkeys(ids, "completed")),
            what="both twins of every job to complete",
        )
        claimed = node.producers[PY].claimed

    diffs = {
        (py, ex): row_differences(rows[py], rows[ex])
        for py, ex in pairs
        if row_differences(rows[py], rows[ex])
    }
    assert not diffs, "\n".join(f"python #{p} vs elixir #{e}: {d}" for (p, e), d in diffs.items())
    for py, _ in pairs:
        assert rows[py]["attempted_by"][0] == "py"
        assert rows[py]["queue"] == PY
    snoozed_py, snoozed_ex = pairs[-1]
    assert rows[snoozed_py]["max_attempts"] == rows[snoozed_ex]["max_attempts"] == 21
    assert claimed == len(SUCCESSES) + 1  # each job once, plus the snoozed job's second run


async def test_python_failures_read_by_the_fixture_as_oban_wrote_them(
    fx: ElixirFixture, database_url: str, schema: str
) -> None:
    await in_thread(fx.connect, database_url, schema, node="vm", stage_interval_ms=100)
    specs = list(FAILURES.values())
    plugins = [Stager(interval=0.1)]
    async with running_node(
        database_url, schema, {PY: 5}, echo_registry(), node="py", plugins=plugins
    ):
        pairs = await enqueue_pairs(fx, specs)
        await in_thread(fx.call, "start_queue", queue=EX, limit=5)
        wanted = {
            i: FAILURE_STATES[name]
            for name, pair in zip(FAILURES, pairs, strict=True)
            for i in pair
        }
        rows = await eventually(
            lambda: settled(fx, list(wanted), wanted), what="every failure in its final state"
        )

    by_name = dict(zip(FAILURES, pairs, strict=True))
    for name, (py, ex) in by_name.items():
        assert_same_row(rows[py], rows[ex], f"{name}: python")

    # The texts themselves, as Oban words them (the Elixir twin wrote the same, checked above).
    def errors(name: str) -> list[str]:
        return [entry["error"] for entry in rows[by_name[name][0]]["errors"]]

    assert errors("error_atom") == [
        "** (Oban.PerformError) Fixture.Echo failed with {:error, :boom}"
    ]
    assert errors("error_map") == [
        '** (Oban.PerformError) Fixture.Echo failed with {:error, %{"a" => 1, "b" => [nil, 2.5]}}'
    ]
    assert errors("discard") == [
        "** (Oban.PerformError) Fixture.Echo failed with {:discard, :nope}"
    ]
    assert [e.split("\n")[0] for e in errors("fail_until_discarded")] == [
        f"** (RuntimeError) echo failure on attempt {n}" for n in (1, 2, 3)
    ]
    assert errors("raise_multiline")[0].startswith("** (RuntimeError) line one\nline two\n    (")

    # Oban's default backoff for attempt 1 of 3: 15 + 2^1 s plus up to 10 % jitter, on both sides.
    for job_id in by_name["raise_retryable"]:
        row = rows[job_id]
        delay = seconds_between(row["attempted_at"], row["scheduled_at"])
        assert 17 <= delay <= 17 * 1.1 + 1, (job_id, row["queue"], delay)
    discarded = rows[by_name["fail_until_discarded"][0]]
    assert [e["attempt"] for e in discarded["errors"]] == [1, 2, 3]
    assert discarded["attempt"] == discarded["max_attempts"] == 3
