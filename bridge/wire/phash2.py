"""``erlang:phash2/1,2`` in pure Python, bit for bit as OTP 25 computes it.

Elixir code turns terms into numbers that land in the shared database: HephaestusOban takes
``pg_advisory_xact_lock(phash2(instance_id))``, Oban's unique inserts lock on phash2 sums and its
cron plugin names every crontab entry ``to_string(phash2({expr, worker, opts}))``. A Python node
that must take the same locks or recognise the same entries has to produce the same numbers, so
this is a transcription of the VM's ``make_hash2`` (Bob Jenkins' mix over 32-bit words, binaries
hashed 12 bytes at a time, map pairs hashed on their own and XOR-ed so key order cannot matter)
and of the atom table's hashpjw. The hash is documented as stable across releases and machine
word sizes; tests compare thousands of random terms with a live VM.

Python values stand for Erlang terms as in :mod:`bridge.wire.term`: ``str`` is a UTF-8 binary
(an Elixir string), ``bytes``/``bytearray``/``memoryview`` a binary, ``Atom`` an atom, ``True``,
``False`` and ``None`` the atoms ``true``, ``false`` and ``nil``, ``int`` any integer, ``float``
a float, ``tuple``/``list``/``dict`` (or any ``Mapping``) what their names say, plus the
``ImproperList``, ``BitBinary``, ``Pid``, ``Port``, ``Reference`` and ``Export`` value types.
Closures (``Fun``) are refused: their hash depends on compiler-internal numbers.

Every problem raises a subclass of :class:`Phash2Error` (a ``ValueError``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Final, cast

from bridge.wire.atom import Atom
from bridge.wire.term_types import BitBinary, Export, Fun, ImproperList, Pid, Port, Reference

__all__ = [
    "DEFAULT_RANGE",
    "MAX_RANGE",
    "Atom",
    "CyclicTermError",
    "InvalidRangeError",
    "Phash2Error",
    "UnhashableTermError",
    "atom_hash",
    "make_hash2",
    "phash2",
]

DEFAULT_RANGE: Final = 1 << 27
"""``phash2/1`` keeps the low 27 bits, which is the same as ``phash2/2`` with this range."""

MAX_RANGE: Final = 1 << 32
"""The largest range ``phash2/2`` accepts; with it the full 32-bit hash comes back."""

MAX_ATOM_CHARACTERS: Final = 255


class Phash2Error(ValueError):
    """Base class of everything this module raises."""


class UnhashableTermError(Phash2Error):
    """The value is not an Erlang term this module can hash (wrong type, NaN, a closure...)."""


class CyclicTermError(UnhashableTermError):
    """A container holds itself: Erlang terms are trees, and hashing this would never end."""


class InvalidRangeError(Phash2Error):
    """``phash2/2``'s range must be an integer in ``1..2**32``; the VM raises badarg otherwise."""


_M: Final = 0xFFFFFFFF

# The golden ratio, Jenkins' arbitrary start value, and its multiples (HCONST * n mod 2**32)
# that the VM uses to keep the hashes of different term types apart.
_HCONST: Final = 0x9E3779B9
_HCONST_2: Final = 0x3C6EF372
_HCONST_3: Final = 0xDAA66D2B
_HCONST_4: Final = 0x78DDE6E4
_HCONST_5: Final = 0x1715609D
_HCONST_6: Final = 0xB54CDA56
_HCONST_7: Final = 0x5384540F
_HCONST_9: Final = 0x8FF34781
_HCONST_10: Final = 0x2E2AC13A
_HCONST_11: Final = 0xCC623AF3
_HCONST_12: Final = 0x6A99B4AC
_HCONST_13: Final = 0x08D12E65
_HCONST_14: Final = 0xA708A81E
_HCONST_15: Final = 0x454021D7
_HCONST_16: Final = 0xE3779B90
_HCONST_19: Final = 0xBE1E08BB

_NIL_DEF: Final = 2  # the VM's type code for [], mixed in when [] is not the first thing hashed
_NIL_FIRST: Final = 3468870702  # what [] hashes to when nothing came before it
_SMALL28_MIN: Final = -(1 << 27)
_SMALL28_MAX: Final = 1 << 27

_BLOCK: Final = struct.Struct("<3I")
_DOUBLE: Final = struct.Struct("<d")
_DOUBLE_WORDS: Final = struct.Struct("<II")


