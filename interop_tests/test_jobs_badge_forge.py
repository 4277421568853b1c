"""examples/badge_forge end to end: Elixir asks for badges, Python draws them, Elixir prints them.

The fixture enqueues `badge_forge.generator.GenerateBadge` jobs (queue `badges`) as the Elixir
app does (golden/elixir-jobs.json row 24 is the genuine insert); the example's runner script
(a real subprocess) draws each PNG with Pillow and enqueues `BadgeForge.PrintCenter` (queue
`printing`); the fixture's print center, woken only by that insert's NOTIFY, checks the image
with the VM's own Base64 and :crypto, logs it and records what it saw.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from interop_tests.fixture import ElixirFixture, wait_until
from interop_tests.support import UUID4, decode_recorded

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "badge_forge"
GENERATE = "badge_forge.generator.GenerateBadge"
PRINT_CENTER = "BadgeForge.PrintCenter"
BADGES = {"b-1": "Alasdair Fraser", "b-2": "Zoë Wanamaker-Øberg", "b-3": "José Valim"}


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
    fx: ElixirFixture, database_url: str, schema: str, tmp_path: Path
) -> None:
    try:
        from PIL import Image
    except ImportError:
        pytest.fail("examples/badge_forge needs Pillow: pip install -e '.[examples]'")
    fx.call("start_queue", queue="printing", limit=2)  # idle: only an insert NOTIFY wakes it
    badge_jobs = fx.enqueue(
        [
            {"worker": GENERATE, "queue": "badges", "args": {"id": i, "name": n}}
            for i, n in BADGES.items()
        ]
    )
    # A badge the generator cannot draw: cancelled by the Python worker, as {:cancel, reason}.
    [bad] = fx.enqueue([{"worker": GENERATE, "queue": "badges", "args": {"id": "b-x"}}])

    output = run_example(database_url, schema, tmp_path, "--stop-after", str(len(BADGES) + 1))

    ids = [job["id"] for job in badge_jobs]
    rows = {row["id"]: row for row in fx.jobs([*ids, bad["id"]])}
    for job_id in ids:
        row = rows[job_id]
        assert row["state"] == "completed", row
        assert row["attempted_by"][0] == "forge-1" and UUID4.match(row["attempted_by"][1])
        assert f"(job {job_id}): completed, print job" in output
    assert rows[bad["id"]]["state"] == "cancelled"
    assert [e["error"] for e in rows[bad["id"]]["errors"]] == [
        "** (Oban.PerformError) badge_forge.generator.GenerateBadge failed with "
        '{:cancel, "name must be 1..80 characters, got None"}'
    ]

    def printed() -> list[dict[str, Any]] | None:
        jobs = [row for row in fx.jobs() if row["worker"] == PRINT_CENTER]
        done = len(jobs) == len(BADGES) and all(r["state"] == "completed" for r in jobs)
        return jobs if done else None

    print_jobs = wait_until(printed, what="the Elixir print center to print every badge")
    by_badge = {row["args"]["badge_id"]: row for row in print_jobs}
    assert set(by_badge) == set(BADGES)
    for badge_id, name in BADGES.items():
        png = (tmp_path / f"{badge_id}.png").read_bytes()
        with Image.open(io.BytesIO(png)) as image:
            assert (image.format, image.size) == ("PNG", (640, 360))
        row = by_badge[badge_id]
        assert (row["queue"], row["attempt"], row["errors"]) == ("printing", 1, [])
        assert row["attempted_by"][0] == "vm"
        seen = decode_recorded(row["meta"]["return"])  # what the BEAM checked
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
        assert line in fx.stderr_tail


def test_print_center_refuses_a_badge_that_does_not_match(
    fx: ElixirFixture, database_url: str, schema: str, tmp_path: Path
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
    [row] = fx.enqueue(
        [{"worker": job.worker, "queue": job.queue, "args": job.args, "max_attempts": 1}]
    )
    fx.call("start_queue", queue="printing", limit=1)
    row = wait_until(
        lambda: (r := fx.jobs([row["id"]])[0])["state"] == "discarded" and r,
        what="the print center to refuse the badge",
    )
    [entry] = row["errors"]
    assert entry["error"].startswith(
        '** (Oban.PerformError) BadgeForge.PrintCenter failed with {:error, "sha256 mismatch: '
    )
