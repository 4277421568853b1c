"""Every decoder and row loader, on random, mutated and nasty input: a value, or the decoder's
own typed error; never a RecursionError, a bare ValueError or a crash.

``jsonfmt.loads`` is held to the standard library on ordinary JSON (same acceptance, same
values), and to Jason where the two differ: any depth, integers of any length, no NaN/Infinity,
no number beyond a double, no lone surrogate.
"""

from __future__ import annotations

import base64
import contextlib
import decimal
import gzip
import json
import math
import re
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.jobs.client.admin import Undecodable, decode_json
from bridge.jobs.client.job import Job, UndecodableRowError
from bridge.wire import jsonfmt, notify
from bridge.workflows import WorkflowError, from_row
from tests.workflows import WORKFLOWS, golden_instance_rows

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)
# Characters a mutation inserts: JSON's own punctuation and words, escapes, and a few that are
# not JSON (a raw surrogate, NaN's letters, non-ASCII digits).
MUTATION_ALPHABET = '{}[],:"\\ \t\n0123456789.eE+-ntrufalsNIiy\u00e9\u0661\ud800'


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def depth_of(value: Any) -> int:
    """How deep a decoded value nests, without recursion."""
    levels = 0
    while isinstance(value, list | dict) and value:
        value = value[0] if isinstance(value, list) else next(iter(value.values()))
        levels += 1
    return levels + (1 if isinstance(value, list | dict) else 0)


def clean(value: Any) -> bool:
    """No NaN/infinite float and no lone surrogate anywhere: what Jason would also accept."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[str]) -> str:
    text = draw(source)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(("insert", "delete", "replace")))
        char = draw(st.sampled_from(MUTATION_ALPHABET))
        if op == "insert":
            text = text[:at] + char + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + char + text[at + 1 :]
    return text


dumped = json_values.map(json.dumps) | json_values.map(
    lambda v: json.dumps(v, ensure_ascii=False, indent=1)
)
# JSON holding integers past int()'s 4,300-digit limit: markers in the value, digits in the text.
LONG_INT_MARKER = re.compile(r'"@@long(\d+)@@"')
with_long_ints = st.recursive(
    scalars | st.integers(4_290, 5_500).map(lambda n: f"@@long{n}@@"),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
).map(lambda v: LONG_INT_MARKER.sub(lambda m: "7" * int(m.group(1)), json.dumps(v)))


# -- jsonfmt.loads against the standard library ----------------------------------------------------


@FUZZ
@given(json_values)
def test_loads_reads_ordinary_json_as_the_standard_library(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=2)):
        assert same(jsonfmt.loads(text), json.loads(text))
        assert same(jsonfmt.loads(text.encode()), json.loads(text))


def unlimited_int(digits: str) -> int:
    """The reference for integers past int()'s digit limit (Decimal has none)."""
    return int(decimal.Decimal(digits))


def agree_with_stdlib(text: str, decode: Any) -> None:
    """``decode`` accepts what json.loads accepts (when Jason would too), with the same value,
    and refuses the rest with JSONDecodeError. Integers of any length count as JSON."""
    try:
        expected = json.loads(text, parse_int=unlimited_int)
    except (ValueError, RecursionError):
        accepted = False
    else:
        accepted = clean(expected) and all(not 0xD800 <= ord(c) <= 0xDFFF for c in text)
    if accepted:
        assert same(decode(text), expected)
    else:
        with pytest.raises(jsonfmt.JSONDecodeError):
            decode(text)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (1 / 1.0 / true and -0.0 / 0.0 told apart), at any depth and
    for integers of any length."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict):
            if list(x) != list(y):
                return False
            stack.extend((x[key], y[key]) for key in x)
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif isinstance(x, float):
            if x != y or math.copysign(1, x) != math.copysign(1, y):
                return False
        elif x != y:
            return False
    return True


@FUZZ
@given(mutated(dumped))
def test_loads_agrees_with_the_standard_library_on_mutated_json(text: str) -> None:
    agree_with_stdlib(text, jsonfmt.loads)


@FUZZ
@given(with_long_ints | mutated(with_long_ints))
def test_loads_reads_long_integers_anywhere_and_still_refuses_what_follows(text: str) -> None:
    agree_with_stdlib(text, jsonfmt.loads)


