"""The monthly report across the language line, tested as its users test it: the Elixir app owns
and runs the workflow (HephaestusOban), a Python node started with ``bridge worker`` in this
folder runs the chart step's body, and the rows and the app's log say so.

Fixtures (from the oban-bridge pytest plugin, nothing to import): ``bridge_db`` is a test
database with the shared tables, emptied before each test; ``bridge_elixir_app`` is the Elixir
app of ``[tool.bridge.testing]`` in ../pyproject.toml, running on that same database;
``bridge_database_url`` and ``bridge_prefix`` say where that is, for the ``bridge worker``
command below.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import Job, insert

EXAMPLE = Path(__file__).resolve().parents[1]
RENDER = "reports.charts.render_chart"


@pytest.fixture
def charts_node(bridge_database_url, bridge_prefix, tmp_path):
    """The Python half, started as the README starts it: ``bridge worker`` in this folder
    (``[tool.bridge]`` names ``reports.charts``), stopped with SIGTERM as a deployment stops it.
    Its log is printed when a test fails."""
    bridge = Path(sys.executable).parent / "bridge"  # installed with oban-bridge
    if not bridge.exists():
        bridge = Path(shutil.which("bridge") or "bridge")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    command = [str(bridge), "--database-url", bridge_database_url, "--prefix", bridge_prefix]
    log_path = tmp_path / "bridge-worker.log"
    with log_path.open("w") as log:
        node = subprocess.Popen(
            [*command, "worker", "--node", "charts-1"],
            cwd=EXAMPLE,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield node
    node.send_signal(signal.SIGTERM)
    try:
        node.wait(timeout=30)
    finally:
        print(log_path.read_text())  # shown by pytest for a failing test


def start_report(bridge_db, month):
    """What the app's own code would do; here Python asks the Elixir app to start the report
    (Reports.StartReport, an Oban worker of the app, calls HephaestusOban's runner)."""
    with bridge_db.connect() as conn:
        job = Job.new("Reports.StartReport", {"month": month}, queue="reports")
        insert(conn, job, prefix=bridge_db.prefix)


def test_python_draws_the_chart_and_the_elixir_workflow_publishes_it(
    charts_node, bridge_elixir_app, bridge_db
):
    since = bridge_elixir_app.log_offset()
    start_report(bridge_db, "202611")

    report = bridge_db.wait_for_instance("report::202611", timeout=60)
    steps = report.context["steps"]
    assert report.workflow == "Elixir.Reports.Flows.Monthly"
    assert steps["gather"] == {"figures": [3, 5, 8, 13]}
    assert steps["render_chart"] == {
        "chart": "#########\n###############\n#########################\n" + "#" * 40,
        "points": 4,
    }
    assert steps["publish"] == {"with_chart": True}
    rendered = bridge_db.wait_for_job(worker=RENDER, args={"instance_id": "report::202611"})
    assert rendered.queue == "charts"
    assert rendered.attempted_by[0] == "charts-1"  # the Python node ran the step's body
    assert "[reports] report::202611 published with a 4-bar chart" in bridge_elixir_app.log_text(
        since
    )


def test_a_chart_that_fails_for_good_takes_the_elixir_steps_failure_event(
    charts_node, bridge_elixir_app, bridge_db
):
    since = bridge_elixir_app.log_offset()
    start_report(bridge_db, "202612")  # a month without figures: the Python body raises

    report = bridge_db.wait_for_instance("report::202612", timeout=60)
    steps = report.context["steps"]
    assert steps["gather"] == {"figures": []}
    assert steps["render_chart"] == {}  # :render_failed, the step's failure_event, alone
    assert steps["publish_without_chart"] == {"with_chart": False}
    assert "publish" not in steps
    failed = bridge_db.wait_for_job(
        worker=RENDER, args={"instance_id": "report::202612"}, state="discarded"
    )
    assert failed.attempt == failed.max_attempts == 1
    assert "no figures for 202612: nothing to chart" in failed.errors[-1]["error"]
    assert "[reports] report::202612 published without a chart" in bridge_elixir_app.log_text(since)