def phash2(term: object, range_size: int = DEFAULT_RANGE) -> int:
    """``:erlang.phash2(term)`` (0..2**27-1), or ``:erlang.phash2(term, range_size)``.

    The default range makes this phash2/1: the VM masks to 27 bits, which equals the remainder
    by 2**27.
    """
    if type(range_size) is not int or not 1 <= range_size <= MAX_RANGE:
        raise InvalidRangeError(f"phash2 range must be an int in 1..2**32, got {range_size!r}")
    return make_hash2(term) % range_size


def make_hash2(term: object) -> int:
    """The VM's full unsigned 32-bit ``make_hash2`` value (``phash2(term, 2**32)``)."""
    if type(term) is str:  # the common case (lock keys, ids): no stack needed
        return _binary_hash(_utf8(term), 0)
    return _Walk().run(term)


@lru_cache(maxsize=4096)
def atom_hash(name: str) -> int:
    """The atom table's hash of ``name`` (hashpjw over its UTF-8 bytes).

    Kept from the VM's Latin-1 days: a two-byte UTF-8 sequence for U+0080..U+00FF counts as
    the single Latin-1 byte, so atoms hash as they did before atoms could be Unicode.
    """
    if len(name) > MAX_ATOM_CHARACTERS:
        raise UnhashableTermError(
            f"an atom has at most {MAX_ATOM_CHARACTERS} characters, got {len(name)}"
        )
    raw = _utf8(name)
    h = 0
    i = 0
    n = len(raw)
    while i < n:
        v = raw[i]
        i += 1
        if i < n and (v & 0xFE) == 0xC2 and (raw[i] & 0xC0) == 0x80:
            v = ((v << 6) | (raw[i] & 0x3F)) & 0xFF
            i += 1
        h = ((h << 4) + v) & _M
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
            h ^= g
    return h


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnhashableTermError(
            f"string is not valid Unicode (lone surrogate at index {exc.start})"
        ) from None


def _mix(a: int, b: int, c: int) -> int:
    """Jenkins' 96-bit mix; only ``c`` is the running hash, so only ``c`` comes back."""
    a = ((a - b - c) & _M) ^ (c >> 13)
    b = ((b - c - a) & _M) ^ ((a << 8) & _M)
    c = ((c - a - b) & _M) ^ (b >> 13)
    a = ((a - b - c) & _M) ^ (c >> 12)
    b = ((b - c - a) & _M) ^ ((a << 16) & _M)
    c = ((c - a - b) & _M) ^ (b >> 5)
    a = ((a - b - c) & _M) ^ (c >> 3)
    b = ((b - c - a) & _M) ^ ((a << 10) & _M)
    return ((c - a - b) & _M) ^ (b >> 15)


def _hash_words(x: int, y: int, const: int, h: int) -> int:
    """The VM's UINT32_HASH_2: two 32-bit words offset by a per-type constant, mixed into h."""
    return _mix((const + x) & _M, (const + y) & _M, h)


def _binary_hash(data: bytes, h: int) -> int:
    """A whole-byte binary mixed into the running hash ``h``."""
    con = (_HCONST_13 + h) & _M
    if not data:
        return con
    return _block_hash(data, con)


def _block_hash(data: bytes, initval: int) -> int:
    """Jenkins' lookup2 over ``data``, 12 bytes (three little-endian words) per round."""
    # The VM truncates the size to 32 bits "for compatibility"; so must we.
    length = len(data) & _M
    tail = length % 12
    whole = length - tail
    a = b = _HCONST
    c = initval
    view = memoryview(data)
    for x, y, z in _BLOCK.iter_unpack(view[:whole]):
        a = (a + x) & _M
        b = (b + y) & _M
        c = (c + z) & _M
        a = ((a - b - c) & _M) ^ (c >> 13)
        b = ((b - c - a) & _M) ^ ((a << 8) & _M)
        c = ((c - a - b) & _M) ^ (b >> 13)
        a = ((a - b - c) & _M) ^ (c >> 12)
        b = ((b - c - a) & _M) ^ ((a << 16) & _M)
        c = ((c - a - b) & _M) ^ (b >> 5)
        a = ((a - b - c) & _M) ^ (c >> 3)
        b = ((b - c - a) & _M) ^ ((a << 10) & _M)
        c = ((c - a - b) & _M) ^ (b >> 15)
    # The last 0..11 bytes fill a and b from the bottom and c from its second byte up: the
    # lowest byte of c is taken by the length.
    x, y, z = _BLOCK.unpack(bytes(view[whole:length]) + bytes(12 - tail))
    return _mix((a + x) & _M, (b + y) & _M, (c + length + (z << 8)) & _M)


