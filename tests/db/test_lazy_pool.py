"""LazyPool, the pool workflow runners and delegation hosts open on first use, is first used by
several job threads at once: they must share one pool, or every pool but the last is dropped
unclosed, its connections held until garbage collection (seen as psycopg's "cannot join current
thread" from ``ConnectionPool.__del__`` in the delegation tests)."""

from __future__ import annotations

import gc
import threading
import time
import uuid
from typing import Any

import psycopg

from bridge.db import LazyPool

THREADS = 8


def backends(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_threads_that_use_it_first_at_once_share_one_pool(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    name = f"lazy_{uuid.uuid4().hex[:8]}"
    separator = "&" if "?" in database_url else "?"
    lazy = LazyPool(f"{database_url}{separator}application_name={name}", THREADS)
    start = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def first_use() -> None:
        try:
            start.wait()
            with lazy.connection() as c:
                c.execute("SELECT pg_sleep(0.05)")
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    gc.disable()  # a leaked pool must not be collected (and closed) before we look
    try:
        threads = [threading.Thread(target=first_use) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        lazy.close()
        assert not failures
        deadline = time.monotonic() + 5  # a closed backend leaves pg_stat_activity promptly
        while backends(conn, name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backends(conn, name) == 0, "connections of a pool nobody closed are still open"
    finally:
        gc.enable()
        gc.collect()
