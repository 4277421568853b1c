"""The Python worker an Elixir app enqueues by name: ``badge_forge.generator.GenerateBadge``.

The Elixir side inserts ``%{"id" => "b-1", "name" => "Alasdair Fraser"}`` into queue ``badges``;
this worker draws the badge, keeps a copy on disk, and hands the printing back to Elixir by
enqueueing ``BadgeForge.PrintCenter`` into queue ``printing`` with the image itself and what the
printer should check (size, SHA-256). Neither side imports the other: the worker names are the
whole interface.

Where the database is comes from :func:`configure` (the runner script) or, under ``bridge worker
--workers badge_forge.generator``, from ``BRIDGE_DATABASE_URL`` / ``DATABASE_URL`` and
``BRIDGE_PREFIX``, the same variables the CLI reads.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from badge_forge.render import HEIGHT, WIDTH, Badge, BadgeError, render_badge
from bridge import Cancel, Job, Ok, insert, worker

PRINT_CENTER = "BadgeForge.PrintCenter"
PRINT_QUEUE = "printing"


@dataclass
class Settings:
    url: str | None = field(
        default_factory=lambda: (
            os.environ.get("BRIDGE_DATABASE_URL") or os.environ.get("DATABASE_URL")
        )
    )
    prefix: str = field(default_factory=lambda: os.environ.get("BRIDGE_PREFIX", "public"))
    out_dir: Path | None = field(
        default_factory=lambda: (
            Path(os.environ["BADGE_FORGE_OUT"]) if os.environ.get("BADGE_FORGE_OUT") else None
        )
    )


settings = Settings()


def configure(url: str, prefix: str = "public", out_dir: Path | None = None) -> None:
    settings.url, settings.prefix, settings.out_dir = url, prefix, out_dir


def print_job(badge: Badge, width: int, height: int) -> Job:
    """The confirmation job for the Elixir print center: everything it needs to verify."""
    return Job.new(
        PRINT_CENTER,
        {
            "badge_id": badge.badge_id,
            "name": badge.name,
            "png": base64.b64encode(badge.png).decode("ascii"),
            "sha256": badge.sha256,
            "width": width,
            "height": height,
        },
        queue=PRINT_QUEUE,
    )


@worker(queue="badges", max_attempts=5)
class GenerateBadge:
    def process(self, job: Job) -> Any:
        try:
            badge = render_badge(job.args.get("id"), job.args.get("name"))
        except BadgeError as exc:
            # Bad args will not get better with retries: {:cancel, reason}, as an Elixir worker
            # would return.
            return Cancel(str(exc))
        if settings.out_dir is not None:
            settings.out_dir.mkdir(parents=True, exist_ok=True)
            (settings.out_dir / f"{badge.badge_id}.png").write_bytes(badge.png)
        if settings.url is None:
            raise RuntimeError("no database: call configure() or set BRIDGE_DATABASE_URL")
        # A crash between this insert and the ack re-runs the job and the badge is printed
        # twice: jobs run at least once, in Python as in Oban.
        with psycopg.connect(settings.url, autocommit=True) as conn:
            printing = insert(conn, print_job(badge, WIDTH, HEIGHT), prefix=settings.prefix)
        return Ok({"badge_id": badge.badge_id, "sha256": badge.sha256, "print_job": printing.id})
