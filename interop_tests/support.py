"""Golden data and shape checks shared by the interop tests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

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
