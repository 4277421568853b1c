"""Cron expressions parse and match exactly as ``Oban.Cron.Expression`` (2.23.1) does.

No test here can run Oban itself (it is not installed; hex is unreachable). The table below
was derived by reading ``lib/oban/cron/expression.ex``; while writing it, every row (and 17,000
random expressions, and 23,000 random (expression, minute) pairs for matching) was also run
once through that very module on a BEAM, outside this repository, and agreed. The property
tests pin the rules the table illustrates.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.jobs.plugins.cron_expression import (
    DAYS,
    HOURS,
    MINUTES,
    MONTHS,
    WEEKDAYS,
    CronExpression,
    CronExpressionError,
    CronTimezoneError,
    matches_at,
    parse,
    split_fields,
    timezone,
    weekday,
)

ALL_MIN = set(MINUTES)
ALL_HR = set(HOURS)
ALL_DAY = set(DAYS)
ALL_MON = set(MONTHS)
ALL_DOW = set(WEEKDAYS)

# input -> (minutes, hours, days, months, weekdays)
VALID = [
    ("* * * * *", (ALL_MIN, ALL_HR, ALL_DAY, ALL_MON, ALL_DOW)),
    ("0 1 * * *", ({0}, {1}, ALL_DAY, ALL_MON, ALL_DOW)),
    ("*/15 */6 * * *", ({0, 15, 30, 45}, {0, 6, 12, 18}, ALL_DAY, ALL_MON, ALL_DOW)),
    # steps start at the range's first value: days from 1, not 0
    ("* * */10 */5 */3", (ALL_MIN, ALL_HR, {1, 11, 21, 31}, {1, 6, 11}, {0, 3, 6})),
    ("1-10/2 * * * *", ({1, 3, 5, 7, 9}, ALL_HR, ALL_DAY, ALL_MON, ALL_DOW)),
    # "a/n" is a..max every n
    ("50/3 22/1 * * *", ({50, 53, 56, 59}, {22, 23}, ALL_DAY, ALL_MON, ALL_DOW)),
    ("0 9-17 * * MON-FRI", ({0}, set(range(9, 18)), ALL_DAY, ALL_MON, {1, 2, 3, 4, 5})),
    ("0 0 1 JAN,JUL *", ({0}, {0}, {1}, {1, 7}, ALL_DOW)),
    ("0 0 * DEC SUN", ({0}, {0}, ALL_DAY, {12}, {0})),
    ("0 0 * * SAT,SUN", ({0}, {0}, ALL_DAY, ALL_MON, {0, 6})),
    ("05 007 * * *", ({5}, {7}, ALL_DAY, ALL_MON, ALL_DOW)),
    ("1,1,2 * * * *", ({1, 2}, ALL_HR, ALL_DAY, ALL_MON, ALL_DOW)),
    ("*,5 * * * *", (ALL_MIN, ALL_HR, ALL_DAY, ALL_MON, ALL_DOW)),
    ("  0\t1\n* * *", ({0}, {1}, ALL_DAY, ALL_MON, ALL_DOW)),
    # the fifth part is the rest of the string, and list commas may carry spaces
    ("* * * * 1, 2 ,3", (ALL_MIN, ALL_HR, ALL_DAY, ALL_MON, {1, 2, 3})),
    ("0 0 29 2 *", ({0}, {0}, {29}, {2}, ALL_DOW)),
    ("0 0 30,31 2,3 *", ({0}, {0}, {30, 31}, {2, 3}, ALL_DOW)),
    ("@hourly", ({0}, ALL_HR, ALL_DAY, ALL_MON, ALL_DOW)),
    ("@daily", ({0}, {0}, ALL_DAY, ALL_MON, ALL_DOW)),
    ("@midnight", ({0}, {0}, ALL_DAY, ALL_MON, ALL_DOW)),
    ("@weekly", ({0}, {0}, ALL_DAY, ALL_MON, {0})),
    ("@monthly", ({0}, {0}, {1}, ALL_MON, ALL_DOW)),
    ("@yearly", ({0}, {0}, {1}, {1}, ALL_DOW)),
    ("@annually", ({0}, {0}, {1}, {1}, ALL_DOW)),
]

INVALID = [
    ("* * * *", "incorrect number of fields in expression: * * * *"),
    ("", "incorrect number of fields in expression: "),
    (" @daily", "incorrect number of fields in expression:  @daily"),
    ("@every", "incorrect number of fields in expression: @every"),
    ("* * * * * *", "unrecognized cron expression: * *"),
    ("* * * * * ", "unrecognized cron expression: * "),
    ("* * * * 7", "expression field 7 is out of range: 0..6"),
    ("* * * * 0-7", "expression field 0-7 is out of range: 0..6"),
    ("60 * * * *", "expression field 60 is out of range: 0..59"),
    ("* 24 * * *", "expression field 24 is out of range: 0..23"),
    ("* * 0 * *", "expression field 0 is out of range: 1..31"),
    ("* * * 13 *", "expression field 13 is out of range: 1..12"),
    ("5,70 * * * *", "expression field 5,70 is out of range: 0..59"),
    ("10-5 * * * *", "min (10) of range must be less than or equal to the max (5)"),
    ("010-05 * * * *", "min (10) of range must be less than or equal to the max (5)"),
    ("50-70/5 * * * *", "expression field 50-70 is out of range: 0..59"),
    ("*/0 * * * *", "unrecognized cron expression: */0"),
    ("*/100 * * * *", "unrecognized cron expression: */100"),
    ("*/05 * * * *", "unrecognized cron expression: */05"),
    ("1, * * * *", "unrecognized cron expression: "),
    ("L * * * *", "unrecognized cron expression: L"),
    ("* * * * mon", "unrecognized cron expression: mon"),
    ("* * * * MONDAY", "unrecognized cron expression: 1DAY"),
    ("* * * JUNOV *", "unrecognized cron expression: 6OV"),
    ("* * * * 5#2", "unrecognized cron expression: 5#2"),
    ("* * 30 2 *", 'no day in "30" can occur in months "2"'),
    ("* * 31 APR,JUN *", 'no day in "31" can occur in months "APR,JUN"'),
    # days and months are checked before the other fields, so their error wins
    ("99 * 0 * *", "expression field 0 is out of range: 1..31"),
    ("* * 31 2 7", 'no day in "31" can occur in months "2"'),
    ("\u0661 * * * *", "unrecognized cron expression: \u0661"),
]


def sets(parsed: CronExpression) -> tuple[set[int], ...]:
    return tuple(
        set(values)
        for values in (parsed.minutes, parsed.hours, parsed.days, parsed.months, parsed.weekdays)
    )


@pytest.mark.parametrize(("text", "fields"), VALID)
def test_valid_expressions_parse_to_oban_sets(text: str, fields: tuple[set[int], ...]) -> None:
    parsed = parse(text)
    assert sets(parsed) == fields
    assert not parsed.reboot


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_expressions_fail_with_oban_wording(text: str, message: str) -> None:
    with pytest.raises(CronExpressionError) as caught:
        parse(text)
    assert str(caught.value) == message


def test_a_trailing_newline_is_refused() -> None:
    # Oban's `$` lets "5\n" through its regex and then String.to_integer raises ArgumentError:
    # the expression is refused on both sides, with a crash there and this error here.
    with pytest.raises(CronExpressionError, match="unrecognized cron expression: 5"):
        parse("* * * * 5\n")
    with pytest.raises(CronExpressionError, match="unrecognized cron expression"):
        parse("* * * * */5\n")


def test_reboot_matches_any_minute() -> None:
    parsed = parse("@reboot")
    assert parsed.reboot
    assert parsed.matches(datetime(2025, 1, 1, 3, 4))


def test_non_strings_and_huge_inputs_are_refused() -> None:
    with pytest.raises(CronExpressionError, match="must be a string"):
        parse(5)  # type: ignore[arg-type]
    with pytest.raises(CronExpressionError, match="longer than 1024"):
        parse("1," * 600 + "1 * * * *")
    # a long digit run is still just out of range, not a crash in int()
    with pytest.raises(CronExpressionError, match="out of range"):
        parse("9" * 1000 + " * * * *")


def test_day_and_weekday_combine_with_and_not_or() -> None:
    # vixie cron would fire on every 13th and on every Friday; Oban only on Friday the 13th
    friday_13th = parse("0 0 13 * FRI")
    assert friday_13th.matches(datetime(2024, 9, 13))  # a Friday
    assert not friday_13th.matches(datetime(2024, 10, 13))  # a Sunday
    assert not friday_13th.matches(datetime(2024, 9, 20))  # a Friday, not the 13th


def test_weekday_numbering_sunday_is_zero() -> None:
    assert weekday(datetime(2024, 9, 15)) == 0  # Sunday
    assert weekday(datetime(2024, 9, 16)) == 1  # Monday
    assert weekday(datetime(2024, 9, 21)) == 6  # Saturday
    assert parse("0 0 * * 0").matches(datetime(2024, 9, 15))
    assert not parse("0 0 * * 1").matches(datetime(2024, 9, 15))


def test_split_follows_elixir_trim_and_parts() -> None:
    assert split_fields("  a b  c d e f ") == ["a", "b", "c", "d", "e f "]
    assert split_fields("a b") == ["a", "b"]
    assert split_fields("   ") == []
    assert split_fields("a b c d   ") == ["a", "b", "c", "d"]


def test_timezone_matching_uses_the_local_wall_clock() -> None:
    daily_0130 = parse("30 1 * * *")
    # New York falls back on 2024-11-03: 01:30 local happens twice (05:30Z and 06:30Z)
    day = datetime(2024, 11, 3, tzinfo=UTC)
    fired = [
        day + timedelta(minutes=m)
        for m in range(48 * 60)
        if matches_at(daily_0130, day + timedelta(minutes=m), "America/New_York")
    ]
    assert fired == [
        datetime(2024, 11, 3, 5, 30, tzinfo=UTC),
        datetime(2024, 11, 3, 6, 30, tzinfo=UTC),
        datetime(2024, 11, 4, 6, 30, tzinfo=UTC),
    ]
    # and springs forward on 2024-03-10: 02:30 local never happens that day
    spring = datetime(2024, 3, 10, tzinfo=UTC)
    daily_0230 = parse("30 2 * * *")
    assert not any(
        matches_at(daily_0230, spring + timedelta(minutes=m), "America/New_York")
        for m in range(24 * 60)
    )
    # naive instants are UTC; the default zone is Etc/UTC
    assert matches_at(parse("0 12 * * *"), datetime(2025, 6, 1, 12, 0))
    assert matches_at(parse("0 14 * * *"), datetime(2025, 6, 1, 12, 0), "Europe/Paris")


def test_unknown_timezones_are_refused() -> None:
    with pytest.raises(CronTimezoneError, match="unknown timezone"):
        timezone("Mars/Olympus")
    with pytest.raises(CronTimezoneError):
        timezone("../../etc/passwd")
    with pytest.raises(CronTimezoneError):
        timezone("")


# -- properties ------------------------------------------------------------------------------

FIELD_RANGES = [MINUTES, HOURS, DAYS, MONTHS, WEEKDAYS]


@given(st.text(max_size=60))
def test_any_text_parses_or_fails_with_our_error(text: str) -> None:
    with contextlib.suppress(CronExpressionError):
        parse(text)


@given(st.text(alphabet="0123456789*/-, \tMONFRIJAUGSEPD", max_size=40))
def test_cron_shaped_text_parses_or_fails_with_our_error(text: str) -> None:
    try:
        parsed = parse(text)
    except CronExpressionError:
        return
    for values, allowed in zip(
        (parsed.minutes, parsed.hours, parsed.days, parsed.months, parsed.weekdays),
        FIELD_RANGES,
        strict=True,
    ):
        assert values <= set(allowed)


@st.composite
def field_part(draw: st.DrawFn, allowed: range) -> tuple[str, set[int]]:
    """A part and its meaning, computed from the rules rather than from the parser."""
    low, high = allowed[0], allowed[-1]
    kind = draw(st.sampled_from(["star", "literal", "step", "range", "range_step", "open_step"]))
    if kind == "star":
        return "*", set(allowed)
    if kind == "literal":
        value = draw(st.integers(low, high))
        return str(value), {value}
    step = draw(st.integers(1, 99))
    if kind == "step":
        return f"*/{step}", {v for v in allowed if (v - low) % step == 0}
    a = draw(st.integers(low, high))
    b = draw(st.integers(a, high))
    if kind == "range":
        return f"{a}-{b}", set(range(a, b + 1))
    if kind == "open_step":
        return f"{a}/{step}", {v for v in range(a, high + 1) if (v - a) % step == 0}
    return f"{a}-{b}/{step}", {v for v in range(a, b + 1) if (v - a) % step == 0}


@st.composite
def field_list(draw: st.DrawFn, allowed: range) -> tuple[str, set[int]]:
    parts = draw(st.lists(field_part(allowed), min_size=1, max_size=4))
    return ",".join(p for p, _ in parts), set().union(*(v for _, v in parts))


@given(
    st.tuples(*(field_list(r) for r in FIELD_RANGES)),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_generated_expressions_mean_what_the_rules_say(
    fields: tuple[tuple[str, set[int]], ...], moment: datetime
) -> None:
    text = " ".join(f for f, _ in fields)
    (_, minutes), (_, hours), (day_text, days), (month_text, months), (_, weekdays) = fields
    aligned = any(
        d <= [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1] for m in months for d in days
    )
    if not aligned and "*" not in (day_text, month_text):
        with pytest.raises(CronExpressionError, match="no day in"):
            parse(text)
        return
    parsed = parse(text)
    assert sets(parsed) == (minutes, hours, days, months, weekdays)
    # AND across all five fields
    expected = (
        moment.minute in minutes
        and moment.hour in hours
        and moment.day in days
        and moment.month in months
        and moment.isoweekday() % 7 in weekdays
    )
    assert parsed.matches(moment) is expected


MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@given(
    st.lists(st.integers(1, 12), min_size=1, max_size=4),
    st.lists(st.integers(0, 6), min_size=1, max_size=4),
)
def test_names_mean_their_numbers(months: list[int], weekdays: list[int]) -> None:
    by_name = parse(
        "0 0 * "
        + ",".join(MONTH_NAMES[m - 1] for m in months)
        + " "
        + ",".join(DAY_NAMES[d] for d in weekdays)
    )
    by_number = parse("0 0 * " + ",".join(map(str, months)) + " " + ",".join(map(str, weekdays)))
    assert (by_name.months, by_name.weekdays) == (by_number.months, by_number.weekdays)


@given(st.sampled_from(["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly"]))
def test_nicknames_equal_their_expansions(nickname: str) -> None:
    expansions = {
        "@hourly": "0 * * * *",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@weekly": "0 0 * * 0",
        "@monthly": "0 0 1 * *",
        "@yearly": "0 0 1 1 *",
    }
    assert sets(parse(nickname)) == sets(parse(expansions[nickname]))
