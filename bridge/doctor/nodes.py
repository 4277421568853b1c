"""Live nodes and the jobs they serve: a queue served by both languages, jobs no live node of
their worker's language takes, jobs left ``executing`` by a node that is gone.

Nothing records which language a node runs, so it is read from what the node leaves, and every
finding says where that came from:

- its ``oban_peers`` lease: Python nodes lead under ``Bridge``, Elixir nodes under their Oban
  instance name (``Oban``);
- the workers of the jobs it has attempted in the last ten minutes (``attempted_by``): an
  Elixir node can only run Elixir modules, so a Python path (``myapp.workers.Resize``) means a
  Python node; an Elixir module name (``BadgeForge.PrintCenter``) means an Elixir node unless
  other evidence says Python (a Python worker may take an Elixir-looking ``name=``).
  HephaestusOban's worker names belong to whoever serves the queue: ``hephaestus`` is the
  Elixir runner's, any other queue a Python runner's (``repair.owner_of``'s rule).

Which queues a node serves comes from its gossip check-ins (``bridge worker --gossip``, Oban
Web's ``oban_met``; OSS Oban 2.23 alone sends none) and from the jobs it is executing. When a
live node sends no check-ins, doctor cannot tell which queues it serves and says so instead of
guessing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg

from bridge.doctor.findings import Finding
from bridge.jobs import queries
from bridge.jobs.client.cluster import SONAR_INTERVAL, Cluster
from bridge.workflows.run.repair import ELIXIR_QUEUE
from bridge.workflows.run.runner import WORKERS as HEPHAESTUS_WORKERS

Language = Literal["python", "elixir", "unknown"]

# The name Python nodes lead under in oban_peers (bridge.jobs.plugins.peer.Peer's default).
PYTHON_PEER_NAME = "Bridge"
# How far back the jobs a node attempted count as evidence of its language.
EVIDENCE_MINUTES = 10
# How many job ids a finding names.
SHOWN_IDS = 5

_ELIXIR_MODULE = re.compile(r"(Elixir\.)?[A-Z][A-Za-z0-9_]*(\.[A-Z][A-Za-z0-9_]*)*\Z")
_PYTHON_PATH = re.compile(r"[a-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")

# Jobs each node attempted lately, by queue and worker (executing ones included).
_ATTEMPTED = """
SELECT attempted_by[1], queue, worker, count(*)
FROM {prefix}.oban_jobs
WHERE attempted_by[1] IS NOT NULL
  AND attempted_at > timezone('UTC', now()) - make_interval(mins => %(minutes)s)
GROUP BY 1, 2, 3
"""

# Executing jobs by node, with how long the oldest has been executing.
_EXECUTING = """
SELECT coalesce(attempted_by[1], ''), count(*),
       (array_agg(id ORDER BY id))[1:%(shown)s],
       extract(epoch FROM timezone('UTC', now()) - min(attempted_at))::float8
