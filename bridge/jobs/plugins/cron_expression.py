"""Cron expressions with exactly the syntax and matching of Oban 2.23.1 (``Oban.Cron.Expression``).

A schedule may be configured on both sides of the language line, so the Python side must accept
what Oban accepts, reject what it rejects, and fire in the same minutes. That rules out vixie
cron semantics in three places where Oban differs from it:

- a minute matches only when *all five* fields match: a day-of-month and a weekday restriction
  are combined with AND, not OR (``0 0 13 * FRI`` is Friday the 13th only);
- weekdays run 0..6 with Sunday as 0; ``7`` is out of range;
- names (``MON``, ``JAN``) are upper case only, and are replaced textually before parsing.

Matching looks at the wall-clock fields of a datetime in the schedule's time zone
(``Etc/UTC`` unless configured), as Oban's ``now?/2`` does with ``DateTime.now(timezone)``.
Everything here is pure: no clock, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Etc/UTC"

# Oban has no limit; ours keeps every input's cost small (a real expression is a few dozen
# characters) and keeps digit runs far below Python's int-conversion limit.
MAX_LENGTH = 1024

NICKNAMES = {
    "@annually": "0 0 1 1 *",
    "@yearly": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@midnight": "0 0 * * *",
    "@daily": "0 0 * * *",
    "@hourly": "0 * * * *",
}
REBOOT = "@reboot"

# Oban walks these maps in key order (an Elixir map of this size iterates sorted), replacing
# substrings anywhere in the field; the order only shows in which error a garbled name gives.
WEEKDAY_NAMES = tuple(
    sorted(
        {"SUN": "0", "MON": "1", "TUE": "2", "WED": "3", "THU": "4", "FRI": "5", "SAT": "6"}.items()
    )
)
MONTH_NAMES = tuple(
    sorted(
        {
            "JAN": "1",
            "FEB": "2",
            "MAR": "3",
            "APR": "4",
            "MAY": "5",
            "JUN": "6",
            "JUL": "7",
            "AUG": "8",
            "SEP": "9",
            "OCT": "10",
            "NOV": "11",
            "DEC": "12",
        }.items()
    )
)

MINUTES = range(0, 60)
HOURS = range(0, 24)
DAYS = range(1, 32)
MONTHS = range(1, 13)
WEEKDAYS = range(0, 7)

# February counts 29: Oban checks day/month alignment without knowing the year.
MAX_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}

# The regexes Oban uses, ASCII-only like Erlang's non-unicode ``re``. Oban anchors with ``$``,
# which also lets a trailing newline through, and then crashes converting "5\n" to an integer;
# fullmatch rejects such a part as unrecognized instead: both sides refuse the expression.
_FIELD_SEPARATOR = re.compile(r"\s+", re.ASCII)
_LIST_SEPARATOR = re.compile(r"\s*,\s*", re.ASCII)
_LITERAL = re.compile(r"\d+", re.ASCII)
_STEP = re.compile(r"\*/[1-9]\d?", re.ASCII)
_RANGE_STEP = re.compile(r"\d+(?:-\d+)?/[1-9]\d?", re.ASCII)
_RANGE = re.compile(r"\d+-\d+", re.ASCII)


class CronExpressionError(ValueError):
    """An expression Oban's parser rejects; the message is Oban's wording where it has one."""


class CronTimezoneError(CronExpressionError):
    """A time zone name that the system's zone database does not know."""


@dataclass(frozen=True)
class CronExpression:
    """A parsed expression: the set of allowed values per field, as Oban's struct holds them."""

    input: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    reboot: bool = False

    def matches(self, moment: datetime) -> bool:
        """Whether the minute of ``moment``'s own wall clock is in the schedule (Oban's ``now?``).

        ``moment`` is taken at face value: convert it to the schedule's zone first (see
        :func:`matches_at`). ``@reboot`` matches any moment; the plugin fires it once.
        """
        if self.reboot:
            return True
        return (
            moment.month in self.months
            and weekday(moment) in self.weekdays
            and moment.day in self.days
            and moment.hour in self.hours
            and moment.minute in self.minutes
        )


def weekday(moment: datetime) -> int:
    """Oban's day of week: ``Date.day_of_week`` (Monday 1 .. Sunday 7) modulo 7, so Sunday is 0."""
    return moment.isoweekday() % 7


