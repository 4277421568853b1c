"""The instance lock is HephaestusOban's key: phash2(instance_id) as the live BEAM computes it."""

from __future__ import annotations

import json
import random

import psycopg
import pytest

from bridge.wire.phash2 import phash2
from bridge.workflows.store.instances import StorageError, begin_locked, lock_instance
from tests.support.beam import run_elixir


def test_lock_key_equals_the_vms_phash2_of_the_id(database_url: str) -> None:
    rng = random.Random(7)
    ids = ["order::o-1", "faillinear::s1", ""] + [
        "".join(rng.choice("abcxyz-:é0123456789") for _ in range(rng.randint(1, 60)))
        for _ in range(200)
    ]
    code = (
        "ids = :jiffy.decode(IO.read(:stdio, :eof))\n"
        "IO.puts(:jiffy.encode(Enum.map(ids, &:erlang.phash2/1)))"
    )
    vm = json.loads(run_elixir(code, stdin=json.dumps(ids).encode()))
    assert [phash2(i) for i in ids] == vm
    with psycopg.connect(database_url) as conn:
        lock_instance(conn, "order::o-1")
        held = conn.execute(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks "
            "WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchall()
        conn.rollback()
    assert held == [(vm[0],)]


def test_begin_locked_opens_the_transaction_with_the_same_key(database_url: str) -> None:
    """BEGIN and the lock in one query: same key as lock_instance, shared or exclusive as
    asked, released at commit; an exclusive holder excludes shared takers and vice versa."""
    key = phash2("order::o-1")
    mine = (
        "SELECT mode, (classid::bigint << 32) | objid::bigint FROM pg_locks "
        "WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    )
    with (
        psycopg.connect(database_url, autocommit=True) as one,
        psycopg.connect(database_url, autocommit=True) as two,
    ):
        begin_locked(one, "order::o-1", shared=True)
        begin_locked(two, "order::o-1", shared=True)  # shared with shared: no wait
        assert one.execute(mine).fetchall() == [("ShareLock", key)]
        assert two.execute(mine).fetchall() == [("ShareLock", key)]
        two.commit()
        with psycopg.connect(database_url) as other:  # an exclusive taker has to wait
            other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                lock_instance(other, "order::o-1")
        one.commit()
        assert one.execute(mine).fetchall() == []  # released at commit
        begin_locked(one, "order::o-1")
        assert one.execute(mine).fetchall() == [("ExclusiveLock", key)]
        two.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            begin_locked(two, "order::o-1", shared=True)
        two.rollback()
        one.rollback()
    with (
        psycopg.connect(database_url) as plain,
        pytest.raises(StorageError, match="idle autocommit"),
    ):
        begin_locked(plain, "order::o-1")
