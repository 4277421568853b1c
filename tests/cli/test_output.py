"""The output layer's pure parts: fitting a table to a terminal, the last error of odd rows."""

from __future__ import annotations

from bridge.cli.output import fit_widths, json_text, last_error

COLUMNS = ["id", "state", "queue", "worker", "attempt", "last error"]
ROW = ["12345", "completed", "badges", "myapp.workers.GenerateBadge", "1/20", "** (E) " + "x" * 60]


def test_a_table_that_fits_keeps_its_natural_widths() -> None:
    natural = fit_widths(COLUMNS, [ROW], None)
    assert natural == [5, 9, 6, 27, 7, 67]
    assert fit_widths(COLUMNS, [ROW], 1000) == natural


def test_a_narrow_terminal_cuts_the_widest_columns_and_keeps_short_ones_whole() -> None:
    widths = fit_widths(COLUMNS, [ROW], 80, gap=3)
    assert sum(widths) + 3 * (len(COLUMNS) - 1) <= 80
    assert widths[:3] == [5, 9, 6] and widths[4] == 7  # ids, states, counts untouched
    assert widths[3] >= 12 and widths[5] >= 12


def test_a_terminal_too_narrow_for_anything_stops_at_the_floors() -> None:
    widths = fit_widths(COLUMNS, [ROW], 10, gap=3)
    assert widths == [5, 9, 6, 12, 7, 12]


def test_last_error_of_rows_an_elixir_app_may_hold() -> None:
    assert last_error([]) == ""
    assert last_error([{"error": "** (RuntimeError) boom\n  frame"}]) == "** (RuntimeError) boom"
    assert last_error([{"error": ""}]) == ""
    assert last_error([1, "x", {"no_error_key": 1}]) == '{"no_error_key":1}'
    assert last_error([{"error": 2**70}]) == json_text({"error": 2**70})