@FUZZ
@given(mutated(dumped) | dumped)
def test_the_iterative_parser_agrees_with_the_standard_library(text: str) -> None:
    """The parser ``loads`` falls back to past Python's recursion limit, on the same input
    (lone surrogate escapes are ``loads``'s check, made after either parser)."""

    def iterative(source: str) -> Any:
        if any(0xD800 <= ord(c) <= 0xDFFF for c in source):
            raise jsonfmt.JSONDecodeError("raw surrogate")  # loads refuses these up front
        value = jsonfmt._Parser(source, jsonfmt._any_int).parse()
        if not clean(value):
            raise jsonfmt.JSONDecodeError("lone surrogate escape")
        return value

    agree_with_stdlib(text, iterative)


@FUZZ
@given(st.text() | st.text(alphabet=MUTATION_ALPHABET))
def test_loads_of_random_text_is_a_value_or_a_typed_error(text: str) -> None:
    with contextlib.suppress(jsonfmt.JSONDecodeError):
        jsonfmt.loads(text)


@FUZZ
@given(st.binary())
def test_loads_of_random_bytes_is_a_value_or_a_typed_error(data: bytes) -> None:
    with contextlib.suppress(jsonfmt.JSONDecodeError):
        jsonfmt.loads(data)


# -- jsonfmt.loads on what Jason reads and the standard library does not ---------------------------


@pytest.mark.parametrize("levels", [999, 1_000, 2_000, 100_000])
def test_any_depth_decodes(levels: int) -> None:
    value = jsonfmt.loads('{"k":' + nested(levels) + "}")
    assert depth_of(value["k"]) == levels
    deep_object = '{"a":' * levels + "1" + "}" * levels
    assert depth_of(jsonfmt.loads(deep_object)) == levels


def test_integers_of_any_length_decode_without_changing_the_process_limit() -> None:
    limit = sys.get_int_max_str_digits()
    for digits in (4_300, 4_301, 5_000, 131_072):
        text = "7" * digits
        assert jsonfmt.loads(text) == 7 * (10**digits - 1) // 9
        assert jsonfmt.loads(f'{{"n":-{text}}}') == {"n": -7 * (10**digits - 1) // 9}
    deep_and_long = jsonfmt.loads(nested(2_000, "1" + "0" * 5_000))
    inner = deep_and_long
    while isinstance(inner, list):
        inner = inner[0]
    assert inner == 10**5_000
    assert sys.get_int_max_str_digits() == limit


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("NaN", "NaN is not JSON"),
        ('{"a":Infinity}', "Infinity is not JSON"),
        ("[-Infinity]", "-Infinity is not JSON"),
        (nested(3_000, "NaN"), "NaN is not JSON"),
        ("1e400", "the number 1e400 is beyond the range of a double"),
        ("[" + "1" * 400 + ".5]", "is beyond the range of a double"),
        (nested(3_000, "-1e999"), "the number -1e999 is beyond the range of a double"),
        ('"\\ud800"', "a lone UTF-16 surrogate \\ud800"),
        ('["\\udc00"]', "a lone UTF-16 surrogate \\udc00"),
        ('"\\ud83d\\u0041"', "a lone UTF-16 surrogate \\ud83d"),
        (nested(3_000, '"\\ud800"'), "a lone UTF-16 surrogate"),
        ('"\ud800"', "a lone UTF-16 surrogate, which UTF-8 cannot carry"),
        ("", "not JSON: Expecting value at character 0"),
        ("[1,]", "not JSON: Expecting value at character 3"),
        ("[" + "1" * 5_000 + ", ]", "not JSON: Expecting value at character 5003"),
        ("[" + "1" * 5_000 + ", NaN]", "NaN is not JSON"),
        ('{"a" 1}', "not JSON: Expecting ':' delimiter at character 5"),
        (nested(3_000) + "]", "not JSON: Extra data"),
        ("[" * 3_000, "not JSON: Expecting value"),
        ("[" * 3_000 + "1", "not JSON: Expecting ',' delimiter"),
        ('{"a":' * 3_000 + "1", "not JSON: Expecting ',' delimiter"),
        ("\ufeff{}", "not JSON: "),
    ],
)
def test_what_jason_refuses_is_a_typed_error(text: str, why: str) -> None:
    with pytest.raises(jsonfmt.JSONDecodeError) as caught:
        jsonfmt.loads(text)
    assert why in str(caught.value)
    assert len(str(caught.value)) < 200


def test_what_is_not_a_lone_surrogate_decodes() -> None:
    assert jsonfmt.loads('"\\ud83d\\ude00"') == "\U0001f600"
    assert jsonfmt.loads('"\\\\ud800"') == "\\ud800"  # an escaped backslash, then text
    assert jsonfmt.loads(b'"\xc3\xa9"') == "é"


def test_bytes_that_are_not_utf8_are_a_typed_error() -> None:
    with pytest.raises(jsonfmt.JSONDecodeError, match="not UTF-8"):
        jsonfmt.loads(b'"\xff"')