FROM {prefix}.oban_jobs WHERE state = 'executing'
GROUP BY 1 ORDER BY 1
"""

# Jobs waiting to be claimed, by queue and worker.
_WAITING = """
SELECT queue, worker, count(*), (array_agg(id ORDER BY id))[1:%(shown)s]
FROM {prefix}.oban_jobs WHERE state IN ('available', 'retryable')
GROUP BY 1, 2 ORDER BY 1, 2
"""


def worker_language(worker: str, queue: str) -> Language:
    """The language a worker name belongs to, from its spelling alone; pure.

    HephaestusOban's workers run in both (the queue tells whose runner: ``hephaestus`` is
    Elixir's); an Elixir module is capitalised segments (``Elixir.`` optional); a Python path
    is dotted with a lower-case first segment (``module.QualName``)."""
    if worker in HEPHAESTUS_WORKERS:
        return "elixir" if queue == ELIXIR_QUEUE else "python"
    if _ELIXIR_MODULE.match(worker):
        return "elixir"
    if _PYTHON_PATH.match(worker):
        return "python"
    return "unknown"


@dataclass
class NodeFacts:
    """What doctor knows about one node: alive or not, and its language with the evidence."""

    node: str
    alive: bool
    language: Language = "unknown"
    evidence: list[str] = field(default_factory=list)


def alive_nodes(cluster: Cluster) -> set[str]:
    """Nodes that showed life while doctor listened or hold an unexpired lease: pinging,
    checking in, leading. (Executing a job is no sign of life: a dead node's jobs stay.)"""
    names = set(cluster.pings) | {c.node for c in cluster.checkins.values()}
    return names | {p.node for p in cluster.peers if p.live}


def node_languages(
    cluster: Cluster, attempted: Iterable[tuple[str, str, str, int]]
) -> dict[str, NodeFacts]:
    """Every node seen (alive or running jobs) with its language; pure over what was read.
    ``attempted``: (node, queue, worker, count) of the jobs each attempted lately."""
    alive = alive_nodes(cluster)
    facts: dict[str, NodeFacts] = {}

    def of(node: str) -> NodeFacts:
        return facts.setdefault(node, NodeFacts(node, node in alive))

    python: dict[str, list[str]] = defaultdict(list)
    elixir: dict[str, list[str]] = defaultdict(list)
    for peer in cluster.peers:
        of(peer.node)
        if not peer.live:
            continue
        if peer.name == PYTHON_PEER_NAME:
            python[peer.node].append(f"leads {peer.name!r} in oban_peers")
        else:
            elixir[peer.node].append(f"leads {peer.name!r} in oban_peers")
    for node, queue, worker, _count in attempted:
        of(node)
        language = worker_language(worker, queue)
        if language == "python":
            python[node].append(f"ran {worker}")
        elif language == "elixir":
            elixir[node].append(f"ran {worker}")
    for node in alive:
        of(node)
    for node, fact in facts.items():
        if python.get(node):
            fact.language, fact.evidence = "python", sorted(set(python[node]))[:3]
        elif elixir.get(node):
            fact.language, fact.evidence = "elixir", sorted(set(elixir[node]))[:3]
    return facts


def servers(cluster: Cluster, facts: Mapping[str, NodeFacts]) -> dict[str, set[str]]:
    """queue -> the live nodes serving it: from check-ins, and from the jobs live nodes are
    executing in it."""
    served: dict[str, set[str]] = defaultdict(set)
    for check in cluster.checkins.values():
        served[check.queue].add(check.node)
    for queue, node in cluster.executing:
        if node in facts and facts[node].alive:
            served[queue].add(node)
    return served


def _names(nodes: Iterable[str]) -> str:
    return ", ".join(sorted(nodes))


def _jobs(count: int) -> str:
    return f"{count} job{'' if count == 1 else 's'}"


def both_languages(served: Mapping[str, set[str]], facts: Mapping[str, NodeFacts]) -> list[Finding]:
    """A queue with live nodes of both languages serving it: each job goes to whichever node
    claims it first, so every worker in it must exist on both sides."""
    found = []
    for queue in sorted(served):
        by = defaultdict(set)
        for node in served[queue]:
            by[facts[node].language if node in facts else "unknown"].add(node)
        if by.get("python") and by.get("elixir"):
            found.append(
                Finding(
                    "queues",
                    "warning",
                    f"queue {queue!r} is served by both languages: Elixir node(s) "
                    f"{_names(by['elixir'])} and Python node(s) {_names(by['python'])}, so a "
                    "job goes to whichever claims it first and fails there if that side has "
                    "no such worker",
                    "serve each queue from one language only: give Python workers a queue of "
                    "their own (@worker(queue=...), bridge worker --queues) and drop it from "
                    "the other side's queue list",
                    {
                        "queue": queue,
                        "elixir_nodes": sorted(by["elixir"]),
                        "python_nodes": sorted(by["python"]),
                    },
                )
            )
    return found


def unserved(
    waiting: Sequence[tuple[str, str, int, list[int]]],
    served: Mapping[str, set[str]],
    facts: Mapping[str, NodeFacts],
    *,
    complete: bool,
    waited: float,
) -> list[Finding]:
    """Available or retryable jobs that no live node of their worker's language serves.

    ``complete``: every live node sends check-ins, so a queue without one is served by no
    node. Otherwise a queue nobody is seen serving cannot be judged: one note names them."""
    found: list[Finding] = []
    unknown: dict[str, int] = defaultdict(int)
    for queue, worker, count, ids in waiting:
        language = worker_language(worker, queue)
        nodes = served.get(queue, set())
        languages = {facts[n].language if n in facts else "unknown" for n in nodes}
        details = {"queue": queue, "worker": worker, "count": count, "job_ids": ids}
        if language != "unknown" and language in languages:
            continue
        if not nodes and complete:
            found.append(
                Finding(
                    "workers",
                    "error",
                    f"{_jobs(count)} of {_language(language)}worker {worker} wait in queue "
                    f"{queue!r} (ids {_ids(ids, count)}), which no live node serves",
                    _start_fix(language, queue, worker),
                    details,
                )
            )
        elif nodes and language != "unknown" and "unknown" not in languages:
            other = "Elixir" if language == "python" else "Python"
            found.append(
                Finding(
                    "workers",
                    "error",
                    f"{_jobs(count)} of {_language(language)}worker {worker} wait in queue "
                    f"{queue!r} (ids {_ids(ids, count)}), served only by {other} node(s) "
                    f"{_names(nodes)}, which cannot run it",
                    _start_fix(language, queue, worker),
                    {**details, "nodes": sorted(nodes)},
                )
            )
        else:
            unknown[queue] += count
    if unknown:
        queues = ", ".join(f"{q!r} ({_jobs(n)})" for q, n in sorted(unknown.items()))
        found.append(
            Finding(
                "workers",
                "note",
                f"cannot tell whether a live node serves the workers waiting in queue(s) "
                f"{queues}: not every live node sent a gossip check-in in {waited:g} s, or "
                "its language is unknown",
                "start Python nodes with `bridge worker --gossip` (Elixir nodes send check-ins "
                "with Oban Web's oban_met), or check with `bridge queues list`",
                {"queues": dict(sorted(unknown.items()))},
            )
        )
    return found


def _language(language: Language) -> str:
    return {"python": "Python ", "elixir": "Elixir "}.get(language, "")


def _ids(ids: Sequence[int], count: int) -> str:
    shown = ", ".join(str(i) for i in ids)
    return shown if count <= len(ids) else f"{shown}, ..."


def _start_fix(language: Language, queue: str, worker: str) -> str:
    if language == "python":
        return (
            f"start a Python node serving it (`bridge worker --queues {queue}:10 --workers "
            f"MODULE` with the module defining {worker}), or enqueue it in a queue Python "
            "nodes serve"
        )
    if language == "elixir":
        return (
            f"add {queue!r} to the queues of the Elixir app that defines {worker} "
            "(config :my_app, Oban, queues: [...]), or enqueue it in a queue that app serves"
        )
    return f"start a node that defines {worker} and serves {queue!r}"


def stuck_executing(
    executing: Sequence[tuple[str, int, list[int], float]],
    facts: Mapping[str, NodeFacts],
    waited: float,
) -> list[Finding]:
    """Jobs ``executing`` on a node not heard alive: they stay so until a lifeline rescues
    them. Certain (error) once doctor listened a whole sonar interval, else a warning."""
    found = []
    heard_all = waited >= SONAR_INTERVAL
    for node, count, ids, age in executing:
        if node in facts and facts[node].alive:
            continue
        who = f"node {node!r}" if node else "no node (attempted_by is empty)"
        listen = (
            ""
            if heard_all
            else f"; listen a whole sonar interval (--wait {SONAR_INTERVAL + 1:g}) to tell a "
            "dead node from a quiet one"
        )
        found.append(
            Finding(
                "executing",
                "error" if heard_all else "warning",
                f"{_jobs(count)} executing on {who} (ids {_ids(ids, count)}, the oldest for "
                f"{int(age)} s), which was not heard alive in {waited:g} s (no sonar ping, "
                "check-in or oban_peers lease)",
                "a leader's lifeline makes them available again once they have run longer "
                "than its rescue-after: `bridge worker --rescue-after SECONDS` on a Python "
                "node, Oban.Plugins.Lifeline's rescue_after (default 60 min) on an Elixir one"
                f"; any rescue-after under {int(age)} s frees these{listen}",
                {"node": node, "count": count, "job_ids": ids, "oldest_seconds": round(age, 3)},
            )
        )
    return found


def check_nodes(
    conn: psycopg.Connection[Any], prefix: str, cluster: Cluster
) -> tuple[list[Finding], dict[str, Any]]:
    """Every finding of this module and the facts behind them (nodes and their languages)."""
    params = {"minutes": EVIDENCE_MINUTES, "shown": SHOWN_IDS}
    attempted = conn.execute(queries.render(_ATTEMPTED, prefix), params).fetchall()
    executing = conn.execute(queries.render(_EXECUTING, prefix), params).fetchall()
    waiting = conn.execute(queries.render(_WAITING, prefix), params).fetchall()
    facts = node_languages(cluster, attempted)
    served = servers(cluster, facts)
    alive = alive_nodes(cluster)
    checking_in = {c.node for c in cluster.checkins.values()}
    complete = bool(alive) and alive <= checking_in
    found = both_languages(served, facts)
    found += unserved(waiting, served, facts, complete=complete, waited=cluster.waited)
    found += stuck_executing(executing, facts, cluster.waited)
    nodes = [
        {
            "node": f.node,
            "alive": f.alive,
            "language": f.language,
            "evidence": f.evidence,
            "checks_in": f.node in checking_in,
            "queues": sorted(q for q, ns in served.items() if f.node in ns),
        }
        for f in sorted(facts.values(), key=lambda f: f.node)
    ]
    return found, {"nodes": nodes, "check_ins_complete": complete}
