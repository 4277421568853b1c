"""The worker's wait-for-database line masks the URL's password field, and nothing else."""

from __future__ import annotations

import socket

import psycopg
import pytest

from bridge.cli.startup import connection_cause


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("password", ["on", "refused", "con"])
def test_a_password_made_of_common_letters_leaves_the_cause_readable(password: str) -> None:
    url = f"postgresql://someone:{password}@127.0.0.1:{_free_port()}/nothing"
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(url, connect_timeout=2)
    assert connection_cause(caught.value, url) == "connection refused"
