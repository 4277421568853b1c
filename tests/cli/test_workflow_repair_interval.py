"""How often the workflow lifeline looks: ``--workflow-repair-interval`` (variable, key, API).

It was fixed at 30 s with no option (issue #14: "the workflow lifeline has the same shape" as
the job lifeline's hard-coded interval), and ``bridge worker --workflow-repair-after`` without
workflows ran a node with no Peer, so its leader-only lifeline never ran at all.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bridge.cli.worker import NodeWorkflows
from bridge.jobs.node import NodeConfig
from bridge.workflows.run.lifeline import WorkflowLifeline, default_interval
from tests.jobs.plugins.test_rescue_latency import bridge_worker, leader_of
from tests.support.cli import run_bridge
from tests.workflows.run.test_repair import LOST_JOB_ID, STUCK_ID, build_stuck_s2d
from tests.workflows.run.test_runner import jobs_json


def test_the_default_interval_is_a_tenth_of_the_grace_between_1_and_30_s() -> None:
    assert [default_interval(g) for g in (3, 60, 120, 3600)] == [1.0, 6.0, 12.0, 30.0]
    assert WorkflowLifeline(grace=60).interval == 6.0
    assert WorkflowLifeline(grace=60, interval=0.5).interval == 0.5


def test_the_option_reaches_the_lifeline() -> None:
    config = NodeConfig(url="postgresql://nowhere/db", queues={})
    NodeWorkflows(repair_after=60.0, repair_interval=2.0).attach(config)
    assert config.plugins is not None
    [lifeline] = [p for p in config.plugins if isinstance(p, WorkflowLifeline)]
    assert (lifeline.grace, lifeline.interval) == (60.0, 2.0)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ("--workflow-repair-interval", "5"),
            {},
            "Invalid value for --workflow-repair-interval: the workflow lifeline is off: give "
            "--workflow-repair-after too, or drop --workflow-repair-interval",
        ),
        (
            ("--workflow-repair-after", "5"),
            {"BRIDGE_WORKFLOW_REPAIR_INTERVAL": "0"},
            "environment variable BRIDGE_WORKFLOW_REPAIR_INTERVAL='0': must be a positive number",
        ),
    ],
)
def test_refused_with_one_line(
    tmp_path: Path, database_url: str, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_bridge(
        "worker", "-q", "a", *args, cwd=tmp_path, env={"BRIDGE_DATABASE_URL": database_url, **env}
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"Error: {message}"


def test_help_states_the_bound(tmp_path: Path) -> None:
    result = run_bridge("worker", "--help", cwd=tmp_path, env={"COLUMNS": "200"})
    text = " ".join(result.stdout.split())
    assert "is healed within workflow-repair-after + this." in text
    assert "BRIDGE_WORKFLOW_REPAIR_INTERVAL workflow_repair_interval repair_after/10, 1-30" in text


def test_a_lifeline_only_worker_heals_an_instance_stuck_after_it_started(
    conn: psycopg.Connection[Any], oban_prefix: str, database_url: str, tmp_path: Path
) -> None:
    """``bridge worker`` with no workflows, the lifeline every 0.5 s: an Elixir instance that
    loses its advance after the node leads is healed within about a second. With the fixed 30 s
    interval it waited up to 30 s; without the Peer (the old ``plugins = []``) never."""
    args = ("-q", "elsewhere:1", "--node", "py-heal", "--workflow-repair-after", "30")
    env = {"BRIDGE_WORKFLOW_REPAIR_INTERVAL": "0.5"}
    with bridge_worker(database_url, oban_prefix, tmp_path / "scratch", *args, env=env):
        deadline = time.monotonic() + 20
        while leader_of(conn, oban_prefix) != "py-heal":
            assert time.monotonic() < deadline, "the node never led"
            time.sleep(0.1)
        time.sleep(1.0)  # its first look is over: only a later tick can find what comes next
        build_stuck_s2d(conn, oban_prefix)  # results older than the grace, advance lost
        deadline = time.monotonic() + 15
        while len(jobs_json(database_url, oban_prefix, STUCK_ID)) < LOST_JOB_ID:
            assert time.monotonic() < deadline, "the lifeline never healed the instance"
            time.sleep(0.1)
