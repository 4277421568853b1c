"""phash2 against a live BEAM: thousands of seeded random terms, every binary length, the golden
cron names, deep nesting, plus properties and bad input.

One ``elixir`` run per module prints each generated term as base64 ``term_to_binary`` with the
VM's ``phash2/1`` and ``phash2/2`` for several ranges; Python decodes the term with the
project's codec and must reproduce every number.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.wire.phash2 import (
    DEFAULT_RANGE,
    MAX_RANGE,
    Atom,
    CyclicTermError,
    InvalidRangeError,
    Phash2Error,
    UnhashableTermError,
    atom_hash,
    make_hash2,
    phash2,
)
from bridge.wire.term import Fun, ImproperList, decode
from tests.support.beam import run_elixir

GOLDEN_CRON = Path(__file__).resolve().parent.parent / "data" / "golden" / "cron"

RANGES = [1, 7, 1000, 134_217_728, 2_147_483_648, 4_294_967_295, 4_294_967_296]
RANDOM_TERMS = 3000

# Kinds of vector and how many of each the generator below prints.
EXPECTED_KINDS = {
    "binary": 108,
    "text": 41,
    "atom": 5,
    "bitstring": 147,
    "integer": 102,
    "charlist": 13,
    "map": 9,
    "opaque": 10,
    "random": RANDOM_TERMS,
    "uuid": 200,
}

GENERATOR = r"""
defmodule PhashGen do
  import Bitwise

  @ranges [1, 7, 1000, 134_217_728, 2_147_483_648, 4_294_967_295, 4_294_967_296]

  def pick(list), do: Enum.at(list, :rand.uniform(length(list)) - 1)
  def upto(n), do: :rand.uniform(n + 1) - 1

  def int do
    case :rand.uniform(8) do
      1 -> upto(255)
      2 -> upto(1 <<< 28) - (1 <<< 27)
      3 -> pick([0, -1, 255, 256, 134_217_727, 134_217_728, -134_217_728, -134_217_729,
                 2_147_483_647, 2_147_483_648, -2_147_483_648, -2_147_483_649, 4_294_967_295,
                 4_294_967_296, (1 <<< 59) - 1, 1 <<< 59, -(1 <<< 59), -(1 <<< 59) - 1,
                 (1 <<< 64) - 1, 1 <<< 64, -(1 <<< 64), (1 <<< 128) + 1])
      4 -> upto(1 <<< 64) * pick([1, -1])
      5 -> upto(1 <<< :rand.uniform(700)) * pick([1, -1])
      6 -> -:rand.uniform(1000)
      7 -> upto(1 <<< 40) - (1 <<< 39)
      _ -> upto(1 <<< 62) - (1 <<< 61)
    end
  end

  def float do
    case :rand.uniform(6) do
      1 -> :rand.uniform() * pick([1.0, -1.0, 1.0e10, -1.0e-10, 1.0e300, -1.0e-300])
      2 -> pick([0.0, 1.0, -1.0, 0.5, 1.0e308, 5.0e-324, 2.2250738585072014e-308, 1.0e15])
      3 ->
        <<negative_zero::float>> = <<0x8000000000000000::64>>
        negative_zero
      4 -> :rand.uniform(1_000_000) / 7
      5 -> :rand.normal() * 1.0e6
      _ -> :rand.uniform(1 <<< 53) * 1.0
    end
  end

  def char do
    case :rand.uniform(6) do
      1 -> 0x20 + upto(0x5E)
      2 -> 0xA0 + upto(0x5F)
      3 -> 0x80 + upto(0x1F)
      4 -> 0x100 + upto(0xD6FF)
      5 -> 0xE000 + upto(0x1FFF)
      _ -> 0x10000 + upto(0xFFFFF)
    end
  end

  def text(max), do: for(_ <- 1..upto(max)//1, into: "", do: <<char()::utf8>>)
  def bytes(n), do: for(_ <- 1..n//1, into: <<>>, do: <<upto(255)>>)

  def bitstring do
    bits = :rand.uniform(7)
    <<bytes(upto(30))::binary, upto((1 <<< bits) - 1)::size(bits)>>
  end

  def atom do
    case :rand.uniform(3) do
      1 -> pick([:ok, :error, true, false, nil, :"", :"Elixir.Realstack.CronWorker", :héllo,
                 :"ÿÿ", :"Āb", :"日本語", :"emoji😀", :"\u0080\u00BF", :"a\u00C2\u0080"])
      2 -> String.to_atom(text(30))
      _ ->
      letters = for _ <- 1..upto(12)//1, do: pick([?a, ?Z, ?_, ?é, ?ß, ?ÿ, ?À, ?€])
      String.to_atom(List.to_string(letters))
    end
  end

  def leaf do
    case :rand.uniform(7) do
      1 -> int()
      2 -> float()
      3 -> text(40)
      4 -> bytes(upto(40))
      5 -> atom()
      6 -> bitstring()
      _ -> pick([[], {}, %{}, ""])
    end
  end

  def key(depth) do
    case :rand.uniform(5) do
      1 -> text(12)
      2 -> atom()
      3 -> int()
      4 -> leaf()
      _ -> term(depth)
    end
  end

  def map(depth) do
    case pick([0, 1, 2, 3, 4, 5, 8, 16, 31, 32, 33, 34, 40, 64, 100]) do
      size when size <= 8 -> Map.new(for(_ <- 1..size//1, do: {key(depth - 1), term(depth - 1)}))
      size -> Map.new(for(_ <- 1..size//1, do: {key(0), leaf()}))
    end
  end

  def uuid do
    <<a::binary-8, b::binary-4, c::binary-4, d::binary-4, e::binary-12>> =
      Base.encode16(bytes(16), case: :lower)

    Enum.join([a, b, c, d, e], "-")
  end

  def list(depth) do
    case :rand.uniform(6) do
      1 -> for _ <- 1..upto(13)//1, do: upto(255)
      2 -> for _ <- 1..:rand.uniform(6)//1, do: term(depth - 1)
      3 -> for _ <- 1..:rand.uniform(12)//1, do: byte_or_term(depth - 1)
      4 -> for(_ <- 1..:rand.uniform(4)//1, do: term(depth - 1)) ++ improper_tail()
      5 -> for(_ <- 1..:rand.uniform(6)//1, do: upto(255)) ++ improper_tail()
      _ -> []
    end
  end

  def byte_or_term(depth), do: if(:rand.uniform(2) == 1, do: upto(255), else: term(depth))
  def improper_tail, do: pick([leaf(), upto(255), :tail, "bin"])

  def term(depth) when depth <= 0, do: leaf()

  def term(depth) do
    case :rand.uniform(9) do
      n when n <= 3 -> leaf()
      4 -> list(depth)
      5 -> List.to_tuple(for _ <- 1..upto(6)//1, do: term(depth - 1))
      6 -> map(depth)
      7 -> list(depth)
      8 -> {term(depth - 1), term(depth - 1)}
      _ -> [term(depth - 1)]
    end
  end

  def key_of(i), do: if(rem(i, 2) == 0, do: "k#{i}", else: :"k#{i}")

  def fixed do
    lengths = Enum.to_list(0..100) ++ [1000, 4095, 4096, 4097, 5003, 12_000, 65_537]
    binaries = for n <- lengths, do: {"binary", bytes(n)}
    names = for n <- 0..40, do: {"text", text(n)}
    atoms = for a <- [String.duplicate("a", 255), String.duplicate("é", 255),
                      String.duplicate("😀", 255), "nonode@nohost", "Elixir.Oban.Job"],
                do: {"atom", String.to_atom(a)}
    bits = for n <- 0..20, b <- 1..7,
             do: {"bitstring", <<bytes(n)::binary, upto((1 <<< b) - 1)::size(b)>>}
    ints = for n <- [0, 1, 2, 27, 28, 31, 32, 33, 59, 60, 63, 64, 65, 127, 128, 129, 1000],
               s <- [1, -1], d <- [-1, 0, 1],
               do: {"integer", s * ((1 <<< n) + d)}
    charlists = for n <- 0..12, do: {"charlist", Enum.to_list(1..n//1) |> Enum.map(&(&1 * 19 + 3))}
    maps = for n <- [0, 1, 31, 32, 33, 64, 65, 200, 1000],
               do: {"map", Map.new(1..n//1, fn i -> {key_of(i), i} end)}
    ext_pid = :erlang.binary_to_term(<<131, 88, 119, 9, "other@foo", 40_000::32, 77::32, 5::32>>)
    ext_ref = :erlang.binary_to_term(
      <<131, 90, 3::16, 119, 9, "other@foo", 5::32, 1_234_567::32, 2::32, 3::32>>)
    ext_port = :erlang.binary_to_term(<<131, 120, 119, 9, "other@foo", 0x1_0000_0005::64, 5::32>>)
    opaque = for t <- [self(), :c.pid(0, 32_767, 8191), make_ref(), hd(Port.list()), ext_pid,
                       ext_ref, ext_port, &Enum.map/2, &:erlang.phash2/1, {self(), [make_ref()]}],
                 do: {"opaque", t}
    binaries ++ names ++ atoms ++ bits ++ ints ++ charlists ++ maps ++ opaque
  end

  def emit({label, t}) do
    hashes = for r <- @ranges, do: :erlang.phash2(t, r)
    etf = Base.encode64(:erlang.term_to_binary(t))
    IO.puts(Enum.join([label, etf, :erlang.phash2(t) | hashes], " "))
  end

  def run(count) do
    :rand.seed(:exsss, {20_261_123, 25, 2})
    Enum.each(fixed(), &emit/1)
    for _ <- 1..count, do: emit({"random", term(4)})
    for _ <- 1..200, do: emit({"uuid", uuid()})
  end

  def named do
    deep_list = Enum.reduce(1..20_000, [], fn _, acc -> [acc] end)
    deep_tuple = Enum.reduce(1..20_000, {}, fn i, acc -> {i, acc} end)
    deep_map = Enum.reduce(1..2_000, %{}, fn i, acc -> %{"k" => acc, :n => i} end)
    long_charlist = Enum.map(1..100_000, &rem(&1, 256))

    for {name, t} <- [deep_list: deep_list, deep_tuple: deep_tuple, deep_map: deep_map,
                      long_charlist: long_charlist],
        do: IO.puts("named #{name} #{:erlang.phash2(t, 4_294_967_296)}")
  end
end

PhashGen.run(3000)
PhashGen.named()
"""


@dataclass(frozen=True)
class Vector:
    kind: str
    etf: bytes
    phash2_1: int
    by_range: dict[int, int]


@dataclass(frozen=True)
class BeamOutput:
    vectors: list[Vector]
    named: dict[str, int]


@pytest.fixture(scope="module")
def beam() -> BeamOutput:
    code = GENERATOR.replace("PhashGen.run(3000)", f"PhashGen.run({RANDOM_TERMS})")
    vectors: list[Vector] = []
    named: dict[str, int] = {}
    for line in run_elixir(code).decode().splitlines():
        kind, *fields = line.split()
        if kind == "named":
            named[fields[0]] = int(fields[1])
            continue
        numbers = [int(f) for f in fields[1:]]
        by_range = dict(zip(RANGES, numbers[1:], strict=True))
        vectors.append(Vector(kind, base64.b64decode(fields[0]), numbers[0], by_range))
    return BeamOutput(vectors, named)


def test_the_beam_printed_every_vector(beam: BeamOutput) -> None:
    assert Counter(v.kind for v in beam.vectors) == EXPECTED_KINDS
    assert set(beam.named) == {"deep_list", "deep_tuple", "deep_map", "long_charlist"}


@pytest.mark.parametrize("kind", sorted(EXPECTED_KINDS))
def test_phash2_matches_the_beam(kind: str, beam: BeamOutput) -> None:
    mismatches: list[str] = []
    vectors = [v for v in beam.vectors if v.kind == kind]
    for index, vector in enumerate(vectors):
        term = decode(vector.etf)
        full = make_hash2(term)
        # Each term goes through phash2/2 once, the ranges taking turns; the VM's remainders
        # for every range are checked against the full hash.
        rotating = [DEFAULT_RANGE, *RANGES][index % (len(RANGES) + 1)]
        expected_rotating = (
            vector.phash2_1 if rotating == DEFAULT_RANGE else vector.by_range[rotating]
        )
        got = (full, phash2(term, rotating), [full % r for r in RANGES], full % DEFAULT_RANGE)
        want = (
            vector.by_range[MAX_RANGE],
            expected_rotating,
            [vector.by_range[r] for r in RANGES],
            vector.phash2_1,
        )
        if got != want:
            mismatches.append(f"{term!r:.300}: python {got}, beam {want}")
    assert vectors
    assert not mismatches, f"{len(mismatches)} of {len(vectors)}:\n" + "\n".join(mismatches[:5])


def test_phash2_1_of_a_lock_key_is_the_beams(beam: BeamOutput) -> None:
    """HephaestusOban's advisory lock key: phash2/1 of the instance id as an Elixir string."""
    uuids = [v for v in beam.vectors if v.kind == "uuid"]
    for vector in uuids:
        instance_id = decode(vector.etf)
        assert isinstance(instance_id, str)
        assert len(instance_id) == 36
        assert phash2(instance_id) == vector.phash2_1


def test_deep_and_long_terms_need_no_recursion(beam: BeamOutput) -> None:
    deep_list: list[Any] = []
    for _ in range(20_000):
        deep_list = [deep_list]
    deep_tuple: tuple[Any, ...] = ()
    for i in range(1, 20_001):
        deep_tuple = (i, deep_tuple)
    deep_map: dict[Any, Any] = {}
    for i in range(1, 2_001):
        deep_map = {"k": deep_map, Atom("n"): i}
    long_charlist = [i % 256 for i in range(1, 100_001)]
    assert make_hash2(deep_list) == beam.named["deep_list"]
    assert make_hash2(deep_tuple) == beam.named["deep_tuple"]
    assert make_hash2(deep_map) == beam.named["deep_map"]
    assert make_hash2(long_charlist) == beam.named["long_charlist"]


# Oban.Plugins.Cron.entry_name/1 hashes {expr, worker_string, opts} where opts is the keyword
# list as a map with string keys (and the args map's keys stringified too).
LOGGED_CRONTAB = (
    '[{"* * * * *", Realstack.CronWorker}, {"* * * * *", Realstack.CronWorker, '
    '[args: %{"k" => "v"}, priority: 1, tags: ["cron-tag"], max_attempts: 3]}]'
)
CRONTAB: list[tuple[str, str, dict[str, Any]]] = [
    ("* * * * *", "Realstack.CronWorker", {}),
    (
        "* * * * *",
        "Realstack.CronWorker",
        {"args": {"k": "v"}, "priority": 1, "tags": ["cron-tag"], "max_attempts": 3},
    ),
]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_cron_names_of_the_golden_run() -> None:
    notes = read_jsonl(GOLDEN_CRON / "s4_notes.jsonl")
    assert notes[0]["crontab"] == LOGGED_CRONTAB  # CRONTAB transcribes exactly this
    rows = read_jsonl(GOLDEN_CRON / "s4_oban_jobs.jsonl")
    assert len(rows) == len(CRONTAB)
    for row in rows:
        (expr, worker, opts) = next(e for e in CRONTAB if e[2].get("args", {}) == row["args"])
        assert (row["meta"]["cron_expr"], row["worker"]) == (expr, worker)
        assert str(phash2((expr, worker, opts))) == row["meta"]["cron_name"]
    assert {row["meta"]["cron_name"] for row in rows} == {"64857449", "46152194"}


# --- properties -------------------------------------------------------------------------------

keys = st.one_of(st.text(max_size=8), st.integers(-(2**70), 2**70), st.text(max_size=6).map(Atom))
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**200), 2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.text(max_size=10).map(Atom),
)
terms = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(keys, inner, max_size=6),
        st.lists(st.integers(0, 255), max_size=10),
    ),
    max_leaves=25,
)


@settings(max_examples=100, deadline=None)
@given(terms, st.integers(1, MAX_RANGE))
def test_results_lie_in_the_range(term: Any, range_size: int) -> None:
    value = phash2(term, range_size)
    assert 0 <= value < range_size
    assert value == make_hash2(term) % range_size
    assert 0 <= phash2(term) < DEFAULT_RANGE
    assert phash2(term) == make_hash2(term) & (DEFAULT_RANGE - 1)


@settings(max_examples=100, deadline=None)
@given(terms)
def test_hashing_is_deterministic(term: Any) -> None:
    assert make_hash2(term) == make_hash2(copy.deepcopy(term))


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(keys, leaves, min_size=2, max_size=40))
def test_map_key_order_does_not_matter(mapping: dict[Any, Any]) -> None:
    reordered = dict(reversed(list(mapping.items())))
    assert list(reordered) != list(mapping)
    assert make_hash2(reordered) == make_hash2(mapping)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_a_string_is_its_utf8_binary(text: str) -> None:
    raw = text.encode()
    assert make_hash2(text) == make_hash2(raw) == make_hash2(bytearray(raw))
    assert make_hash2(memoryview(raw)) == make_hash2(raw)
    assert make_hash2([text]) == make_hash2([raw])


def test_types_that_share_a_python_value_stay_apart() -> None:
    assert make_hash2(Atom("ok")) != make_hash2("ok")
    assert make_hash2(True) != make_hash2(1)
    assert make_hash2(True) == make_hash2(Atom("true"))
    assert make_hash2(None) == make_hash2(Atom("nil"))
    assert make_hash2(-0.0) == make_hash2(0.0)
    assert make_hash2(1.0) != make_hash2(1)
    assert make_hash2([1, 2]) != make_hash2((1, 2))
    assert make_hash2(ImproperList([1], 2)) != make_hash2([1, 2])


def test_atom_hash_counts_latin1_letters_as_one_byte() -> None:
    assert atom_hash("é") == 0xE9
    assert atom_hash("Ā") == (0xC4 << 4) + 0x80
    assert atom_hash("") == 0


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, MAX_RANGE + 1, 2**64, 1.5, True, "10", None])
def test_a_range_outside_1_to_2_pow_32_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidRangeError, match="range"):
        phash2("x", bad)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (math.nan, "no float"),
        (-math.inf, "no float"),
        ([1, (2, math.inf)], "no float"),
        (object(), "no Erlang term for a object"),
        ({1, 2}, "no Erlang term for a set"),
        ({"k": 1j}, "no Erlang term for a complex"),
        ("\udc80", "lone surrogate"),
        (Atom("a\ud800"), "lone surrogate"),
        (Atom("x" * 256), "at most 255 characters"),
        (Fun(b"\x00"), "closure"),
    ],
)
def test_values_without_an_erlang_term_are_refused(bad: Any, message: str) -> None:
    with pytest.raises(UnhashableTermError, match=message):
        make_hash2(bad)


def test_a_container_holding_itself_is_refused_not_looped_over() -> None:
    looped: list[Any] = [1, 2]
    looped.append([looped])
    mapping: dict[str, Any] = {}
    mapping["self"] = (mapping,)
    for term in (looped, mapping, (looped,)):
        with pytest.raises(CyclicTermError, match="contains itself"):
            make_hash2(term)
    shared = [1, 2]
    assert make_hash2((shared, shared)) == make_hash2(([1, 2], [1, 2]))


def test_every_error_is_a_phash2_error_and_a_value_error() -> None:
    for error in (UnhashableTermError, CyclicTermError, InvalidRangeError):
        assert issubclass(error, Phash2Error)
    assert issubclass(Phash2Error, ValueError)
