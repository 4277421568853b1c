"""The instance lock is HephaestusOban's key: phash2(instance_id) as the live BEAM computes it."""

from __future__ import annotations

import json
import random

import psycopg

from bridge.wire.phash2 import phash2
from bridge.workflows.storage import lock_instance
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
