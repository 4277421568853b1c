"""Oban's PostgreSQL notification payloads: channel names and the three payload encodings.

Oban >= 2.21 sends a payload as plain JSON when it is at most 512 bytes and otherwise as
``"Z:" + base64(gzip(json))``; Oban <= 2.20 always sent ``base64(gzip(json))`` (it starts with
``H4sI``) and, on receipt, falls back to plain JSON when a payload is not base64. The peer
``oban`` package reads plain JSON and legacy gzip but not ``Z:``.

So :func:`encode` sends plain JSON up to 512 bytes — byte-identical to what Oban 2.23 sends and
readable by every Oban version and by ``oban`` — and the legacy gzip form above that, which every
version (and ``oban``) decodes, where ``Z:`` would be lost on Oban <= 2.20 and on ``oban``.
JSON keys are sorted, as Elixir's encoder writes small maps, so short payloads match byte for
byte (``{"action":"scale","ident":"any","limit":7,"queue":"elixir"}``).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from typing import Any

from bridge.wire import jsonfmt

# Every channel Oban listens on (lib/oban/notifier.ex).
CHANNELS = (
    "insert",
    "signal",
    "gossip",
    "leader",
    "sonar",
    "stager",
    "notifier",
    "producer",
    "cron",
)

PLAIN_LIMIT = 512
# Inflated payloads larger than this are refused: a notification carries a few KB at most, and a
# small gzip can inflate to gigabytes.
MAX_INFLATED = 8 * 1024 * 1024
# Oban's payloads nest three levels at most and carry 64-bit integers. A deeper payload is no
# message of Oban's, and handing it on would make any handler that walks it recursively (a log
# line, json.dumps) fail on it; an integer of millions of digits would hold the node's event loop
# for seconds while it is converted.
MAX_DEPTH = 100
MAX_INT_DIGITS = 4300


class NotificationDecodeError(ValueError):
    """A payload that is not one of Oban's encodings of a JSON object."""


class NotJSONError(NotificationDecodeError):
    pass


class BadCompressionError(NotificationDecodeError):
    pass


class NotAnObjectError(NotificationDecodeError):
    pass


def channel(prefix: str, name: str) -> str:
    """``<prefix>.oban_<name>``: the prefix is part of the channel text, unquoted."""
    return f"{prefix}.oban_{name}"


def dumps(payload: dict[str, Any]) -> bytes:
    """Compact JSON with sorted keys; integers beyond 64 bits (which Jason writes and orjson
    refuses) through the standard library, which writes the same bytes for everything else."""
    return jsonfmt.dumps(payload, sort_keys=True).encode()


def encode(payload: dict[str, Any], *, form: str = "auto") -> str:
    """``form``: ``auto`` (plain up to 512 bytes, else legacy gzip), ``plain``, ``legacy``,
    or ``z``."""
    data = dumps(payload)
    if form == "plain" or (form == "auto" and len(data) <= PLAIN_LIMIT):
        return data.decode()
    packed = base64.b64encode(gzip.compress(data, mtime=0)).decode()
    if form == "z":
        return "Z:" + packed
    if form in ("auto", "legacy"):
        return packed
    raise ValueError(f"unknown notification form {form!r}")


def decode(raw: str) -> dict[str, Any]:
    """Any of the three forms -> the JSON object; anything else raises a typed error
    (:class:`NotificationDecodeError`), whatever ``raw`` holds."""
    data: str | bytes
    if raw.startswith("Z:"):
        data = _gunzip(_unbase64(raw[2:]))
    elif raw.lstrip().startswith(("{", "[")):
        data = raw
    else:
        try:
            packed = _unbase64(raw)
        except BadCompressionError:
            data = raw  # Oban's own fallback: not base64 -> try plain JSON
        else:
            data = _gunzip(packed)
    try:
        # Jason's reading (any integer stays an integer; no NaN), within the limits above.
        value = jsonfmt.loads(data, max_depth=MAX_DEPTH, max_digits=MAX_INT_DIGITS)
    except jsonfmt.JSONDecodeError as exc:
        raise NotJSONError(f"payload refused: {exc}; it starts {raw[:60]!r}") from exc
    if not isinstance(value, dict):
        raise NotAnObjectError(f"payload is JSON but not an object: {type(value).__name__}")
    return value


def _unbase64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadCompressionError(f"payload is not base64: {text[:40]!r}") from exc


def _gunzip(packed: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=31)  # gzip container
    try:
        data = inflater.decompress(packed, MAX_INFLATED + 1)
    except zlib.error as exc:
        raise BadCompressionError(f"payload is not gzip: {exc}") from exc
    if len(data) > MAX_INFLATED or inflater.unconsumed_tail:
        raise BadCompressionError(f"payload inflates beyond {MAX_INFLATED} bytes")
    if not inflater.eof:
        raise BadCompressionError("payload is truncated gzip")
    return data
