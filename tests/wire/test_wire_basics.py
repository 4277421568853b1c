"""Notification payloads, error entries, inspect and backoff against the genuine stack and a
live BEAM."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.wire import backoff, errors, notify
from bridge.wire.atom import Atom
from bridge.wire.inspect import format_float, inspect
from tests.support.beam import run_elixir

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden"


def golden_payloads() -> list[tuple[str, str]]:
    out = []
    for name in (
        "elixir-notifications.jsonl",
        "elixir-notifications-2.jsonl",
        "cancel-job/s9_notify.jsonl",
        "peers-and-leader/s8_notify.jsonl",
    ):
        for line in (GOLDEN / name).read_text().splitlines():
            record = json.loads(line)
            if "payload" in record:
                out.append((record["channel"], record["payload"]))
    return out


def test_every_golden_payload_decodes_and_short_ones_reencode_byte_for_byte() -> None:
    payloads = golden_payloads()
    assert len(payloads) > 40
    for channel, raw in payloads:
        decoded = notify.decode(raw)
        assert isinstance(decoded, dict) and decoded, channel
        if not raw.startswith("Z:"):
            assert notify.encode(decoded) == raw, raw
    gossip = [raw for _, raw in payloads if raw.startswith("Z:")]
    assert gossip and notify.decode(gossip[0])["queue"] == "elixir"


def test_long_payloads_use_the_legacy_form_every_version_reads() -> None:
    payload = {"queue": "q", "running": list(range(300))}
    raw = notify.encode(payload)
    assert raw.startswith("H4sI")
    assert json.loads(gzip.decompress(base64.b64decode(raw))) == payload
    assert notify.decode(notify.encode(payload, form="z")) == payload


@pytest.fixture(scope="module")
def vm_vectors() -> dict[str, object]:
    """One VM run: gzip payloads made by the VM, ours decoded by the VM, inspect outputs."""
    ours = notify.encode({"queue": "x", "running": list(range(200))})
    code = rf"""
    json = ~s({{"action":"pause","ident":"any","queue":"é"}})
    IO.puts("GZ " <> Base.encode64(:zlib.gzip(json)))
    IO.puts("OURS " <> :zlib.gunzip(Base.decode64!("{ours}")))
    for f <- [1.0e20, 1.0e15, 1.0e16, 0.0001, 1.0e-5, 123.456, -0.0, 2.5, 1.2345678901234567e16] do
      IO.puts("F " <> inspect(f))
    end
    IO.puts("I " <> inspect({{:error, %{{"b" => 1, "a" => [1, nil, true, 2.5]}}}}))
    IO.puts("I " <> inspect({{:cancel, "quote\" back\\ nl\n tab\t \#{{x}} é"}}))
    IO.puts("I " <> inspect({{:error, %{{"s" => {{1, :two}}, ok: :yes}}}}))
    IO.puts("I " <> inspect({{:discard, :"needs quotes"}}))
    IO.puts("I " <> inspect({{:error, <<1, 2, 255>>}}))
    """
    lines = run_elixir(code).decode().splitlines()
    return {
        "gz": next(line[3:] for line in lines if line.startswith("GZ ")),
        "ours": next(line[5:] for line in lines if line.startswith("OURS ")),
        "floats": [line[2:] for line in lines if line.startswith("F ")],
        "inspect": [line[2:] for line in lines if line.startswith("I ")],
    }


def test_vm_payloads_and_ours_cross(vm_vectors: dict[str, object]) -> None:
    assert notify.decode(str(vm_vectors["gz"])) == {"action": "pause", "ident": "any", "queue": "é"}
    assert json.loads(str(vm_vectors["ours"])) == {"queue": "x", "running": list(range(200))}


def test_inspect_matches_the_vm(vm_vectors: dict[str, object]) -> None:
    floats = [1.0e20, 1.0e15, 1.0e16, 0.0001, 1.0e-5, 123.456, -0.0, 2.5, 1.2345678901234567e16]
    assert [format_float(f) for f in floats] == vm_vectors["floats"]
    ours = [
        inspect((Atom("error"), {"b": 1, "a": [1, None, True, 2.5]})),
        inspect((Atom("cancel"), 'quote" back\\ nl\n tab\t #{x} é')),
        inspect((Atom("error"), {Atom("ok"): Atom("yes"), "s": (1, Atom("two"))})),
        inspect((Atom("discard"), Atom("needs quotes"))),
        inspect((Atom("error"), b"\x01\x02\xff")),
    ]
    assert ours == vm_vectors["inspect"]


def golden_errors(path: str) -> list[str]:
    texts = []
    for line in (GOLDEN / path).read_text().splitlines():
        for entry in json.loads(line)["errors"]:
            texts.append(entry["error"])
    return texts


def test_result_entries_equal_the_golden_texts() -> None:
    texts = golden_errors("error-entries/s6_oban_jobs.jsonl")
    at = datetime(2026, 11, 23, 1, 5, 49, 860533)
    worker = "Realstack.ErrorWorker"
    ours = [
        errors.result_entry(worker, "error", Atom("atom_reason"), 1, at)["error"],
        errors.result_entry(worker, "error", {"a": 1}, 1, at)["error"],
        errors.result_entry(worker, "error", RuntimeError("x"), 1, at)["error"],
        errors.result_entry(worker, "error", "plain string reason", 1, at)["error"],
        errors.result_entry(worker, "discard", "reason", 1, at)["error"],
        errors.result_entry(worker, "cancel", "cancel reason", 1, at)["error"],
    ]
    for text in ours:
        assert text in texts
    entry = errors.result_entry(worker, "error", Atom("atom_reason"), 1, at)
    assert entry == {"attempt": 1, "at": "2026-11-23T01:05:49.860533Z", "error": ours[0]}


def test_timeout_and_shutdown_entries_equal_the_golden_texts() -> None:
    at = datetime(2026, 1, 1)
    timeouts = golden_errors("timeout/s5_oban_jobs.jsonl")
    worker = re.match(r"\*\* \(Oban.TimeoutError\) (\S+) timed out after (\d+)ms", timeouts[0])
    assert worker is not None
    ours = errors.timeout_entry(worker.group(1), int(worker.group(2)), 1, at)["error"]
    assert ours == timeouts[0]
    cancelled = golden_errors("cancel-job/s9_oban_jobs.jsonl")
    shutdown = errors.result_entry("RealStack.Slow", "cancel", Atom("shutdown"), 1, at)["error"]
    assert any(t.endswith("failed with {:cancel, :shutdown}") for t in cancelled)
    assert shutdown.endswith("failed with {:cancel, :shutdown}")


def test_python_exception_entry_has_elixirs_layout() -> None:
    def inner() -> None:
        raise ValueError("first line\nsecond line")

    try:
        inner()
    except ValueError as exc:
        text = errors.exception_entry(exc, 2, datetime(2026, 1, 1))["error"]
    lines = text.split("\n")
    assert lines[:2] == ["** (ValueError) first line", "second line"]
    # Frames innermost first, four-space indent, "(package) file:line: module.function".
    assert re.fullmatch(
        r"    \(tests\) .*test_wire_basics\.py:\d+: tests\.wire\.test_wire_basics"
        r"\.inner",
        lines[2],
    )
    assert text.endswith("\n")
    golden = golden_errors("error-entries/s6_oban_jobs.jsonl")
    multi = next(t for t in golden if t.startswith("** (RuntimeError) first line"))
    assert re.fullmatch(r"    \([a-z_]+ [\d.]+\) \S+:\d+: \S+", multi.split("\n")[3])


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "H4sIAAAA",
        "Z:not base64!",
        "Z:" + base64.b64encode(b"not gzip").decode(),
        "nope",
        "[1, 2]",
        "Z:" + base64.b64encode(gzip.compress(b"[1]")).decode(),
    ],
)
def test_garbage_payloads_raise_a_typed_error(garbage: str) -> None:
    with pytest.raises(notify.NotificationDecodeError):
        notify.decode(garbage)


def test_gzip_bombs_are_refused() -> None:
    bomb = base64.b64encode(gzip.compress(b"{" + b" " * (notify.MAX_INFLATED + 10) + b"}"))
    with pytest.raises(notify.BadCompressionError, match="inflates beyond"):
        notify.decode(bomb.decode())


@given(st.text(max_size=200))
def test_decode_never_crashes(raw: str) -> None:
    with contextlib.suppress(notify.NotificationDecodeError):
        notify.decode(raw)


def test_backoff_is_obans_formula() -> None:
    # No jitter (rand = 0): 15 + 2^attempt; with max_attempts > 20, attempts scale to 20 steps.
    assert [backoff.default_backoff(a, 20, rand=lambda: 0.0) for a in (1, 2, 5, 10)] == [
        17,
        19,
        47,
        1039,
    ]
    assert backoff.default_backoff(1, 40, rand=lambda: 0.0) == 17  # round(0.5) = 1, not 0
    assert backoff.default_backoff(3, 40, rand=lambda: 0.0) == 15 + 4  # round(1.5) = 2
    assert backoff.default_backoff(200, 20, rand=lambda: 0.0) == 15 + 2**100
    # Jitter :inc adds trunc(rand * 0.1 * value).
    assert backoff.default_backoff(1, 20, rand=lambda: 0.99) == 17 + 1
    assert backoff.default_backoff(10, 20, rand=lambda: 0.5) == 1039 + 51


@given(st.integers(1, 200), st.integers(1, 200), st.floats(0, 0.9999))
def test_backoff_bounds(attempt: int, max_attempts: int, r: float) -> None:
    base = backoff.exponential(backoff.clamped_attempt(attempt, max_attempts))
    value = backoff.default_backoff(attempt, max_attempts, rand=lambda: r)
    assert base <= value <= base * 1.1


def test_notification_integers_beyond_64_bits_round_trip_exactly() -> None:
    """Jason writes any integer; orjson refuses to write one beyond 64 bits and reads it back
    as a float. Both ways must keep it an integer, with the bytes Jason writes."""
    payload = {"job_id": 2**70, "small": -(2**64) - 1, "queue": "q"}
    text = notify.encode(payload, form="plain")
    assert text == '{"job_id":1180591620717411303424,"queue":"q","small":-18446744073709551617}'
    decoded = notify.decode(text)
    assert decoded == payload
    assert all(type(decoded[k]) is int for k in ("job_id", "small"))
