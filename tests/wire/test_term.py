"""The term codec against a live BEAM, both ways, plus bad input and fuzzing.

One ``elixir`` run per module: it decodes and re-encodes the terms Python made (sent on stdin),
checks some of them against Elixir literals, and prints a seeded random batch of its own terms
with several ``term_to_binary`` option sets. Python must reproduce every byte.
"""

from __future__ import annotations

import base64
import contextlib
import math
import random
import struct
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.wire.term import (
    Atom,
    AtomEncodingError,
    AtomTooLongError,
    BitBinary,
    CompressionError,
    DeclaredLengthError,
    Export,
    Fun,
    ImproperList,
    InflatedSizeError,
    InvalidTermError,
    NestingTooDeepError,
    Pid,
    Port,
    Reference,
    TermDecodeError,
    TermEncodeError,
    TermMap,
    TrailingDataError,
    TruncatedTermError,
    UnknownTagError,
    VersionError,
    decode,
    encode,
    order_key,
)
from tests.support.beam import run_elixir
from tests.support.terms import small_maps_only

VM_RANDOM_TERMS = 800
PY_RANDOM_TERMS = 300

# Option sets: name -> (Elixir term_to_binary options, Python encode keywords).
OPTION_SETS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("[]", {}),
    "compressed": ("[:compressed]", {"compressed": True}),
    "compressed9": ("[compressed: 9]", {"compressed": 9}),
    "compressed1": ("[compressed: 1]", {"compressed": 1}),
    "minor2": ("[minor_version: 2]", {"minor_version": 2}),
    "minor0": ("[minor_version: 0]", {"minor_version": 0}),
}

# (Python value, the Elixir literal it must decode to in the VM, compared with ===).
LITERAL_PAIRS: list[tuple[Any, str]] = [
    (None, "nil"),
    (True, "true"),
    ([1, 2.5, None, False], "[1, 2.5, nil, false]"),
    ({"a": 1, "b": [1, 2, 3]}, '%{"a" => 1, "b" => [1, 2, 3]}'),
    ({Atom("status"): Atom("ok"), Atom("count"): 3}, "%{status: :ok, count: 3}"),
    ((Atom("ok"), "done"), '{:ok, "done"}'),
    ("héllo 日本", '"héllo 日本"'),
    (b"\xff\x00", "<<255, 0>>"),
    ([104, 105], "'hi'"),
    (ImproperList([1, 2], Atom("t")), "[1, 2 | :t]"),
    (BitBinary(b"\x01\xa0", 3), "<<1, 5::3>>"),
    (-(2**100), "-1267650600228229401496703205376"),
    (2**31, "2147483648"),
    (-0.0, "-0.0"),
    (1.0e308, "1.0e308"),
    (Atom("日本"), ':"日本"'),
    (Atom("héllo"), ':"héllo"'),
    (
        TermMap([(1, Atom("a")), (1.0, Atom("b")), (True, Atom("c"))]),
        "%{1 => :a, 1.0 => :b, true => :c}",
    ),
    (TermMap([([1], 1), ({}, 2)]), "%{[1] => 1, %{} => 2}"),
    ({i: i for i in range(40)}, "Map.new(0..39, &{&1, &1})"),
    (Export(Atom("Elixir.Enum"), Atom("map"), 2), "&Enum.map/2"),
    ({Atom("__struct__"): Atom("Elixir.URI"), Atom("host"): "x"}, '%{__struct__: URI, host: "x"}'),
    ((), "{}"),
    (tuple(range(300)), "List.to_tuple(Enum.to_list(0..299))"),
]

