"""Elixir literals laid out as ``mix format`` lays them out. Every expected text here is what
Elixir 1.14's formatter printed for the same input (its rules are listed in
``bridge.workflows.delegation.elixir_layout``); ``interop_tests/test_export_elixir_format.py``
runs the real formatter on generated declarations."""

from __future__ import annotations

from bridge.workflows.delegation.elixir_layout import (
    KeywordTuple,
    Layout,
    Pair,
    Text,
    elixir_list,
    elixir_map,
    float_literal,
    integer,
)

LAYOUT = Layout()


def step(module: str, key: str, *events: str) -> KeywordTuple:
    return KeywordTuple(
        module,
        (Pair("key:", Text(key)), Pair("events:", elixir_list([Text(e) for e in events]))),
    )


def steps_list(*tuples: KeywordTuple) -> str:
    """The tuples as the items of ``python_steps: [...]`` in a declaration (indent 6)."""
    return LAYOUT.lines(tuples, 6)


def test_a_step_that_does_not_fit_breaks_after_its_module() -> None:
    pick = step(
        "ColdPy.Declared.PickZq",
        ":pick_zq",
        *(f":to_{n}_zq" for n in ("wait", "flaky", "fail", "done")),
    )
    assert steps_list(pick) == (
        "      {ColdPy.Declared.PickZq,\n"
        "       key: :pick_zq, events: [:to_wait_zq, :to_flaky_zq, :to_fail_zq, :to_done_zq]}"
    )


def test_keywords_that_do_not_fit_either_go_one_per_line() -> None:
    events = [f":event_number_{n}" for n in range(7)]
    assert steps_list(step("ColdPy.Declared.PickZq", ":pick_zq", *events)) == (
        "      {ColdPy.Declared.PickZq,\n"
        "       key: :pick_zq,\n"
        "       events: [\n" + "".join(f"         {e},\n" for e in events[:-1]) + ""
        f"         {events[-1]}\n"
        "       ]}"
    )


def test_the_comma_after_a_list_item_counts_but_not_after_a_tuple_keyword() -> None:
    """A step tuple of 98 characters plus its comma breaks; inside a broken tuple, keywords of
    98 characters followed by ``},`` stay on their line."""
    key = ":k" + "x" * 66  # "      {B, key: <key>, events: [:e]}" is 98 characters
    fits_without_comma = step("B", key, ":e")
    assert len("      " + "{B, key: " + key + ", events: [:e]}") == 98
    assert steps_list(fits_without_comma, step("C", ":c", ":e")).splitlines()[:2] == [
        "      {B,",
        f"       key: {key}, events: [:e]}},",
    ]
    assert steps_list(step("C", ":c", ":e"), fits_without_comma).splitlines()[1] == (
        f"      {{B, key: {key}, events: [:e]}}"
    )


def test_a_value_that_cannot_break_moves_under_its_key() -> None:
    long_string = '"' + "x" * 90 + '"'
    text = LAYOUT.lines([Pair("name:", Text(long_string)), Pair("version:", Text("2"))], 4)
    assert text == f"    name:\n      {long_string},\n    version: 2"


def test_a_list_or_map_value_stays_on_its_keys_line_while_its_bracket_fits() -> None:
    items = [Text(f'"{n}"') for n in ("python", "rs") * 7]
    tags = LAYOUT.lines([Pair("tags:", elixir_list(items))], 4)
    assert tags.splitlines()[:2] == ["    tags: [", '      "python",']
    assert tags.endswith('\n      "rs"\n    ]')
    key = '"' + "k" * 88 + '"'
    nested = elixir_map([Pair(f"{key} =>", elixir_map([Pair('"a" =>', Text("1"))]))])
    assert LAYOUT.lines([Pair("metadata:", nested)], 4) == (
        f'    metadata: %{{\n      {key} =>\n        %{{"a" => 1}}\n    }}'
    )


def test_a_list_written_broken_stays_broken() -> None:
    done = step("Hephaestus.Steps.Done", ":done", ":done")
    listed = LAYOUT.lines([Pair("elixir_steps:", elixir_list([done], broken=True))], 4)
    assert listed == (
        "    elixir_steps: [\n      {Hephaestus.Steps.Done, key: :done, events: [:done]}\n    ]"
    )
    assert LAYOUT.lines([Pair("python_steps:", elixir_list([], broken=True))], 4) == (
        "    python_steps: []"
    )


def test_the_line_length_is_the_apps() -> None:
    short = Layout(40)
    assert short.lines([Pair("context_keys:", elixir_list([Text(":a"), Text(":b")]))], 4) == (
        "    context_keys: [:a, :b]"
    )
    assert short.lines([Pair("context_keys:", elixir_list([Text(":abcdefghij")] * 2))], 4) == (
        "    context_keys: [\n      :abcdefghij,\n      :abcdefghij\n    ]"
    )


def test_numbers_as_the_formatter_writes_them() -> None:
    assert [integer(n) for n in (12345, 123456, -1234567, 0)] == [
        "12345",
        "123_456",
        "-1_234_567",
        "0",
    ]
    assert [float_literal(t) for t in ("123456.5", "-1234567.0", "1.0e16", "12.125")] == [
        "123_456.5",
        "-1_234_567.0",
        "1.0e16",
        "12.125",
    ]
