"""What a worker may return, mirroring the return values an Oban worker's ``perform/1`` has.

Returning anything else (``None`` included) completes the job, as ``:ok`` / ``{:ok, value}``
do in Elixir; raising an exception errors it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Snooze:
    """``{:snooze, seconds}``: run again later without using up an attempt."""

    seconds: int

    def __post_init__(self) -> None:
        if not isinstance(self.seconds, int) or self.seconds < 0:
            raise ValueError(f"snooze seconds must be a non-negative integer, got {self.seconds!r}")


@dataclass(frozen=True)
class Cancel:
    """``{:cancel, reason}``: stop for good; the reason lands in an error entry."""

    reason: Any


@dataclass(frozen=True)
class Discard:
    """``{:discard, reason}``: deprecated in Oban but still honoured by 2.23 (discarded)."""

    reason: Any


@dataclass(frozen=True)
class Error:
    """``{:error, reason}``: a failed attempt, retried with backoff until max_attempts."""

    reason: Any


@dataclass(frozen=True)
class Ok:
    """``{:ok, value}``: completed; the value is what a ``recorded`` worker stores."""

    value: Any = None


WorkerResult = Snooze | Cancel | Discard | Error | Ok | Any
