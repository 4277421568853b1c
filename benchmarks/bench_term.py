"""Throughput of the term codec on recorded-output-shaped values, against erlpack and erlang-py.

Run: ``python benchmarks/bench_term.py [--seconds 0.3]``. Every codec decodes the same bytes
(ours, which are the VM's); each encodes the same Python values in its own way (their bytes
differ from the VM's, see docs/term-format.md), so MB/s is counted on the bytes each produced.
A library that is not installed, or that cannot handle a value, shows as "-".
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.wire.term import Atom, decode, encode

Codec = tuple[Callable[[Any], bytes], Callable[[bytes], Any]]


def _codecs() -> dict[str, Codec]:
    codecs: dict[str, Codec] = {
        "bridge": (encode, decode),
        "bridge (compressed)": (lambda v: encode(v, compressed=True), decode),
    }
    try:
        import erlpack  # type: ignore[import-untyped]

        codecs["erlpack"] = (erlpack.pack, erlpack.unpack)
    except ImportError:
        pass
    try:
        import erlang  # type: ignore[import-untyped]

        codecs["erlang-py"] = (erlang.term_to_binary, erlang.binary_to_term)
    except ImportError:
        pass
    return codecs


def _values() -> dict[str, Any]:
    row = {
        "id": 12345,
        "email": "someone@example.com",
        "score": 0.875,
        "tags": ["a", "b", "c"],
        "active": True,
        "note": None,
    }
    return {
        "small map": {"status": "ok", "count": 42},
        "atom-keyed result": (Atom("ok"), {Atom("id"): 7, Atom("state"): Atom("done")}),
        "100 rows": [dict(row, id=i) for i in range(100)],
        "64 KiB text": "lorem ipsum dolor sit amet " * 2427,
        "1000 ints": list(range(1000, 2000)),
    }


def _rate(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second, timed over batches until ``seconds`` have passed."""
    batch = 1
    while True:
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return batch / elapsed
        batch = max(batch * 2, int(batch * seconds / max(elapsed, 1e-9)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.3, help="time per measurement")
    args = parser.parse_args()
    codecs = _codecs()
    header = f"{'value':<20} {'codec':<20} {'bytes':>7} {'enc ops/s':>11} {'enc MB/s':>9}"
    header += f" {'dec ops/s':>11} {'dec MB/s':>9}"
    print(header)
    print("-" * len(header))
    for label, value in _values().items():
        reference = encode(value)
        for name, (enc, dec) in codecs.items():
            try:
                produced = enc(value)
                enc_rate = _rate(partial(enc, value), args.seconds)
                enc_cells = f"{enc_rate:>11,.0f} {enc_rate * len(produced) / 1e6:>9.1f}"
                size = f"{len(produced):>7}"
            except Exception:
                enc_cells, size = f"{'-':>11} {'-':>9}", f"{'-':>7}"
            data = produced if name.endswith("(compressed)") else reference
            try:
                dec(data)
                dec_rate = _rate(partial(dec, data), args.seconds)
                dec_cells = f"{dec_rate:>11,.0f} {dec_rate * len(data) / 1e6:>9.1f}"
            except Exception:
                dec_cells = f"{'-':>11} {'-':>9}"
            print(f"{label:<20} {name:<20} {size} {enc_cells} {dec_cells}")
    print(f"\nPython {sys.version.split()[0]}; MB = 10^6 bytes of encoded term.")


if __name__ == "__main__":
    main()
