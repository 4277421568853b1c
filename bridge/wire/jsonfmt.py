"""JSON text for jsonb values and payloads.

orjson is fast but refuses integers outside 64 bits, which Elixir (arbitrary-precision integers)
writes and reads without trouble; those values fall back to the standard library, so a Python
insert carries any integer an Elixir one can.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
