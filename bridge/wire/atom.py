"""An Elixir/Erlang atom on the Python side.

A ``str`` subclass, so it compares and hashes like its name where that is convenient, but stays
distinguishable from a binary (``Atom("ok") != "ok"`` is False, yet ``isinstance`` tells them
apart) — which the term format, phash2 and ``inspect`` all need.
"""

from __future__ import annotations


class Atom(str):
    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str(self)!r})"


def atom(name: str) -> Atom:
    return Atom(name)
