"""A real node on real PostgreSQL: every outcome written as Oban's Basic engine writes it."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from bridge import Cancel, Discard, Error, Job, Registry, Snooze, insert, insert_all, worker
from tests.jobs.support import job_json, job_row, running_node, wait_for_state

Conn = psycopg.Connection[tuple[object, ...]]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def make_registry() -> Registry:
    registry = Registry()

    @worker(name="t.Ok", queue="q", registry=registry)
    def ok(job: Job) -> dict[str, Any]:
        return {"echo": job.args}

    @worker(name="t.Raise", queue="q", registry=registry)
    async def boom(job: Job) -> None:
        raise RuntimeError(f"boom on attempt {job.attempt}")

    @worker(name="t.Error", queue="q", registry=registry)
    def error(job: Job) -> Error:
        return Error("bad thing")

    @worker(name="t.Cancel", queue="q", registry=registry)
    def cancel(job: Job) -> Cancel:
        return Cancel("not needed")

    @worker(name="t.Discard", queue="q", registry=registry)
    def discard(job: Job) -> Discard:
        return Discard("no way")

    @worker(name="t.Snooze", queue="q", registry=registry)
    def snooze(job: Job) -> Snooze | None:
        return Snooze(1) if job.attempt == 1 else None

    @worker(name="t.Slow", queue="q", timeout=0.05, registry=registry)
    async def slow(job: Job) -> None:
        await asyncio.sleep(0.5)

    @worker(name="t.Hang", queue="q", registry=registry)
    async def hang(job: Job) -> None:
        await asyncio.sleep(30)

    @worker(name="t.Cpu", queue="cpu", registry=registry)
    def cpu(job: Job) -> None:
        end = time.monotonic() + float(job.args.get("seconds", 1.0))
        while time.monotonic() < end:
            pass

    @worker(name="t.Fast", queue="fast", registry=registry)
    def fast(job: Job) -> None:
        return None

    return registry


REGISTRY = make_registry()


def run_jobs(conn: Conn, prefix: str, jobs: list[Job]) -> list[int]:
    return [j.id for j in insert_all(conn, jobs, prefix=prefix) if j.id is not None]


async def test_success_completes(conn: Conn, oban_prefix: str, database_url: str) -> None:
    [job_id] = run_jobs(conn, oban_prefix, [Job.new("t.Ok", {"a": 1}, queue="q")])
    async with running_node(database_url, oban_prefix, {"q": 2}, REGISTRY, node="py-1") as node:
        row = await wait_for_state(database_url, oban_prefix, job_id, {"completed"})
        uuid = node.producers["q"].uuid
    assert row["attempt"] == 1 and row["errors"] == []
    assert row["attempted_by"] == ["py-1", uuid] and UUID.fullmatch(uuid)
    assert row["completed_at"] >= row["attempted_at"] >= row["inserted_at"]
    assert row["discarded_at"] is None and row["cancelled_at"] is None


async def test_exception_retries_with_oban_backoff_and_entry(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    [job_id] = run_jobs(conn, oban_prefix, [Job.new("t.Raise", {}, queue="q", max_attempts=3)])
    async with running_node(database_url, oban_prefix, {"q": 2}, REGISTRY):
        row = await wait_for_state(database_url, oban_prefix, job_id, {"retryable"})
    [entry] = row["errors"]
    assert set(entry) == {"at", "attempt", "error"}
    assert entry["attempt"] == 1 and AT.fullmatch(entry["at"])
    assert entry["error"].startswith("** (RuntimeError) boom on attempt 1\n")
    # Oban's default backoff for attempt 1 of 3: 15 + 2^1 = 17 s, plus up to 10% jitter.
    delay = row["scheduled_at"] - row["attempted_at"]
    assert timedelta(seconds=16.9) <= delay <= timedelta(seconds=19)
    # Same JSON shape as the genuine retryable row in the golden capture.
    ours = job_json(database_url, oban_prefix, job_id)
    assert [sorted(e) for e in ours["errors"]] == [["at", "attempt", "error"]]


async def test_returned_error_discards_at_max_attempts(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    [job_id] = run_jobs(conn, oban_prefix, [Job.new("t.Error", {}, queue="q", max_attempts=1)])
    async with running_node(database_url, oban_prefix, {"q": 2}, REGISTRY):
        row = await wait_for_state(database_url, oban_prefix, job_id, {"discarded"})
    assert row["discarded_at"] is not None
    assert [e["error"] for e in row["errors"]] == [
        '** (Oban.PerformError) t.Error failed with {:error, "bad thing"}'
    ]


async def test_cancel_discard_and_snooze(conn: Conn, oban_prefix: str, database_url: str) -> None:
    ids = run_jobs(
        conn,
        oban_prefix,
        [
            Job.new("t.Cancel", {}, queue="q"),
            Job.new("t.Discard", {}, queue="q"),
            Job.new("t.Snooze", {}, queue="q"),
        ],
    )
    async with running_node(database_url, oban_prefix, {"q": 3}, REGISTRY):
        cancelled = await wait_for_state(database_url, oban_prefix, ids[0], {"cancelled"})
        discarded = await wait_for_state(database_url, oban_prefix, ids[1], {"discarded"})
        snoozed = await wait_for_state(database_url, oban_prefix, ids[2], {"scheduled"})
        assert snoozed["attempt"] == 1 and snoozed["max_attempts"] == 21
        assert snoozed["errors"] == []
        done = await wait_for_state(database_url, oban_prefix, ids[2], {"completed"}, timeout=20)
    assert cancelled["cancelled_at"] is not None
    assert [e["error"] for e in cancelled["errors"]] == [
        '** (Oban.PerformError) t.Cancel failed with {:cancel, "not needed"}'
    ]
    assert [e["error"] for e in discarded["errors"]] == [
        '** (Oban.PerformError) t.Discard failed with {:discard, "no way"}'
    ]
    # As in the golden snoozed row: attempt 2 of 21, no error entry.
    assert (done["attempt"], done["max_attempts"], done["errors"]) == (2, 21, [])


async def test_timeout_and_unknown_worker(conn: Conn, oban_prefix: str, database_url: str) -> None:
    ids = run_jobs(
        conn,
        oban_prefix,
        [
            Job.new("t.Slow", {}, queue="q", max_attempts=1),
            Job.new("Elixir.Only.Worker", {}, queue="q", max_attempts=2),
        ],
    )
    async with running_node(database_url, oban_prefix, {"q": 2}, REGISTRY):
        slow = await wait_for_state(database_url, oban_prefix, ids[0], {"discarded"})
        unknown = await wait_for_state(database_url, oban_prefix, ids[1], {"retryable"})
    assert slow["errors"][0]["error"] == "** (Oban.TimeoutError) t.Slow timed out after 50ms"
    assert unknown["errors"][0]["error"].startswith(
        "** (RuntimeError) unknown worker: Elixir.Only.Worker"
    )


async def test_args_that_are_not_an_object_fail_the_attempt(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.oban_jobs (worker, queue, args, max_attempts) "
            "VALUES ('t.Ok', 'q', '[1, 2]', 1)"
        ).format(sql.Identifier(oban_prefix))
    )
    [(job_id,)] = conn.execute(
        sql.SQL("SELECT id FROM {}.oban_jobs").format(sql.Identifier(oban_prefix))
    ).fetchall()
    async with running_node(database_url, oban_prefix, {"q": 2}, REGISTRY) as node:
        row = await wait_for_state(database_url, oban_prefix, int(job_id), {"discarded"})  # type: ignore[call-overload]
        # The node keeps working after the bad row.
        [ok_id] = run_jobs(conn, oban_prefix, [Job.new("t.Ok", {}, queue="q")])
        await wait_for_state(database_url, oban_prefix, ok_id, {"completed"})
        assert node.producers["q"].claimed == 2
    assert "args must be a JSON object, got list" in row["errors"][0]["error"]


async def test_signals_pause_resume_scale_and_pkill(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    """Signals as an Elixir node sends them (payloads from the golden capture)."""
    channel = f"{oban_prefix}.oban_signal"

    def signal(payload: str) -> None:
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    async with running_node(database_url, oban_prefix, {"q": 2}, REGISTRY, node="vm") as node:
        producer = node.producers["q"]
        signal('{"action":"pause","ident":"any","queue":"q"}')
        await asyncio.sleep(0.3)
        assert producer.paused
        [job_id] = run_jobs(conn, oban_prefix, [Job.new("t.Ok", {}, queue="q")])
        await asyncio.sleep(0.5)
        assert job_row(database_url, oban_prefix, job_id)["state"] == "available"
        signal('{"action":"scale","ident":"any","limit":7,"queue":"q"}')
        signal('{"action":"resume","ident":"Oban.other-node","queue":"q"}')  # not for us
        await asyncio.sleep(0.3)
        assert producer.limit == 7 and producer.paused
        signal('{"action":"resume","ident":"Oban.vm","queue":"q"}')
        await wait_for_state(database_url, oban_prefix, job_id, {"completed"})

        [hang_id] = run_jobs(conn, oban_prefix, [Job.new("t.Hang", {}, queue="q")])
        await wait_for_state(database_url, oban_prefix, hang_id, {"executing"})
        # What Oban.cancel_job/1 does to an executing job: mark it, then pkill.
        conn.execute(
            sql.SQL(
                "UPDATE {}.oban_jobs SET state = 'cancelled', cancelled_at = now() WHERE id = %s"
            ).format(sql.Identifier(oban_prefix)),
            (hang_id,),
        )
        signal(f'{{"action":"pkill","ident":"any","job_id":{hang_id}}}')
        await asyncio.sleep(0.5)
        await node.drain()
    row = job_row(database_url, oban_prefix, hang_id)
    assert row["state"] == "cancelled"
    assert [e["error"] for e in row["errors"]] == [
        "** (Oban.PerformError) t.Hang failed with {:cancel, :shutdown}"
    ]


async def test_cpu_bound_sync_worker_does_not_stall_other_queues(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    """Two threads spinning on the GIL slow the loop down but must not stop it claiming."""
    cpu_ids = run_jobs(
        conn, oban_prefix, [Job.new("t.Cpu", {"seconds": 4}, queue="cpu") for _ in range(2)]
    )
    async with running_node(database_url, oban_prefix, {"cpu": 2, "fast": 5}, REGISTRY):
        await wait_for_state(database_url, oban_prefix, cpu_ids[0], {"executing"})
        fast_ids = run_jobs(
            conn, oban_prefix, [Job.new("t.Fast", {}, queue="fast") for _ in range(20)]
        )
        for job_id in fast_ids:
            await wait_for_state(database_url, oban_prefix, job_id, {"completed"})
        # The fast queue finished while the CPU-bound jobs were still running.
        assert job_row(database_url, oban_prefix, cpu_ids[0])["state"] == "executing"
        for job_id in cpu_ids:
            await wait_for_state(database_url, oban_prefix, job_id, {"completed"})
    assert threading.active_count() >= 1


async def test_stager_makes_due_retries_available(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    [job_id] = run_jobs(conn, oban_prefix, [Job.new("t.Ok", {}, queue="q", schedule_in=0.5)])
    assert job_row(database_url, oban_prefix, job_id)["state"] == "scheduled"
    async with running_node(database_url, oban_prefix, {"q": 2}, REGISTRY):
        row = await wait_for_state(database_url, oban_prefix, job_id, {"completed"})
    assert row["attempt"] == 1


async def test_many_jobs_complete_exactly_once(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    ids = run_jobs(
        conn, oban_prefix, [Job.new("t.Fast", {"i": i}, queue="fast") for i in range(2000)]
    )
    async with running_node(database_url, oban_prefix, {"fast": 50}, REGISTRY):
        await wait_for_state(database_url, oban_prefix, ids[-1], {"completed"}, timeout=60)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            counts = dict(
                conn.execute(
                    sql.SQL("SELECT state::text, count(*) FROM {}.oban_jobs GROUP BY 1").format(
                        sql.Identifier(oban_prefix)
                    )
                ).fetchall()
            )
            if counts.get("completed") == 2000 or loop.time() > deadline:
                break
            await asyncio.sleep(0.1)
    assert counts == {"completed": 2000}
    [(max_attempt,)] = conn.execute(
        sql.SQL("SELECT max(attempt) FROM {}.oban_jobs").format(sql.Identifier(oban_prefix))
    ).fetchall()
    assert max_attempt == 1
    _ = insert  # exported API used elsewhere


async def test_telemetry_events_have_obans_default_logger_keys(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    import json as _json
    import logging

    from bridge.jobs.runtime import telemetry

    events: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def handler(event: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        events.append((event, measurements, metadata))

    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    capture = Capture()
    logging.getLogger("bridge.jobs").addHandler(capture)
    logging.getLogger("bridge.jobs").setLevel(logging.INFO)
    telemetry.attach(handler)
    telemetry.attach_default_logger()
    try:
        ids = run_jobs(
            conn,
            oban_prefix,
            [
                Job.new("t.Ok", {"a": 1}, queue="q"),
                Job.new("t.Raise", {}, queue="q", max_attempts=1),
            ],
        )
        async with running_node(database_url, oban_prefix, {"q": 2}, REGISTRY) as node:
            await wait_for_state(database_url, oban_prefix, ids[0], {"completed"})
            await wait_for_state(database_url, oban_prefix, ids[1], {"discarded"})
            await node.drain()
    finally:
        telemetry.detach(handler)
        telemetry.detach(telemetry.default_logger)
        logging.getLogger("bridge.jobs").removeHandler(capture)
    kinds = sorted((e, m["worker"], m.get("state")) for e, _, m in events)
    assert kinds == [
        ("job:exception", "t.Raise", "discard"),
        ("job:start", "t.Ok", None),
        ("job:start", "t.Raise", None),
        ("job:stop", "t.Ok", "success"),
    ]
    stop = next(json for json in map(_json.loads, records) if json["event"] == "job:stop")
    # The keys of Oban's documented job:stop JSON line.
    assert sorted(stop) == [
        "args",
        "attempt",
        "duration",
        "event",
        "id",
        "max_attempts",
        "meta",
        "queue",
        "queue_time",
        "source",
        "state",
        "tags",
        "worker",
    ]
    failed = next(json for json in map(_json.loads, records) if json["event"] == "job:exception")
    assert failed["error"] == "** (RuntimeError) boom on attempt 1"