ELIXIR = r"""
import Bitwise

defmodule Gen do
  @atoms [nil, true, false, :ok, :error, :"", :"héllo", :"日本", :a, :b, :zeta, :Elixir,
          :"with space", String.to_atom(String.duplicate("é", 255)),
          String.to_atom(String.duplicate("日", 255)), String.to_atom(String.duplicate("a", 255)),
          String.to_atom(String.duplicate("日", 85))]

  def pick(list), do: Enum.at(list, :rand.uniform(length(list)) - 1)

  def text do
    len = :rand.uniform(30) - 1
    for _ <- 1..len//1, into: "" do
      case :rand.uniform(4) do
        1 -> <<(:rand.uniform(95) + 31)::utf8>>
        2 -> <<(:rand.uniform(0x2FF) + 0x7F)::utf8>>
        3 -> <<(:rand.uniform(0x5000) + 0x4E00)::utf8>>
        4 -> <<(:rand.uniform(0x1000) + 0x1F300)::utf8>>
      end
    end
  end

  def bitstring do
    bits = :rand.uniform(7)
    head = :crypto.strong_rand_bytes(:rand.uniform(5) - 1)
    <<head::binary, :rand.uniform(1 <<< bits) - 1::size(bits)>>
  end

  def scalar do
    case :rand.uniform(17) do
      1 -> :rand.uniform(256) - 1
      2 -> :rand.uniform(1 <<< 33) - (1 <<< 32)
      3 -> (:rand.uniform(2) * 2 - 3) * :rand.uniform(1 <<< pick([64, 200, 2100]))
      4 -> :rand.normal() * :math.pow(10, :rand.uniform(600) - 300)
      5 -> pick([0.0, -0.0, 1.0, -1.5, 1.0e308, 5.0e-324, 2.2250738585072014e-308, 0.1,
                 1.0e15, 1.0e16])
      6 -> pick(@atoms)
      7 -> text()
      8 -> :crypto.strong_rand_bytes(:rand.uniform(40))
      9 -> bitstring()
      10 -> ""
      11 -> pick([255, 256, -1, 2147483647, 2147483648, -2147483648, -2147483649,
                 1 <<< 64, -(1 <<< 64), (1 <<< 2040) - 1, 1 <<< 2040, -(1 <<< 2040)])
      12 -> String.to_atom("k" <> Integer.to_string(:rand.uniform(50)))
      13 -> :binary.copy(pick(["a", "ab", "日本"]), :rand.uniform(100))
      14 -> pick([self(), make_ref(), hd(Port.list()), &Enum.map/2, &:erlang.phash2/1])
      15 -> :rand.uniform(1000) * 1.0
      16 -> -(:rand.uniform(1000))
      17 -> pick([~U[2024-01-02 03:04:05.123456Z], ~D[2024-01-02], ~N[2024-01-02 03:04:05], 1..5])
    end
  end

  def edge_cases do
    [List.duplicate(7, 65535), List.duplicate(7, 65536), Enum.to_list(0..300),
     Tuple.duplicate(:x, 256), :binary.copy("a", 14), :binary.copy("a", 15),
     :binary.copy("ab", 5000), Map.new(1..100, &{&1, &1}), Map.new(1..33, &{"k#{&1}", &1})]
  end

  def key(0), do: scalar()
  def key(d) do
    case :rand.uniform(8) do
      1 -> {scalar(), scalar()}
      2 -> [scalar()]
      3 -> %{scalar() => scalar()}
      4 -> [scalar() | scalar()]
      _ -> scalar()
    end
    |> then(fn k -> if d > 1 and :rand.uniform(4) == 1, do: {k, key(d - 1)}, else: k end)
  end

  def term(0), do: scalar()
  def term(d) do
    case :rand.uniform(14) do
      n when n <= 4 -> scalar()
      5 -> for _ <- 1..(:rand.uniform(7) - 1)//1, do: term(d - 1)
      6 -> List.to_tuple(for _ <- 1..(:rand.uniform(6) - 1)//1, do: term(d - 1))
      7 -> Map.new(1..(:rand.uniform(9) - 1)//1, fn _ -> {key(d), term(d - 1)} end)
      8 -> Map.new(1..(:rand.uniform(12))//1, fn _ -> {text(), term(d - 1)} end)
      9 -> Map.new(1..(:rand.uniform(12))//1, fn _ -> {pick(@atoms), term(d - 1)} end)
      10 -> for _ <- 1..:rand.uniform(20)//1, do: :rand.uniform(256) - 1
      11 -> [term(d - 1) | [term(d - 1) | scalar()]]
      12 -> Map.new(1..(32 + :rand.uniform(20)), fn _ -> {key(1), scalar()} end)
      13 -> Enum.map(1..:rand.uniform(5), fn _ -> {pick([:a, :b, :opt]), term(d - 1)} end)
      14 -> pick([fn x -> x end, %{1 => :a, 1.0 => :b, true => :c}, %{[1] => 1, %{} => 2},
                 %{"a" => 1, a: 2}, MapSet.new([1, 2, 3]), [[]], [1 | 2], [1, 2 | "t"]])
    end
  end
end

opts = %{OPTS}

input = IO.read(:stdio, :eof)
for line <- String.split(input, "\n", trim: true) do
  [kind, idx, b64] = String.split(line, " ")
  term = :erlang.binary_to_term(Base.decode64!(b64))
  case kind do
    "eq" ->
      expected = Enum.at(LITERALS, String.to_integer(idx))
      IO.puts("E #{idx} #{term === expected}")
    _ ->
      again = :erlang.term_to_binary(term, Map.fetch!(opts, kind))
      IO.puts("R #{kind} #{idx} " <> Base.encode64(again))
  end
end

:rand.seed(:exsss, {7, 11, 13})
terms = Gen.edge_cases() ++ for _ <- 1..VM_TERMS, do: Gen.term(:rand.uniform(4))
for {t, i} <- Enum.with_index(terms) do
  encoded = for {name, o} <- opts, do: name <> "=" <> Base.encode64(:erlang.term_to_binary(t, o))
  IO.puts(Enum.join(["V", Integer.to_string(i) | encoded], " "))
end
"""


