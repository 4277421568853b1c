"""A node that starts while its database begins a restart waits for it instead of exiting.

Found by the chaos run (docs/reliability.md): a ``bridge worker`` restarted just as ``pg_ctl -m
fast`` began got its first connection (the wait for the database), then "the database system
is shutting down" on the schema check's, and ended with exit status 4 — for good, without a
supervisor. Here the window is held open on a cluster of the test's own: the first connection
succeeds, then a smart shutdown (new connections refused while a session of the test's stays)
begins, and the server comes back a moment later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from bridge import schema
from bridge.cli import startup
from tests.support.cluster import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster.create() as made:
        with psycopg.connect(made.url, autocommit=True) as conn:
            schema.install(conn)
        yield made


class Restart:
    """What :func:`shutdown_after_first_wait` did ("shutting down", then "up"), and its thread."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.thread: threading.Thread | None = None

    def finish(self) -> list[str]:
        """Wait until the server is back; what happened."""
        if self.thread is not None:
            self.thread.join(60)
        return self.events


def shutdown_after_first_wait(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, down_for: float = 1.5
) -> Restart:
    """Make ``startup.wait_for_database`` begin a smart shutdown of the real server right
    after its first success; ``down_for`` seconds later the session holding it open ends and the
    server is started again."""
    real: Callable[..., None] = startup.wait_for_database
    held = psycopg.connect(cluster.url, autocommit=True)
    restart = Restart()
    events = restart.events

    def restore() -> None:
        time.sleep(down_for)
        held.close()
        deadline = time.monotonic() + 30
        while cluster.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.start()
        events.append("up")

    def wait_then_shut_down(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        if not events:
            events.append("shutting down")
            cluster.stop("smart", wait=False)
            restart.thread = threading.Thread(target=restore, daemon=True)
            restart.thread.start()

    monkeypatch.setattr(startup, "wait_for_database", wait_then_shut_down)
    return restart


def test_the_checks_right_after_the_wait_meet_a_server_shutting_down(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What start-up did before: wait, then check, on the assumption the server stays.
    restart = shutdown_after_first_wait(cluster, monkeypatch)
    startup.wait_for_database(cluster.url, 10)
    with pytest.raises(psycopg.OperationalError, match="the database system is shutting down"):
        startup.check_schema(cluster.url, "public", workflows=True)
    assert restart.finish() == ["shutting down", "up"]


def test_start_up_waits_again_for_a_server_that_went_away_after_the_first_connection(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    restart = shutdown_after_first_wait(cluster, monkeypatch)
    startup.wait_until_ready(cluster.url, 30, "public", workflows=True)
    assert restart.finish() == ["shutting down", "up"]
    assert (
        f"database 127.0.0.1:{cluster.port} went away during the start-up checks (the database "
        "system is shutting down); waiting for it again" in caplog.messages
    )


def test_a_server_still_gone_when_the_wait_runs_out_ends_start_up(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    restart = shutdown_after_first_wait(cluster, monkeypatch, down_for=3)
    with pytest.raises(psycopg.OperationalError, match="shutting down"):
        startup.wait_until_ready(cluster.url, 0, "public", workflows=True)
    assert restart.finish() == ["shutting down", "up"]
