"""``bridge worker`` in a process of its own, started as an operator starts it, for the tests
that kill it, signal it or read what it printed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]


def spawn_worker(
    database_url: str,
    prefix: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """``python -m bridge.cli --database-url URL --prefix PREFIX worker ARGS…`` with this tree
    on the path (``env`` adds variables); stderr is piped, stdout as given."""
    command = [
        sys.executable,
        "-m",
        "bridge.cli",
        "--database-url",
        database_url,
        "--prefix",
        prefix,
        "worker",
        *args,
    ]
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.Popen(command, env=environment, stdout=stdout, stderr=subprocess.PIPE)