def _elixir_program() -> str:
    opts = ", ".join(f'"{name}" => {ex}' for name, (ex, _) in OPTION_SETS.items())
    literals = "[" + ", ".join(lit for _, lit in LITERAL_PAIRS) + "]"
    return (
        ELIXIR.replace("%{OPTS}", "%{" + opts + "}")
        .replace("LITERALS", literals)
        .replace("VM_TERMS", str(VM_RANDOM_TERMS))
    )


def _py_scalar(rng: random.Random) -> Any:
    roll = rng.randrange(14)
    if roll == 0:
        return rng.randrange(256)
    if roll == 1:
        return rng.randrange(-(2**33), 2**33)
    if roll == 2:
        return rng.choice([-1, 1]) * rng.getrandbits(rng.randrange(1, 2200))
    if roll == 3:
        return rng.choice([0.0, -0.0, 1.5, 1e308, 5e-324, 0.1, 1e16, -2.5e-300, 123456.789])
    if roll == 4:
        return rng.gauss(0, 1) * 10.0 ** rng.randrange(-300, 300)
    if roll == 5:
        return rng.choice([None, True, False, Atom("ok"), Atom(""), Atom("日本"), Atom("é" * 255)])
    if roll == 6:
        return "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x4E00, 0x9FFF)]))
            for _ in range(rng.randrange(30))
        )
    if roll == 7:
        return rng.randbytes(rng.randrange(40))
    if roll == 8:
        return BitBinary(rng.randbytes(rng.randrange(1, 5)), rng.randrange(1, 8))
    if roll == 9:
        return Atom("k" + str(rng.randrange(60)))
    if roll == 10:
        return rng.choice([255, 256, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**2040, -(2**2040)])
    if roll == 11:
        return "ab" * rng.randrange(1, 3000)
    if roll == 12:
        return rng.choice(
            [
                Pid(Atom("nonode@nohost"), 77, 0, 0),
                Reference(Atom("nonode@nohost"), 0, (1, 2, 3)),
                Port(Atom("nonode@nohost"), 3, 0),
                Export(Atom("Elixir.Enum"), Atom("map"), 2),
            ]
        )
    return float(rng.randrange(-1000, 1000))


