"""The fixture's own LISTEN connection hears NOTIFY sent from Python in every payload form Oban
2.23 decodes: plain JSON, "Z:" + base64(gzip(json)) (Oban >= 2.21 above 512 bytes) and the
legacy base64(gzip(json)) of Oban <= 2.20; and it reconnects when its backend goes away.

Mirrors: Oban.Notifier.decode/1 and Oban.Notifiers.Postgres (LISTEN, reconnect, re-LISTEN).
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import psycopg

from interop_tests.fixture import ElixirFixture, wait_until
from interop_tests.support import golden_lines

MESSAGE = {"node": "py-1", "queues": [{"name": "badges", "limit": 10}], "note": "é" * 300}


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def gzip_b64(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode())).decode()


def notify(conn: psycopg.Connection[Any], channel: str, payload: str) -> None:
    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


def test_three_payload_encodings_are_decoded(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    fx.call("listen", channels=["gossip"])
    text = compact(MESSAGE)
    sent = [text, "Z:" + gzip_b64(text), gzip_b64(text)]
    assert sent[2].startswith("H4sI")
    for payload in sent:
        notify(conn, f"{schema}.oban_gossip", payload)

    heard = fx.heard("gossip", at_least=3)
    assert [h["payload"] for h in heard] == sent
    assert [h["decoded"] for h in heard] == [MESSAGE] * 3
    assert {h["channel"] for h in heard} == {f"{schema}.oban_gossip"}
    assert [h["error"] for h in heard] == [None] * 3


def test_genuine_compressed_gossip_is_decoded(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    genuine = next(
        line["payload"]
        for line in golden_lines("elixir-notifications-2.jsonl")
        if line["payload"].startswith("Z:")
    )
    expected = json.loads(gzip.decompress(base64.b64decode(genuine[2:])))
    fx.call("listen", channels=["gossip"])
    notify(conn, f"{schema}.oban_gossip", genuine)
    assert [h["decoded"] for h in fx.heard("gossip")] == [expected]


def test_undecodable_payload_is_reported_not_fatal(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    fx.call("listen", channels=["insert"])
    notify(conn, f"{schema}.oban_insert", "Z:not base64!")
    notify(conn, f"{schema}.oban_insert", '{"queue":"after"}')
    first, second = fx.heard("insert", at_least=2)
    assert first["decoded"] is None and first["error"]
    assert second["decoded"] == {"queue": "after"}


def test_listener_reconnects_and_listens_again(
    fx: ElixirFixture, conn: psycopg.Connection[Any], schema: str
) -> None:
    fx.call("listen", channels=["signal"])
    before = fx.call("listener_status")
    assert before["connected"] is True
    assert f"{schema}.oban_signal" in before["channels"]

    (pid,) = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'elixir_fixture' "
        "AND query LIKE %s",
        (f'%LISTEN "{schema}.oban_%',),
    ).fetchone() or (None,)
    assert pid is not None
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    wait_until(
        lambda: (
            (s := fx.call("listener_status"))["connected"] and s["connects"] > before["connects"]
        ),
        what="the listener to reconnect",
    )
    notify(conn, f"{schema}.oban_signal", '{"action":"pause","ident":"any","queue":"none"}')
    assert [h["decoded"]["queue"] for h in fx.heard("signal")] == ["none"]
