"""``TermMap``: an Erlang map that a Python ``dict`` cannot hold.

It lives apart from the other term types because its lookups and equality use Erlang's term
order (:mod:`bridge.wire.term_order`), which in turn must know the other types: this module
sits above both, so the imports point one way.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from typing import Any

from bridge.wire.term_order import order_key


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