def _py_key(rng: random.Random) -> Any:
    roll = rng.randrange(6)
    if roll == 0:
        return (_py_scalar(rng), _py_scalar(rng))
    if roll == 1:
        return ImproperList([_py_scalar(rng)], Atom("t"))
    return _py_scalar(rng)


def _py_term(rng: random.Random, depth: int) -> Any:
    if depth == 0:
        return _py_scalar(rng)
    roll = rng.randrange(11)
    if roll <= 3:
        return _py_scalar(rng)
    if roll == 4:
        return [_py_term(rng, depth - 1) for _ in range(rng.randrange(7))]
    if roll == 5:
        return tuple(_py_term(rng, depth - 1) for _ in range(rng.randrange(6)))
    if roll == 6:
        pairs: dict[Any, Any] = {}
        for _ in range(rng.randrange(9)):
            key = _py_key(rng)
            if isinstance(key, bytes):  # b"x" and "x" are one Erlang key
                key = key.hex()
            pairs[key] = _py_term(rng, depth - 1)
        return pairs
    if roll == 7:
        return {
            _py_scalar(rng) if rng.random() < 0.3 else str(i): _py_scalar(rng) for i in range(12)
        }
    if roll == 8:
        return [rng.randrange(256) for _ in range(rng.randrange(1, 20))]
    if roll == 9:
        return ImproperList([_py_term(rng, depth - 1)], _py_scalar(rng) or 1)
    return {
        Atom(rng.choice("abcdefgh") * rng.randrange(1, 4)): _py_term(rng, depth - 1)
        for _ in range(5)
    }


def _python_terms() -> list[Any]:
    rng = random.Random(20240611)
    terms = [_py_term(rng, rng.randrange(1, 5)) for _ in range(PY_RANDOM_TERMS)]
    terms.append({str(i): i for i in range(100)})  # a large map: compared by structure
    terms.append({(i, Atom("k")): [i] for i in range(40)})
    return terms


class VmRun:
    def __init__(self) -> None:
        self.py_terms = _python_terms()
        lines: list[str] = []
        self.sent: dict[tuple[str, int], bytes] = {}
        for i, term in enumerate(self.py_terms):
            for name, (_, kwargs) in OPTION_SETS.items():
                data = encode(term, **kwargs)
                self.sent[(name, i)] = data
                lines.append(f"{name} {i} {base64.b64encode(data).decode()}")
        for i, (term, _) in enumerate(LITERAL_PAIRS):
            lines.append(f"eq {i} {base64.b64encode(encode(term)).decode()}")
        out = run_elixir(_elixir_program(), stdin="\n".join(lines).encode() + b"\n")
        self.reencoded: dict[tuple[str, int], bytes] = {}
        self.literal_equal: dict[int, bool] = {}
        self.vm_terms: list[dict[str, bytes]] = []
        for line in out.decode().splitlines():
            parts = line.split(" ")
            if parts[0] == "R":
                self.reencoded[(parts[1], int(parts[2]))] = base64.b64decode(parts[3])
            elif parts[0] == "E":
                self.literal_equal[int(parts[1])] = parts[2] == "true"
            elif parts[0] == "V":
                variants = dict(p.split("=", 1) for p in parts[2:])
                self.vm_terms.append({k: base64.b64decode(v) for k, v in variants.items()})


@pytest.fixture(scope="module")
def vm() -> VmRun:
    return VmRun()


# --- the VM's bytes, reproduced -------------------------------------------------------------


def test_vm_batch_is_complete(vm: VmRun) -> None:
    assert len(vm.vm_terms) == VM_RANDOM_TERMS + 9
    assert all(set(v) == set(OPTION_SETS) for v in vm.vm_terms)


