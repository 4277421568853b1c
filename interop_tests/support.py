"""Golden data and shape checks shared by the interop tests."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"

NAIVE_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?$")
ERROR_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# "    (app 0.1.0) lib/file.ex:12: Module.function/1"
STACK_FRAME = re.compile(r"^    \([a-z_]+ [0-9][^)]*\) \S+:\d+: \S+/\d+$")
TIMESTAMPS = (
    "inserted_at",
    "scheduled_at",
    "attempted_at",
    "completed_at",
    "discarded_at",
    "cancelled_at",
)


def golden_json(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def golden_lines(name: str) -> list[Any]:
    return [json.loads(line) for line in (GOLDEN / name).read_text().splitlines() if line.strip()]


def kind(value: Any) -> str:
    """The JSON kind of a value (``bool`` apart from ``int``)."""
    return type(value).__name__


def split_error(text: str) -> tuple[str, list[str]]:
    """An error entry's message lines and its stacktrace frames.

    ``Exception.format/3`` ends each frame with a newline; a message may itself span lines, so
    frames are the trailing lines that look like frames.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    cut = len(lines)
    while cut > 0 and STACK_FRAME.match(lines[cut - 1]):
        cut -= 1
    return "\n".join(lines[:cut]), lines[cut:]


def assert_error_entry_like(
    ours: dict[str, Any], golden: dict[str, Any], names: dict[str, str]
) -> None:
    """Same keys, `at` format and attempt; same message once worker names are swapped; frames
    where the golden entry has frames (their files and modules are necessarily ours)."""
    assert set(ours) == set(golden) == {"at", "attempt", "error"}
    assert ERROR_AT.match(ours["at"]), ours["at"]
    assert ours["attempt"] == golden["attempt"]
    golden_message, golden_frames = split_error(golden["error"])
    for theirs, mine in names.items():
        golden_message = golden_message.replace(theirs, mine)
    message, frames = split_error(ours["error"])
    assert message == golden_message
    assert bool(frames) == bool(golden_frames), ours["error"]
    assert ours["error"].endswith("\n") == golden["error"].endswith("\n")


def assert_row_like(
    ours: dict[str, Any],
    golden: dict[str, Any],
    names: dict[str, str],
    *,
    other_args: bool = False,
) -> None:
    """A job row shaped exactly like a genuine Oban row: columns, kinds, values that follow from
    the same inputs, naive UTC timestamps, `[node, uuid]` in attempted_by, error entries.

    ``other_args``: our worker needed different args to reach the same outcome.
    """
    assert set(ours) == set(golden)
    for key, value in golden.items():
        assert kind(ours[key]) == kind(value), (key, ours[key], value)
    same = ("state", "queue", "meta", "tags", "attempt", "max_attempts", "priority")
    for key in same if other_args else ("args", *same):
        assert ours[key] == golden[key], key
    assert ours["worker"] == names.get(golden["worker"], golden["worker"])
    for key in TIMESTAMPS:
        if golden[key] is not None:
            assert NAIVE_TIMESTAMP.match(ours[key]), (key, ours[key])
    same_time = golden["inserted_at"] == golden["scheduled_at"]
    assert (ours["inserted_at"] == ours["scheduled_at"]) == same_time
    if golden["attempted_by"] is not None:
        node, uuid = ours["attempted_by"]
        assert node == golden["attempted_by"][0]
        assert UUID4.match(uuid), uuid
    assert len(ours["errors"]) == len(golden["errors"])
    for mine, theirs in zip(ours["errors"], golden["errors"], strict=True):
        assert_error_entry_like(mine, theirs, names)


# Cross-language comparisons ---------------------------------------------------------------------
# The helpers below compare a row one language wrote with the row the other wrote for the same
# job, so that a failure names the column and both values instead of a bare `assert False`.

# "    (interop_tests) /path/to/support.py:12: interop_tests.support.echo_mirror": the frames
# bridge.wire.errors writes for a Python traceback (Elixir's layout, without an arity).
PYTHON_FRAME = re.compile(r"^    \([A-Za-z_][\w.]*\) \S+:\d+: \S+$")
ATTEMPT_COLUMNS = ("state", "worker", "args", "meta", "tags", "attempt", "max_attempts", "priority")


