"""Elixir's ``inspect/1`` for the Python values a worker can return.

Oban writes a returned error as ``… failed with <inspect(value)>``; to leave the same text an
Elixir worker would, Python values are shown as their Elixir counterparts: ``None`` -> ``nil``,
``str`` -> a double-quoted binary with Elixir's escapes, ``dict`` -> ``%{"a" => 1}`` (keys in
Erlang term order; ``%{a: 1}`` when every key is an atom), ``tuple`` -> ``{…}``, ``Atom`` ->
``:name``, floats in Erlang's shortest form (``1.0e20``), exceptions as structs
(``%RuntimeError{message: "x"}``). Checked against the VM's own ``inspect`` in the tests.
"""

from __future__ import annotations

import re
from typing import Any

from bridge.wire.atom import Atom

_PLAIN_ATOM = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_@]*[?!]?$")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\b": "\\b",
    "\f": "\\f",
    "\x1b": "\\e",
    "\x07": "\\a",
}


def inspect(value: Any) -> str:
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Atom):
        return _atom(str(value))
    if isinstance(value, str):
        return _binary(value.encode("utf-8"))
    if isinstance(value, bytes | bytearray):
        return _binary(bytes(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, tuple):
        return "{" + ", ".join(inspect(v) for v in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(inspect(v) for v in value) + "]"
    if isinstance(value, dict):
        return _map(value)
    if isinstance(value, BaseException):
        return f"%{type(value).__name__}{{message: {_binary(str(value).encode())}}}"
    return _binary(repr(value).encode())


def format_float(value: float) -> str:
    """Erlang's shortest round-trip form: Python's repr digits, Elixir's spelling."""
    text = repr(value)
    if text in ("inf", "-inf", "nan"):
        return text
    if "e" in text:
        mantissa, exponent = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}e{int(exponent)}"
    return text


def _atom(name: str) -> str:
    if name in ("nil", "true", "false"):
        return name
    if _PLAIN_ATOM.match(name):
        return ":" + name
    return ":" + _binary(name.encode("utf-8"))


def _binary(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(ch in _ESCAPES or ch.isprintable() for ch in text):
        out = "".join(_ESCAPES.get(ch, ch) for ch in text).replace("#{", "\\#{")
        return f'"{out}"'
    return "<<" + ", ".join(str(b) for b in data) + ">>"


def _term_rank(value: Any) -> tuple[int, Any]:
    """Erlang term order: number < atom < tuple < map < list < binary."""
    if isinstance(value, bool) or value is None or isinstance(value, Atom):
        return (1, str(value).lower() if not isinstance(value, Atom) else str(value))
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, tuple):
        return (3, (len(value), [_term_rank(v) for v in value]))
    if isinstance(value, dict):
        return (4, len(value))
    if isinstance(value, list):
        return (5, [_term_rank(v) for v in value])
    if isinstance(value, str):
        return (6, value.encode("utf-8"))
    if isinstance(value, bytes):
        return (6, value)
    return (7, repr(value))


def _map(value: dict[Any, Any]) -> str:
    if not value:
        return "%{}"
    keys = sorted(value, key=_term_rank)
    if all(isinstance(k, Atom) and _PLAIN_ATOM.match(k) for k in keys):
        return "%{" + ", ".join(f"{k}: {inspect(value[k])}" for k in keys) + "}"
    return "%{" + ", ".join(f"{inspect(k)} => {inspect(value[k])}" for k in keys) + "}"