@pytest.mark.parametrize("option_set", list(OPTION_SETS))
def test_vm_terms_reencode_to_the_same_bytes(vm: VmRun, option_set: str) -> None:
    """Each variant re-encodes to itself, and (a fun aside, kept raw) decodes to the same term
    as the plain variant."""
    kwargs = OPTION_SETS[option_set][1]
    mismatches = []
    for i, variants in enumerate(vm.vm_terms):
        data = variants[option_set]
        value = decode(data)
        if encode(value, **kwargs) != data:
            mismatches.append((i, "self", data[:60]))
        elif (
            option_set != "plain"
            and encode(value) != variants["plain"]
            and not _contains_fun(value)
        ):
            mismatches.append((i, "plain", data[:60]))
    assert mismatches == []


def _shuffled(term: Any, rng: random.Random) -> Any:
    """The same term with every small map rebuilt in a random insertion order."""
    if isinstance(term, dict):
        pairs = [(_shuffled(k, rng), _shuffled(v, rng)) for k, v in term.items()]
        if len(pairs) <= 32:
            rng.shuffle(pairs)
        return dict(pairs)
    if isinstance(term, list):
        return [_shuffled(x, rng) for x in term]
    if isinstance(term, tuple):
        return tuple(_shuffled(x, rng) for x in term)
    return term


def test_small_map_order_does_not_depend_on_insertion(vm: VmRun) -> None:
    rng = random.Random(5)
    for variants in vm.vm_terms:
        data = variants["plain"]
        assert encode(_shuffled(decode(data), rng)) == data


def _subterms(term: Any) -> list[Any]:
    found = []
    stack = [term]
    while stack:
        t = stack.pop()
        found.append(t)
        if isinstance(t, dict | TermMap):
            stack.extend(t.keys())
            stack.extend(t.values())
        elif isinstance(t, list | tuple):
            stack.extend(t)
        elif isinstance(t, ImproperList):
            stack.extend(t.items)
            stack.append(t.tail)
    return found


def _contains_fun(term: Any) -> bool:
    return any(isinstance(t, Fun) for t in _subterms(term))


def test_vm_batch_covers_the_format(vm: VmRun) -> None:
    """The random batch is only evidence if it holds every tag we claim to write."""
    seen: set[int] = set()
    for i, variants in enumerate(vm.vm_terms):
        seen.update(_tags(variants["plain"], 1))
        seen.add(variants["compressed"][1])
        if i < 100:  # only atoms and floats change tag with the minor version
            seen.update(_tags(variants["minor2"], 2) | _tags(variants["minor0"], 0))
    expected = set(b"abdFhijklmMnopqtwvXYZcP")
    assert expected <= seen, sorted(expected - seen)


def _tags(data: bytes, minor_version: int) -> set[int]:
    """The tag of every sub-term: scalars as our encoder writes them (bytes proven equal to the
    VM's above), containers by the rule the VM follows."""
    found: set[int] = set()
    stack = [decode(data)]
    while stack:
        t = stack.pop()
        if isinstance(t, dict | TermMap):
            found.add(116)
            stack.extend(t.keys())
            stack.extend(t.values())
        elif isinstance(t, tuple):
            found.add(104 if len(t) < 256 else 105)
            stack.extend(t)
        elif isinstance(t, list):
            if not t:
                found.add(106)
            elif len(t) < 65536 and all(type(x) is int and 0 <= x <= 255 for x in t):
                found.add(107)
            else:
                found.add(108)
                stack.extend(t)
        elif isinstance(t, ImproperList):
            found.add(108)
            stack.extend(t.items)
            stack.append(t.tail)
        else:
            found.add(encode(t, minor_version=minor_version)[1])
    return found


