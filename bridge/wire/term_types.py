"""Python stand-ins for the Erlang terms that have no natural Python type.

Each is a frozen value object, so decoded terms can be map keys and compare by value, and each
holds exactly what its external form holds, so ``encode(decode(b)) == b``. Pids, ports,
references and funs only make sense inside the VM that made them; they are carried opaquely
(Oban Pro decodes recorded output with ``[:safe]``, which refuses funs anyway, but a value
that merely passes through Python should survive the trip).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.wire.atom import Atom


@dataclass(frozen=True, slots=True, init=False)
class ImproperList:
    """A list whose last tail is not ``[]``: ``[1, 2 | :tail]`` is ``ImproperList([1, 2], tail)``.

    ``items`` is never empty and ``tail`` is never a list: either would be a different term
    (``[] ++ x`` is just ``x``; a list tail extends ``items``), and one term must have one form.
    """

    items: tuple[Any, ...]
    tail: Any

    def __init__(self, items: Iterable[Any], tail: Any) -> None:
        items = tuple(items)
        if not items:
            raise ValueError("ImproperList needs at least one item before the tail")
        if isinstance(tail, list | ImproperList):
            raise ValueError("the tail of an ImproperList cannot itself be a list")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "tail", tail)


@dataclass(frozen=True, slots=True)
class BitBinary:
    """A bitstring whose length is not a whole number of bytes (``<<1, 2::4>>``).

    ``bits`` is how many leading bits of the last byte belong to the value (1..7). The unused
    low bits are cleared on construction, as the VM does, so equal bitstrings compare equal.
    A whole number of bytes is a binary and is never a ``BitBinary``.
    """

    data: bytes
    bits: int

    def __post_init__(self) -> None:
        data = bytes(self.data)
        if not data:
            raise ValueError("a BitBinary has at least one byte")
        if not 1 <= self.bits <= 7:
            raise ValueError(f"BitBinary.bits must be 1..7, got {self.bits}")
        mask = (0xFF << (8 - self.bits)) & 0xFF
        if data[-1] & ~mask:
            data = data[:-1] + bytes([data[-1] & mask])
        object.__setattr__(self, "data", data)

    @property
    def bit_size(self) -> int:
        return (len(self.data) - 1) * 8 + self.bits


@dataclass(frozen=True, slots=True)
class Pid:
    node: Atom
    id: int
    serial: int
    creation: int


@dataclass(frozen=True, slots=True)
class Port:
    node: Atom
    id: int
    creation: int


@dataclass(frozen=True, slots=True)
class Reference:
    node: Atom
    creation: int
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Export:
    """An external fun, ``&Module.function/arity``."""

    module: Atom
    function: Atom
    arity: int


@dataclass(frozen=True, slots=True)
class Fun:
    """A closure, kept as the raw bytes of its NEW_FUN_EXT body (everything after the tag).

    Its code lives only in the VM that compiled it; Python can store and return it, not run it.
    """

    raw: bytes
