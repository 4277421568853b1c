"""The CPU-bound job body both libraries run in the CPU benchmark: pure Python, no I/O.

It imports nothing (the ``oban`` side runs it in its own virtualenv): ``burn(n)`` does ``n``
rounds of integer arithmetic, a fixed amount of work whatever the machine, so every side and
every mode does the same work per job; ``bench_cpu.py`` picks ``n`` so one call takes ~20 ms.
"""

from __future__ import annotations


def burn(n: int) -> int:
    """``n`` rounds of arithmetic on the interpreter (holds the GIL throughout)."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc
