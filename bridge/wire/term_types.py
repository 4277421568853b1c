"""Python stand-ins for the Erlang terms that have no natural Python type.

Each is a frozen value object, so decoded terms can be map keys and compare by value, and each
holds exactly what its external form holds, so ``encode(decode(b)) == b``. Pids, ports,
references and funs only make sense inside the VM that made them; they are carried opaquely
(Oban Pro decodes recorded output with ``[:safe]``, which refuses funs anyway, but a value
that merely passes through Python should survive the trip).
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, Mapping, ValuesView
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


class TermMap(Mapping[Any, Any]):
    """An Erlang map that a ``dict`` cannot hold.

    Two cases: a key Python cannot hash (a list or a map used as a key, legal in Erlang), or
    keys Erlang tells apart but Python does not (``1``, ``1.0`` and ``true``; the atom ``:a``
    and the binary ``"a"``). The decoder returns a plain ``dict`` whenever it can and a
    ``TermMap`` only then; the encoder accepts either. Lookups compare keys by their Erlang
    identity, so ``TermMap(...)[1.0]`` does not find the key ``1``.
    """

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Any) -> None:
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        self._pairs: tuple[tuple[Any, Any], ...] = tuple((k, v) for k, v in items)

    @property
    def pairs(self) -> tuple[tuple[Any, Any], ...]:
        return self._pairs

    def __getitem__(self, key: Any) -> Any:
        from bridge.wire.term_order import order_key

        wanted = order_key(key)
        for k, v in self._pairs:
            if order_key(k) == wanted:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return (k for k, _ in self._pairs)

    def items(self) -> ItemsView[Any, Any]:
        return _PairItems(self)

    def values(self) -> ValuesView[Any]:
        return _PairValues(self)

    def __len__(self) -> int:
        return len(self._pairs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        from bridge.wire.term_order import order_key

        if len(other) != len(self._pairs):
            return False
        mine = {order_key(k): order_key(v) for k, v in self._pairs}
        try:
            theirs = {order_key(k): order_key(v) for k, v in other.items()}
        except TypeError:
            return False
        return mine == theirs

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TermMap({list(self._pairs)!r})"


class _PairItems(ItemsView[Any, Any]):
    """Iterates the stored pairs instead of looking every key up again (quadratic)."""

    _mapping: TermMap

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return iter(self._mapping.pairs)


class _PairValues(ValuesView[Any]):
    _mapping: TermMap

    def __iter__(self) -> Iterator[Any]:
        return (v for _, v in self._mapping.pairs)
