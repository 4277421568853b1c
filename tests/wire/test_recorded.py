"""Recorded output against a live BEAM doing what Oban Pro and Oban Web do.

The VM records each value the Pro way (term_to_binary, compressed or not, then Base64 without
padding); Python must read it and write the very same text. Python's envelopes go back to the
VM, which decodes them as Oban Web does (``Base.decode64!(…, padding: false)`` then
``binary_to_term(…, [:safe])``) and compares them with Elixir literals.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from bridge.wire.recorded import (
    RECORDED_LIMIT,
    NotRecordedError,
    RecordedEncodingError,
    RecordedTooLargeError,
    RecordingMissingError,
    decode_recorded,
    decode_recorded_value,
    encode_recorded,
    encode_recorded_value,
    is_recorded,
)
from bridge.wire.term import (
    Atom,
    CompressionError,
    TermDecodeError,
    TruncatedTermError,
    encode,
    order_key,
)
from tests.support.beam import run_elixir

A = Atom

# (Python value, Elixir literal): what a worker on either side might return.
VALUES: list[tuple[Any, str]] = [
    (
        {"score": 0.93, "metrics": {"p50": 12, "p99": 340}},
        '%{"score" => 0.93, "metrics" => %{"p50" => 12, "p99" => 340}}',
    ),
    ((A("ok"), {A("id"): 1, A("name"): "oban"}), '{:ok, %{id: 1, name: "oban"}}'),
    ("string", '"string"'),
    (123, "123"),
    (None, "nil"),
    ([1, 2, 3], "[1, 2, 3]"),
    ([(A("a"), 1), (A("b"), 2)], "[a: 1, b: 2]"),
    ("lorem ipsum " * 500, 'String.duplicate("lorem ipsum ", 500)'),
    (
        [{"id": i, "tags": ["x", "y"], "ok": i % 2 == 0} for i in range(200)],
        '(for i <- 0..199, do: %{"id" => i, "tags" => ["x", "y"], "ok" => rem(i, 2) == 0})',
    ),
    (
        {A("status"): A("done"), A("count"): 2**70, A("ratio"): -1.5e-10},
        "%{status: :done, count: 1180591620717411303424, ratio: -1.5e-10}",
    ),
    (b"\x00\xff\xfe", "<<0, 255, 254>>"),
    (
        {"日本": "héllo", "empty": "", "list": []},
        '%{"日本" => "héllo", "empty" => "", "list" => []}',
    ),
]

ELIXIR = r"""
values = LITERALS
for {v, i} <- Enum.with_index(values) do
  compressed = Base.encode64(:erlang.term_to_binary(v, [:compressed]), padding: false)
  plain = Base.encode64(:erlang.term_to_binary(v), padding: false)
  IO.puts("V #{i} #{compressed} #{plain}")
end

for line <- String.split(IO.read(:stdio, :eof), "\n", trim: true) do
  [i, text] = String.split(line, " ")
  term = text |> Base.decode64!(padding: false) |> :erlang.binary_to_term([:safe])
  IO.puts("E #{i} #{term === Enum.at(values, String.to_integer(i))}")
