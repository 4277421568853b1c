"""The fixture's vector helpers return what the VM itself computes (checked against a separate
`elixir -e` run), so Python wire code can be tested against them: phash2, term_to_binary
(plain and compressed), gzip + base64, inspect, and Oban.Notifier's payload encoding.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from typing import Any

import pytest

from interop_tests.fixture import CommandFailed, ElixirFixture
from tests.support.beam import run_elixir

# Hand-built external term format (131 = version), so no Python ETF library is involved.
TERMS: dict[str, bytes] = {
    '"x"': b"\x83m\x00\x00\x00\x01x",
    ":ok (utf8 atom)": b"\x83w\x02ok",
    '{:ok, "x"}': b"\x83h\x02w\x02okm\x00\x00\x00\x01x",
    "[1, 2]": b"\x83l\x00\x00\x00\x02a\x01a\x02j",
    "1_000_000 (integer)": b"\x83b\x00\x0fB@",
    '%{"a" => 1}': b"\x83t\x00\x00\x00\x01m\x00\x00\x00\x01aa\x01",
    "long binary": b"\x83m\x00\x00\x01\x00" + b"ab" * 128,
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """phash2, term_to_binary and inspect of every term, from one plain `elixir -e` VM."""
    terms = "[" + ", ".join(f'"{b64(etf)}"' for etf in TERMS.values()) + "]"
    code = f"""
    for etf <- {terms} do
      t = :erlang.binary_to_term(Base.decode64!(etf))
      IO.puts(Enum.join([
        :erlang.phash2(t), :erlang.phash2(t, 1000),
        Base.encode64(:erlang.term_to_binary(t)),
        Base.encode64(:erlang.term_to_binary(t, [:compressed])),
        Base.encode64(inspect(t))
      ], " "))
    end
    """
    lines = run_elixir(code).decode().split("\n")
    rows = [line.split(" ") for line in lines if line]
    return {
        name: {
            "phash2": int(row[0]),
            "phash2_1000": int(row[1]),
            "plain": row[2],
            "compressed": row[3],
            "inspect": base64.b64decode(row[4]).decode(),
        }
        for name, row in zip(TERMS, rows, strict=True)
    }


@pytest.mark.parametrize("name", list(TERMS))
def test_term_helpers_match_the_vm(
    elixir: ElixirFixture, reference: dict[str, Any], name: str
) -> None:
    etf = b64(TERMS[name])
    expected = reference[name]
    assert elixir.call("phash2", etf=etf)["value"] == expected["phash2"]
    assert elixir.call("phash2", etf=etf, range=1000)["value"] == expected["phash2_1000"]
    assert elixir.call("term_to_binary", etf=etf)["etf"] == expected["plain"]
    assert elixir.call("term_to_binary", etf=etf, compressed=True)["etf"] == expected["compressed"]
    assert elixir.call("inspect", etf=etf)["value"] == expected["inspect"]


def test_compressed_term_is_zlib_of_the_plain_body(elixir: ElixirFixture) -> None:
    etf = b64(TERMS["long binary"])
    compressed = base64.b64decode(elixir.call("term_to_binary", etf=etf, compressed=True)["etf"])
    assert compressed[:2] == b"\x83P"  # COMPRESSED tag, then the uncompressed size
    assert int.from_bytes(compressed[2:6], "big") == len(TERMS["long binary"]) - 1
    assert zlib.decompress(compressed[6:]) == TERMS["long binary"][1:]
    level0 = elixir.call("term_to_binary", etf=etf, compressed=0)["etf"]
    assert base64.b64decode(level0) == TERMS["long binary"]  # level 0 does not compress


def test_gzip_base64(elixir: ElixirFixture) -> None:
    payload = json.dumps({"queue": "badges", "pad": "x" * 600})
    value = elixir.call("gzip_base64", payload=payload)["value"]
    assert value.startswith("H4sI")
    assert gzip.decompress(base64.b64decode(value)).decode() == payload


def test_notifier_encoding_follows_oban(elixir: ElixirFixture) -> None:
    small = {"queue": "badges", "action": "pause", "ident": "any"}
    assert (
        elixir.call("encode_payload", payload=small)["value"]
        == '{"action":"pause","ident":"any","queue":"badges"}'
    )
    large = {"node": "vm", "pad": "y" * 600}
    encoded = elixir.call("encode_payload", payload=large)["value"]
    assert encoded.startswith("Z:")
    assert json.loads(gzip.decompress(base64.b64decode(encoded[2:]))) == large
    for form in (encoded, encoded[2:], json.dumps(large)):
        assert elixir.call("decode_payload", payload=form)["value"] == large


def test_batch_and_bad_input(elixir: ElixirFixture) -> None:
    etf = b64(TERMS['"x"'])
    results = elixir.call("batch", commands=[{"cmd": "phash2", "etf": etf}, {"cmd": "nope"}])
    assert results["results"][0]["ok"] is True
    assert results["results"][1]["ok"] is False
    with pytest.raises(CommandFailed) as failed:
        elixir.call("phash2", etf="not base64 of a term")
    assert failed.value.type == "ArgumentError"
    with pytest.raises(ValueError, match="request id"):
        elixir.call("cancel_job", id=1)
    assert elixir.call("ping")["pong"] is True  # still serving after the failures


def test_unreachable_database_is_a_clear_error(elixir: ElixirFixture) -> None:
    params = {"host": "127.0.0.1", "port": 1, "user": "postgres", "database": "postgres"}
    with pytest.raises(CommandFailed, match=r"connect failed.*econnrefused"):
        elixir.call("connect", params=params, prefix="public")
    with pytest.raises(CommandFailed, match="not connected"):
        elixir.call("jobs")
