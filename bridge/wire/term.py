"""The Erlang external term format: ``term_to_binary`` / ``binary_to_term`` in Python.

Oban Pro records a worker's return value as ``term_to_binary`` output, so a Python node that
reads or writes recorded output must speak this format exactly. This module is the public face
of a hand-written codec (``term_decode``, ``term_encode``); docs/term-format.md says why the
PyPI codecs were not enough and gives the measurements.

Python mapping (decode; encode accepts the same types and their subclasses)::

    Erlang                    Python
    ------------------------  ----------------------------------------------------------
    integer (any size)        int
    float                     float                 (NaN/inf cannot be encoded)
    nil / true / false        None / True / False
    other atom                Atom (a str subclass: Atom("ok") == "ok", but typed)
    binary                    str if valid UTF-8, else bytes     (binaries="auto")
                              bytes always                       (binaries="bytes")
    bitstring (not whole      BitBinary(data, bits)
      bytes)
    list, charlist            list ('abc' is [97, 98, 99], as in Elixir)
    improper list             ImproperList(items, tail)
    tuple                     tuple
    map                       dict; TermMap when a dict cannot hold it (a list/map key, or
                              keys only Erlang tells apart such as 1, 1.0 and true)
    pid / port / reference    Pid / Port / Reference  (opaque, re-encodable)
    fun / &M.f/a              Fun (raw bytes) / Export

An Elixir string *is* a binary, so the default gives ``str`` for text and ``bytes`` for the
rest, and encoding a ``str`` always writes a binary: both directions are lossless. Pass
``binaries="bytes"`` when binary payloads must stay bytes even if they happen to decode.
``bytes``, ``bytearray`` and ``memoryview`` encode as binaries too.

Round trip: ``encode(decode(b)) == b`` for everything OTP 25's ``term_to_binary`` writes
(with the same ``compressed`` and ``minor_version``), including maps over 32 keys, because a
decoded dict keeps the VM's key order and large maps are written in the dict's order. Inputs
the VM itself would normalise come back normalised, as the VM would write them: legacy atom,
float, pid, port and reference tags, unsorted small-map keys, non-canonical big integers, stray
bits in a bitstring's last byte.

Bad input raises a subclass of ``TermDecodeError`` (itself a ``ValueError``) carrying
``offset`` and ``problem``; unencodable values raise ``TermEncodeError``.
"""

from __future__ import annotations

from bridge.wire.atom import Atom
from bridge.wire.term_decode import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_INFLATED_SIZE,
    MAX_ATOM_CHARACTERS,
    Binaries,
    decode,
)
from bridge.wire.term_encode import SMALL_MAP_LIMIT, encode, encode_body
from bridge.wire.term_errors import (
    AtomEncodingError,
    AtomTooLongError,
    CompressionError,
    DeclaredLengthError,
    InflatedSizeError,
    InvalidTermError,
    NestingTooDeepError,
    TermDecodeError,
    TermEncodeError,
    TermError,
    TrailingDataError,
    TruncatedTermError,
    UnknownTagError,
    VersionError,
)
from bridge.wire.term_map import TermMap
from bridge.wire.term_order import order_key
from bridge.wire.term_types import (
    BitBinary,
    Export,
    Fun,
    ImproperList,
    Pid,
    Port,
    Reference,
)

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_INFLATED_SIZE",
    "MAX_ATOM_CHARACTERS",
    "SMALL_MAP_LIMIT",
    "Atom",
    "AtomEncodingError",
    "AtomTooLongError",
    "Binaries",
    "BitBinary",
    "CompressionError",
    "DeclaredLengthError",
    "Export",
    "Fun",
    "ImproperList",
    "InflatedSizeError",
    "InvalidTermError",
    "NestingTooDeepError",
    "Pid",
    "Port",
    "Reference",
    "TermDecodeError",
    "TermEncodeError",
    "TermError",
    "TermMap",
    "TrailingDataError",
    "TruncatedTermError",
    "UnknownTagError",
    "VersionError",
    "decode",
    "encode",
    "encode_body",
    "order_key",
]
