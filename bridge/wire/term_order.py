"""Erlang's term order for map keys, as a Python sort key.

``term_to_binary`` writes a small map (at most 32 keys) with its keys sorted, so producing the
VM's bytes means sorting exactly as the VM does. The order is the standard one —
number < atom < reference < fun < port < pid < tuple < map < list (``[]`` first) < bitstring —
but in the *exact* flavour that map keys use: every integer sorts before every float, at any
depth (``{1}`` < ``{2}`` < ``{0.5}``). Checked against the VM in tests/wire/test_term.py.

The key is a flat tuple of tokens instead of a nested structure, so comparing two keys never
recurses and a long list key costs no stack. At any position the tokens of two keys have the
same type as long as every earlier token was equal, so Python can compare them directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.wire.atom import Atom
from bridge.wire.term_types import (
    BitBinary,
    Export,
    Fun,
    ImproperList,
    Pid,
    Port,
    Reference,
)

_NUMBER = 0
_ATOM = 1
_REFERENCE = 2
_FUN = 3
_PORT = 4
_PID = 5
_TUPLE = 6
_MAP = 7
_LIST = 8
_BITSTRING = 9

# Markers inside a list: a further element, or the end. An end sorts against an element the
# way the tail compares with a list: [] and anything ranked below lists sort first, a
# bitstring tail sorts after.
_END_LOW = 0
_ELEMENT = 1
_END_HIGH = 2


class UnorderableTermError(TypeError):
    """A value with no Erlang counterpart reached the ordering (the encoder reports it)."""


def order_key(term: Any) -> tuple[Any, ...]:
    """Sort key placing ``term`` where the VM places it among map keys."""
    out: list[Any] = []
    _flatten(term, out)
    return tuple(out)


def _rank(term: Any) -> int:
    if term is None or isinstance(term, bool | Atom):
        return _ATOM
    if isinstance(term, int | float):
        return _NUMBER
    if isinstance(term, str | bytes | bytearray | memoryview | BitBinary):
        return _BITSTRING
    if isinstance(term, list | ImproperList):
        return _LIST
    if isinstance(term, tuple):
        return _TUPLE
    if isinstance(term, Mapping):  # dict, TermMap: whatever the encoder writes as a map
        return _MAP
    if isinstance(term, Reference):
        return _REFERENCE
    if isinstance(term, Fun | Export):
        return _FUN
    if isinstance(term, Port):
        return _PORT
    if isinstance(term, Pid):
        return _PID
    raise UnorderableTermError(f"no Erlang term corresponds to {type(term).__name__}")


def _atom_text(term: Any) -> bytes:
    if term is None:
        return b"nil"
    if term is True:
        return b"true"
    if term is False:
        return b"false"
    return str(term).encode("utf-8")


def _flatten(term: Any, out: list[Any]) -> None:
    # Work items are terms, or ``_Tokens`` to emit verbatim between them (list markers).
    stack: list[Any] = [term]
    while stack:
        item = stack.pop()
        if isinstance(item, _Tokens):
            out.extend(item.tokens)
            continue
        rank = _rank(item)
        if rank == _NUMBER:
            if isinstance(item, float):
                out += (_NUMBER, 1, item)
            else:
                out += (_NUMBER, 0, int(item))
        elif rank == _ATOM:
            out += (_ATOM, _atom_text(item))
        elif rank == _BITSTRING:
            if isinstance(item, BitBinary):
                out += (_BITSTRING, item.data, item.bit_size)
            else:
                data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
                out += (_BITSTRING, data, len(data) * 8)
        elif rank == _TUPLE:
            out += (_TUPLE, len(item))
            stack.extend(reversed(item))
        elif rank == _LIST:
            out.append(_LIST)
            if isinstance(item, ImproperList):
                items: Any = item.items
                tail = item.tail
                end = _END_HIGH if _rank(tail) == _BITSTRING else _END_LOW
                stack.append(tail)
                stack.append(_Tokens((end,)))
            else:
                items = item
                stack.append(_Tokens((_END_LOW, _LIST)))
            for element in reversed(items):
                stack.append(element)
                stack.append(_Tokens((_ELEMENT,)))
        elif rank == _MAP:
            pairs = sorted(
                ((order_key(k), order_key(v)) for k, v in item.items()), key=lambda p: p[0]
            )
            out += (_MAP, len(pairs))
            for k, _ in pairs:
                out.extend(k)
            for _, v in pairs:
                out.extend(v)
        elif rank == _REFERENCE:
            out += (_REFERENCE, _atom_text(item.node), item.creation, *reversed(item.ids))
        elif rank == _FUN:
            if isinstance(item, Export):
                out += (_FUN, 0, _atom_text(item.module), _atom_text(item.function), item.arity)
            else:
                out += (_FUN, 1, item.raw)
        elif rank == _PORT:
            # OTP 25: node, then creation, then number (interop_tests/test_wire_vectors_bulk.py).
            out += (_PORT, _atom_text(item.node), item.creation, item.id)
        else:
            # OTP 25 compares a pid's serial, then its number, and only then its node and
            # creation (checked against the VM in interop_tests/test_wire_vectors_bulk.py).
            out += (_PID, item.serial, item.id, _atom_text(item.node), item.creation)


class _Tokens:
    __slots__ = ("tokens",)

    def __init__(self, tokens: tuple[Any, ...]) -> None:
        self.tokens = tokens