def parse(text: str) -> CronExpression:
    """Parse as ``Oban.Cron.Expression.parse/1`` does, raising where it returns an error."""
    if not isinstance(text, str):
        raise CronExpressionError(f"expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise CronExpressionError(f"expression is longer than {MAX_LENGTH} characters")
    if text == REBOOT:
        return CronExpression(
            input=text,
            minutes=frozenset(),
            hours=frozenset(),
            days=frozenset(),
            months=frozenset(),
            weekdays=frozenset(),
            reboot=True,
        )
    if text in NICKNAMES:
        return parse(NICKNAMES[text])
    fields = split_fields(text)
    if len(fields) != 5:
        raise CronExpressionError(f"incorrect number of fields in expression: {text}")
    minute_field, hour_field, day_field, month_field, weekday_field = fields
    # Oban's evaluation order, so that an expression with several faults names the same one.
    days = parse_field(day_field, DAYS)
    months = parse_field(translate(month_field, MONTH_NAMES), MONTHS)
    validate_days(days, months, day_field, month_field)
    minutes = parse_field(minute_field, MINUTES)
    hours = parse_field(hour_field, HOURS)
    weekdays = parse_field(translate(weekday_field, WEEKDAY_NAMES), WEEKDAYS)
    return CronExpression(
        input=text, minutes=minutes, hours=hours, days=days, months=months, weekdays=weekdays
    )


def split_fields(text: str) -> list[str]:
    """Elixir's ``String.split(text, ~r/\\s+/, trim: true, parts: 5)``.

    Leading whitespace is skipped, and the fifth part is the untouched remainder of the string:
    ``"* * * * 1, 2"`` is valid (the list separator allows spaces) while ``"* * * * * "`` is not
    (its last field is ``"* "``).
    """
    parts: list[str] = []
    offset = 0
    for separator in _FIELD_SEPARATOR.finditer(text):
        if len(parts) == 4:
            break
        if separator.start() > offset:
            parts.append(text[offset : separator.start()])
        offset = separator.end()
    if offset < len(text):
        parts.append(text[offset:])
    return parts


def translate(field: str, names: tuple[tuple[str, str], ...]) -> str:
    for name, number in names:
        field = field.replace(name, number)
    return field


def parse_field(field: str, allowed: range) -> frozenset[int]:
    values: set[int] = set()
    for part in _LIST_SEPARATOR.split(field):
        values.update(parse_part(part, allowed))
    if not values <= set(allowed):
        raise CronExpressionError(
            f"expression field {field} is out of range: {range_text(allowed)}"
        )
    return frozenset(values)


def parse_part(part: str, allowed: range) -> list[int] | range:
    if part == "*":
        return allowed
    if _LITERAL.fullmatch(part):
        return [int(part)]
    if _STEP.fullmatch(part):
        return allowed[:: int(part[2:])]
    if _RANGE_STEP.fullmatch(part):
        bounds, step = part.split("/")
        return parse_range(bounds, allowed)[:: int(step)]
    if _RANGE.fullmatch(part):
        return parse_range(part, allowed)
    raise CronExpressionError(f"unrecognized cron expression: {part}")


def parse_range(part: str, allowed: range) -> range:
    """``a-b``, or ``a`` alone (before a step), meaning ``a`` up to the field's maximum."""
    low_text, _, high_text = part.partition("-")
    low = int(low_text)
    high = int(high_text) if high_text else allowed[-1]
    if low > high:
        raise CronExpressionError(
            f"min ({low}) of range must be less than or equal to the max ({high})"
        )
    if low < allowed[0] or high > allowed[-1]:
        raise CronExpressionError(f"expression field {part} is out of range: {range_text(allowed)}")
    return range(low, high + 1)


def validate_days(
    days: frozenset[int], months: frozenset[int], day_field: str, month_field: str
) -> None:
    """Refuse a schedule that can never fire because no chosen day exists in a chosen month.

    Skipped when either raw field is ``*``, as Oban does. The fields can only hold digits,
    ``*/-,`` and month names here, so quoting them is what Elixir's ``inspect`` prints.
    """
    if day_field == "*" or month_field == "*":
        return
    if not any(day <= MAX_DAYS[month] for month in months for day in days):
        raise CronExpressionError(f'no day in "{day_field}" can occur in months "{month_field}"')


def range_text(allowed: range) -> str:
    """An Elixir range as ``inspect`` prints it, e.g. ``0..59``."""
    return f"{allowed[0]}..{allowed[-1]}"


def timezone(name: str) -> ZoneInfo:
    """The zone for Oban's ``timezone`` option, from the system's (or tzdata's) database."""
    if not isinstance(name, str) or not name:
        raise CronTimezoneError(f"timezone must be a zone name, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronTimezoneError(f"unknown timezone: {name!r}") from exc


def local_time(instant: datetime, zone: ZoneInfo) -> datetime:
    """The wall clock in ``zone`` at ``instant`` (aware, or naive meaning UTC)."""
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(zone)


def matches_at(
    expression: CronExpression, instant: datetime, zone: str | ZoneInfo = DEFAULT_TIMEZONE
) -> bool:
    """Whether the schedule fires in the minute of ``instant`` in ``zone``.

    When clocks go back, the repeated local hour matches twice (two UTC minutes), and minutes
    skipped when clocks go forward never match — what Oban does, since it asks the local clock.
    """
    tz = timezone(zone) if isinstance(zone, str) else zone
    return expression.matches(local_time(instant, tz))
