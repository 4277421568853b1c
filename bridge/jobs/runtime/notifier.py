"""One LISTEN connection per node, hearing the channels Oban nodes speak on.

Payloads come in three encodings depending on the sender's Oban version; ``bridge.wire.notify``
decodes all of them. A payload that cannot be decoded is logged and dropped, never fatal: a
notification is only ever a hint (producers also poll), so losing one delays, never loses, work.
The connection is re-opened after any failure, with capped backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from bridge.db import redact_url
from bridge.jobs.runtime.tasks import cancel_and_wait
from bridge.wire import notify

log = logging.getLogger("bridge.notifier")

Handler = Callable[[str, dict[str, Any]], Awaitable[None] | None]


class Notifier:
    def __init__(self, url: str, prefix: str, channels: list[str]) -> None:
        self.url = url
        self.prefix = prefix
        self.channels = channels  # short names: "insert", "signal", ...
        self._handlers: list[Handler] = []
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.decode_failures = 0

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bridge-notifier")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        delay = 0.1
        full_names = {notify.channel(self.prefix, c): c for c in self.channels}
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    for name in full_names:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
                    self.connected.set()
                    delay = 0.1
                    async for note in conn.notifies():
                        short = full_names.get(note.channel)
                        if short is not None:
                            await self._dispatch(short, note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                log.warning(
                    "notifier connection to %s lost (%s); reconnecting in %.1fs",
                    redact_url(self.url),
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _dispatch(self, channel: str, raw: str) -> None:
        try:
            payload = notify.decode(raw)
        except notify.NotificationDecodeError as exc:
            self.decode_failures += 1
            log.warning("dropped an undecodable %s notification: %s", channel, exc)
            return
        for handler in self._handlers:
            try:
                result = handler(channel, payload)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("notification handler failed for %s", channel)
