"""Badge Forge across the language line, tested the way its users test their own system: the
Python node draws a badge, the Elixir app prints it, and the rows and the app's log say so.

Fixtures (from the oban-bridge pytest plugin, nothing to import): ``bridge_db`` is a test
database with Oban's tables, emptied before each test; ``bridge_node`` starts a Python node;
``bridge_elixir_app`` is the Elixir app of ``[tool.bridge.testing]`` in ../pyproject.toml,
running on that same database.
"""

import pytest

from badge_forge import generator
from badge_forge.render import render_badge
from bridge import insert


@pytest.fixture
def forge(bridge_db, bridge_node, tmp_path):
    """The Python half: a node serving queue ``badges``, the generator on the test database."""
    generator.configure(bridge_db.url, bridge_db.prefix, out_dir=tmp_path)
    return bridge_node({"badges": 2}, workers=["badge_forge.generator"], node="forge-1")


def test_a_badge_is_drawn_in_python_and_printed_in_elixir(
    forge, bridge_elixir_app, bridge_db, tmp_path
):
    since = bridge_elixir_app.log_offset()
    with bridge_db.connect() as conn:  # what the Elixir app's Oban.insert would write
        badge = insert(conn, generator.GenerateBadge.new({"id": "b-1", "name": "Ada Lovelace"}))

    drawn = bridge_db.wait_for_job(badge)
    assert drawn.attempted_by[0] == "forge-1"  # the Python node drew it
    assert (tmp_path / "b-1.png").exists()
    printed = bridge_db.wait_for_job(worker="BadgeForge.PrintCenter", args={"badge_id": "b-1"})
    assert printed.attempted_by[0] == bridge_elixir_app.node  # the Elixir app printed it
    assert "[print-center] printed badge b-1 for Ada Lovelace" in bridge_elixir_app.log_text(since)


def test_a_badge_without_a_name_is_cancelled_in_python(forge, bridge_elixir_app, bridge_db):
    with bridge_db.connect() as conn:
        badge = insert(conn, generator.GenerateBadge.new({"id": "b-2"}))
    cancelled = bridge_db.wait_for_job(badge, state="cancelled")
    assert cancelled.errors[0]["error"] == (
        "** (Oban.PerformError) badge_forge.generator.GenerateBadge failed with "
        '{:cancel, "name must be 1..80 characters, got None"}'
    )
    bridge_db.refute_enqueued(worker="BadgeForge.PrintCenter", state=["completed", "available"])


def test_the_elixir_printer_refuses_a_damaged_badge(bridge_elixir_app, bridge_db):
    job = generator.print_job(render_badge("b-3", "Grace Hopper"), 640, 360)
    job.args["sha256"] = "0" * 64  # not the image it carries
    job.max_attempts = 1
    with bridge_db.connect() as conn:
        inserted = insert(conn, job)
    refused = bridge_db.wait_for_job(inserted, state="discarded")
    assert refused.errors[0]["error"].startswith(
        '** (Oban.PerformError) BadgeForge.PrintCenter failed with {:error, "sha256 mismatch'
    )
