"""Stopping the node's background tasks for certain.

``task.cancel()`` followed by ``await task`` waits for ever when the cancellation is absorbed
inside the task: psycopg's async connection and pool handle a ``CancelledError`` that lands in
a query (they cancel the query on the server and roll back) and the task can come out of that
still running. Seen once in the test suite as a node whose stop never returned, its stager
``cancelling`` but asleep in its next interval. A stop therefore cancels again until the task
has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RECANCEL_AFTER = 0.5  # seconds between cancellations of a task that has not ended


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again while it runs on."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_AFTER)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