def split_any_error(text: str) -> tuple[str, list[str]]:
    """Like :func:`split_error`, recognising Python frames as well as Elixir ones."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    cut = len(lines)
    while cut > 0 and (STACK_FRAME.match(lines[cut - 1]) or PYTHON_FRAME.match(lines[cut - 1])):
        cut -= 1
    return "\n".join(lines[:cut]), lines[cut:]


def error_entry_differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """How an error entry differs from the other language's entry for the same failure."""
    diffs: list[str] = []
    if set(ours) != {"at", "attempt", "error"}:
        diffs.append(f"keys {sorted(ours)} instead of ['at', 'attempt', 'error']")
        return diffs
    if not isinstance(ours["at"], str) or not ERROR_AT.match(ours["at"]):
        diffs.append(f"`at` {ours['at']!r} is not a UTC timestamp like {theirs['at']!r}")
    if kind(ours["attempt"]) != "int" or ours["attempt"] != theirs["attempt"]:
        diffs.append(
            f"`attempt` {ours['attempt']!r} where the other side wrote {theirs['attempt']!r}"
        )
    if not isinstance(ours["error"], str):
        diffs.append(f"`error` is a {kind(ours['error'])}, not a string")
        return diffs
    message, frames = split_any_error(ours["error"])
    their_message, their_frames = split_any_error(theirs["error"])
    if message != their_message:
        diffs.append(f"message {message!r} where the other side wrote {their_message!r}")
    if bool(frames) != bool(their_frames):
        diffs.append(
            f"{len(frames)} stack frames where the other side wrote {len(their_frames)}: "
            f"{ours['error']!r} vs {theirs['error']!r}"
        )
    if ours["error"].endswith("\n") != theirs["error"].endswith("\n"):
        diffs.append(f"trailing newline differs: {ours['error']!r} vs {theirs['error']!r}")
    return diffs


def row_differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """How a row (as ``row_to_json``) differs from the other language's row for the same job.

    Ids, queues and moments necessarily differ; everything that follows from the job and its
    outcome must not: the columns, their JSON kinds, states and counters, which timestamps are
    set and their text form, the order of the moments, ``attempted_by`` as ``[node, uuid]`` and
    the error entries.
    """
    if set(ours) != set(theirs):
        return [
            f"columns: extra {sorted(set(ours) - set(theirs))}, missing "
            f"{sorted(set(theirs) - set(ours))}"
        ]
    diffs = [
        f"{column}: {ours[column]!r} where the other side wrote {theirs[column]!r}"
        for column in ATTEMPT_COLUMNS
        if ours[column] != theirs[column] or kind(ours[column]) != kind(theirs[column])
    ]
    for column in TIMESTAMPS:
        mine, other = ours[column], theirs[column]
        if (mine is None) != (other is None):
            diffs.append(f"{column}: {mine!r} where the other side wrote {other!r}")
        elif mine is not None and not NAIVE_TIMESTAMP.match(mine):
            diffs.append(f"{column}: {mine!r} is not a naive timestamp like {other!r}")
    if not diffs:
        diffs += _order_differences(ours, theirs)
    by = ours["attempted_by"]
    if (by is None) != (theirs["attempted_by"] is None):
        diffs.append(f"attempted_by: {by!r} where the other side wrote {theirs['attempted_by']!r}")
    elif by is not None and not (
        isinstance(by, list) and len(by) == 2 and isinstance(by[0], str) and UUID4.match(by[1])
    ):
        diffs.append(f"attempted_by: {by!r} is not [node, uuid4]")
    if len(ours["errors"]) != len(theirs["errors"]):
        diffs.append(
            f"errors: {len(ours['errors'])} entries where the other side wrote "
            f"{len(theirs['errors'])}: {ours['errors']!r} vs {theirs['errors']!r}"
        )
    else:
        for n, (mine, other) in enumerate(zip(ours["errors"], theirs["errors"], strict=True)):
            diffs += [f"errors[{n}]: {d}" for d in error_entry_differences(mine, other)]
    return diffs


