"""The NOTIFY round trip on real PostgreSQL: heard on a listening session, not heard where
LISTEN never takes effect (a session held in a transaction, as behind a pooler that does not
keep sessions), bounded by the wait either way."""

from __future__ import annotations

import psycopg

from bridge.doctor import database


def test_heard_between_two_sessions(database_url: str, oban_prefix: str) -> None:
    with (
        psycopg.connect(database_url, autocommit=True) as listener,
        psycopg.connect(database_url, autocommit=True) as sender,
    ):
        heard = database.round_trip(listener, sender, oban_prefix, wait=2.0)
    assert heard is not None and heard < 2.0


def test_not_heard_when_listen_never_takes_effect(database_url: str, oban_prefix: str) -> None:
    with (
        psycopg.connect(database_url) as listener,  # LISTEN waits for a commit that never comes
        psycopg.connect(database_url, autocommit=True) as sender,
    ):
        assert database.round_trip(listener, sender, oban_prefix, wait=0.5) is None
        listener.rollback()