def test_limits_a_caller_asks_for() -> None:
    with pytest.raises(
        jsonfmt.TooDeepError, match=r"JSON nested 5000 levels deep \(read up to 100\)"
    ):
        jsonfmt.loads(nested(5_000), max_depth=100)
    assert jsonfmt.loads(nested(100), max_depth=100) is not None
    with pytest.raises(jsonfmt.NumberTooLongError, match=r"an integer of 4301 digits"):
        jsonfmt.loads("-" + "9" * 4_301, max_digits=4_300)
    assert jsonfmt.loads("-" + "9" * 4_300, max_digits=4_300) == -(10**4_300 - 1)
    with pytest.raises(jsonfmt.NumberTooLongError):
        jsonfmt.loads(nested(3_000, "9" * 5_000), max_depth=None, max_digits=4_300)


# -- notify.decode ---------------------------------------------------------------------------------


def legacy(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()


payloads = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
encoded = payloads.flatmap(
    lambda p: st.sampled_from(
        [
            notify.encode(p, form="plain"),
            notify.encode(p, form="legacy"),
            notify.encode(p, form="z"),
        ]
    )
)


@FUZZ
@given(st.text() | mutated(encoded) | encoded)
def test_notify_decode_is_an_object_or_a_typed_error(raw: str) -> None:
    with contextlib.suppress(notify.NotificationDecodeError):
        assert isinstance(notify.decode(raw), dict)


@pytest.mark.parametrize("wrap", [lambda t: t, legacy, lambda t: "Z:" + legacy(t)])
def test_notify_refuses_what_no_oban_node_sends_with_a_typed_error(wrap: Any) -> None:
    deep = '{"queue":' + nested(5_000, "[]") + "}"
    with pytest.raises(notify.NotJSONError, match="JSON nested 5002 levels deep"):
        notify.decode(wrap(deep))
    with pytest.raises(notify.NotJSONError, match="NaN is not JSON"):
        notify.decode(wrap('{"queue":"q","limit":NaN}'))
    with pytest.raises(notify.NotJSONError, match="an integer of 5000 digits"):
        notify.decode(wrap('{"job_id":' + "1" * 5_000 + "}"))
    assert notify.decode(wrap('{"job_id":' + "1" * 40 + "}")) == {"job_id": int("1" * 40)}


# -- row loaders -----------------------------------------------------------------------------------

TIMESTAMP_TEXTS = st.sampled_from(
    [
        "2026-11-23T01:08:42.46",
        "2026-11-23T01:08:42",
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59.999999",
        "infinity",
        "-infinity",
        "10000-01-01T00:00:00",
        "0044-03-15T00:00:00 BC",
    ]
) | st.text(max_size=30)
JSON_TEXTS = (
    dumped
    | mutated(dumped)
    | st.just(nested(2_000))
    | st.just("[" + "1" * 400 + ".5]")
    | st.just('{"n":' + "9" * 5_000 + "}")
)


@st.composite
def text_rows(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "id": draw(st.integers(1, 2**63 - 1)),
        "state": "executing",
        "queue": "q",
        "worker": draw(st.text(min_size=1, max_size=10)),
        "args": draw(JSON_TEXTS),
        "meta": draw(st.none() | JSON_TEXTS),
        "errors": draw(st.none() | st.lists(JSON_TEXTS, max_size=3)),
        "attempt": draw(st.integers(1, 20)),
        "max_attempts": 20,
        "attempted_by": ["py", "uuid"],
        "priority": 0,
        "tags": draw(st.none() | st.lists(st.text(max_size=5), max_size=2)),
        **{
            name: draw(st.none() | TIMESTAMP_TEXTS)
            for name in (
                "inserted_at",
                "scheduled_at",
                "attempted_at",
                "completed_at",
                "discarded_at",
                "cancelled_at",
            )
        },
    }


@FUZZ
@given(text_rows())
def test_job_from_text_row_is_a_job_or_names_what_cannot_be_held(row: dict[str, Any]) -> None:
    try:
        job = Job.from_text_row(row)
    except UndecodableRowError as exc:
        job = exc.job
        assert exc.problems and str(exc) == "; ".join(exc.problems)
        assert len(str(exc)) < 2_000 + 200 * len(exc.problems)
    else:
        args = jsonfmt.loads(row["args"])
        if depth_of(args) < 100:
            assert job.args == args
    assert (job.id, job.worker, job.attempt) == (row["id"], row["worker"], row["attempt"])
    assert isinstance(job.errors, list) and isinstance(job.tags, list)


@pytest.mark.parametrize(
    ("column", "text", "problem"),
    [
        ("scheduled_at", "infinity", "scheduled_at is infinity, outside the years 1 to 9999"),
        ("inserted_at", "-infinity", "inserted_at is -infinity, outside the years 1 to 9999"),
        ("completed_at", "10000-01-01T00:00:00", "completed_at is 10000-01-01T00:00:00, outside"),
        ("cancelled_at", "0044-03-15T00:00:00 BC", "cancelled_at is 0044-03-15T00:00:00 BC, out"),
        ("args", "[1" + "0" * 400 + ".5]", "args cannot be decoded: the number 1000"),
        ("meta", '{"a":NaN}', "meta cannot be decoded: NaN is not JSON"),
    ],
)
def test_job_from_text_row_names_the_column(column: str, text: str, problem: str) -> None:
    row = {"id": 7, "worker": "w", "attempt": 1, "args": "{}", column: text}
    with pytest.raises(UndecodableRowError) as caught:
        Job.from_text_row(row)
    [found] = caught.value.problems
    assert found.startswith(problem)
    assert caught.value.job.id == 7 and caught.value.job.worker == "w"


def test_job_from_text_row_reads_deep_args_and_long_integers() -> None:
    row = {"id": 1, "worker": "w", "args": '{"deep":' + nested(2_000) + ',"n":' + "9" * 5_000 + "}"}
    job = Job.from_text_row(row)
    assert depth_of(job.args["deep"]) == 2_000 and job.args["n"] == 10**5_000 - 1


@FUZZ
@given(st.text() | JSON_TEXTS)
def test_admin_decode_json_never_raises(text: str) -> None:
    value = decode_json(text)
    if isinstance(value, Undecodable):
        assert value.text == text and value.reason


# -- workflow rows ---------------------------------------------------------------------------------

NASTY = (
    json_values
    | st.builds(lambda: jsonfmt.loads(nested(900)))
    | st.builds(lambda: jsonfmt.loads(nested(5_000)))
    | st.builds(lambda: jsonfmt.loads('{"a":' * 3_000 + '"x"' + "}" * 3_000))
    | st.just(10**5_000)
    | st.just("Elixir." + "x" * 100_000)
)


@st.composite
def mutated_instance_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A golden row with one value, anywhere in it, replaced by something nasty."""
    row = json.loads(json.dumps(draw(st.sampled_from(golden_instance_rows()))))
    paths: list[tuple[Any, Any]] = []
    stack: list[Any] = [row]
    while stack:
        item = stack.pop()
        keys = list(item) if isinstance(item, dict) else range(len(item))
        for key in keys:
            paths.append((item, key))
            if isinstance(item[key], dict | list):
                stack.append(item[key])
    parent, key = draw(st.sampled_from(paths))
    parent[key] = draw(NASTY)
    return row  # type: ignore[no-any-return]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_instance_rows())
def test_workflow_rows_load_or_raise_a_workflow_error(row: dict[str, Any]) -> None:
    try:
        from_row(row, WORKFLOWS)
    except WorkflowError as exc:
        assert len(str(exc)) < 2_000


ODD_VALUES = {
    "deep-list": lambda: jsonfmt.loads(nested(5_000)),
    "deep-object": lambda: {"a": jsonfmt.loads(nested(5_000))},
    "long-int": lambda: 10**5_000,
    "long-string": lambda: "Elixir." + "x" * 100_000,
}


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        (column, kind)
        for column in ("id", "workflow", "status", "workflow_version")
        for kind in ODD_VALUES
        # Valid, if odd: a huge version number, a long id.
        if (column, kind) not in (("workflow_version", "long-int"), ("id", "long-string"))
    ],
)
def test_odd_workflow_row_columns_are_a_workflow_error(column: str, kind: str) -> None:
    row = {**golden_instance_rows()[0], column: ODD_VALUES[kind]()}
    with pytest.raises(WorkflowError) as caught:
        from_row(row, WORKFLOWS)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    "state_key", ["current_step", "active_steps", "completed_steps", "execution_history"]
)
def test_workflow_state_values_nested_deep_are_a_workflow_error(state_key: str) -> None:
    deep = jsonfmt.loads(nested(5_000))
    row = golden_instance_rows()[0]
    state = dict(row["state"])
    if state_key == "execution_history":
        state[state_key] = [{"step_ref": deep, "event": deep, "timestamp": deep}]
    elif state_key == "current_step":
        state[state_key] = deep
    else:
        state[state_key] = [deep]
    with pytest.raises(WorkflowError) as caught:
        from_row({**row, "state": state}, WORKFLOWS)
    assert len(str(caught.value)) < 300
