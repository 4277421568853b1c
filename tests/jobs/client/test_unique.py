"""Unique jobs: Oban's decisions (golden signals-and-unique/) and the cross-language protocol."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bridge import Job, JobValidationError, insert, insert_all, insert_async
from bridge.jobs.client.unique import UniqueOptions

Conn = psycopg.Connection[tuple[object, ...]]
W = "Realstack.SleepWorker"


def new(args: dict[str, object], **opts: object) -> Job:
    return Job.new(W, args, queue="golden", **opts)  # type: ignore[arg-type]


def test_golden_unique_sequence(conn: Conn, oban_prefix: str) -> None:
    """The calls of golden/signals-and-unique/s10_notes.jsonl and what Oban answered."""
    p = oban_prefix
    first = insert(
        conn, new({"a": 1, "b": 1, "ms": 1}, schedule_in=600, unique={"keys": ["a"]}), prefix=p
    )
    assert (first.id, first.conflict, first.state) == (1, False, "scheduled")
    again = insert(
        conn, new({"a": 1, "b": 2, "ms": 1}, schedule_in=600, unique={"keys": ["a"]}), prefix=p
    )
    assert (again.id, again.conflict) == (1, True)
    other = insert(
        conn, new({"a": 2, "b": 2, "ms": 1}, schedule_in=600, unique={"keys": ["a"]}), prefix=p
    )
    assert (other.id, other.conflict) == (2, False)
    forever = {"period": "infinity", "states": ["scheduled"]}
    third = insert(
        conn, new({"x": 1, "ms": 1}, schedule_in=600, meta={"m": 1}, unique=forever), prefix=p
    )
    assert (third.id, third.conflict) == (3, False)
    # Default fields are args, queue and worker: meta is not compared.
    same = insert(
        conn, new({"x": 1, "ms": 1}, schedule_in=600, meta={"m": 2}, unique=forever), prefix=p
    )
    assert (same.id, same.conflict) == (3, True)
    moved = insert(
        conn,
        new(
            {"x": 1, "ms": 1},
            schedule_in=1200,
            unique={**forever, "replace": {"scheduled": ["scheduled_at"]}},
        ),
        prefix=p,
    )
    assert (moved.id, moved.conflict) == (3, True)
    assert moved.scheduled_at is not None and third.scheduled_at is not None
    assert moved.scheduled_at - third.scheduled_at >= timedelta(seconds=599)
    by_worker = insert(conn, new({"z": 9}, unique={"fields": ["worker"]}), prefix=p)
    assert (by_worker.id, by_worker.conflict) == (1, True)
    # insert_all ignores uniqueness, as Oban's OSS insert_all does.
    [bulk] = insert_all(
        conn, [new({"a": 1, "b": 3, "ms": 1}, schedule_in=600, unique={"keys": ["a"]})], prefix=p
    )
    assert (bulk.id, bulk.conflict) == (4, False)
    rows = conn.execute(
        sql.SQL("SELECT id, state::text, meta FROM {}.oban_jobs ORDER BY id").format(
            sql.Identifier(p)
        )
    ).fetchall()
    # No bridge bookkeeping is left in meta, and nothing is left suspended.
    assert rows == [
        (1, "scheduled", {}),
        (2, "scheduled", {}),
        (3, "scheduled", {"m": 1}),
        (4, "scheduled", {}),
    ]


def test_period_and_states(conn: Conn, oban_prefix: str) -> None:
    first = insert(conn, new({"k": 1}, unique={"period": 60}), prefix=oban_prefix)
    conn.execute(
        sql.SQL("UPDATE {}.oban_jobs SET inserted_at = inserted_at - interval '2 minutes'").format(
            sql.Identifier(oban_prefix)
        )
    )
    outside = insert(conn, new({"k": 1}, unique={"period": 60}), prefix=oban_prefix)
    assert not outside.conflict and outside.id != first.id
    conn.execute(
        sql.SQL("UPDATE {}.oban_jobs SET state = 'discarded'").format(sql.Identifier(oban_prefix))
    )
    # Discarded jobs are outside the default "successful" states.
    assert not insert(conn, new({"k": 1}, unique=True), prefix=oban_prefix).conflict
    assert insert(
        conn, new({"k": 1}, unique={"states": "all", "period": "infinity"}), prefix=oban_prefix
    ).conflict


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"fields": ["nope"]}, "expected :fields"),
        ({"period": 0}, "expected :period to be a positive integer"),
        ({"states": "sometimes"}, "expected :states sometimes to be one of"),
        ({"timestamp": "attempted_at"}, "expected :timestamp to be one of"),
        ({"bogus": 1}, "unknown option, bogus"),
        ("yes", "invalid unique options"),
    ],
)
def test_invalid_unique_options(spec: object, message: str) -> None:
    with pytest.raises(JobValidationError, match=message):
        new({}, unique=spec)


def test_unique_inside_the_callers_transaction(oban_prefix: str, database_url: str) -> None:
    with psycopg.connect(database_url) as own:
        job = insert(own, new({"t": 1}, unique=True), prefix=oban_prefix)
        assert job.state == "available" and not job.conflict
        assert insert(own, new({"t": 1}, unique=True), prefix=oban_prefix).conflict
        own.rollback()
    with psycopg.connect(database_url) as own:
        assert not insert(own, new({"t": 1}, unique=True), prefix=oban_prefix).conflict


def test_concurrent_python_inserts_make_one_job(oban_prefix: str, database_url: str) -> None:
    results: list[Job] = []

    def attempt() -> None:
        with psycopg.connect(database_url, autocommit=True) as c:
            results.append(insert(c, new({"race": 1}, unique=True), prefix=oban_prefix))

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(database_url) as c:
        rows = c.execute(
            sql.SQL("SELECT id, state::text FROM {}.oban_jobs").format(sql.Identifier(oban_prefix))
        ).fetchall()
    assert len(rows) == 1 and rows[0][1] == "available"
    assert sorted(r.conflict for r in results) == [False] + [True] * 19
    assert {r.id for r in results} == {rows[0][0]}


def test_python_yields_to_a_concurrent_elixir_style_insert(
    oban_prefix: str, database_url: str
) -> None:
    """An Oban-style unique insert (advisory lock, check, insert, commit) that checked before our
    row was visible: after it commits, ours is cancelled and theirs is the answer."""
    _yield_to_elixir_style_insert(oban_prefix, database_url, database_url)


def test_the_wait_needs_no_privilege_over_the_elixir_role(
    oban_prefix: str, database_url: str
) -> None:
    """The same race with each side an ordinary role of its own: the Python role cannot read the
    Elixir sessions' details in pg_stat_activity, and must still wait for their transaction."""
    roles = [f"bridge_unique_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with psycopg.connect(database_url, autocommit=True) as admin:
        for role in roles:
            for grant in (
                "CREATE ROLE {role} LOGIN",
                "GRANT USAGE ON SCHEMA {schema} TO {role}",
                "GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}",
                "GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
            ):
                admin.execute(
                    sql.SQL(grant).format(
                        role=sql.Identifier(role), schema=sql.Identifier(oban_prefix)
                    )
                )
    try:
        elixir_url, python_url = (make_conninfo(database_url, user=role) for role in roles)
        _yield_to_elixir_style_insert(oban_prefix, elixir_url, python_url)
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            for role in roles:
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _yield_to_elixir_style_insert(oban_prefix: str, elixir_url: str, python_url: str) -> None:
    ident = sql.Identifier(oban_prefix)
    elixir = psycopg.connect(elixir_url)
    try:
        elixir.execute("SELECT pg_try_advisory_xact_lock(424242)")
        assert elixir.execute(
            sql.SQL("SELECT count(*) FROM {}.oban_jobs").format(ident)
        ).fetchone() == (0,)
        result: list[Job] = []
        thread = threading.Thread(
            target=lambda: result.append(_python_insert(python_url, oban_prefix))
        )
        thread.start()
        time.sleep(0.3)  # our first transaction committed a suspended row; we now wait on them
        assert thread.is_alive()
        elixir.execute(
            sql.SQL(
                "INSERT INTO {}.oban_jobs (worker, queue, args) VALUES (%s, 'golden', %s)"
            ).format(ident),
            (W, '{"cross": 1}'),
        )
        elixir.commit()
        thread.join(10)
    finally:
        elixir.close()
    [ours] = result
    with psycopg.connect(python_url) as c:
        rows = c.execute(
            sql.SQL("SELECT id, state::text, meta FROM {}.oban_jobs ORDER BY id").format(ident)
        ).fetchall()
    assert [r[1] for r in rows] == ["cancelled", "available"]  # ours yielded, theirs runs
    assert ours.conflict and ours.id == rows[1][0]
    assert rows[0][2] == {}


def _python_insert(url: str, prefix: str) -> Job:
    with psycopg.connect(url, autocommit=True) as c:
        return insert(c, new({"cross": 1}, unique=True), prefix=prefix)


async def test_async_unique_insert(oban_prefix: str, database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        a = await insert_async(c, new({"as": 1}, unique=True), prefix=oban_prefix)
        b = await insert_async(c, new({"as": 1}, unique=True), prefix=oban_prefix)
    assert not a.conflict and b.conflict and a.id == b.id and a.state == "available"


def test_options_defaults_follow_oban() -> None:
    options = UniqueOptions.build({})
    assert options is not None
    assert options.fields == ("args", "queue", "worker") and options.period == 60
    assert "suspended" in options.states and "discarded" not in options.states
    assert UniqueOptions.build(True) == UniqueOptions(period=None)
    assert UniqueOptions.build({"period": (2, "minutes")}).period == 120  # type: ignore[union-attr]
