"""Recorded output across the language line: each side decodes what the other recorded.

A recorded job completes with `"recorded": true` and `"return"` (unpadded Base64 of
`term_to_binary(value)`) merged into its meta, as Oban Pro's recorded workers store it. The
fixture's `Fixture.Echo` records with `record: true` (plain) or `"compressed"`; Python decodes
with ``bridge.wire.recorded``. A Python worker registered with ``recorded=True`` records through
the runtime's ack; the VM decodes it with its own `binary_to_term`, shows it with `inspect` and
re-encodes it, which must give back exactly the bytes bridge writes for the same value.

Elixir -> Python runs on the plugin's fixtures (``bridge_elixir_app`` records, the stdin VM only
inserts as an app's code does); Python -> Elixir keeps the stdin VM, whose `inspect` and
`term_to_binary` commands an app has no way to answer.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from bridge import Job, Ok, insert_all
from bridge.jobs.client.registry import Registry, worker
from bridge.testing import ElixirApp
from bridge.testing.database import BridgeDatabase
from bridge.wire import term
from bridge.wire.atom import Atom
from bridge.wire.recorded import decode_recorded
from interop_tests.fixture import ElixirFixture
from interop_tests.support import ECHO, eventually, in_thread, value_differences
from tests.jobs.support import job_row, running_node

RECORDER = "interop.Recorder"

pytestmark = pytest.mark.usefixtures("compiled_fixture")

# Elixir -> Python: what Echo returns (built from JSON args) and what Python must decode.
FROM_ELIXIR: list[tuple[dict[str, Any], Any]] = [
    (
        {"return": {"text": "héllo 🦀", "n": [1, -2, 2**70], "f": 2.5, "none": None, "t": True}},
        {"text": "héllo 🦀", "n": [1, -2, 2**70], "f": 2.5, "none": None, "t": True},
    ),
    (
        {"return": {"nested": {"k": [], "m": {}}}, "record": "compressed"},
        {"nested": {"k": [], "m": {}}},
    ),
    ({"return": {"blob": "x" * 5000}, "record": "compressed"}, {"blob": "x" * 5000}),
    ({"return": {"atom": "ok"}}, Atom("ok")),
    ({"return": "just a string"}, "just a string"),
    ({"return": 12345678901234567890123}, 12345678901234567890123),
]

# Python -> Elixir: what the Python worker returns and how the VM's inspect/1 shows it.
FROM_PYTHON: dict[str, tuple[Any, str | None]] = {
    "map": (
        {"a": [1, 2.5, None, "é"], "big": 2**70},
        '%{"a" => [1, 2.5, nil, "é"], "big" => 1180591620717411303424}',
    ),
    "tuple": ((Atom("ok"), 42, "s"), '{:ok, 42, "s"}'),
    "bytes": (b"\x00\xff", "<<0, 255>>"),
    "atom_keys": ({Atom("a"): 1, Atom("b"): [Atom("c"), True]}, "%{a: 1, b: [:c, true]}"),
    "nil": (None, "nil"),
    "large": ("y" * 20000, None),  # compressed on the wire; compared byte for byte below
}


def recorder_registry() -> Registry:
    registry = Registry()

    @worker(name=RECORDER, recorded=True, registry=registry)
    def record(job: Job) -> Any:
        return Ok(FROM_PYTHON[job.args["case"]][0])

    return registry


def completed(fx: ElixirFixture, ids: list[int]) -> list[dict[str, Any]] | None:
    rows = fx.jobs(ids)
    return rows if all(row["state"] == "completed" for row in rows) else None


@pytest.fixture
def enqueuer(elixir: ElixirFixture, bridge_db: BridgeDatabase) -> Iterator[ElixirFixture]:
    """The module's VM on the test database, only to insert as an Elixir app's code does (it
    starts no queue: the app runs the jobs)."""
    elixir.connect(bridge_db.url, bridge_db.prefix, node="enqueuer")
    yield elixir
    elixir.call("disconnect")


def test_python_decodes_what_elixir_recorded(
    bridge_elixir_app: ElixirApp, bridge_db: BridgeDatabase, enqueuer: ElixirFixture
) -> None:
    """On the plugin's fixtures: the app (queue `echo`) runs and records the jobs."""
    specs = [
        {"worker": ECHO, "queue": "echo", "args": {"record": True, **args}}
        for args, _ in FROM_ELIXIR
    ]
    rows = enqueuer.enqueue(specs)
    ids = [row["id"] for row in rows]
    for job_id in ids:
        done = bridge_db.wait_for_job(job_id)  # completed (fails at once on another final state)
        assert done.attempted_by is not None
        assert done.attempted_by[0] == bridge_elixir_app.node == "fixture_app"
    diffs: list[str] = []
    for job_id, (args, expected) in zip(ids, FROM_ELIXIR, strict=True):
        meta = job_row(bridge_db.url, bridge_db.prefix, job_id)["meta"]
        assert set(meta) == {"recorded", "return"} and meta["recorded"] is True, meta
        value = decode_recorded(meta)
        if isinstance(expected, Atom):
            assert isinstance(value, Atom) and value == expected, value
        else:
            diffs += value_differences(expected, value, f"job {job_id} {args}")
    assert not diffs, "\n".join(diffs)


async def test_elixir_decodes_what_python_recorded(
    fx: ElixirFixture, database_url: str, schema: str, conn: Any
) -> None:
    async with running_node(database_url, schema, {"py": 3}, recorder_registry(), plugins=[]):
        jobs = insert_all(
            conn,
            [
                Job.new(RECORDER, {"case": case}, queue="py", meta={"trace": case})
                for case in FROM_PYTHON
            ],
            prefix=schema,
        )
        ids = [job.id or 0 for job in jobs]
        rows = await eventually(
            lambda: completed(fx, ids), what="Python to complete the recording jobs"
        )

    for row, (case, (value, shown)) in zip(rows, FROM_PYTHON.items(), strict=True):
        meta = row["meta"]
        assert set(meta) == {"trace", "recorded", "return"}, meta  # merged, as Oban Pro does
        assert meta["trace"] == case and meta["recorded"] is True
        text = meta["return"]
        assert "=" not in text, f"{case}: the Base64 must be unpadded, as Elixir writes it"
        etf = text + "=" * (-len(text) % 4)
        if shown is not None:
            reply = await in_thread(fx.call, "inspect", etf=etf)
            assert reply["value"] == shown, case
        # The VM re-encodes what it decoded, uncompressed: the same bytes bridge writes.
        again = (await in_thread(fx.call, "term_to_binary", etf=etf))["etf"]
        expected = base64.b64encode(term.encode(value, compressed=False)).decode()
        assert again == expected, case
    large = base64.b64decode(rows[-1]["meta"]["return"] + "==")
    assert large[:2] == b"\x83P", "a 20 kB string is recorded compressed, as Elixir would"
