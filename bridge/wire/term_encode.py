"""Encoding Python values as ``:erlang.term_to_binary/2`` does, byte for byte.

"Byte for byte" means the VM's choices, not merely a valid encoding: the smallest integer tag,
``STRING_EXT`` for a list of bytes, the atom tag of the chosen minor version, small-map keys in
the VM's order, and compression kept only when it does not grow the result. Those choices were
read off OTP 25 and are checked against a live VM in tests/wire/test_term.py.

Like the decoder, the encoder walks an explicit stack, so depth is bounded by ``max_depth``
(which also stops a self-referencing list) instead of by Python's recursion limit.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator, Mapping
from functools import lru_cache
from itertools import chain
from typing import Any

from bridge.wire.atom import Atom
from bridge.wire.term_decode import DEFAULT_MAX_DEPTH, MAX_ATOM_CHARACTERS
from bridge.wire.term_errors import TermEncodeError
from bridge.wire.term_map import TermMap
from bridge.wire.term_order import UnorderableTermError, order_key
from bridge.wire.term_types import (
    BitBinary,
    Export,
    Fun,
    ImproperList,
    Pid,
    Port,
    Reference,
)

# term_to_binary sorts the keys of a map this small; larger maps are hash-array-mapped tries
# whose order depends on the VM's internal hash, which we do not reproduce.
SMALL_MAP_LIMIT = 32
DEFAULT_COMPRESSION_LEVEL = 6

_I32 = struct.Struct(">i").pack
_U32 = struct.Struct(">I").pack
_U16 = struct.Struct(">H").pack
_F64 = struct.Struct(">d").pack
_BYTE = [bytes([i]) for i in range(256)]
_SMALL_INTS = [b"a" + _BYTE[i] for i in range(256)]


def encode(
    term: Any,
    *,
    compressed: bool | int = False,
    minor_version: int = 1,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> bytes:
    """``:erlang.term_to_binary(term, opts)`` for the Python form of a term.

    ``compressed`` is ``:compressed`` (``True``, level 6) or ``{:compressed, level}`` (0-9).
    ``minor_version`` 1 is OTP 25's default (Latin-1 atoms as ``ATOM_EXT``); 2 is OTP 26's
    default (every atom as UTF-8). Version 0 writes floats in the old text form.
    """
    if isinstance(compressed, bool):
        level = DEFAULT_COMPRESSION_LEVEL if compressed else 0
    elif isinstance(compressed, int) and 0 <= compressed <= 9:
        level = compressed
    else:
        raise ValueError(f"compressed must be a bool or a level 0..9, not {compressed!r}")
    if minor_version not in (0, 1, 2):
        raise ValueError(f"minor_version must be 0, 1 or 2, not {minor_version!r}")
    body = encode_body(term, minor_version=minor_version, max_depth=max_depth)
    # zlib output is never under 8 bytes, so a body under 13 can never come out shorter.
    if level and 13 <= len(body) < 1 << 32:
        packed = zlib.compress(body, level)
        # The VM keeps the compressed form whenever it is no longer than the plain one.
        if len(packed) + 5 <= len(body):
            return b"\x83P" + _U32(len(body)) + packed
    return b"\x83" + body


def encode_body(term: Any, *, minor_version: int = 1, max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """The term without the version byte (what a compressed term's zlib stream holds)."""
    utf8_atoms = minor_version >= 2
    nil, true, false = (_atom(name, utf8_atoms) for name in ("nil", "true", "false"))
    out: list[bytes] = []
    w = out.append
    # One iterator per open container; its length is the nesting depth of what it yields.
    stack: list[Iterator[Any]] = [iter((term,))]
    while stack:
        for t in stack[-1]:
            cls = t.__class__
            if cls not in _COMMON:
                t = _normalize(t)
                cls = t.__class__
            if cls is str:
                try:
                    data = t.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise TermEncodeError(f"string is not valid Unicode: {exc.reason}") from None
                w(b"m" + _U32(len(data)) + data)
            elif cls is int:
                w(_integer(t))
            elif cls is Atom:
                w(_atom(t, utf8_atoms))
            elif cls is dict or cls is TermMap:
                if not t:
                    w(b"t\x00\x00\x00\x00")
                    continue
                if len(stack) > max_depth:
                    raise _too_deep(max_depth)
                pairs = _map_pairs(t)
                w(b"t" + _U32(len(pairs)))
                stack.append(chain.from_iterable(pairs))
                break
            elif cls is list:
                if not t:
                    w(b"j")
                    continue
                if len(t) < 65536 and all(x.__class__ is int and 0 <= x <= 255 for x in t):
                    w(b"k" + _U16(len(t)) + bytes(t))
                    continue
                if len(stack) > max_depth:
                    raise _too_deep(max_depth)
                w(b"l" + _U32(len(t)))
                stack.append(chain(t, _NIL_TAIL))
                break
            elif cls is tuple:
                arity = len(t)
                w(b"h" + _BYTE[arity] if arity < 256 else b"i" + _U32(arity))
                if arity:
                    if len(stack) > max_depth:
                        raise _too_deep(max_depth)
                    stack.append(iter(t))
                    break
            elif cls is float:
                w(_float(t, minor_version))
            elif t is None:
                w(nil)
            elif cls is bool:
                w(true if t else false)
            elif cls is bytes:
                w(b"m" + _U32(len(t)) + t)
            elif cls is ImproperList:
                if len(stack) > max_depth:
                    raise _too_deep(max_depth)
                w(b"l" + _U32(len(t.items)))
                stack.append(chain(t.items, (t.tail,)))
                break
            else:
                w(_encode_rare(t, utf8_atoms))
        else:
            stack.pop()
    return b"".join(out)


_COMMON = frozenset(
    {str, int, Atom, dict, TermMap, list, tuple, float, type(None), bool, bytes, ImproperList}
)
_NIL_TAIL: tuple[Any, ...] = ([],)  # encodes as NIL_EXT, closing a proper list


def _normalize(t: Any) -> Any:
    """Subclasses of the common types (``IntEnum``, ``StrEnum``, namedtuples, other mappings)
    as the plain type they stand for; anything else unchanged."""
    if isinstance(t, bool):
        return bool(t)
    if isinstance(t, Atom):
        return Atom(str.__str__(t))
    if isinstance(t, int):
        return int(t)
    if isinstance(t, float):
        return float(t)
    if isinstance(t, str):
        return str.__str__(t)
    if isinstance(t, bytes | bytearray | memoryview):
        return bytes(t)
    if isinstance(t, list):
        return list(t)
    if isinstance(t, tuple):
        return tuple(t)
    if isinstance(t, Mapping):
        return dict(t)
    return t


def _encode_rare(t: Any, utf8_atoms: bool) -> bytes:
    if isinstance(t, BitBinary):
        return b"M" + _U32(len(t.data)) + _BYTE[t.bits] + t.data
    if isinstance(t, Pid):
        return b"X" + _atom(t.node, utf8_atoms) + _u32s(t.id, t.serial, t.creation)
    if isinstance(t, Port):
        node = _atom(t.node, utf8_atoms)
        if 0 <= t.id < 1 << 32:
            return b"Y" + node + _u32s(t.id, t.creation)
        if 0 <= t.id < 1 << 64:
            return b"x" + node + t.id.to_bytes(8, "big") + _u32s(t.creation)
        raise TermEncodeError(f"port id {t.id} does not fit in 64 bits")
    if isinstance(t, Reference):
        if not 1 <= len(t.ids) <= 5:
            raise TermEncodeError(f"a reference has 1..5 id words, not {len(t.ids)}")
        node = _atom(t.node, utf8_atoms)
        return b"Z" + _U16(len(t.ids)) + node + _u32s(t.creation) + _u32s(*t.ids)
    if isinstance(t, Export):
        if not 0 <= t.arity <= 255:
            raise TermEncodeError(f"export arity {t.arity} is not 0..255")
        module = _atom(t.module, utf8_atoms)
        return b"q" + module + _atom(t.function, utf8_atoms) + _SMALL_INTS[t.arity]
    if isinstance(t, Fun):
        return b"p" + t.raw
    raise TermEncodeError(f"no Erlang term corresponds to a {type(t).__name__}: {t!r:.80}")


def _too_deep(max_depth: int) -> TermEncodeError:
    return TermEncodeError(f"nesting exceeds {max_depth} levels (or the value contains itself)")


def _u32s(*values: int) -> bytes:
    try:
        return struct.pack(f">{len(values)}I", *values)
    except struct.error:
        raise TermEncodeError(f"{values} do not all fit in 32 bits") from None


def _integer(v: int) -> bytes:
    if 0 <= v <= 255:
        return _SMALL_INTS[v]
    if -0x80000000 <= v <= 0x7FFFFFFF:
        return b"b" + _I32(v)
    sign = b"\x01" if v < 0 else b"\x00"
    magnitude = -v if v < 0 else v
    size = (magnitude.bit_length() + 7) // 8
    digits = magnitude.to_bytes(size, "little")
    if size < 256:
        return b"n" + _BYTE[size] + sign + digits
    return b"o" + _U32(size) + sign + digits


def _float(v: float, minor_version: int) -> bytes:
    if not math.isfinite(v):
        raise TermEncodeError(f"the VM has no float {v!r}")
    if minor_version == 0:
        return b"c" + f"{v:.20e}".encode("ascii").ljust(31, b"\0")
    return b"F" + _F64(v)


@lru_cache(maxsize=4096)
def _atom_bytes(name: str, utf8_only: bool) -> bytes:
    if len(name) > MAX_ATOM_CHARACTERS:
        raise TermEncodeError(
            f"atom of {len(name)} characters, the VM allows {MAX_ATOM_CHARACTERS}"
        )
    if not utf8_only:
        try:
            latin1 = name.encode("latin-1")
        except UnicodeEncodeError:
            pass
        else:
            return b"d" + _U16(len(latin1)) + latin1
    try:
        data = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TermEncodeError(f"atom text is not valid Unicode: {exc.reason}") from None
    if len(data) < 256:
        return b"w" + _BYTE[len(data)] + data
    return b"v" + _U16(len(data)) + data


def _atom(name: str, utf8_only: bool) -> bytes:
    return _atom_bytes(str.__str__(name), utf8_only)


def _map_pairs(m: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    """The pairs in the order term_to_binary writes them; refuses keys Erlang sees as equal."""
    pairs = list(m.items())
    if m.__class__ is dict:
        kinds = {k.__class__ for k in m}
        if len(kinds) == 1 and (str in kinds or Atom in kinds):
            # Unique by construction, and str order (code points) is UTF-8 byte order.
            if len(pairs) <= SMALL_MAP_LIMIT:
                pairs.sort(key=lambda kv: kv[0])
            return pairs
    try:
        keyed = [(order_key(k), k, v) for k, v in pairs]
    except UnorderableTermError as exc:
        raise TermEncodeError(str(exc)) from None
    except RecursionError:
        raise TermEncodeError("map keys nest too deeply to order") from None
    if len({key for key, _, _ in keyed}) != len(keyed):
        raise TermEncodeError("two map keys are the same Erlang term (e.g. 'a' and b'a')")
    if len(keyed) <= SMALL_MAP_LIMIT:
        keyed.sort(key=lambda item: item[0])
    return [(k, v) for _, k, v in keyed]
