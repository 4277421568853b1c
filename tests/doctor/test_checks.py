"""The pure parts of ``bridge.doctor``: how a worker name and a node's traces give a language,
what findings add up to, the clock and notification verdicts. The database-facing parts are
tested through the command (tests/cli/test_doctor.py)."""

from __future__ import annotations

import pytest

from bridge.cli import output
from bridge.doctor import database, findings, nodes
from bridge.doctor.findings import Finding
from bridge.jobs.client.cluster import CheckIn, Cluster, PeerRow


@pytest.mark.parametrize(
    ("worker", "queue", "language"),
    [
        ("BadgeForge.PrintCenter", "default", "elixir"),
        ("Elixir.BadgeForge.PrintCenter", "default", "elixir"),
        ("MyWorker", "default", "elixir"),
        ("myapp.workers.GenerateBadge", "default", "python"),
        ("_private.job", "default", "python"),
        ("myapp.ping", "default", "python"),
        ("HephaestusOban.AdvanceWorker", "hephaestus", "elixir"),
        ("HephaestusOban.AdvanceWorker", "bridge_workflows", "python"),
        ("HephaestusOban.ExecuteStepWorker", "my_flows", "python"),
        ("ping", "default", "unknown"),
        ("", "default", "unknown"),
        ("Bad Name.x", "default", "unknown"),
    ],
)
def test_worker_language_from_the_name_and_for_hephaestus_workers_the_queue(
    worker: str, queue: str, language: str
) -> None:
    assert nodes.worker_language(worker, queue) == language


def peer(name: str, node: str, live: bool = True) -> PeerRow:
    return PeerRow(name, node, None, None, live)


def test_node_languages_python_evidence_wins_and_executing_is_no_sign_of_life() -> None:
    cluster = Cluster(waited=2.0)
    cluster.peers = [peer("Bridge", "py-1"), peer("Oban", "vm"), peer("Oban", "old", live=False)]
    cluster.checkins[("py-2", "mail", "u")] = CheckIn("py-2", "mail")
    attempted = [
        ("py-1", "default", "BadgeForge.PrintCenter", 3),  # an Elixir-looking name= on Python
        ("py-2", "mail", "myapp.mail.Send", 1),
        ("dead", "default", "BadgeForge.PrintCenter", 1),
    ]
    facts = nodes.node_languages(cluster, attempted)
    shown = {n: (f.alive, f.language) for n, f in facts.items()}
    assert shown == {
        "py-1": (True, "python"),
        "py-2": (True, "python"),
        "vm": (True, "elixir"),
        "old": (False, "unknown"),  # an expired lease says nothing
        "dead": (False, "elixir"),
    }
    assert facts["py-1"].evidence == ["leads 'Bridge' in oban_peers"]


def test_a_waiting_job_is_fine_when_a_node_of_its_language_serves_the_queue() -> None:
    facts = {
        "vm": nodes.NodeFacts("vm", True, "elixir"),
        "py": nodes.NodeFacts("py", True, "python"),
    }
    served = {"q": {"vm", "py"}}
    waiting = [("q", "BadgeForge.PrintCenter", 2, [1, 2]), ("q", "myapp.w.Job", 1, [3])]
    assert nodes.unserved(waiting, served, facts, complete=True, waited=2) == []
    assert [f.severity for f in nodes.both_languages(served, facts)] == ["warning"]


def test_unknown_languages_are_a_note_not_a_guess() -> None:
    facts = {"n": nodes.NodeFacts("n", True, "unknown")}
    found = nodes.unserved(
        [("q", "myapp.w.Job", 7, [1, 2, 3, 4, 5])], {"q": {"n"}}, facts, complete=True, waited=2
    )
    assert [(f.severity, f.details) for f in found] == [("note", {"queues": {"q": 7}})]


def test_stuck_executing_is_certain_only_after_a_whole_sonar_interval() -> None:
    executing = [("gone", 1, [9], 120.0), ("here", 1, [10], 5.0)]
    facts = {"here": nodes.NodeFacts("here", True, "python")}
    assert [f.severity for f in nodes.stuck_executing(executing, facts, 2.0)] == ["warning"]
    [certain] = nodes.stuck_executing(executing, facts, 16.0)
    assert certain.severity == "error" and "listen a whole sonar interval" not in certain.fix


def finding(severity: findings.Severity, *, schema: bool = False) -> Finding:
    return Finding("c", severity, "what", "fix", schema_blocking=schema)


def test_the_exit_status_is_the_cli_constants_and_notes_never_fail() -> None:
    assert (findings.EXIT_HAZARD, findings.EXIT_SCHEMA) == (output.EXIT_FAILED, output.EXIT_SCHEMA)
    assert findings.exit_status([]) == 0
    assert findings.exit_status([finding("note")]) == 0
    assert findings.exit_status([finding("note"), finding("warning")]) == 1
    assert findings.exit_status([finding("error")]) == 1
    assert findings.exit_status([finding("warning"), finding("error", schema=True)]) == 5


def test_the_summary_line_and_one_line_per_finding() -> None:
    assert findings.summary("public", []) == 'doctor: schema "public": no hazard found'
    assert findings.summary("public", [finding("note")] * 2) == (
        'doctor: schema "public": no hazard found (2 notes)'
    )
    mixed = [finding("error"), finding("warning"), finding("warning"), finding("note")]
    assert findings.summary("a\nb", mixed) == (
        'doctor: schema "a\\nb": 1 error, 2 warnings, 1 note'
    )
    assert Finding("c", "error", "queue 'a\x1bb'", "do x").line() == (
        "error: queue 'a\\x1bb'; fix: do x"
    )


def test_clock_skew_counts_only_beyond_the_measuring_error() -> None:
    assert database.skew_findings(0.4, 0.01) == []
    assert database.skew_findings(1.5, 0.6) == []  # within 1 s once the round trip is counted
    [late] = database.skew_findings(-2.25, 0.01)
    assert late.what == "the database clock is 2.2 s behind this host's (limit 1 s)"


def test_a_lost_round_trip_is_an_error_and_a_filling_queue_a_warning() -> None:
    assert database.notify_findings("public", 0.001, 0.0) == []
    found = database.notify_findings("public", None, 0.75)
    assert [(f.check, f.severity) for f in found] == [
        ("notifications", "error"),
        ("notifications", "warning"),
    ]
    assert found[0].what.startswith("a NOTIFY on 'public.oban_doctor' was not heard back")