CLOCK_SKEW = timedelta(milliseconds=50)


def _order_differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The relative order of the moments (equal, before, after) must be the same."""

    def order(row: dict[str, Any], a: str, b: str) -> str:
        if row[a] is None or row[b] is None:
            return "unset"
        x, y = _moment(row[a]), _moment(row[b])
        if x == y:
            return "="
        # Moments written by two processes carry their clocks' skew (the BEAM keeps its own
        # system time, which can trail the OS clock by milliseconds): within that, either order.
        if abs(x - y) <= CLOCK_SKEW:
            return "~"
        return "<" if x < y else ">"

    diffs = []
    pairs = [(a, b) for i, a in enumerate(TIMESTAMPS) for b in TIMESTAMPS[i + 1 :]]
    for a, b in pairs:
        mine, other = order(ours, a, b), order(theirs, a, b)
        if "~" in (mine, other) and {mine, other} <= {"~", "<", ">"}:
            continue
        if mine != other:
            diffs.append(
                f"{a} {mine} {b} ({ours[a]} vs {ours[b]}), where the other side has "
                f"{a} {other} {b} ({theirs[a]} vs {theirs[b]})"
            )
    return diffs


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_same_row(ours: dict[str, Any], theirs: dict[str, Any], what: str = "row") -> None:
    """Fail with every difference between two rows for the same job, each named."""
    diffs = row_differences(ours, theirs)
    assert not diffs, f"{what} #{ours.get('id')} vs #{theirs.get('id')}:\n  " + "\n  ".join(diffs)


# A Python twin of Fixture.Echo ------------------------------------------------------------------
# Registered under the same worker name, so one job can run on either side and the two rows be
# compared column by column, and a queue can be served by both languages at once. It follows
# Fixture.Echo's args for the outcomes both languages have: `sleep` (ms) first, then the first of
# `raise`, `fail`, `error`, `cancel`, `discard`, `snooze` (+ `snooze_times`), `return`; and
# `backoff` (seconds). A value {"atom": name} stands for an atom. bridge is imported lazily so
# the colleague modules that only read golden data do not depend on the runtime.

ECHO = "Fixture.Echo"
ECHO_UNSUPPORTED = (
    "raise_argument",
    "error_exception",
    "throw",
    "exit",
    "badmatch",
    "return_etf",
    "timeout",
)


class EchoArgsError(ValueError):
    """Args that ask the twin for an outcome only Elixir has (throw, exit, ...)."""


def echo_term(value: Any) -> Any:
    from bridge.wire.atom import Atom

    if isinstance(value, dict) and set(value) == {"atom"} and isinstance(value["atom"], str):
        return Atom(value["atom"])
    return value


async def echo_mirror(job: Any) -> Any:
    import asyncio

    from bridge.jobs.client.outcome import Cancel, Discard, Error, Ok, Snooze

    args: dict[str, Any] = job.args
    unsupported = sorted(set(args) & set(ECHO_UNSUPPORTED))
    if unsupported:
        raise EchoArgsError(f"the Python twin of Fixture.Echo has no {unsupported}")
    if isinstance(args.get("sleep"), int):
        await asyncio.sleep(args["sleep"] / 1000)
    if "raise" in args:
        raise RuntimeError(args["raise"])
    if args.get("fail") is True:
        raise RuntimeError(f"echo failure on attempt {job.attempt}")
    if "error" in args:
        return Error(echo_term(args["error"]))
    if "cancel" in args:
        return Cancel(echo_term(args["cancel"]))
    if args.get("discard") is True:
        raise EchoArgsError("bare :discard has no Python outcome; give a reason")
    if "discard" in args:
        return Discard(echo_term(args["discard"]))
    if "snooze" in args and job.attempt <= args.get("snooze_times", 1):
        return Snooze(args["snooze"])
    if "return" in args:
        return Ok(echo_term(args["return"]))
    return None


def echo_backoff(job: Any) -> int:
    from bridge.wire.backoff import default_backoff

    seconds = job.args.get("backoff")
    if isinstance(seconds, int) and not isinstance(seconds, bool):
        return seconds
    return default_backoff(job.attempt, job.max_attempts)


def register_echo(registry: Any, *, recorded: bool = False) -> Any:
    """Register the twin in ``registry`` (a ``bridge.Registry``); returns its WorkerSpec."""
    from bridge.jobs.client.registry import WorkerSpec

    spec = WorkerSpec(
        name=ECHO,
        perform=echo_mirror,
        is_async=True,
        backoff=echo_backoff,
        recorded=recorded,
        target=echo_mirror,
    )
    return registry.register(spec)


def echo_registry(*, recorded: bool = False) -> Any:
    """A fresh registry holding only the twin."""
    from bridge.jobs.client.registry import Registry

    registry = Registry()
    register_echo(registry, recorded=recorded)
    return registry


# Waiting from async tests ---------------------------------------------------------------------
# A Python node runs on the test's event loop, so nothing may block it: fixture commands and
# database polls run in a thread while the node keeps working.


async def in_thread(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    import asyncio

    return await asyncio.to_thread(function, *args, **kwargs)


async def eventually(
    predicate: Callable[[], T | None], *, timeout: float = 15.0, what: str = "condition"
) -> T:
    """Poll a blocking ``predicate`` in a thread until it returns something truthy."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.03)


