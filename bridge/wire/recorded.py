"""Recorded output: a job's return value kept in ``oban_jobs.meta``, as Oban Pro stores it.

A recorded worker completes its job with ``meta`` holding two extra keys::

    "recorded": true
    "return":   Base64 (standard alphabet, ``=`` padding stripped) of term_to_binary(value)

Oban Pro writes and reads exactly these keys, Oban Web shows them (``Base.decode64!(…,
padding: false)`` then ``binary_to_term`` with ``:safe``), and Oban for Python writes the same
envelope. ``recorded: true`` without ``return`` means "recording enabled, nothing recorded yet".

We compress by default (``term_to_binary(value, [:compressed])``): the term format only keeps the
compressed form when it is no longer, so small values are untouched and large ones shrink; every
reader handles both because the tag says which. Oban for Python writes uncompressed terms; we
read those too.

The size limit, as in Oban for Python, counts the characters of the Base64 text (what lands in
the row); the default is the same 64 MB. It is checked before any Base64 is produced.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from bridge.wire.term import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_INFLATED_SIZE,
    Binaries,
    decode,
    encode,
)

RECORDED_KEY = "recorded"
RETURN_KEY = "return"
RECORDED_LIMIT = 64_000_000


class RecordedError(ValueError):
    """Root of the errors about the recorded-output envelope (term errors are ``TermError``)."""


class RecordedTooLargeError(RecordedError):
    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"recorded value is {size} bytes of Base64, over the limit of {limit}")


class NotRecordedError(RecordedError):
    """The job's meta does not say ``"recorded": true``: the worker does not record."""


class RecordingMissingError(RecordedError):
    """``"recorded": true`` but no ``"return"``: the job has not completed with a value yet."""


class RecordedEncodingError(RecordedError):
    """``"return"`` is not unpadded standard Base64 text."""


def encode_recorded(
    value: Any,
    *,
    limit: int = RECORDED_LIMIT,
    compressed: bool | int = True,
    minor_version: int = 1,
) -> dict[str, Any]:
    """The keys to merge into a completed job's ``meta`` to record ``value``."""
    return {
        RECORDED_KEY: True,
        RETURN_KEY: encode_recorded_value(
            value, limit=limit, compressed=compressed, minor_version=minor_version
        ),
    }


def encode_recorded_value(
    value: Any,
    *,
    limit: int = RECORDED_LIMIT,
    compressed: bool | int = True,
    minor_version: int = 1,
) -> str:
    """Just the ``"return"`` text: term_to_binary, then Base64 without padding."""
    data = encode(value, compressed=compressed, minor_version=minor_version)
    size = (len(data) * 4 + 2) // 3  # Base64 length once the padding is stripped
    if size > limit:
        raise RecordedTooLargeError(size, limit)
    return base64.b64encode(data).decode("ascii").rstrip("=")


def is_recorded(meta: Mapping[str, Any]) -> bool:
    return meta.get(RECORDED_KEY) is True


def decode_recorded(
    meta: Mapping[str, Any],
    *,
    limit: int | None = None,
    binaries: Binaries = "auto",
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_inflated_size: int = DEFAULT_MAX_INFLATED_SIZE,
) -> Any:
    """The value a job recorded, from its ``meta``.

    Raises ``NotRecordedError`` / ``RecordingMissingError`` for a job without a value,
    ``RecordedEncodingError`` for text that is not Base64, ``RecordedTooLargeError`` past
    ``limit``, and a ``TermDecodeError`` subclass for a broken term.
    """
    if not is_recorded(meta):
        raise NotRecordedError('job meta has no "recorded": true; the worker does not record')
    if RETURN_KEY not in meta:
        raise RecordingMissingError('job meta says recorded but holds no "return" value yet')
    return decode_recorded_value(
        meta[RETURN_KEY],
        limit=limit,
        binaries=binaries,
        max_depth=max_depth,
        max_inflated_size=max_inflated_size,
    )


def decode_recorded_value(
    text: Any,
    *,
    limit: int | None = None,
    binaries: Binaries = "auto",
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_inflated_size: int = DEFAULT_MAX_INFLATED_SIZE,
) -> Any:
    """Decode a ``"return"`` text (padded or not) back into the recorded value."""
    if not isinstance(text, str):
        raise RecordedEncodingError(f'"return" must be Base64 text, not {type(text).__name__}')
    if limit is not None and len(text) > limit:
        raise RecordedTooLargeError(len(text), limit)
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise RecordedEncodingError(f'"return" has an impossible Base64 length {len(stripped)}')
    try:
        data = base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RecordedEncodingError(f'"return" is not Base64: {exc}') from None
    return decode(data, binaries=binaries, max_depth=max_depth, max_inflated_size=max_inflated_size)
