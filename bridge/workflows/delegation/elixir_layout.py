"""Elixir literals laid out as ``mix format`` (Elixir 1.14) lays them out. Pure.

The generated declarations (``bridge workflows export-elixir``) are committed into Elixir apps,
whose CI usually runs ``mix format --check-formatted``: text the formatter would rewrite fails
that check. This module lays out the few shapes a declaration holds, with the formatter's rules
for each (measured against ``mix format``; ``interop_tests/test_export_elixir_format.py`` runs
it on generated files):

- a list or map fits on its line or breaks with one item per line, two spaces in, the closing
  bracket back at the line's indent (whether the comma after a shape counts: ``Layout.lines``);
  a list written broken stays broken (the formatter keeps a newline after ``[`` and before
  ``]``);
- ``key: value`` and ``"key" => value`` keep a list or map value on the key's line (it breaks
  inside) if its opening bracket fits there; any other value that does not fit, and such a
  list or map, moves to the next line, two spaces in;
- a tuple ending in keywords, ``{Module, key: ..., events: [...]}``, breaks after its first
  element; its keywords then go on the next line one space in, all on that line if they fit,
  else one per line;
- decimal integers (and a float's integer part) of six digits or more get ``_`` every three.

Strings, atoms and aliases never break: a line holding only one may stay longer than the limit,
as the formatter leaves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LINE_LENGTH = 98  # the formatter's default (`:line_length` in .formatter.exs)


@dataclass(frozen=True)
class Text:
    """A literal that never breaks: atom, string, number, alias."""

    text: str


@dataclass(frozen=True)
class Pair:
    """``key: value`` (``key`` is ``"key:"``) or ``"key" => value`` (``key`` is ``"key" =>``)."""

    key: str
    value: Node


@dataclass(frozen=True)
class Container:
    """``[...]`` or ``%{...}``; ``broken`` keeps it on several lines even when it would fit."""

    open: str
    items: tuple[Node, ...]
    close: str
    broken: bool = False


@dataclass(frozen=True)
class KeywordTuple:
    """``{first, key: value, ...}``."""

    first: str
    pairs: tuple[Pair, ...]


Node = Text | Pair | Container | KeywordTuple


def elixir_list(items: Sequence[Node], *, broken: bool = False) -> Container:
    return Container("[", tuple(items), "]", broken and bool(items))


def elixir_map(pairs: Sequence[Pair]) -> Container:
    return Container("%{", tuple(pairs), "}")


def flat(node: Node) -> str:
    """``node`` on one line."""
    if isinstance(node, Text):
        return node.text
    if isinstance(node, Pair):
        return f"{node.key} {flat(node.value)}"
    if isinstance(node, Container):
        return node.open + ", ".join(flat(item) for item in node.items) + node.close
    return "{" + ", ".join([node.first, *(flat(pair) for pair in node.pairs)]) + "}"


@dataclass(frozen=True)
class Layout:
    """Lays nodes out within ``line_length`` columns."""

    line_length: int = LINE_LENGTH

    def fits(self, column: int, text: str, trailing: int = 0) -> bool:
        return column + len(text) + trailing <= self.line_length

    def render(self, node: Node, column: int, indent: int, trailing: int = 0) -> str:
        """``node`` starting at ``column`` of a line indented ``indent``; ``trailing`` is the
        comma after it when that comma counts in the node's own fit (see ``lines``)."""
        if isinstance(node, Text):
            return node.text
        if isinstance(node, Pair):
            return self._pair(node, column, indent, trailing)
        if isinstance(node, Container):
            return self._container(node, column, indent, trailing)
        return self._tuple(node, column, indent, trailing)

    def lines(self, nodes: Sequence[Node], indent: int, *, comma_counts: bool = True) -> str:
        """``nodes`` one per line at ``indent``, a comma after each but the last: the items of
        a broken list or map, the arguments of a call that does not fit (``use Module, key:
        ...``), and (``comma_counts=False``) the keywords of a broken tuple.

        What follows a shape on its line counts in whether it fits only where the formatter
        groups them together: the comma after a list item or a call argument does; the comma
        after a tuple's keyword, the closing brace, and the comma after a ``key: [list]``
        value do not, so such lines may end past the limit."""
        pad = " " * indent
        last = len(nodes) - 1
        comma = 1 if comma_counts else 0
        return ",\n".join(
            pad + self.render(node, indent, indent, 0 if i == last else comma)
            for i, node in enumerate(nodes)
        )

    def _pair(self, pair: Pair, column: int, indent: int, trailing: int) -> str:
        value = pair.value
        if isinstance(value, Container):
            # The value stays on the key's line, breaking inside, if its opening bracket (an
            # empty one whole) fits there; the comma after it does not count.
            if self.fits(column, f"{pair.key} {value.open if value.items else flat(value)}"):
                start = column + len(pair.key) + 1
                return f"{pair.key} {self.render(value, start, indent)}"
            inner = indent + 2
            return f"{pair.key}\n{' ' * inner}{self.render(value, inner, inner)}"
        if isinstance(value, KeywordTuple):
            start = column + len(pair.key) + 1
            return f"{pair.key} {self.render(value, start, indent)}"
        text = flat(pair)
        if self.fits(column, text, trailing):
            return text
        return f"{pair.key}\n{' ' * (indent + 2)}{flat(pair.value)}"

    def _container(self, node: Container, column: int, indent: int, trailing: int) -> str:
        text = flat(node)
        if not node.items or (not node.broken and self.fits(column, text, trailing)):
            return text
        items = self.lines(node.items, indent + 2)
        return f"{node.open}\n{items}\n{' ' * indent}{node.close}"

    def _tuple(self, node: KeywordTuple, column: int, indent: int, trailing: int) -> str:
        text = flat(node)
        if not node.pairs or self.fits(column, text, trailing):
            return text
        inner = indent + 1
        keywords = ", ".join(flat(pair) for pair in node.pairs)
        if self.fits(inner, keywords):
            body = " " * inner + keywords
        else:
            body = self.lines(node.pairs, inner, comma_counts=False)
        return "{" + node.first + ",\n" + body + "}"


def integer(value: int) -> str:
    """An integer literal as the formatter writes it: ``123_456``, ``12345``, ``-1_000_000``."""
    sign = "-" if value < 0 else ""
    return sign + _grouped(str(abs(value)))


def float_literal(text: str) -> str:
    """A float literal (``1.5``, ``1.0e16``) with its integer part grouped as ``integer``."""
    sign = "-" if text.startswith("-") else ""
    whole, dot, rest = text.removeprefix("-").partition(".")
    return sign + _grouped(whole) + dot + rest.lower()


def _grouped(digits: str) -> str:
    if len(digits) < 6:
        return digits
    head = len(digits) % 3 or 3
    groups = [digits[:head]] + [digits[i : i + 3] for i in range(head, len(digits), 3)]
    return "_".join(groups)
