"""Oban's default retry backoff (``Oban.Worker.backoff/1`` with ``Oban.Backoff``), bit for bit.

``attempt`` is first scaled to 20 steps when ``max_attempts > 20`` (``round(attempt /
max_attempts * 20)`` — Erlang's round, half away from zero), then ``15 + 2^attempt`` seconds with
the exponent capped at 100, then ``:inc`` jitter: ``+ trunc(rand * 0.1 * value)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

MAX_POW = 100
BASE_PAD = 15
JITTER_MULT = 0.1


def erlang_round(value: float) -> int:
    """Erlang's round/1: half away from zero (Python's round() is half to even)."""
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


def clamped_attempt(attempt: int, max_attempts: int) -> int:
    if max_attempts <= 20:
        return attempt
    return erlang_round(attempt / max_attempts * 20)


def exponential(attempt: int) -> int:
    return BASE_PAD + (1 << min(max(attempt, 0), MAX_POW))


def jitter(value: int, rand: Callable[[], float] = random.random) -> int:
    """Mode ``:inc``: never shorter, up to 10 % longer."""
    return value + math.trunc(rand() * JITTER_MULT * value)


def default_backoff(
    attempt: int, max_attempts: int, rand: Callable[[], float] = random.random
) -> int:
    """Seconds until a failed attempt ``attempt`` (1-based) runs again."""
    return jitter(exponential(clamped_attempt(attempt, max_attempts)), rand)
