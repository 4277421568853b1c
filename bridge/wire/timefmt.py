"""Timestamps as the Elixir side writes and reads them.

Oban stores naive UTC ``timestamp`` values with microseconds (Ecto's ``:utc_datetime_usec``
written without a zone), so the runtime works in naive UTC datetimes throughout. Inside jsonb
(error entries' ``at``, gossip ``started_at``) Elixir's JSON encoder writes a ``DateTime`` as
ISO-8601 with a ``Z`` and six fractional digits, e.g. ``2026-11-22T16:10:23.030657Z``.
"""

from __future__ import annotations

from datetime import UTC, datetime


class TimestampError(ValueError):
    """A timestamp text that is not in the form the Elixir side writes."""


def utc_now() -> datetime:
    """Naive UTC now, microsecond precision, as Oban's ``utc_now()`` stores it."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def format_utc(moment: datetime) -> str:
    """``DateTime`` as Jason encodes it: ISO-8601, six fractional digits, ``Z``."""
    return to_naive_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_naive(moment: datetime) -> str:
    """A naive timestamp column as ``row_to_json`` prints it (trailing zeros dropped)."""
    text = to_naive_utc(moment).isoformat(timespec="microseconds")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def parse_utc(text: str) -> datetime:
    """Parse ``…Z`` or naive ISO-8601 into a naive UTC datetime."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError) as exc:
        raise TimestampError(f"not an ISO-8601 timestamp: {text!r}") from exc
    return to_naive_utc(moment)
