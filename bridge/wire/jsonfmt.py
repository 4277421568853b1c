"""JSON text for jsonb values and payloads.

orjson is fast but refuses integers outside 64 bits, which Elixir (arbitrary-precision integers)
writes and reads without trouble; those values fall back to the standard library, so a Python
insert carries any integer an Elixir one can.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import orjson


def dumps(
    value: Any, *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None
) -> str:
    """Python -> compact JSON text, for any value :func:`loads` returns.

    orjson first; what it refuses (integers beyond 64 bits, nesting past 254 levels) goes to the
    standard library, and what that cannot write either (nesting past ~1,000 levels: it
    recurses; integers past ``int``'s 4,300-digit ``str`` limit) to :func:`_dumps_iterative`, so
    a value read from a row (Jason writes any depth and any integer) can be written back. Other
    errors (a type JSON has no form for) are the standard library's ``TypeError``/``ValueError``.
    ``default`` is ``json.dumps``'s: what to write for a value of another type.
    """
    try:
        option = orjson.OPT_SORT_KEYS if sort_keys else 0
        return orjson.dumps(value, option=option, default=default).decode()
    except TypeError:
        pass
    try:
        return json.dumps(
            value,
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=sort_keys,
            default=default,
        )
    except RecursionError:
        return _dumps_iterative(value, sort_keys, default)
    except ValueError as exc:
        if "digits" not in str(exc):  # only int()'s digit limit; a circular value stays an error
            raise
        return _dumps_iterative(value, sort_keys, default)


def dumpb(value: Any) -> bytes:
    """:func:`dumps` as UTF-8 bytes, the same text: orjson's own bytes when it can write the
    value (for the bulk insert's COPY data, which wants bytes: no decoding to ``str`` and
    encoding again), else :func:`dumps` encoded."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return dumps(value).encode()


def _int_text(number: int) -> str:
    """``str(number)`` for any length without touching the process-wide digit limit: split by
    a power of ten into halves below the limit (the inverse of :func:`_any_int`)."""
    if number < 0:
        return "-" + _int_text(-number)
    if number < _power_of_ten(_INT_CHUNK):
        return str(number)
    low = max(_INT_CHUNK, (len(format(number, "b")) * 3 // 10) // 2)  # ~ half the digits
    high, rest = divmod(number, _power_of_ten(low))
    return _int_text(high) + _int_text(rest).rjust(low, "0")


def _key_text(key: Any) -> str:
    """A member name as ``json.dumps`` writes it: str as is, int/float/bool/None converted."""
    if isinstance(key, str):
        return key
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, int):
        return _int_text(key)
    if isinstance(key, float):
        return json.dumps(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return _encode_string(value)
    if value is None or value is True or value is False or isinstance(value, float):
        return json.dumps(value)
    return _int_text(int(value))


def _dumps_iterative(value: Any, sort_keys: bool, default: Callable[[Any], Any] | None) -> str:
    """What ``json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)``
    writes, with an explicit stack instead of recursion and integers of any length."""
    out: list[str] = []
    # A stack of pending work: a value to write, or a literal piece of text.
    stack: list[tuple[bool, Any]] = [(True, value)]
    while stack:
        is_value, item = stack.pop()
        if not is_value:
            out.append(item)
        elif not isinstance(item, str | int | float | dict | list | tuple) and item is not None:
            if default is None:
                raise TypeError(f"Object of type {type(item).__name__} is not JSON serializable")
            stack.append((True, default(item)))
        elif isinstance(item, dict):
            pairs = [(_key_text(k), v) for k, v in item.items()]
            if sort_keys:
                pairs.sort(key=lambda pair: pair[0])
            out.append("{")
            stack.append((False, "}"))
            for index in range(len(pairs) - 1, -1, -1):
                name, member = pairs[index]
                stack.append((True, member))
                stack.append((False, ("," if index else "") + _encode_string(name) + ":"))
        elif isinstance(item, list | tuple):
            out.append("[")
            stack.append((False, "]"))
            for index in range(len(item) - 1, -1, -1):
                stack.append((True, item[index]))
                if index:
                    stack.append((False, ","))
        else:
            out.append(_scalar_text(item))
    return "".join(out)


# -- reading -------------------------------------------------------------------------------------
#
# ``loads`` reads what Jason (the JSON library of Oban and Postgrex) reads, so a value an Elixir
# node can decode is a value a Python node can decode:
#
# - any nesting depth: ``json.loads`` recurses once per level and raises RecursionError near
#   1,000; past that an iterative parser takes over (PostgreSQL's jsonb holds ~10,000 levels);
# - integers of any length: ``int()`` refuses strings past 4,300 digits (the process-wide limit,
#   left alone here); longer ones are converted piecewise;
# - not NaN, Infinity or -Infinity (not JSON; Jason refuses them), not a number beyond the range
#   of a double (Jason's ``binary_to_float`` refuses it), not a lone UTF-16 surrogate escape
#   (Jason refuses it; Python would make a string that cannot be encoded again).
#
# Every failure is a :class:`JSONDecodeError` (or a subclass); nothing else escapes.


class JSONDecodeError(ValueError):
    """Text that is not JSON as Jason reads it, or a number no Python float can hold."""


class TooDeepError(JSONDecodeError):
    """Nested deeper than the caller's ``max_depth``."""

    def __init__(self, depth: int, limit: int) -> None:
        self.depth = depth
        self.limit = limit
        super().__init__(f"JSON nested {depth} levels deep (read up to {limit})")


class NumberTooLongError(JSONDecodeError):
    """An integer with more digits than the caller's ``max_digits``."""

    def __init__(self, digits: int, limit: int) -> None:
        self.digits = digits
        self.limit = limit
        super().__init__(f"an integer of {digits} digits (read up to {limit})")


_CONSTANTS = ("NaN", "Infinity", "-Infinity")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")
# Escapes left to right: a valid high+low pair, a lone surrogate, or any other escape.
_ESCAPES = re.compile(
    r"\\(?:(u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})|(u[dD][89a-fA-F][0-9a-fA-F]{2})|.)",
    re.DOTALL,
)
_RAW_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_CHUNK = 4000  # below the default 4,300-digit limit of int()
# The standard library's string scanner (C): escapes, control characters, positions as json's.
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
# The standard library's string writer (C) for ensure_ascii=False, as json.dumps uses it.
_encode_string: Callable[[str], str] = json.encoder.encode_basestring


def depth(text: str) -> int:
    """How deeply a JSON document nests, without parsing it (brackets inside strings skipped)."""
    level = deepest = 0
    for char in _NOT_BRACKET.sub("", _STRING_RE.sub("", text)):
        if char in "[{":
            level += 1
            deepest = max(deepest, level)
        else:
            level -= 1
    return deepest


def loads(text: str | bytes, *, max_depth: int | None = None, max_digits: int | None = None) -> Any:
    """JSON text -> Python, reading what Jason reads (see above); raises only
    :class:`JSONDecodeError`.

    ``max_depth`` and ``max_digits`` refuse, with :class:`TooDeepError` and
    :class:`NumberTooLongError`, values that the caller could not go on to use (a payload a
    handler walks recursively, an integer a printer cannot turn back into digits)."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONDecodeError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    if not isinstance(text, str):
        raise JSONDecodeError(f"not JSON text: {type(text).__name__}")
    if _RAW_SURROGATE.search(text):
        raise JSONDecodeError("a lone UTF-16 surrogate, which UTF-8 cannot carry")
    if max_depth is not None:
        found = depth(text)
        if found > max_depth:
            raise TooDeepError(found, max_depth)
    value = _parse(text, max_digits)
    if _SURROGATE_HINT.search(text):
        _check_surrogate_escapes(text)
    return value


class _DigitLimit(Exception):
    """int() refused an integer past the process's digit limit (json's C fast path)."""


def _parse(text: str, max_digits: int | None) -> Any:
    decoder = _DECODER if max_digits is None else _decoder(_bounded_int(max_digits))
    try:
        try:
            return _decode(decoder, text)
        except _DigitLimit:
            # Read again, converting the integers piecewise (any length).
            return _decode(_LONG_INT_DECODER, text)
    except RecursionError:
        parse_int = _any_int if max_digits is None else _bounded_int(max_digits)
        return _Parser(text, parse_int).parse()


def _decode(decoder: json.JSONDecoder, text: str) -> Any:
    """``decoder.decode``, its errors as ours (RecursionError left to the caller)."""
    try:
        return decoder.decode(text)
    except JSONDecodeError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONDecodeError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    except ValueError as exc:
        if decoder is _DECODER:
            raise _DigitLimit from None
        raise JSONDecodeError(str(exc)) from None


def _decoder(parse_int: Callable[[str], int]) -> json.JSONDecoder:
    return json.JSONDecoder(
        parse_float=_finite_float, parse_int=parse_int, parse_constant=_constant
    )


def _bounded_int(max_digits: int) -> Callable[[str], int]:
    def bounded(digits: str) -> int:
        count = len(digits) - digits.startswith("-")
        if count > max_digits:
            raise NumberTooLongError(count, max_digits)
        return _any_int(digits)

    return bounded


@lru_cache(maxsize=64)
def _power_of_ten(exponent: int) -> int:
    power: int = 10**exponent
    return power


def _any_int(digits: str) -> int:
    """``int(digits)`` for any length, without touching the process-wide digit limit:
    split in halves, each below the limit, joined by multiplication (subquadratic)."""
    if len(digits) <= _INT_CHUNK:
        return int(digits)
    if digits.startswith("-"):
        return -_any_int(digits[1:])
    low = len(digits) // 2
    return _any_int(digits[:-low]) * _power_of_ten(low) + _any_int(digits[-low:])


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 24 else f"{text[:12]}…{text[-8:]} ({len(text)} characters)"
        raise JSONDecodeError(f"the number {shown} is beyond the range of a double")
    return value


def _constant(name: str) -> Any:
    raise JSONDecodeError(f"{name} is not JSON")


def _check_surrogate_escapes(text: str) -> None:
    for match in _ESCAPES.finditer(text):
        if match.group(2) is not None:
            raise JSONDecodeError(
                f"a lone UTF-16 surrogate \\{match.group(2)} at character {match.start()}"
            )


# int is json's C fast path; the others call back into Python for every integer.
_DECODER = _decoder(int)
_LONG_INT_DECODER = _decoder(_any_int)


class _Parser:
    """JSON with an explicit stack instead of recursion, for documents too deep for
    ``json.loads``; it accepts and builds exactly what ``json.loads`` would (strings through the
    standard library's own scanner)."""

    def __init__(self, text: str, parse_int: Callable[[str], int]) -> None:
        self.text = text
        self.parse_int = parse_int

    def fail(self, message: str, pos: int) -> JSONDecodeError:
        return JSONDecodeError(f"not JSON: {message} at character {pos}")

    def skip(self, pos: int) -> int:
        match = _WHITESPACE.match(self.text, pos)
        assert match is not None  # matches the empty string
        return match.end()

    def key(self, pos: int) -> tuple[str, int]:
        """A member's ``"key" :`` at ``pos`` (whitespace skipped); returns the key and the
        position after the colon and its whitespace."""
        text = self.text
        if not text.startswith('"', pos):
            raise self.fail("Expecting property name enclosed in double quotes", pos)
        try:
            key, pos = _scanstring(text, pos + 1, True)
        except json.JSONDecodeError as exc:
            raise self.fail(exc.msg, exc.pos) from None
        pos = self.skip(pos)
        if not text.startswith(":", pos):
            raise self.fail("Expecting ':' delimiter", pos)
        return key, self.skip(pos + 1)

    def parse(self) -> Any:
        text = self.text
        containers: list[list[Any] | dict[str, Any]] = []
        keys: list[str] = []  # the pending key of each open object, in order
        pos = self.skip(0)
        while True:
            # A value starts at pos.
            char = text[pos : pos + 1]
            value: Any
            if char == "{":
                pos = self.skip(pos + 1)
                if text.startswith("}", pos):
                    value, pos = {}, pos + 1
                else:
                    key, pos = self.key(pos)
                    containers.append({})
                    keys.append(key)
                    continue
            elif char == "[":
                pos = self.skip(pos + 1)
                if text.startswith("]", pos):
                    value, pos = [], pos + 1
                else:
                    containers.append([])
                    continue
            elif char == '"':
                try:
                    value, pos = _scanstring(text, pos + 1, True)
                except json.JSONDecodeError as exc:
                    raise self.fail(exc.msg, exc.pos) from None
            else:
                value, pos = self.scalar(pos)
            # Put the value in its container, closing containers that end here.
            while True:
                if not containers:
                    end = self.skip(pos)
                    if end != len(text):
                        raise self.fail("Extra data", end)
                    return value
                top = containers[-1]
                if isinstance(top, list):
                    top.append(value)
                else:
                    top[keys[-1]] = value
                pos = self.skip(pos)
                char = text[pos : pos + 1]
                if char == ",":
                    pos = self.skip(pos + 1)
                    if isinstance(top, dict):
                        keys[-1], pos = self.key(pos)
                    break
                if char == ("]" if isinstance(top, list) else "}"):
                    value, pos = containers.pop(), pos + 1
                    if isinstance(value, dict):
                        keys.pop()
                    continue
                raise self.fail("Expecting ',' delimiter", pos)

    def scalar(self, pos: int) -> tuple[Any, int]:
        text = self.text
        for name in _CONSTANTS:
            if text.startswith(name, pos):
                _constant(name)
        match = _NUMBER.match(text, pos)
        if match is not None:
            token = match.group()
            if match.group(1) or match.group(2):
                return _finite_float(token), match.end()
            return self.parse_int(token), match.end()
        for word, value in (("null", None), ("true", True), ("false", False)):
            if text.startswith(word, pos):
                return value, pos + len(word)
        raise self.fail("Expecting value", pos)
