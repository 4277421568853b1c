"""Decoding the external term format (``binary_to_term``) into Python values.

The decoder is a loop over an explicit stack, not a recursive descent: a recorded value nested
a few thousand levels deep must raise ``NestingTooDeepError`` at the configured bound, never
``RecursionError``. Every length field is checked against the bytes that remain before it is
used, so a forged header costs nothing; compressed input is inflated no further than the size
it declares (and never past ``max_inflated_size``), which defuses zlib bombs.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from typing import Any, Literal

from bridge.wire.atom import Atom
from bridge.wire.term_errors import (
    AtomEncodingError,
    AtomTooLongError,
    CompressionError,
    DeclaredLengthError,
    InflatedSizeError,
    InvalidTermError,
    NestingTooDeepError,
    TermDecodeError,
    TrailingDataError,
    TruncatedTermError,
    UnknownTagError,
    VersionError,
)
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

VERSION = 131
DEFAULT_MAX_DEPTH = 4096
DEFAULT_MAX_INFLATED_SIZE = 256 * 1024 * 1024
MAX_ATOM_CHARACTERS = 255
MAX_REFERENCE_WORDS = 5

Binaries = Literal["auto", "bytes"]

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_F64 = struct.Struct(">d").unpack_from

# What OTP's FLOAT_EXT parser takes: a decimal with a fraction and an optional exponent.
_FLOAT_TEXT = re.compile(rb"[+-]?[0-9]+\.[0-9]+(?:e[+-]?[0-9]+)?")

_LIST = 0
_TUPLE = 1
_MAP = 2

_ATOM_VALUES: dict[str, Any] = {"nil": None, "true": True, "false": False}


def decode(
    data: bytes | bytearray | memoryview,
    *,
    binaries: Binaries = "auto",
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_inflated_size: int = DEFAULT_MAX_INFLATED_SIZE,
) -> Any:
    """``:erlang.binary_to_term/1``: one whole term, version byte included.

    ``binaries="auto"`` gives a ``str`` for every binary that is valid UTF-8 (what an Elixir
    string is) and ``bytes`` otherwise; ``"bytes"`` always gives ``bytes``. Both round-trip.
    """
    if binaries not in ("auto", "bytes"):
        raise ValueError(f"binaries must be 'auto' or 'bytes', not {binaries!r}")
    buf = bytes(data)
    if not buf:
        raise TruncatedTermError(0, "empty input, expected the version byte 131")
    if buf[0] != VERSION:
        raise VersionError(0, f"version byte is {buf[0]}, expected 131")
    as_text = binaries == "auto"
    if len(buf) > 1 and buf[1] == 80:
        body = _inflate(buf, max_inflated_size)
        try:
            value, end = _decode_term(body, 0, as_text, max_depth)
            if end != len(body):
                raise TrailingDataError(end, f"{len(body) - end} bytes follow the term")
        except TermDecodeError as exc:
            raise type(exc)(
                exc.offset, f"{exc.problem} (offset within the inflated term)"
            ) from None
        return value
    value, end = _decode_term(buf, 1, as_text, max_depth)
    if end != len(buf):
        raise TrailingDataError(end, f"{len(buf) - end} bytes follow the term")
    return value


def _inflate(buf: bytes, max_inflated_size: int) -> bytes:
    if len(buf) < 6:
        raise TruncatedTermError(2, "compressed term ends inside its size field")
    (size,) = _U32(buf, 2)
    if size == 0:
        raise InflatedSizeError(2, "compressed term declares an uncompressed size of 0")
    if size > max_inflated_size:
        raise InflatedSizeError(
            2, f"compressed term declares {size} bytes, over the limit of {max_inflated_size}"
        )
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(buf[6:], size)
        # Room for exactly the declared size was used up: any more output is a lie.
        if (
            not inflater.eof
            and len(out) == size
            and inflater.decompress(inflater.unconsumed_tail, 1)
        ):
            raise InflatedSizeError(6, f"compressed term inflates past its declared {size} bytes")
    except zlib.error as exc:
        raise CompressionError(6, f"zlib stream is corrupt: {exc}") from None
    if not inflater.eof:
        raise CompressionError(6, "zlib stream is truncated")
    if len(out) != size:
        raise InflatedSizeError(6, f"compressed term inflates to {len(out)} bytes, declared {size}")
    if inflater.unused_data:
        offset = len(buf) - len(inflater.unused_data)
        raise TrailingDataError(offset, f"{len(inflater.unused_data)} bytes follow the zlib stream")
    return out


def _decode_term(buf: bytes, pos: int, as_text: bool, max_depth: int) -> tuple[Any, int]:
    """Decode the term whose tag is at ``pos``; return it and the offset just past it."""
    n = len(buf)
    # A frame is [kind, values still expected, values so far, offset of the container's tag].
    stack: list[list[Any]] = []
    latin1_atoms: dict[bytes, Any] = {}
    utf8_atoms: dict[bytes, Any] = {}
    tag_pos = pos
    tag = -1
    value: Any
    try:
        while True:
            tag_pos = pos
            tag = buf[pos]
            pos += 1
            if tag == 97:  # SMALL_INTEGER_EXT
                value = buf[pos]
                pos += 1
            elif tag == 109:  # BINARY_EXT
                (length,) = _U32(buf, pos)
                pos += 4
                end = pos + length
                if end > n:
                    raise DeclaredLengthError(
                        tag_pos, f"binary declares {length} bytes, {n - pos} remain"
                    )
                raw = buf[pos:end]
                pos = end
                if as_text:
                    try:
                        value = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        value = raw
                else:
                    value = raw
            elif tag == 100 or tag == 119 or tag == 118 or tag == 115:
                if tag == 119 or tag == 115:
                    length = buf[pos]
                    pos += 1
                else:
                    (length,) = _U16(buf, pos)
                    pos += 2
                end = pos + length
                if end > n:
                    raise DeclaredLengthError(
                        tag_pos, f"atom declares {length} bytes, {n - pos} remain"
                    )
                raw = buf[pos:end]
                pos = end
                cache = utf8_atoms if tag >= 118 else latin1_atoms
                if raw in cache:
                    value = cache[raw]
                else:
                    name = _atom_text(raw, tag >= 118, tag_pos)
                    value = _ATOM_VALUES[name] if name in _ATOM_VALUES else Atom(name)
                    cache[raw] = value
            elif tag == 116:  # MAP_EXT
                (count,) = _U32(buf, pos)
                pos += 4
                if count == 0:
                    value = {}
                else:
                    if 2 * count > n - pos:
                        raise DeclaredLengthError(
                            tag_pos, f"map declares {count} pairs, {n - pos} bytes remain"
                        )
                    if len(stack) >= max_depth:
                        raise NestingTooDeepError(tag_pos, f"nesting exceeds {max_depth} levels")
                    stack.append([_MAP, 2 * count, [], tag_pos])
                    continue
            elif tag == 106:  # NIL_EXT
                value = []
            elif tag == 108:  # LIST_EXT
                (count,) = _U32(buf, pos)
                pos += 4
                if count + 1 > n - pos:
                    raise DeclaredLengthError(
                        tag_pos, f"list declares {count} elements, {n - pos} bytes remain"
                    )
                if len(stack) >= max_depth:
                    raise NestingTooDeepError(tag_pos, f"nesting exceeds {max_depth} levels")
                stack.append([_LIST, count + 1, [], tag_pos])
                continue
            elif tag == 104 or tag == 105:  # SMALL_TUPLE_EXT, LARGE_TUPLE_EXT
                if tag == 104:
                    arity = buf[pos]
                    pos += 1
                else:
                    (arity,) = _U32(buf, pos)
                    pos += 4
                if arity == 0:
                    value = ()
                else:
                    if arity > n - pos:
                        raise DeclaredLengthError(
                            tag_pos, f"tuple declares {arity} elements, {n - pos} bytes remain"
                        )
                    if len(stack) >= max_depth:
                        raise NestingTooDeepError(tag_pos, f"nesting exceeds {max_depth} levels")
                    stack.append([_TUPLE, arity, [], tag_pos])
                    continue
            elif tag == 98:  # INTEGER_EXT
                (value,) = _I32(buf, pos)
                pos += 4
            elif tag == 70:  # NEW_FLOAT_EXT
                (value,) = _F64(buf, pos)
                pos += 8
                if not math.isfinite(value):
                    raise InvalidTermError(
                        tag_pos, "float is not finite (the VM has no NaN or inf)"
                    )
            elif tag == 107:  # STRING_EXT
                (length,) = _U16(buf, pos)
                pos += 2
                end = pos + length
                if end > n:
                    raise DeclaredLengthError(
                        tag_pos, f"string declares {length} bytes, {n - pos} remain"
                    )
                value = list(buf[pos:end])
                pos = end
            elif tag == 110 or tag == 111:  # SMALL_BIG_EXT, LARGE_BIG_EXT
                if tag == 110:
                    length = buf[pos]
                    pos += 1
                else:
                    (length,) = _U32(buf, pos)
                    pos += 4
                sign = buf[pos]
                pos += 1
                end = pos + length
                if end > n:
                    raise DeclaredLengthError(
                        tag_pos, f"big integer declares {length} bytes, {n - pos} remain"
                    )
                value = int.from_bytes(buf[pos:end], "little")
                pos = end
                if sign:  # the VM reads any non-zero sign byte as negative
                    value = -value
            elif tag == 77:  # BIT_BINARY_EXT
                (length,) = _U32(buf, pos)
                bits = buf[pos + 4]
                pos += 5
                end = pos + length
                if end > n:
                    raise DeclaredLengthError(
                        tag_pos, f"bitstring declares {length} bytes, {n - pos} remain"
                    )
                raw = buf[pos:end]
                pos = end
                value = _bitstring(raw, bits, as_text, tag_pos)
            elif tag == 99:  # FLOAT_EXT (minor version 0)
                end = pos + 31
                if end > n:
                    raise TruncatedTermError(tag_pos, "old-style float needs 31 bytes")
                value = _old_float(buf[pos:end], tag_pos)
                pos = end
            else:
                value, pos = _decode_special(buf, tag, tag_pos, pos)

            # Hand the finished value to the enclosing containers, closing every one it fills.
            while stack:
                frame = stack[-1]
                frame[2].append(value)
                frame[1] -= 1
                if frame[1]:
                    break
                stack.pop()
                value = _close(frame)
            else:
                return value, pos
    except (IndexError, struct.error):
        raise TruncatedTermError(tag_pos, f"data ends inside a term with tag {tag}") from None


def _close(frame: list[Any]) -> Any:
    kind, _, items, offset = frame
    if kind == _TUPLE:
        return tuple(items)
    if kind == _LIST:
        tail = items.pop()
        if not items:  # LIST_EXT with no elements: the VM takes it as just the tail
            return tail
        if isinstance(tail, list):
            return items + tail if tail else items
        if isinstance(tail, ImproperList):
            return ImproperList((*items, *tail.items), tail.tail)
        return ImproperList(tuple(items), tail)
    return _close_map(items, offset)


def _close_map(items: list[Any], offset: int) -> Any:
    keys = items[0::2]
    values = items[1::2]
    try:
        result = dict(zip(keys, values, strict=True))
        if len(result) == len(keys):
            return result
    except TypeError:
        pass  # a key Python cannot hash: a list or a map
    except RecursionError:
        raise NestingTooDeepError(offset, "map keys nest too deeply to compare") from None
    try:
        distinct = {order_key(k) for k in keys}
    except (RecursionError, UnorderableTermError):
        raise NestingTooDeepError(offset, "map keys nest too deeply to compare") from None
    if len(distinct) != len(keys):
        raise InvalidTermError(offset, "map has a duplicate key")
    return TermMap(zip(keys, values, strict=True))


def _atom_text(raw: bytes, utf8: bool, offset: int) -> str:
    if utf8:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AtomEncodingError(
                offset, f"atom text is not valid UTF-8 ({exc.reason})"
            ) from None
    else:
        name = raw.decode("latin-1")
    if len(name) > MAX_ATOM_CHARACTERS:
        raise AtomTooLongError(
            offset, f"atom has {len(name)} characters, the VM allows {MAX_ATOM_CHARACTERS}"
        )
    return name


def _bitstring(raw: bytes, bits: int, as_text: bool, offset: int) -> Any:
    if not raw:
        if bits:
            raise InvalidTermError(offset, f"empty bitstring with {bits} bits in its last byte")
        return "" if as_text else b""
    if not 1 <= bits <= 8:
        raise InvalidTermError(offset, f"bitstring has {bits} bits in its last byte, must be 1..8")
    if bits == 8:  # whole bytes: a plain binary
        if as_text:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw
        return raw
    return BitBinary(raw, bits)


def _old_float(raw: bytes, offset: int) -> float:
    text = raw.split(b"\0", 1)[0]
    if not _FLOAT_TEXT.fullmatch(text):
        raise InvalidTermError(offset, f"old-style float text {text[:31]!r} is not a float")
    value = float(text)
    if not math.isfinite(value):
        raise InvalidTermError(offset, "float is not finite (the VM has no NaN or inf)")
    return value


def _decode_special(buf: bytes, tag: int, tag_pos: int, pos: int) -> tuple[Any, int]:
    """Pids, ports, references and funs: rare, fixed-shape, and never containers of terms."""
    if tag == 88 or tag == 103:  # NEW_PID_EXT, PID_EXT
        node, pos = _plain_atom(buf, pos)
        ident, serial = _U32(buf, pos)[0], _U32(buf, pos + 4)[0]
        if tag == 88:
            (creation,) = _U32(buf, pos + 8)
            return Pid(node, ident, serial, creation), pos + 12
        return Pid(node, ident, serial, buf[pos + 8]), pos + 9
    if tag == 89 or tag == 102 or tag == 120:  # NEW_PORT_EXT, PORT_EXT, V4_PORT_EXT
        node, pos = _plain_atom(buf, pos)
        if tag == 120:
            (ident,) = _U64(buf, pos)
            (creation,) = _U32(buf, pos + 8)
            return Port(node, ident, creation), pos + 12
        (ident,) = _U32(buf, pos)
        if tag == 89:
            (creation,) = _U32(buf, pos + 4)
            return Port(node, ident, creation), pos + 8
        return Port(node, ident, buf[pos + 4]), pos + 5
    if tag == 90 or tag == 114:  # NEWER_REFERENCE_EXT, NEW_REFERENCE_EXT
        (words,) = _U16(buf, pos)
        if words > MAX_REFERENCE_WORDS:
            raise InvalidTermError(
                tag_pos, f"reference has {words} id words, the VM allows {MAX_REFERENCE_WORDS}"
            )
        node, pos = _plain_atom(buf, pos + 2)
        if tag == 90:
            (creation,) = _U32(buf, pos)
            pos += 4
        else:
            creation = buf[pos]
            pos += 1
        ids = struct.unpack_from(f">{words}I", buf, pos)
        return Reference(node, creation, ids), pos + 4 * words
    if tag == 101:  # REFERENCE_EXT
        node, pos = _plain_atom(buf, pos)
        (ident,) = _U32(buf, pos)
        return Reference(node, buf[pos + 4], (ident,)), pos + 5
    if tag == 113:  # EXPORT_EXT
        module, pos = _plain_atom(buf, pos)
        function, pos = _plain_atom(buf, pos)
        if buf[pos] != 97:
            raise InvalidTermError(pos, "export arity must be a small integer")
        return Export(module, function, buf[pos + 1]), pos + 2
    if tag == 112:  # NEW_FUN_EXT, kept whole: its size field counts itself
        (size,) = _U32(buf, pos)
        end = tag_pos + 1 + size
        if size < 4:
            raise InvalidTermError(tag_pos, f"fun declares a size of {size}")
        if end > len(buf):
            raise DeclaredLengthError(
                tag_pos, f"fun declares {size} bytes, {len(buf) - pos} remain"
            )
        return Fun(buf[pos:end]), end
    if tag == 80:
        raise UnknownTagError(tag_pos, "a compressed term (tag 80) may only open the binary")
    raise UnknownTagError(tag_pos, f"unknown or unsupported tag {tag}")


def _plain_atom(buf: bytes, pos: int) -> tuple[Atom, int]:
    """The atom naming a node, module or function: always an ``Atom``, never nil/true/false."""
    tag = buf[pos]
    if tag == 119 or tag == 115:
        length = buf[pos + 1]
        start = pos + 2
    elif tag == 118 or tag == 100:
        (length,) = _U16(buf, pos + 1)
        start = pos + 3
    else:
        raise InvalidTermError(pos, f"expected an atom, found tag {tag}")
    end = start + length
    if end > len(buf):
        raise DeclaredLengthError(pos, f"atom declares {length} bytes, {len(buf) - start} remain")
    return Atom(_atom_text(buf[start:end], tag >= 118, pos)), end