def test_vm_accepts_python_bytes_and_writes_them_back_identically(vm: VmRun) -> None:
    mismatches = []
    structural = 0
    for (name, i), sent in vm.sent.items():
        back = vm.reencoded[(name, i)]
        if small_maps_only(vm.py_terms[i]):
            if back != sent:
                mismatches.append((name, i, sent[:60], back[:60]))
        else:  # the VM writes large maps in its hash order: compare the terms instead
            structural += 1
            assert order_key(decode(back)) == order_key(decode(sent))
    assert mismatches == []
    assert structural >= len(OPTION_SETS) * 2


def test_python_values_decode_to_the_elixir_literals(vm: VmRun) -> None:
    assert vm.literal_equal == {i: True for i in range(len(LITERAL_PAIRS))}


# --- specific behaviour ---------------------------------------------------------------------


def test_default_mapping() -> None:
    value = decode(
        encode({Atom("name"): "oban", Atom("ok"): True, Atom("n"): None, "raw": b"\xff"})
    )
    assert value == {"name": "oban", "ok": True, "n": None, "raw": b"\xff"}
    assert all(type(k) is Atom for k in value if k != "raw")
    assert type(value[Atom("name")]) is str
    assert decode(encode("text"), binaries="bytes") == b"text"
    assert decode(b"\x83k\x00\x02hi") == [104, 105]


def test_oban_web_example_decodes() -> None:
    # The recorded value shown in Oban Web's docs (written by OTP 26+, SMALL_ATOM_UTF8_EXT).
    data = base64.b64decode("g3QAAAABdwRuYW1lbQAAAARvYmFu")
    assert decode(data) == {Atom("name"): "oban"}
    assert encode(decode(data), minor_version=2) == data


def test_legacy_tags_decode() -> None:
    assert decode(b"\x83s\x02ok") == Atom("ok")  # SMALL_ATOM_EXT
    assert decode(b"\x83c" + b"1.50000000000000000000e+00".ljust(31, b"\0")) == 1.5
    assert decode(b"\x83M\x00\x00\x00\x01\x08A") == "A"
    assert decode(b"\x83M\x00\x00\x00\x00\x00") == ""
    assert decode(b"\x83M\x00\x00\x00\x01\x03\xff") == BitBinary(b"\xe0", 3)
    assert decode(b"\x83l\x00\x00\x00\x00a\x01") == 1  # no elements: just the tail, as the VM
    assert decode(b"\x83l\x00\x00\x00\x01a\x01k\x00\x02\x02\x03") == [1, 2, 3]
    assert decode(b"\x83n\x01\x02\x05") == -5  # any non-zero sign byte is negative
    pid = decode(b"\x83gd\x00\x01n\x00\x00\x00\x01\x00\x00\x00\x02\x03")
    assert pid == Pid(Atom("n"), 1, 2, 3)
    assert decode(b"\x83ed\x00\x01n\x00\x00\x00\x09\x01") == Reference(Atom("n"), 1, (9,))
    assert decode(b"\x83fd\x00\x01n\x00\x00\x00\x09\x01") == Port(Atom("n"), 9, 1)


def test_colliding_and_unhashable_keys_become_termmap() -> None:
    value = decode(encode(TermMap([(1, "int"), (1.0, "float"), (True, "atom")])))
    assert isinstance(value, TermMap)
    assert value[1] == "int" and value[1.0] == "float" and value[True] == "atom"
    assert decode(encode(TermMap([([1], 1)])))[[1]] == 1
    assert decode(encode({Atom("a"): 1, "b": 2})) == {"a": 1, "b": 2}


def test_deep_nesting_is_bounded_not_recursive() -> None:
    depth = 20_000
    deep = b"\x83" + b"l\x00\x00\x00\x01" * depth + b"j" * (depth + 1)
    with pytest.raises(NestingTooDeepError) as err:
        decode(deep)
    assert err.value.offset == 1 + 5 * 4096
    value = decode(deep, max_depth=depth)
    assert encode(value, max_depth=depth) == deep
    with pytest.raises(TermEncodeError):
        encode(value)
    tuples = b"\x83" + b"h\x01" * depth + b"j"
    assert encode(decode(tuples, max_depth=depth), max_depth=depth) == tuples