def _integer_hash(value: int, h: int) -> int:
    if _SMALL28_MIN <= value < _SMALL28_MAX:
        if value < 0:  # the VM mixes negative 28-bit numbers twice: -value, then the raw word
            h = _mix((_HCONST - value) & _M, _HCONST, h)
        return _mix((_HCONST + value) & _M, _HCONST, h)
    # Everything wider is hashed as its magnitude in 64-bit digits, least significant first,
    # each as (low word, high word), with the sign in the constant.
    const = _HCONST_10 if value < 0 else _HCONST_11
    magnitude = -value if value < 0 else value
    while magnitude:
        h = _hash_words(magnitude & _M, (magnitude >> 32) & _M, const, h)
        magnitude >>= 64
    return h


def _float_hash(value: float, h: int) -> int:
    if not math.isfinite(value):
        raise UnhashableTermError(f"Erlang has no float {value!r}")
    if value == 0.0:  # -0.0 hashes as 0.0
        value = 0.0
    low, high = _DOUBLE_WORDS.unpack(_DOUBLE.pack(value))
    return _hash_words(high, low, _HCONST_12, h)


def _bitstring_hash(bits: BitBinary, h: int) -> int:
    whole = bits.data[:-1]
    h = _block_hash(whole, (_HCONST_13 + h) & _M)
    return _hash_words(bits.bits, bits.data[-1] >> (8 - bits.bits), _HCONST_15, h)


def _atom_into(name: str, h: int) -> int:
    hv = atom_hash(name)
    # An atom that starts a hash is taken as is ("fast, but poor", says the VM).
    return hv if h == 0 else _mix((_HCONST_3 + hv) & _M, _HCONST_3, h)


def _is_byte(item: object) -> bool:
    kind = type(item)
    if kind is int or (kind is not bool and isinstance(item, int)):
        return 0 <= item <= 255  # type: ignore[operator]
    return False


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_MAP_TAIL: Final = _Marker("map tail")
_MAP_PAIR: Final = _Marker("map pair")
_NIL: Final = _Marker("[]")


class _Close:
    """Pushed under a container's children: when popped, the container is no longer open."""

    __slots__ = ("ident",)

    def __init__(self, ident: int) -> None:
        self.ident = ident


class _ListRest:
    """The cells of a list from ``index`` on, ending in ``tail`` (``_NIL`` if proper)."""

    __slots__ = ("index", "items", "tail")

    def __init__(self, items: Sequence[object], index: int, tail: object) -> None:
        self.items = items
        self.index = index
        self.tail = tail


