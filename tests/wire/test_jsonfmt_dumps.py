"""``jsonfmt.dumps`` writes back every value ``jsonfmt.loads`` reads: any depth, integers of any
length (Jason writes both), and otherwise exactly the standard library's compact text.

On the old code a value nested past ~1,000 levels raised RecursionError and an integer past
4,300 digits ValueError, so a workflow state read from an Elixir-written row could not be saved.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.wire import jsonfmt

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
long_ints = st.integers(4_290, 6_000).map(lambda digits: 10 ** (digits - 1) + 7) | st.integers(
    4_290, 6_000
).map(lambda digits: -(10 ** (digits - 1)) - 3)
json_values = st.recursive(
    scalars | long_ints,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)


def wrapped(value: Any, levels: int) -> Any:
    for index in range(levels):
        value = [value] if index % 2 else {"k": value}
    return value


def standard(value: Any, *, sort_keys: bool = False) -> str:
    """The standard library's compact text with no digit or depth limit in the way."""
    limit, depth = sys.get_int_max_str_digits(), sys.getrecursionlimit()
    sys.set_int_max_str_digits(0)
    sys.setrecursionlimit(max(depth, 50_000))
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
    finally:
        sys.set_int_max_str_digits(limit)
        sys.setrecursionlimit(depth)


@FUZZ
@given(json_values, st.sampled_from([0, 300, 1_200, 3_000]), st.booleans())
def test_dumps_writes_what_the_standard_library_would_and_loads_reads_it_back(
    value: Any, levels: int, sort_keys: bool
) -> None:
    value = wrapped(value, levels)
    text = jsonfmt.dumps(value, sort_keys=sort_keys)
    assert text == standard(value, sort_keys=sort_keys)
    assert jsonfmt.dumps(jsonfmt.loads(text), sort_keys=sort_keys) == text


@pytest.mark.parametrize("levels", [999, 1_000, 2_000, 100_000])
def test_any_depth_is_written(levels: int) -> None:
    text = '{"a":' + "[" * levels + "1" + "]" * levels + "}"
    assert jsonfmt.dumps(jsonfmt.loads(text)) == text


def test_integers_of_any_length_are_written_without_changing_the_process_limit() -> None:
    limit = sys.get_int_max_str_digits()
    for digits in (4_300, 4_301, 5_000, 131_072):
        text = '{"n":[-' + "7" * digits + "," + "1" + "0" * digits + "]}"
        assert jsonfmt.dumps(jsonfmt.loads(text)) == text
    assert sys.get_int_max_str_digits() == limit


def test_what_json_cannot_hold_stays_an_error() -> None:
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular"):
        jsonfmt.dumps(circular)
    with pytest.raises(TypeError):
        jsonfmt.dumps({"s": {1, 2}})
    with pytest.raises(TypeError):
        jsonfmt.dumps(wrapped({"s": object()}, 2_000))