def test_self_reference_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(TermEncodeError):
        encode(loop)


@pytest.mark.parametrize(
    ("data", "error", "offset"),
    [
        (b"", TruncatedTermError, 0),
        (b"\x82a\x01", VersionError, 0),
        (b"\x83", TruncatedTermError, 1),
        (b"\x83b\x00\x00", TruncatedTermError, 1),
        (b"\x83h\x02a\x01", TruncatedTermError, 5),
        (b"\x83m\x00\x00\x00\x05ab", DeclaredLengthError, 1),
        (b"\x83m\xff\xff\xff\xff", DeclaredLengthError, 1),
        (b"\x83l\xff\xff\xff\xffa\x01", DeclaredLengthError, 1),
        (b"\x83t\xff\xff\xff\xff", DeclaredLengthError, 1),
        (b"\x83i\xff\xff\xff\xff", DeclaredLengthError, 1),
        (b"\x83o\xff\xff\xff\xff\x00", DeclaredLengthError, 1),
        (b"\x83p\xff\xff\xff\xff", DeclaredLengthError, 1),
        (b"\x83\x01", UnknownTagError, 1),
        (b"\x83R\x00", UnknownTagError, 1),
        (b"\x83h\x01P\x00\x00\x00\x01x\x9c", UnknownTagError, 3),
        (b"\x83d\x01\x00" + b"a" * 256, AtomTooLongError, 1),
        (b"\x83v\x03\x00" + "日".encode() * 256, AtomTooLongError, 1),
        (b"\x83w\x02\xc3\x28", AtomEncodingError, 1),
        (b"\x83h\x01w\x01\xff", AtomEncodingError, 3),
        (b"\x83a\x01\x00", TrailingDataError, 3),
        (b"\x83F\x7f\xf0\x00\x00\x00\x00\x00\x00", InvalidTermError, 1),
        (b"\x83c" + b"abc".ljust(31, b"\0"), InvalidTermError, 1),
        (b"\x83M\x00\x00\x00\x01\x00\x01", InvalidTermError, 1),
        (b"\x83M\x00\x00\x00\x00\x03", InvalidTermError, 1),
        (b"\x83t\x00\x00\x00\x02a\x01a\x02a\x01a\x03", InvalidTermError, 1),
        (b"\x83Z\x00\x06d\x00\x01n" + b"\x00" * 28, InvalidTermError, 1),
        (b"\x83Xa\x01" + b"\x00" * 12, InvalidTermError, 2),
        (b"\x83qd\x00\x01md\x00\x01fb\x00\x00\x00\x01", InvalidTermError, 10),
    ],
)
def test_bad_input_names_the_problem_and_offset(
    data: bytes, error: type[TermDecodeError], offset: int
) -> None:
    with pytest.raises(error) as err:
        decode(data)
    assert err.value.offset == offset
    assert str(err.value).startswith(f"at byte {offset}: ")


def _compressed(body: bytes, declared: int) -> bytes:
    return b"\x83P" + struct.pack(">I", declared) + zlib.compress(body)


def test_bad_compression() -> None:
    body = b"m" + struct.pack(">I", 1000) + b"a" * 1000
    assert decode(_compressed(body, len(body))) == "a" * 1000
    with pytest.raises(CompressionError):
        decode(b"\x83P\x00\x00\x00\x05not zlib at all")
    with pytest.raises(CompressionError, match="truncated"):
        decode(_compressed(body, len(body))[:-6])
    with pytest.raises(InflatedSizeError, match=r"fewer|inflates to"):
        decode(_compressed(body, len(body) + 10))
    with pytest.raises(TruncatedTermError):
        decode(b"\x83P\x00\x00")
    with pytest.raises(TrailingDataError):
        decode(_compressed(body, len(body)) + b"junk")
    with pytest.raises(DeclaredLengthError, match="inflated term"):
        decode(_compressed(body[:-1], len(body) - 1))


