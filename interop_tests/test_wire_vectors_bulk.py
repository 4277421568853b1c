"""Thousands of random terms and notification payloads, encoded by the VM and by Python, both ways.

* Python → VM: 3,000 seeded random terms built in Python are encoded by ``bridge.wire.term``;
  the fixture VM decodes each and writes it again with ``term_to_binary`` (plain and
  ``[:compressed]``, the fixture's ``term_to_binary`` command). The bytes must be Python's.
* VM → Python: 3,000 seeded random terms built by a plain ``elixir`` VM are printed as its
  ``term_to_binary`` bytes (plain and compressed); Python decodes each and must write the
  same bytes again.
* Notification payloads: 2,000 seeded random JSON objects, small and large, through Python's
  ``bridge.wire.notify`` and the fixture's ``Oban.Notifier`` encoding: plain payloads byte for
  byte, compressed ones (``Z:`` from the VM, legacy gzip from Python) identical once inflated,
  and each side decodes the other's (plus the VM's own legacy ``gzip + base64``).

Everything goes to the VM in one ``batch`` per kind, so the module costs a few seconds.
Failures name the vector (index, term) and the first differing byte.

Where the bytes legitimately differ, values are compared instead: a map (term) or JSON object
(payload) of more than 32 keys, which the VM writes in its hash order. Found here and fixed:
the order of pids and ports as map keys (the tests at the end), and integers beyond 64 bits in
payloads, which ``bridge.wire.notify`` could not write (orjson refuses them) nor read (orjson
turns them into floats); Jason writes them.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import string
from collections import Counter
from typing import Any

import pytest

from bridge.wire import notify
from bridge.wire.term import (
    Atom,
    BitBinary,
    Export,
    ImproperList,
    Pid,
    Port,
    Reference,
    TermMap,
    decode,
    encode,
    order_key,
)
from interop_tests.fixture import ElixirFixture
from tests.support.beam import run_elixir
from tests.support.terms import SMALL_MAP, small_maps_only

PY_TERMS = 3000
VM_TERMS = 3000
PAYLOADS = 2000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def first_difference(ours: bytes, theirs: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
    if at is None:
        at = min(len(ours), len(theirs))
    return (
        f"first difference at byte {at} of {len(ours)}/{len(theirs)}: "
        f"python {ours[at : at + 12].hex()} vm {theirs[at : at + 12].hex()}"
    )


# -- Python-made terms ---------------------------------------------------------------------------

TEXT = string.ascii_letters + string.digits + ' _-"\\\n\t/é日本語ß€😀\u0000\u007f'


def _text(rng: random.Random, most: int) -> str:
    return "".join(rng.choice(TEXT) for _ in range(rng.randrange(most + 1)))


def _scalar(rng: random.Random) -> Any:
    roll = rng.randrange(16)
    if roll == 0:
        return rng.randrange(256)
    if roll == 1:
        return rng.randrange(-(2**31) - 5, 2**31 + 5)
    if roll == 2:
        return rng.choice([-1, 1]) * rng.getrandbits(rng.randrange(1, 2100))
    if roll == 3:
        return rng.choice([-1, 1]) * rng.choice([2**27, 2**31, 2**32, 2**59, 2**63, 2**64, 2**255])
    if roll == 4:
        return rng.choice([0.0, -0.0, 0.1, 1.5, -2.5e-300, 1e308, 5e-324, 2.2250738585072014e-308])
    if roll == 5:
        return rng.gauss(0, 1) * 10.0 ** rng.randrange(-300, 300)
    if roll == 6:
        return rng.choice([None, True, False, Atom("ok"), Atom(""), Atom("é" * 255), Atom("日本")])
    if roll == 7:
        return Atom(_text(rng, 40).replace("\u0000", "")[:255])
    if roll == 8:
        return _text(rng, 40)
    if roll == 9:
        return rng.randbytes(rng.randrange(60))
    if roll == 10:
        return BitBinary(rng.randbytes(rng.randrange(1, 9)), rng.randrange(1, 8))
    if roll == 11:
        return "x" * rng.randrange(100, 700)  # compresses: the compressed form differs
    if roll == 12:
        return rng.choice(
            [
                Pid(Atom("nonode@nohost"), rng.randrange(2**15), rng.randrange(2**13), 0),
                Reference(Atom("nonode@nohost"), 0, (rng.randrange(2**18), 7, 9)),
                Export(Atom("Elixir.Enum"), Atom("map"), 2),
            ]
        )
    if roll == 13:
        return [rng.randrange(256) for _ in range(rng.randrange(1, 30))]  # a charlist
    if roll == 14:
        return float(rng.randrange(-(10**6), 10**6))
    return -rng.randrange(1, 10**6)


def _key(rng: random.Random, depth: int) -> Any:
    roll = rng.randrange(5)
    if roll == 0:
        return (_key(rng, 0), _key(rng, 0))
    if roll == 1 and depth > 0:
        return _term(rng, depth - 1)
    if roll == 2:
        return Reference(Atom("nonode@nohost"), 0, (rng.randrange(2**18), rng.randrange(9), 9))
    key = _scalar(rng)
    return key.hex() if isinstance(key, bytes) else key  # b"x" and "x" are one Erlang key


def _term(rng: random.Random, depth: int) -> Any:
    roll = rng.randrange(12) if depth > 0 else 0
    if roll <= 3:
        return _scalar(rng)
    if roll == 4:
        return [_term(rng, depth - 1) for _ in range(rng.randrange(8))]
    if roll == 5:
        return tuple(_term(rng, depth - 1) for _ in range(rng.randrange(7)))
    if roll == 6 and rng.random() < 0.2:
        return tuple(rng.randrange(9) for _ in range(rng.randrange(256, 265)))  # LARGE_TUPLE
    if roll == 7:
        tail = _scalar(rng)
        items = [_term(rng, depth - 1) for _ in range(rng.randrange(1, 4))]
        return ImproperList(items, tail if not isinstance(tail, list) else Atom("tail"))
    if roll == 8:
        return {
            Atom(rng.choice("abcdef") * rng.randrange(1, 4)): _term(rng, depth - 1)
            for _ in range(6)
        }
    if roll == 9:
        return {
            _text(rng, 8): rng.randrange(9)
            for _ in range(rng.randrange(SMALL_MAP - 6, SMALL_MAP + 7))
        }
    pairs: dict[Any, Any] = {}
    for _ in range(rng.randrange(10)):
        key = _key(rng, depth - 1)
        try:
            pairs[key] = _term(rng, depth - 1)
        except TypeError:  # an unhashable key (a list): Erlang allows it, a dict does not
            pairs[repr(key)] = _term(rng, depth - 1)
    return pairs


def python_terms() -> list[Any]:
    rng = random.Random(20261201)
    return [_term(rng, rng.randrange(1, 4)) for _ in range(PY_TERMS)]


@pytest.fixture(scope="module")
def py_vectors(elixir: ElixirFixture) -> list[tuple[Any, bytes, bytes, bytes, bytes]]:
    """(term, python plain, python compressed, vm plain, vm compressed) per Python term."""
    terms = python_terms()
    plain = [encode(t) for t in terms]
    packed = [encode(t, compressed=True) for t in terms]
    commands = [
        {"cmd": "term_to_binary", "etf": b64(data), "compressed": compressed}
        for data in plain
        for compressed in (False, True)
    ]
    results = elixir.call("batch", commands=commands, timeout=60)["results"]
    failed = [(i // 2, r) for i, r in enumerate(results) if not r.get("ok")]
    assert not failed, f"the VM refused {len(failed)} Python terms, first {failed[0]}"
    vm = [base64.b64decode(r["etf"]) for r in results]
    return [(term, plain[i], packed[i], vm[2 * i], vm[2 * i + 1]) for i, term in enumerate(terms)]


def test_python_terms_are_written_by_the_vm_as_python_writes_them(
    py_vectors: list[tuple[Any, bytes, bytes, bytes, bytes]],
) -> None:
    problems: list[str] = []
    large = 0
    for index, (term, plain, packed, vm_plain, vm_packed) in enumerate(py_vectors):
        if not small_maps_only(term):
            large += 1  # hash order on the VM's side: the same term, compared as terms
            if order_key(decode(vm_plain)) != order_key(decode(plain)):
                problems.append(f"#{index} (large map) decodes differently: {term!r:.200}")
            continue
        for form, ours, theirs in (("plain", plain, vm_plain), ("compressed", packed, vm_packed)):
            if ours != theirs:
                problems.append(f"#{index} {form}: {first_difference(ours, theirs)}; {term!r:.200}")
    print(f"\nterms python -> vm: {len(py_vectors)} ({large} holding maps over {SMALL_MAP} keys)")
    assert not problems, f"{len(problems)} of {len(py_vectors)}:\n" + "\n".join(problems[:10])
    assert 0 < large < len(py_vectors) // 2


# -- VM-made terms -------------------------------------------------------------------------------

VM_GENERATOR = r"""
defmodule BulkGen do
  import Bitwise

  def pick(list), do: Enum.at(list, :rand.uniform(length(list)) - 1)
  def upto(n), do: :rand.uniform(n + 1) - 1

  def text(most) do
    for _ <- 1..upto(most)//1, into: "" do
      case :rand.uniform(6) do
        1 -> <<(0xA0 + upto(0x2FF))::utf8>>
        2 -> <<(0x4E00 + upto(0x5000))::utf8>>
        3 -> <<(0x1F300 + upto(0x2FF))::utf8>>
        4 -> pick(["\n", "\"", "\\"])
        _ -> <<(0x20 + upto(0x5E))::utf8>>
      end
    end
  end

  def scalar do
    case :rand.uniform(15) do
      1 -> upto(255)
      2 -> upto(1 <<< 32) - (1 <<< 31)
      3 -> pick([-1, 1]) * upto(1 <<< pick([64, 65, 100, 300, 2100]))
      4 -> pick([0.0, -0.0, 0.1, 1.5, 1.0e308, 5.0e-324, 2.2250738585072014e-308, 1.0e16])
      5 -> :rand.normal() * :math.pow(10, :rand.uniform(600) - 300)
      6 -> pick([nil, true, false, :ok, :"", :"Elixir.Oban.Job", :"日本語", :"é_255"])
      7 -> String.to_atom(String.slice(text(30), 0, 255))
      8 -> text(40)
      9 -> :crypto.strong_rand_bytes(upto(60))
      10 -> <<(:crypto.strong_rand_bytes(:rand.uniform(8)))::binary, upto(1)::1>>
      11 -> :binary.copy("ab", 60 + upto(300))
      12 -> pick([self(), make_ref(), hd(Port.list()), &Enum.map/2])
      13 -> for _ <- 1..:rand.uniform(30)//1, do: upto(255)
      14 -> upto(2_000_000) * 1.0 - 1.0e6
      _ -> -:rand.uniform(1_000_000)
    end
  end

  def key(d), do: pick([scalar(), {scalar(), scalar()}, term(d - 1)])

  def term(0), do: scalar()

  def term(d) do
    case :rand.uniform(12) do
      n when n <= 4 -> scalar()
      5 -> for _ <- 1..upto(5)//1, do: term(d - 1)
      6 -> List.to_tuple(for _ <- 1..upto(5)//1, do: term(d - 1))
      7 -> if :rand.uniform(5) == 1, do: :erlang.make_tuple(256 + upto(9), upto(9)), else: {}
      8 -> (for _ <- 1..:rand.uniform(3), do: term(d - 1)) ++ scalar()
      9 -> Map.new(1..6, fn _ -> {pick([:a, :b, :c, :aa, :bb]), term(d - 1)} end)
      10 -> Map.new(1..(SMALL - 6 + :rand.uniform(12)), fn _ -> {text(8), upto(9)} end)
      11 -> Map.new(1..upto(8)//1, fn _ -> {key(d), term(d - 1)} end)
      _ -> [term(d - 1) | term(d - 1)]
    end
  end
end

:rand.seed(:exsss, {2026, 12, 1})
lines =
  for _ <- 1..COUNT do
    t = BulkGen.term(:rand.uniform(3))
    [Base.encode64(:erlang.term_to_binary(t)), " ",
     Base.encode64(:erlang.term_to_binary(t, [:compressed])), "\n"]
  end

IO.binwrite(lines)
"""


@pytest.fixture(scope="module")
def vm_vectors() -> list[tuple[bytes, bytes]]:
    code = VM_GENERATOR.replace("COUNT", str(VM_TERMS)).replace("SMALL", str(SMALL_MAP))
    lines = run_elixir(code).decode().splitlines()
    pairs = [line.split(" ") for line in lines if line]
    return [(base64.b64decode(plain), base64.b64decode(packed)) for plain, packed in pairs]


def test_vm_terms_are_decoded_and_written_again_byte_for_byte(
    vm_vectors: list[tuple[bytes, bytes]],
) -> None:
    assert len(vm_vectors) == VM_TERMS
    problems: list[str] = []
    kinds: Counter[str] = Counter()
    for index, (plain, packed) in enumerate(vm_vectors):
        term = decode(plain)
        if decode(packed) != term:
            problems.append(f"#{index}: the compressed form decodes to another term")
        kinds.update(kind_names(term))
        for form, ours, theirs in (
            ("plain", encode(term), plain),
            ("compressed", encode(term, compressed=True), packed),
        ):
            if ours != theirs:
                problems.append(f"#{index} {form}: {first_difference(ours, theirs)}; {term!r:.200}")
    print(
        f"\nterms vm -> python: {len(vm_vectors)}; sub-terms by kind {dict(sorted(kinds.items()))}"
    )
    assert not problems, f"{len(problems)} of {len(vm_vectors)}:\n" + "\n".join(problems[:10])
    # The batch is only evidence if it holds every kind of term it claims to.
    wanted = {
        "bigint",
        "int",
        "float",
        "atom",
        "binary",
        "text",
        "bitstring",
        "list",
        "charlist",
        "improper",
        "tuple",
        "large tuple",
        "map",
        "large map",
        "pid",
        "reference",
        "port",
        "export",
    }
    assert wanted <= set(kinds), sorted(wanted - set(kinds))


def kind_names(term: Any) -> list[str]:
    found: list[str] = []
    stack = [term]
    while stack:
        t = stack.pop()
        name = type(t).__name__.lower()
        if isinstance(t, bool) or t is None or isinstance(t, Atom):
            found.append("atom")
        elif isinstance(t, int):
            found.append("bigint" if abs(t) >= 2**63 else "int")
        elif isinstance(t, float):
            found.append("float")
        elif isinstance(t, str):
            found.append("text")
        elif isinstance(t, bytes):
            found.append("binary")
        elif isinstance(t, dict | TermMap):
            found.append("large map" if len(t) > SMALL_MAP else "map")
            stack.extend(t.keys())
            stack.extend(t.values())
        elif isinstance(t, tuple):
            found.append("large tuple" if len(t) > 255 else "tuple")
            stack.extend(t)
        elif isinstance(t, list):
            is_chars = t and all(type(x) is int and 0 <= x <= 255 for x in t)
            found.append("charlist" if is_chars else "list")
            stack.extend(t)
        elif isinstance(t, ImproperList):
            found.append("improper")
            stack.extend(t.items)
            stack.append(t.tail)
        else:
            found.append({"bitbinary": "bitstring"}.get(name, name))
    return found


# -- notification payloads -----------------------------------------------------------------------


def _json_value(rng: random.Random, depth: int) -> Any:
    roll = rng.randrange(10 if depth > 0 else 6)
    if roll == 0:
        return rng.randrange(-1000, 100_000)
    if roll == 1:
        return rng.choice([-1, 1]) * rng.getrandbits(rng.choice([31, 32, 53, 63, 64, 65, 100]))
    if roll == 2:
        return _text(rng, 30)
    if roll == 3:
        return rng.choice([True, False, None])
    if roll == 4:
        return rng.choice(["pause", "resume", "scale", "pkill", "any", "Oban.vm"])
    if roll == 5:
        return ""
    if roll <= 7:
        return [_json_value(rng, depth - 1) for _ in range(rng.randrange(5))]
    return _json_object(rng, depth - 1, rng.choice([0, 1, 2, 3, 5, 8]))


def _json_object(rng: random.Random, depth: int, size: int) -> dict[str, Any]:
    return {_text(rng, 10): _json_value(rng, depth) for _ in range(size)}


def small_objects_only(value: Any) -> bool:
    if isinstance(value, dict):
        return len(value) <= SMALL_MAP and all(small_objects_only(v) for v in value.values())
    if isinstance(value, list):
        return all(small_objects_only(v) for v in value)
    return True


def payloads() -> list[dict[str, Any]]:
    rng = random.Random(512)
    made = []
    for _ in range(PAYLOADS):
        size = rng.choice([0, 1, 2, 3, 4, 6, 8, 12, 20, 31, 32])
        payload = _json_object(rng, rng.randrange(3), size)
        if rng.random() < 0.3:  # around and far above the 512-byte threshold
            payload["pad"] = "y" * rng.choice([300, 450, 500, 505, 510, 600, 2000])
        made.append(payload)
    return made


def test_notification_payloads_both_ways(elixir: ElixirFixture) -> None:
    made = payloads()
    ours = [notify.encode(p) for p in made]
    commands: list[dict[str, Any]] = []
    for payload, encoded in zip(made, ours, strict=True):
        commands.append({"cmd": "encode_payload", "payload": payload})
        commands.append({"cmd": "decode_payload", "payload": encoded})
        commands.append({"cmd": "gzip_base64", "payload": notify.dumps(payload).decode()})
    results = elixir.call("batch", commands=commands, timeout=60)["results"]
    failed = [(i // 3, r) for i, r in enumerate(results) if not r.get("ok")]
    assert not failed, f"the VM refused {len(failed)} payloads, first {failed[0]}"

    problems: list[str] = []
    forms: Counter[str] = Counter()
    for index, payload in enumerate(made):
        vm_encoded, vm_decoded, vm_gzip = (r["value"] for r in results[3 * index : 3 * index + 3])
        json_bytes = notify.dumps(payload)
        where = f"payload #{index} ({len(json_bytes)} bytes of JSON)"
        if len(json_bytes) <= notify.PLAIN_LIMIT:
            forms["plain"] += 1
            if vm_encoded != ours[index]:
                diff = first_difference(ours[index].encode(), vm_encoded.encode())
                problems.append(f"{where}: plain text differs, {diff}")
        else:
            forms["compressed"] += 1
            if not vm_encoded.startswith("Z:") or not ours[index].startswith("H4sI"):
                problems.append(f"{where}: forms vm {vm_encoded[:6]!r}, python {ours[index][:6]!r}")
            inflated = gzip.decompress(base64.b64decode(vm_encoded.removeprefix("Z:")))
            if not small_objects_only(payload):
                # The VM writes an object of more than 32 keys in its map's hash order, Python
                # in sorted order: the same JSON value, other bytes (see the module docstring).
                forms["compressed, over 32 keys"] += 1
                if json.loads(inflated) != payload:
                    problems.append(f"{where}: inflated JSON is another value")
            elif inflated != json_bytes:
                problems.append(
                    f"{where}: inflated JSON differs, {first_difference(json_bytes, inflated)}"
                )
        if vm_decoded != payload:
            problems.append(f"{where}: the VM decoded python's {ours[index][:20]!r} differently")
        for form, text in (("oban", vm_encoded), ("legacy gzip", vm_gzip)):
            if notify.decode(text) != payload:
                problems.append(f"{where}: python decoded the VM's {form} form differently")
    print(f"\nnotification payloads both ways: {len(made)} ({dict(forms)})")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:10])
    assert forms["plain"] > 100 and forms["compressed"] > 100


# -- pids and ports as map keys ---------------------------------------------------------------


def test_pid_map_keys_sort_as_in_the_vm(elixir: ElixirFixture) -> None:
    """OTP 25 orders pids by serial, then number, then node, then creation (found here: the
    order bridge first used, node first, wrote other bytes)."""
    node = Atom("nonode@nohost")
    term = {Pid(node, 24147, 2, 0): 1, Pid(node, 6466, 45, 0): 2, Pid(Atom("b@x"), 1, 0, 0): 3}
    ours = encode(term)
    theirs = base64.b64decode(elixir.call("term_to_binary", etf=b64(ours))["etf"])
    assert ours == theirs, first_difference(ours, theirs)


def test_port_map_keys_sort_as_in_the_vm(elixir: ElixirFixture) -> None:
    """OTP 25 orders ports by node, then creation, then number."""
    node = Atom("a@x")
    term = {Port(node, 1, 9): 1, Port(node, 2, 0): 2}
    ours = encode(term)
    theirs = base64.b64decode(elixir.call("term_to_binary", etf=b64(ours))["etf"])
    assert ours == theirs, first_difference(ours, theirs)


def test_random_pid_and_port_keys_sort_as_in_the_vm(elixir: ElixirFixture) -> None:
    """400 small maps keyed by random pids and ports that tie on every field in turn (few
    nodes, serials, numbers and creations), mixed with other keys: the VM writes each again
    with Python's bytes."""
    rng = random.Random(202612011)
    nodes = [Atom("nonode@nohost"), Atom("a@x"), Atom("b@x")]

    def pid() -> Pid:
        return Pid(rng.choice(nodes), rng.randrange(4), rng.randrange(3), rng.randrange(3))

    def port() -> Port:
        return Port(rng.choice(nodes), rng.randrange(4), rng.randrange(3))

    maps: list[dict[Any, Any]] = []
    for _ in range(400):
        keys: dict[Any, Any] = {}
        for n in range(rng.randrange(2, 12)):
            roll = rng.randrange(5)
            key = pid() if roll < 2 else port() if roll < 4 else rng.choice([n, Atom("k")])
            keys[key] = n
        maps.append(keys)
    plain = [encode(m) for m in maps]
    commands = [{"cmd": "term_to_binary", "etf": b64(data)} for data in plain]
    results = elixir.call("batch", commands=commands, timeout=60)["results"]
    wrong = [
        (i, first_difference(ours, base64.b64decode(r["etf"])))
        for i, (ours, r) in enumerate(zip(plain, results, strict=True))
        if base64.b64decode(r["etf"]) != ours
    ]
    assert not wrong, f"{len(wrong)} of {len(maps)} maps differ, first: {wrong[0]}"