end
"""


class VmRecorded:
    def __init__(self) -> None:
        lines = []
        for i, (value, _) in enumerate(VALUES):
            lines.append(f"{i} {encode_recorded(value)['return']}")
            lines.append(f"{i} {encode_recorded(value, compressed=False)['return']}")
        code = ELIXIR.replace("LITERALS", "[" + ", ".join(lit for _, lit in VALUES) + "]")
        out = run_elixir(code, stdin="\n".join(lines).encode() + b"\n").decode()
        self.recorded: dict[int, tuple[str, str]] = {}
        self.equal: list[tuple[int, bool]] = []
        for line in out.splitlines():
            parts = line.split(" ")
            if parts[0] == "V":
                self.recorded[int(parts[1])] = (parts[2], parts[3])
            elif parts[0] == "E":
                self.equal.append((int(parts[1]), parts[2] == "true"))


@pytest.fixture(scope="module")
def vm() -> VmRecorded:
    return VmRecorded()


def test_python_reads_what_the_vm_recorded(vm: VmRecorded) -> None:
    assert len(vm.recorded) == len(VALUES)
    for i, (value, _) in enumerate(VALUES):
        for text in vm.recorded[i]:
            got = decode_recorded({"recorded": True, "return": text})
            assert got == value
            assert order_key(got) == order_key(value)


def test_python_writes_the_vms_text(vm: VmRecorded) -> None:
    for i, (value, _) in enumerate(VALUES):
        compressed, plain = vm.recorded[i]
        assert encode_recorded(value) == {"recorded": True, "return": compressed}
        assert encode_recorded_value(value, compressed=False) == plain
    # The large values really exercised compression (tag 80), the small ones did not.
    tags = {base64.b64decode(vm.recorded[i][0] + "==")[1] for i in range(len(VALUES))}
    assert 80 in tags and len(tags) > 1


def test_vm_decodes_python_records_safely(vm: VmRecorded) -> None:
    assert vm.equal == [(i, True) for i in range(len(VALUES)) for _ in range(2)]


def test_reads_oban_for_python_records() -> None:
    # Written by Oban for Python (erlpack 1.0.1, uncompressed, SMALL_ATOM_EXT atoms).
    text = (
        "g3QAAAAFbQAAAAVjb3VudGEqbQAAAAJva3MEdHJ1ZW0AAAAEbm9uZXMDbmlsbQAAAAVpdGVtc2wAAAADYQFhAmEDam0"
        "AAAAEbmFtZW0AAAAGaMOpbGxv"
    )
    value = decode_recorded({"recorded": True, "return": text})
    assert value == {"count": 42, "ok": True, "none": None, "items": [1, 2, 3], "name": "héllo"}


def test_limit_counts_the_base64_text() -> None:
    value = {"blob": bytes(range(256)) * 10}
    size = len(encode_recorded_value(value))
    assert encode_recorded_value(value, limit=size)
    with pytest.raises(RecordedTooLargeError) as err:
        encode_recorded(value, limit=size - 1)
    assert (err.value.size, err.value.limit) == (size, size - 1)
    assert str(size) in str(err.value)
    assert RECORDED_LIMIT == 64_000_000
    text = encode_recorded_value(value)
    with pytest.raises(RecordedTooLargeError):
        decode_recorded_value(text, limit=size - 1)
    assert decode_recorded_value(text, limit=size) == value


def test_envelope_errors() -> None:
    assert not is_recorded({})
    assert is_recorded({"recorded": True})
    with pytest.raises(NotRecordedError):
        decode_recorded({"return": encode_recorded_value(1)})
    with pytest.raises(NotRecordedError):
        decode_recorded({"recorded": "true", "return": encode_recorded_value(1)})
    with pytest.raises(RecordingMissingError):
        decode_recorded({"recorded": True})
    for bad in ("not base64!", "abcde", "g3Q=AAAA", 12, "ünï"):
        with pytest.raises(RecordedEncodingError):
            decode_recorded({"recorded": True, "return": bad})


def test_broken_terms_raise_term_errors() -> None:
    good = encode_recorded_value("x" * 500)
    raw = base64.b64decode(good + "=" * (-len(good) % 4))
    assert raw[1] == 80
    corrupt = raw[:10] + bytes([raw[10] ^ 0xFF]) + raw[11:]
    with pytest.raises(CompressionError):
        decode_recorded_value(base64.b64encode(corrupt).decode())
    with pytest.raises(TruncatedTermError):
        decode_recorded_value(base64.b64encode(encode([1, 2])[:-2]).decode())
    with pytest.raises(TermDecodeError):
        decode_recorded_value(base64.b64encode(b"\x83\x01").decode())


def test_padded_text_is_accepted_too() -> None:
    padded = base64.b64encode(encode({"a": 1})).decode()
    assert padded.endswith("=")
    assert decode_recorded_value(padded) == {"a": 1}