def test_zlib_bomb_stops_at_the_declared_size() -> None:
    huge = b"m" + struct.pack(">I", 50_000_000) + bytes(50_000_000)
    bomb = zlib.compress(huge, 9)
    assert len(bomb) < 100_000
    with pytest.raises(InflatedSizeError, match="past its declared"):
        decode(b"\x83P" + struct.pack(">I", 100) + bomb)
    with pytest.raises(InflatedSizeError, match="over the limit"):
        decode(b"\x83P" + struct.pack(">I", len(huge)) + bomb, max_inflated_size=1_000_000)


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        {1, 2},
        object(),
        Atom("a" * 256),
        {"a": 1, b"a": 2},
        "\ud800",
        Pid(Atom("n"), 2**32, 0, 0),
        Reference(Atom("n"), 0, ()),
        Export(Atom("m"), Atom("f"), 256),
    ],
)
def test_unencodable_values(value: Any) -> None:
    with pytest.raises(TermEncodeError):
        encode(value)


def test_value_types_validate() -> None:
    with pytest.raises(ValueError):
        ImproperList([], 1)
    with pytest.raises(ValueError):
        ImproperList([1], [2])
    with pytest.raises(ValueError):
        BitBinary(b"\x01", 8)
    assert BitBinary(b"\xff", 1) == BitBinary(b"\x80", 1)
    assert Fun(b"raw").raw == b"raw"


# --- properties -----------------------------------------------------------------------------

_atoms = st.text(st.characters(codec="utf-8"), max_size=20).map(Atom)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**3000), max_value=2**3000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8")),
    st.binary(),
    _atoms,
    st.builds(BitBinary, st.binary(min_size=1, max_size=4), st.integers(1, 7)),
)
_keys = st.one_of(st.text(max_size=8), _atoms, st.integers(), st.tuples(st.integers(), _atoms))
_terms = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(st.integers(0, 255), max_size=8),
        st.tuples(inner, inner),
        st.dictionaries(_keys, inner, max_size=6),
        st.dictionaries(st.text(max_size=4), inner, min_size=33, max_size=40),
        st.builds(ImproperList, st.lists(inner, min_size=1, max_size=3), _scalars),
    ),
    max_leaves=30,
)
_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(_terms, st.sampled_from([{}, {"compressed": True}, {"minor_version": 2}]))
def test_roundtrip_property(term: Any, kwargs: dict[str, Any]) -> None:
    data = encode(term, **kwargs)
    back = decode(data)
    assert encode(back, **kwargs) == data
    assert order_key(back) == order_key(term)
    assert encode(decode(data, binaries="bytes"), **kwargs) == data


@_SETTINGS
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    for blob in (data, b"\x83" + data, b"\x83P" + data):
        with contextlib.suppress(TermDecodeError):
            decode(blob)


@_SETTINGS
@given(_terms, st.data())
def test_fuzz_mutated_encodings(term: Any, data: st.DataObject) -> None:
    blob = bytearray(encode(term, compressed=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, len(blob)))
        if op == "flip" and at < len(blob):
            blob[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            blob[at:at] = bytes([data.draw(st.integers(0, 255))])
        elif op == "delete" and at < len(blob):
            del blob[at]
        elif op == "truncate":
            del blob[at:]
    try:
        value = decode(bytes(blob))
    except TermDecodeError:
        return
    # Whatever decodes must encode again (possibly normalised) and decode to the same term.
    again = encode(value)
    assert order_key(decode(again)) == order_key(value)


def test_floats_keep_their_bits() -> None:
    for value in (-0.0, 5e-324, 1.7976931348623157e308, math.pi):
        assert struct.pack(">d", decode(encode(value))) == struct.pack(">d", value)
