"""all_enqueued / assert_enqueued / refute_enqueued on real rows, matched as Oban.Testing
matches them, and their failure messages."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge import Job, insert
from bridge.testing import (
    all_enqueued,
    all_enqueued_async,
    assert_enqueued,
    assert_enqueued_async,
    refute_enqueued,
    refute_enqueued_async,
)
from tests.testing.workers import Outcomes

Conn = psycopg.Connection[Any]


def put(conn: Conn, prefix: str, worker: str, args: dict[str, Any], **opts: Any) -> Job:
    return insert(conn, Job.new(worker, args, **opts), prefix=prefix)


def set_state(conn: Conn, prefix: str, job_id: int | None, state: str) -> None:
    conn.execute(
        sql.SQL("UPDATE {}.oban_jobs SET state = %s WHERE id = %s").format(sql.Identifier(prefix)),
        (state, job_id),
    )


def test_args_and_meta_match_by_containment(conn: Conn, oban_prefix: str) -> None:
    job = put(
        conn,
        oban_prefix,
        "MyApp.Mailer",
        {"to": "a@b", "opts": {"lang": "pt", "cc": ["x", "y"]}, "n": 1},
        meta={"batch": 9},
    )

    def found(**filters: Any) -> list[int | None]:
        return [j.id for j in all_enqueued(conn, prefix=oban_prefix, **filters)]

    assert found(args={"to": "a@b"}) == [job.id]
    assert found(args={"opts": {"lang": "pt"}}) == [job.id]  # recursive into objects
    assert found(args={"n": 1.0}) == [job.id]  # Elixir's ==: 1 == 1.0
    assert found(args={"opts": {"cc": ["x", "y"]}}) == [job.id]
    assert found(args={"opts": {"cc": ["x"]}}) == []  # a list matches only an equal list
    assert found(args={"n": True}) == []  # true is not 1
    assert found(args={"to": "_"}, meta={"batch": "_"}) == [job.id]  # Oban's wildcard
    assert found(args={"missing": "_"}) == []
    assert found(meta={"batch": 8}) == []


def test_fields_states_and_order(conn: Conn, oban_prefix: str) -> None:
    first = put(conn, oban_prefix, "MyApp.A", {}, queue="mail", priority=2, tags=["Vip"])
    second = put(conn, oban_prefix, "MyApp.A", {}, queue="mail")
    later = put(conn, oban_prefix, "MyApp.A", {}, schedule_in=3600)
    done = put(conn, oban_prefix, "MyApp.A", {})
    set_state(conn, oban_prefix, done.id, "completed")

    def ids(**filters: Any) -> list[int | None]:
        return [j.id for j in all_enqueued(conn, prefix=oban_prefix, **filters)]

    assert ids(worker="MyApp.A") == [later.id, second.id, first.id]  # newest first
    assert ids(queue="mail", priority=2) == [first.id]
    assert ids(tags=["vip"]) == [first.id]
    assert ids(tags=["VIP "]) == [first.id]  # normalised as Oban stores tags
    assert ids(state="completed") == [done.id]
    assert ids(state=["completed", "scheduled"]) == [done.id, later.id]
    assert ids(worker=Outcomes) == []  # a @worker by its name


def test_scheduled_at_matches_within_delta(conn: Conn, oban_prefix: str) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    job = put(conn, oban_prefix, "MyApp.Later", {}, scheduled_at=at)
    assert all_enqueued(conn, prefix=oban_prefix, scheduled_at=at + timedelta(seconds=0.5))
    assert not all_enqueued(conn, prefix=oban_prefix, scheduled_at=at + timedelta(seconds=5))
    assert all_enqueued(conn, prefix=oban_prefix, scheduled_at=at + timedelta(seconds=5), delta=10)
    assert assert_enqueued(conn, prefix=oban_prefix, scheduled_in=3600, delta=5).id == job.id


def test_a_suspended_row_is_enqueued_as_oban_counts_it(conn: Conn, oban_prefix: str) -> None:
    job = put(conn, oban_prefix, "MyApp.Held", {})
    set_state(conn, oban_prefix, job.id, "suspended")
    assert assert_enqueued(conn, prefix=oban_prefix, worker="MyApp.Held").id == job.id


def test_assert_failure_lists_the_nearest_jobs(conn: Conn, oban_prefix: str) -> None:
    near = put(conn, oban_prefix, "MyApp.Mailer", {"to": "a@b", "lang": "en"}, queue="mail")
    put(conn, oban_prefix, "MyApp.Other", {"x": 1})
    with pytest.raises(AssertionError) as failed:
        assert_enqueued(
            conn, prefix=oban_prefix, worker="MyApp.Mailer", args={"to": "a@b", "lang": "pt"}
        )
    message = str(failed.value)
    lines = message.splitlines()
    assert lines[0] == "Expected a job matching:"
    assert lines[1] == "    worker='MyApp.Mailer', args={'to': 'a@b', 'lang': 'pt'}"
    assert lines[2] == (
        f"to be enqueued (available, scheduled, suspended in {oban_prefix}.oban_jobs)."
    )
    assert lines[3] == "Nearest of the 2 there:"
    assert lines[4].startswith(f"    #{near.id} available MyApp.Mailer queue=mail args=")
    assert lines[5] == "        differs: args.lang is 'en', expected 'pt'"
    assert re.match(r"    #\d+ available MyApp.Other", lines[6])
    assert (
        lines[7] == "        differs: worker is 'MyApp.Other', expected 'MyApp.Mailer';"
        " args.to is missing; args.lang is missing"
    )


def test_assert_failure_on_an_empty_table(conn: Conn, oban_prefix: str) -> None:
    with pytest.raises(AssertionError) as failed:
        assert_enqueued(conn, prefix=oban_prefix, queue="mail")
    assert str(failed.value).splitlines()[-1] == (
        f"No job is available or scheduled or suspended in {oban_prefix}.oban_jobs."
    )


def test_refute_failure_lists_the_matches(conn: Conn, oban_prefix: str) -> None:
    job = put(conn, oban_prefix, "MyApp.Mailer", {"to": "a@b"})
    refute_enqueued(conn, prefix=oban_prefix, worker="MyApp.Mailer", args={"to": "c@d"})
    with pytest.raises(AssertionError) as failed:
        refute_enqueued(conn, prefix=oban_prefix, worker="MyApp.Mailer")
    lines = str(failed.value).splitlines()
    assert lines[:3] == [
        "Expected no job matching:",
        "    worker='MyApp.Mailer'",
        f"to be enqueued (available, scheduled, suspended in {oban_prefix}.oban_jobs); found 1:",
    ]
    assert lines[3].startswith(f"    #{job.id} available MyApp.Mailer queue=default")


def test_unknown_filter_is_refused(conn: Conn, oban_prefix: str) -> None:
    with pytest.raises(TypeError, match="cannot match jobs on 'arg'"):
        all_enqueued(conn, prefix=oban_prefix, arg={"x": 1})


def test_assert_waits_for_a_job_committed_later(
    conn: Conn, oban_prefix: str, database_url: str
) -> None:
    def later() -> None:
        time.sleep(0.2)
        with psycopg.connect(database_url, autocommit=True) as other:
            put(other, oban_prefix, "MyApp.Late", {})

    thread = threading.Thread(target=later)
    thread.start()
    try:
        with pytest.raises(AssertionError, match=r"to be enqueued within 0\.01s"):
            assert_enqueued(database_url, prefix=oban_prefix, worker="MyApp.Late", timeout=0.01)
        assert assert_enqueued(database_url, prefix=oban_prefix, worker="MyApp.Late", timeout=10)
    finally:
        thread.join()


async def test_async_twins(database_url: str, oban_prefix: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
        with psycopg.connect(database_url, autocommit=True) as conn:
            job = put(conn, oban_prefix, "MyApp.Async", {"k": 1})
        found = await all_enqueued_async(aconn, prefix=oban_prefix, args={"k": 1})
        assert [j.id for j in found] == [job.id]
        assert (
            await assert_enqueued_async(database_url, prefix=oban_prefix, worker="MyApp.Async")
        ).id == job.id
        with pytest.raises(AssertionError, match="Expected no job matching"):
            await refute_enqueued_async(aconn, prefix=oban_prefix, worker="MyApp.Async")
