"""examples/badge_forge end to end: Elixir asks for badges, Python draws them, Elixir prints them.

Runs on the plugin's fixtures, as a user's cross-language test does: ``bridge_db`` is the test
database, ``bridge_elixir_app`` the Elixir app (elixir_fixture/ in its app mode, serving queue
`printing` with `BadgeForge.PrintCenter`, [tool.bridge.testing] of pyproject.toml). The module's
stdin-driven VM enqueues `badge_forge.generator.GenerateBadge` jobs (queue `badges`) as the
Elixir app does (golden/elixir-jobs.json row 24 is the genuine insert); the example's runner
script (a real subprocess) draws each PNG with Pillow and enqueues `BadgeForge.PrintCenter`
(queue `printing`); the app's print center, woken by that insert's NOTIFY, checks the image
with the VM's own Base64 and :crypto, logs it and records what it saw.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import insert
from bridge.testing import ElixirApp
from bridge.testing.database import BridgeDatabase
from interop_tests.fixture import ElixirFixture
from interop_tests.support import UUID4, decode_recorded

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "badge_forge"
GENERATE = "badge_forge.generator.GenerateBadge"
PRINT_CENTER = "BadgeForge.PrintCenter"
BADGES = {"b-1": "Alasdair Fraser", "b-2": "Zoë Wanamaker-Øberg", "b-3": "José Valim"}

pytestmark = pytest.mark.usefixtures("compiled_fixture")


@pytest.fixture
def enqueuer(elixir: ElixirFixture, bridge_db: BridgeDatabase) -> Iterator[ElixirFixture]:
    """The module's VM on the test database, only to insert as the Elixir app's code does."""
    elixir.connect(bridge_db.url, bridge_db.prefix, node="vm")
    yield elixir
    elixir.call("disconnect")


def run_example(database_url: str, schema: str, out: Path, *extra: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [
        sys.executable,
        str(EXAMPLE / "run.py"),
        "--database-url",
        database_url,
        "--prefix",
        schema,
        "--out",
        str(out),
        "--node",
        "forge-1",
        *extra,
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"run.py exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def test_elixir_badges_drawn_in_python_and_printed_in_elixir(
    enqueuer: ElixirFixture, bridge_elixir_app: ElixirApp, bridge_db: BridgeDatabase, tmp_path: Path
) -> None:
    try:
        from PIL import Image
    except ImportError:
        pytest.fail("examples/badge_forge needs Pillow: pip install -e '.[examples]'")
    since = bridge_elixir_app.log_offset()
    badge_jobs = enqueuer.enqueue(
        [
            {"worker": GENERATE, "queue": "badges", "args": {"id": i, "name": n}}
            for i, n in BADGES.items()
        ]
    )
    # A badge the generator cannot draw: cancelled by the Python worker, as {:cancel, reason}.
    [bad] = enqueuer.enqueue([{"worker": GENERATE, "queue": "badges", "args": {"id": "b-x"}}])

    output = run_example(
        bridge_db.url, bridge_db.prefix, tmp_path, "--stop-after", str(len(BADGES) + 1)
    )

    for job in badge_jobs:
        row = bridge_db.wait_for_job(job["id"])
        assert row.attempted_by[0] == "forge-1" and UUID4.match(row.attempted_by[1])
        assert f"(job {job['id']}): completed, print job" in output
    refused = bridge_db.wait_for_job(bad["id"], state="cancelled")
    assert [e["error"] for e in refused.errors] == [
        "** (Oban.PerformError) badge_forge.generator.GenerateBadge failed with "
        '{:cancel, "name must be 1..80 characters, got None"}'
    ]

    for badge_id, name in BADGES.items():
        row = bridge_db.wait_for_job(worker=PRINT_CENTER, args={"badge_id": badge_id})
        png = (tmp_path / f"{badge_id}.png").read_bytes()
        with Image.open(io.BytesIO(png)) as image:
            assert (image.format, image.size) == ("PNG", (640, 360))
        assert (row.queue, row.attempt, row.errors) == ("printing", 1, [])
        assert row.attempted_by[0] == bridge_elixir_app.node == "fixture_app"
        seen = decode_recorded(row.meta["return"])  # what the BEAM checked
        assert seen == {
            "badge_id": badge_id,
            "name": name,
            "bytes": len(png),
            "width": 640,
            "height": 360,
            "sha256": hashlib.sha256(png).hexdigest(),
            "attempt": 1,
        }
        line = f"[print-center] printed badge {badge_id} for {name}: 640x360 PNG, {len(png)} bytes"
        assert line in bridge_elixir_app.log_text(since)
    assert len(bridge_db.all_enqueued(worker=PRINT_CENTER, state="completed")) == len(BADGES)


def test_print_center_refuses_a_badge_that_does_not_match(
    bridge_elixir_app: ElixirApp, bridge_db: BridgeDatabase
) -> None:
    """The check on the Elixir side is real: a wrong digest fails the print job."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from badge_forge.generator import print_job
        from badge_forge.render import render_badge
    finally:
        sys.path.remove(str(EXAMPLE))
    job = print_job(render_badge("b-9", "Nobody"), 640, 360)
    job.args["sha256"] = "0" * 64
    job.max_attempts = 1
    with bridge_db.connect() as conn:
        inserted = insert(conn, job)
    row = bridge_db.wait_for_job(inserted, state="discarded")
    [entry] = row.errors
    assert entry["error"].startswith(
        '** (Oban.PerformError) BadgeForge.PrintCenter failed with {:error, "sha256 mismatch: '
    )