# What the BEAM saw ----------------------------------------------------------------------------
# Fixture.Echo with {"return": value, "record": true} stores the value it decoded as external term
# format in meta["return"]. It is read back with erlang-py, a decoder independent of bridge, so a
# fault in bridge.wire.term cannot hide a fault in how args travel.


def decode_recorded(text: str) -> Any:
    """meta["return"] (base64 ETF, padding stripped) as plain Python values."""
    import base64

    import erlang  # type: ignore[import-untyped]

    raw = base64.b64decode(text + "=" * (-len(text) % 4))
    return _from_erlang(erlang.binary_to_term(raw))


def _from_erlang(term: Any) -> Any:
    import erlang

    if isinstance(term, erlang.OtpErlangBinary):
        return term.value.decode("utf-8")
    if isinstance(term, erlang.OtpErlangAtom):
        name = term.value.decode("utf-8") if isinstance(term.value, bytes) else str(term.value)
        return None if name == "nil" else {"atom": name}
    if isinstance(term, bytes):  # STRING_EXT: a list of small integers
        return list(term)
    if isinstance(term, dict):
        return {_from_erlang(k): _from_erlang(v) for k, v in term.items()}
    if isinstance(term, list):
        return [_from_erlang(item) for item in term]
    if isinstance(term, tuple):
        return tuple(_from_erlang(item) for item in term)
    return term


def value_differences(sent: Any, seen: Any, path: str = "$") -> list[str]:
    """Where ``seen`` differs from ``sent`` in value or JSON kind (1 vs 1.0, True vs 1)."""
    if kind(sent) != kind(seen):
        return [f"{path}: sent {sent!r} ({kind(sent)}), the other side saw {seen!r} ({kind(seen)})"]
    if isinstance(sent, dict):
        diffs = [f"{path}: key {k!r} missing" for k in sent if k not in seen]
        diffs += [f"{path}: unexpected key {k!r}" for k in seen if k not in sent]
        for key in sent:
            if key in seen:
                diffs += value_differences(sent[key], seen[key], f"{path}.{key}")
        return diffs
    if isinstance(sent, list):
        if len(sent) != len(seen):
            return [f"{path}: {len(sent)} items sent, {len(seen)} seen: {seen!r}"]
        return [
            d
            for n, (a, b) in enumerate(zip(sent, seen, strict=True))
            for d in value_differences(a, b, f"{path}[{n}]")
        ]
    if sent != seen or (isinstance(sent, float) and str(sent) != str(seen)):
        return [f"{path}: sent {sent!r}, the other side saw {seen!r}"]
    return []
