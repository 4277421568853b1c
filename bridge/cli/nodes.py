"""``bridge nodes``: the live nodes of both languages on the shared database.

Nothing records which nodes run: they announce themselves. This command listens for a bounded
time to what they send (``oban_sonar`` pings, ``oban_gossip`` check-ins) and reads what the
database holds (``oban_peers`` leadership, executing jobs), and says which source each fact
comes from. ``bridge queues`` uses the same listening.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import echo_json, table
from bridge.jobs.client.cluster import SONAR_INTERVAL

if TYPE_CHECKING:
    from bridge.jobs.client.cluster import CheckIn, Cluster

F = TypeVar("F", bound=Callable[..., Any])

NODES_WAIT = SONAR_INTERVAL + 1

SOURCES_HELP = (
    "Sources: sonar pings (every node running Oban's Sonar, Elixir or Python, pings every 15 s), "
    "gossip check-ins (every queue's limit, paused, running, every 0.75 s, from Python nodes "
    "started with `bridge worker --gossip` and Elixir nodes running Oban Web's oban_met; "
    "OSS Oban 2.23 alone sends none, so such a node's queues show as unknown and its "
    "presence comes from sonar), oban_peers (the leader of each instance name), oban_jobs "
    "(executing jobs and the node that claimed them, jobs waiting per queue)."
)


def wait_option(default: float, what: str) -> Callable[[F], F]:
    """``--wait SECONDS``: how long to listen, bounded, with its default in the help."""
    return click.option(
        "--wait",
        type=click.FloatRange(min=0, max=3600),
        default=default,
        show_default=True,
        metavar="SECONDS",
        help=f"Listen this long for {what}; 0 does not listen.",
    )


@contextmanager
def listen(wait: float, what: str) -> Iterator[None]:
    """Say on a terminal that the command is listening, so a pause is not mistaken for a hang."""
    if wait > 0 and sys.stderr.isatty():
        click.echo(f"listening {wait:g} s for {what} (--wait to change)…", err=True)
    yield


def observe_live(ctx: CliContext, wait: float) -> Cluster:
    """``cluster.observe`` on the command's database, saying that it listens."""
    from bridge.jobs.client.cluster import observe

    with connect(ctx) as conn, listen(wait, "sonar pings and check-ins"):
        return observe(conn, ctx.prefix, wait)


def node_rows(cluster: Cluster) -> list[dict[str, Any]]:
    """One entry per live node, with what each source says about it (``None``: unknown)."""
    rows = []
    for node in cluster.nodes():
        checks = cluster.queues_of(node)
        rows.append(
            {
                "node": node,
                "idents": sorted({c.ident for c in checks if c.ident}),
                "leads": [p.name for p in cluster.peers if p.live and p.node == node],
                "sonar_pings": cluster.pings.get(node, 0),
                "queues": [_check_json(c) for c in checks] if checks else None,
                "executing": sum(n for (_, name), n in cluster.executing.items() if name == node),
            }
        )
    return rows


def _check_json(check: CheckIn) -> dict[str, Any]:
    return {
        "queue": check.queue,
        "limit": check.limit,
        "paused": check.paused,
        "running": check.running,
        "instance": check.instance,
        "uuid": check.uuid,
    }


def _queues_cell(queues: list[dict[str, Any]] | None) -> str:
    if queues is None:
        return "unknown"
    shown = []
    for q in queues:
        limit = "?" if q["limit"] is None else q["limit"]
        shown.append(f"{q['queue']}:{limit}{' paused' if q['paused'] else ''}")
    return ", ".join(shown)


@click.command("nodes", epilog=SOURCES_HELP)
@wait_option(NODES_WAIT, "sonar pings and check-ins (Oban's Sonar pings every 15 s)")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"waited", "nodes": [{node, idents, leads, sonar_pings, queues (null: '
    'unknown), executing}], "peers": [oban_peers rows, expired ones too]}.',
)
@pass_ctx
def nodes_command(ctx: CliContext, wait: float, as_json: bool) -> None:
    """The live nodes, Elixir and Python: leadership, queues served, limits, paused or not.

    Columns and where they come from: NODE (any source); IDENT, what a signal for this node
    carries (`bridge queues pause Q --node NODE --instance NAME`), and QUEUES (queue:limit,
    "paused"), both from gossip check-ins; LEADS, the instance names whose unexpired
    oban_peers row this node holds; PINGS, sonar pings heard while listening; EXECUTING, its
    jobs executing now (oban_jobs.attempted_by)."""
    cluster = observe_live(ctx, wait)
    rows = node_rows(cluster)
    if as_json:
        peers = [
            {
                "name": p.name,
                "node": p.node,
                "started_at": p.started_at,
                "expires_at": p.expires_at,
                "live": p.live,
            }
            for p in cluster.peers
        ]
        echo_json({"waited": wait, "nodes": rows, "peers": peers})
        return
    table(
        ("node", "ident", "leads", "pings", "queues", "executing"),
        (
            (
                r["node"],
                ", ".join(r["idents"]) or "unknown",
                ", ".join(r["leads"]) or "-",
                r["sonar_pings"],
                _queues_cell(r["queues"]),
                r["executing"],
            )
            for r in rows
        ),
    )
    if not rows:
        click.echo(f"no live node heard in {wait:g} s, none leads in oban_peers", err=True)


# The name bridge/cli/__init__.py registers.