class _Walk:
    """One run of make_hash2: the VM's explicit-stack traversal, so depth costs no recursion.

    The running hash ``h`` threads through the terms in pre-order. A map saves ``h``, hashes
    each key-value pair from zero, XORs the pair hashes and mixes that into the saved ``h``;
    the markers on the stack say when a pair or a whole map is done.
    """

    __slots__ = ("h", "open", "stack", "xor_pairs")

    def __init__(self) -> None:
        self.h = 0
        self.xor_pairs = 0
        self.stack: list[object] = []
        self.open: set[int] = set()

    def run(self, term: object) -> int:
        stack = self.stack
        while True:
            nxt = self.step(term)
            if nxt is not None:
                term = nxt[0]
                continue
            while True:
                if not stack:
                    return self.h
                item = stack.pop()
                if item is _MAP_PAIR:
                    self.xor_pairs ^= self.h
                    self.h = 0
                elif item is _MAP_TAIL:
                    saved = cast(int, stack.pop())
                    self.h = _mix((_HCONST_19 + self.xor_pairs) & _M, _HCONST_19, saved)
                    self.xor_pairs = cast(int, stack.pop())
                elif type(item) is _Close:
                    self.open.discard(item.ident)
                else:
                    term = item
                    break

    def step(self, term: object) -> tuple[object] | None:
        """Hash one term into ``h``; a container returns its first child to go on with."""
        h = self.h
        if isinstance(term, str):
            if isinstance(term, Atom):
                self.h = _atom_into(str(term), h)
            else:
                self.h = _binary_hash(_utf8(term), h)
        elif isinstance(term, bool):
            self.h = _atom_into("true" if term else "false", h)
        elif isinstance(term, int):
            self.h = _integer_hash(int(term), h)
        elif term is None:
            self.h = _atom_into("nil", h)
        elif type(term) is _ListRest:
            return self.list_cells(term)
        elif term is _NIL:
            self.nil()
        elif isinstance(term, tuple):
            return self.tuple_term(term)
        elif isinstance(term, list):
            if not term:
                self.nil()
                return None
            self.enter(term)
            return self.list_cells(_ListRest(term, 0, _NIL))
        elif isinstance(term, dict | Mapping):
            self.map_term(term)
        elif isinstance(term, float):
            self.h = _float_hash(term, h)
        elif isinstance(term, bytes | bytearray):
            self.h = _binary_hash(bytes(term), h)
        elif isinstance(term, memoryview):
            self.h = _binary_hash(term.tobytes(), h)
        else:
            return self.other(term)
        return None

    def other(self, term: object) -> tuple[object] | None:
        h = self.h
        if isinstance(term, ImproperList):
            self.enter(term)
            return self.list_cells(_ListRest(term.items, 0, term.tail))
        if isinstance(term, BitBinary):
            self.h = _bitstring_hash(term, h)
        elif isinstance(term, Pid):
            # Only the process number takes part; serial, node and creation do not.
            self.h = _hash_words(term.id & _M, 0, _HCONST_5, h)
        elif isinstance(term, Port):
            self.h = _hash_words(term.id & _M, (term.id >> 32) & _M, _HCONST_6, h)
        elif isinstance(term, Reference):
            # Only the first (lowest) of the reference's words.
            self.h = _hash_words(term.ids[0] if term.ids else 0, 0, _HCONST_7, h)
        elif isinstance(term, Export):
            h = _hash_words(term.arity, atom_hash(str(term.module)), _HCONST, h)
            self.h = _hash_words(atom_hash(str(term.function)), 0, _HCONST_14, h)
        elif isinstance(term, Fun):
            raise UnhashableTermError(
                "cannot hash a closure: its hash uses the VM's internal fun table"
            )
        else:
            raise UnhashableTermError(f"no Erlang term for a {type(term).__name__}: {term!r}")
        return None

    def enter(self, container: object) -> None:
        ident = id(container)
        if ident in self.open:
            raise CyclicTermError(f"a {type(container).__name__} contains itself")
        self.open.add(ident)
        self.stack.append(_Close(ident))

    def nil(self) -> None:
        h = self.h
        self.h = _NIL_FIRST if h == 0 else _mix((_HCONST_2 + _NIL_DEF) & _M, _HCONST_2, h)

    def tuple_term(self, term: tuple[object, ...]) -> tuple[object] | None:
        arity = len(term)
        self.h = _mix((_HCONST_9 + arity) & _M, _HCONST_9, self.h)
        if arity == 0:
            return None
        self.enter(term)
        self.stack.extend(reversed(term[1:]))
        return (term[0],)

    def list_cells(self, rest: _ListRest) -> tuple[object]:
        """Runs of small integers 0..255 (charlists) are packed four to a word, as the VM does."""
        items, i, n = rest.items, rest.index, len(rest.items)
        h = self.h
        packed = count = 0
        while i < n and _is_byte(items[i]):
            packed = (packed << 8) + items[i]  # type: ignore[operator]
            if count == 3:
                h = _mix((_HCONST_4 + packed) & _M, _HCONST_4, h)
                packed = count = 0
            else:
                count += 1
            i += 1
        if count:
            h = _mix((_HCONST_4 + packed) & _M, _HCONST_4, h)
        self.h = h
        if i < n:
            self.stack.append(_ListRest(items, i + 1, rest.tail))
            return (items[i],)
        return (rest.tail,)

    def map_term(self, term: Mapping[object, object]) -> None:
        size = len(term)
        self.h = _mix((_HCONST_16 + size) & _M, _HCONST_16, self.h)
        if size == 0:
            return
        self.enter(term)
        stack = self.stack
        stack.append(self.xor_pairs)
        stack.append(self.h)
        stack.append(_MAP_TAIL)
        self.h = 0
        self.xor_pairs = 0
        for key, value in term.items():
            stack.append(_MAP_PAIR)
            stack.append(value)
            stack.append(key)
