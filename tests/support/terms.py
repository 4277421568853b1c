"""What term tests share: which terms the VM must write byte for byte like Python."""

from __future__ import annotations

from typing import Any

from bridge.wire.term import ImproperList, TermMap

SMALL_MAP = 32  # the VM writes maps above this many keys in its hash order


def small_maps_only(term: Any) -> bool:
    """Whether every map in the term has at most 32 keys, so its bytes are fixed by the key
    order alone (larger maps come out in the VM's hash order)."""
    stack = [term]
    while stack:
        t = stack.pop()
        if isinstance(t, dict | TermMap):
            if len(t) > SMALL_MAP:
                return False
            stack.extend(t.keys())
            stack.extend(t.values())
        elif isinstance(t, list | tuple):
            stack.extend(t)
        elif isinstance(t, ImproperList):
            stack.extend(t.items)
            stack.append(t.tail)
    return True
