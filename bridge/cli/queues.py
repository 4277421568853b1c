"""``bridge queues list|pause|resume|scale|start|stop``: the queues live nodes serve, and Oban
signals that every node obeys, Elixir and Python alike (``bridge.jobs.client.admin``).

A signal is a NOTIFY nobody answers, so before sending one the command listens briefly to the
nodes' check-ins and says which live nodes serve the queue (or warns that none was heard), and
afterwards says in words what it sent and to whom.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.nodes import SOURCES_HELP, listen, observe_live, wait_option
from bridge.cli.output import EXIT_USAGE, echo_json, fail, table, usage_error, warn

if TYPE_CHECKING:
    from bridge.jobs.client.cluster import CheckIn, Cluster

F = TypeVar("F", bound=Callable[..., Any])

# Long enough to hear two rounds of check-ins (every GOSSIP_INTERVAL, 0.75 s).
SIGNAL_WAIT = 2.0


@click.group("queues")
def queues_group() -> None:
    """The queues live nodes serve (list), and signals every node obeys, Elixir and Python:
    pause, resume, scale, start, stop.

    A signal goes to every node (ident "any") unless --node names one; pause and resume take
    '*' for every queue. Each signal command first listens for check-ins (--wait) to say which
    live nodes serve the queue, then says what it sent."""


# -- list ------------------------------------------------------------------------------------------


# The job counts of a row, all from oban_jobs: executing on the row's node, the rest queue-wide.
COUNTS = ("executing", "available", "scheduled", "retryable")


def queue_rows(cluster: Cluster) -> list[dict[str, Any]]:
    """One row per queue on each node, each saying where it comes from (``source``). The job
    counts come from oban_jobs and are always known; limit, paused and the node's running list
    only from check-ins."""
    rows: list[dict[str, Any]] = []
    paired: set[tuple[str, str]] = set()
    for check in cluster.serving("*"):
        paired.add((check.queue, check.node))
        rows.append(
            _row(cluster, check.queue, check.node, "check-in")
            | {
                "ident": check.ident,
                "limit": check.limit,
                "paused": check.paused,
                "running": check.running,
            }
        )
    for (queue, node), _ in sorted(cluster.executing.items()):
        if (queue, node) in paired:
            continue
        paired.add((queue, node))
        rows.append(_row(cluster, queue, node or None, "executing jobs"))
    waiting = set(cluster.available) | set(cluster.scheduled) | set(cluster.retryable)
    for queue in sorted(waiting - {queue for queue, _ in paired}):
        rows.append(_row(cluster, queue, None, "waiting jobs"))
    for node in cluster.nodes():
        if not any(node == n for _, n in paired):
            source = "sonar" if node in cluster.pings else "oban_peers"
            rows.append(_row(cluster, None, node, source))
    rows.sort(key=lambda r: (r["queue"] is None, r["queue"] or "", r["node"] or ""))
    return rows


def _row(cluster: Cluster, queue: str | None, node: str | None, source: str) -> dict[str, Any]:
    """A row with what oban_jobs says (``None`` where there is no queue) and nothing a
    check-in says."""
    counts: dict[str, int | None] = dict.fromkeys(COUNTS)
    if queue is not None:
        counts = {
            "executing": cluster.executing.get((queue, node or ""), 0),
            "available": cluster.available.get(queue, 0),
            "scheduled": cluster.scheduled.get(queue, 0),
            "retryable": cluster.retryable.get(queue, 0),
        }
    base: dict[str, Any] = {"queue": queue, "node": node, "ident": None, "limit": None}
    return base | {"paused": None, "running": None} | counts | {"source": source}


def _cell(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


@queues_group.command("list", epilog=SOURCES_HELP)
@wait_option(SIGNAL_WAIT, "check-ins (sent every 0.75 s by nodes that gossip)")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"waited", "queues": [{queue, node, ident, limit, paused, running, executing, '
    "available, scheduled, retryable, source}]}, null where unknown.",
)
@pass_ctx
def queues_list(ctx: CliContext, wait: float, as_json: bool) -> None:
    """The queues with jobs or live nodes, one row per queue on each node: its limit, paused or
    not, and its jobs executing (on that node), available, scheduled and retryable (in the whole
    queue).

    The job counts come from oban_jobs and need nothing else (EXECUTING per node from
    oban_jobs.attempted_by). LIMIT and PAUSED come only from check-ins on oban_gossip, heard
    while listening: Python nodes started with --gossip and Elixir nodes running Oban Web's
    oban_met send them; OSS Oban 2.23 alone sends none. SOURCE says what the row rests on:
    "check-in", "executing jobs" (a node is running jobs of the queue now), "waiting jobs"
    (jobs wait in the queue and no node was heard serving it), "sonar" or "oban_peers" (a live
    node whose queues are unknown)."""
    cluster = observe_live(ctx, wait)
    rows = queue_rows(cluster)
    if as_json:
        echo_json({"waited": wait, "queues": rows})
        return
    table(
        ("queue", "node", "limit", "paused", *COUNTS, "source"),
        (
            (
                _cell(r["queue"]),
                _cell(r["node"]),
                _cell(r["limit"]),
                _cell(r["paused"]),
                *(_count(r[name]) for name in COUNTS),
                r["source"],
            )
            for r in rows
        ),
    )
    nodes = len({c.node for c in cluster.checkins.values()})
    click.echo(
        f"listened {wait:g} s: check-ins from {nodes} node{'' if nodes == 1 else 's'}; "
        "limit and paused need check-ins (bridge worker --gossip, or Oban Web's oban_met on "
        "an Elixir node), the job counts come from oban_jobs",
        err=True,
    )


# -- signals ---------------------------------------------------------------------------------------


def _quoted(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


def describe_signal(payload: dict[str, Any], node: str | None = None) -> str:
    """``sent pause for queue "badges" to every node (ident any)``; ``node`` is the one the
    ident names, if any (the instance name before it may itself hold dots)."""
    action = payload["action"]
    what = action
    if action == "scale":
        what = f"scale to limit {payload['limit']}"
    elif action == "start":
        what = f"start with limit {payload['limit']}"
    queue = payload["queue"]
    where = 'every queue ("*")' if queue == "*" else f"queue {_quoted(queue)}"
    ident = payload["ident"]
    if node is None:
        whom = "every node"
    else:
        instance = ident.removesuffix(f".{node}")
        whom = f"node {_quoted(node)} of instance {instance}"
    return f"sent {what} for {where} to {whom} (ident {ident})"


def _targets(checks: list[CheckIn], node: str | None, ident: str) -> list[CheckIn]:
    if node is None:
        return checks
    return [c for c in checks if c.node == node and c.ident in (None, ident)]


def _check_text(check: CheckIn, with_queue: bool) -> str:
    facts = [f"limit {_cell(check.limit)}"]
    if check.paused:
        facts.append("paused")
    name = f"{check.node} ({check.queue})" if with_queue else check.node
    return f"{name}: {', '.join(facts)}"


def reach_report(
    cluster: Cluster, payload: dict[str, Any], node: str | None
) -> tuple[str | None, str | None]:
    """What the listening heard about who a signal will reach: (a line to print, a warning)."""
    action, queue, ident = payload["action"], payload["queue"], payload["ident"]
    heard = f"in {cluster.waited:g} s"
    if action == "start" or queue == "*":
        names = [n for n in cluster.nodes() if node is None or n == node]
        if not names:
            who = "no live node" if node is None else f"node {_quoted(node)} not"
            return None, f"{who} heard {heard}; sending anyway"
        verb = f"start queue {_quoted(queue)} unless they run it" if action == "start" else action
        return f"live nodes that will {verb}: {', '.join(names)}", None
    serving = _targets(cluster.serving(queue), node, ident)
    executing = [
        n
        for (q, n), _ in sorted(cluster.executing.items())
        if q == queue and n and (node is None or n == node)
    ]
    executing = [n for n in executing if n not in {c.node for c in serving}]
    parts = [_check_text(c, with_queue=False) for c in serving]
    parts += [f"{n}: running its jobs now (no check-in)" for n in executing]
    if not parts:
        who = "no live node" if node is None else f"node {_quoted(node)} (ident {ident}) not"
        return None, (
            f"{who} reported serving queue {_quoted(queue)} {heard} (nodes on OSS Oban 2.23 "
            "send no check-ins); sending anyway"
        )
    return f"live nodes serving queue {_quoted(queue)}: {'; '.join(parts)}", None


def _signal(
    ctx: CliContext,
    action: str,
    queue: str,
    *,
    node: str | None,
    instance: str | None,
    limit: int | None,
    wait: float,
    as_json: bool,
) -> None:
    from bridge.jobs.client import admin as ops
    from bridge.jobs.client.cluster import observe

    if instance is not None and node is None:
        raise usage_error("--instance only applies with --node")
    try:
        payload = ops.signal_payload(
            action, queue, node=node, instance=instance or "Oban", limit=limit
        )
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    with connect(ctx) as conn:
        if wait > 0:
            with listen(wait, "check-ins"):
                cluster = observe(conn, ctx.prefix, wait)
            line, warning = reach_report(cluster, payload, node)
            if line and not as_json:
                click.echo(line)
            if warning:
                warn(warning)
        ops.send_signal(conn, ctx.prefix, payload)
    if as_json:
        echo_json(payload)
    else:
        click.echo(describe_signal(payload, node))


def signal_options(fn: F) -> F:
    """What every signal command takes: QUEUE, a target node, the wait and --json."""
    options = [
        click.argument("queue"),
        click.option(
            "--node",
            default=None,
            metavar="NODE",
            help="Send only to this node (as `bridge nodes` lists it); default every node.",
        ),
        click.option(
            "--instance",
            default=None,
            metavar="NAME",
            help="With --node: the node's Oban instance name as Oban's inspect(name) prints it "
            "(default Oban; :my_oban for an atom name; a Python node's --name). The signal's "
            "ident is NAME.NODE.",
        ),
        wait_option(SIGNAL_WAIT, "check-ins before sending, to say which live nodes serve QUEUE"),
        click.option("--json", "as_json", is_flag=True, help="Print the payload sent, as JSON."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


LIMIT = click.option(
    "--limit",
    type=click.IntRange(min=1),
    required=True,
    help="The queue's concurrency limit on each node it reaches.",
)


@queues_group.command("pause")
@signal_options
@pass_ctx
def queues_pause(
    ctx: CliContext,
    queue: str,
    node: str | None,
    instance: str | None,
    wait: float,
    as_json: bool,
) -> None:
    """Pause QUEUE ('*': every queue): nodes stop claiming its jobs; running ones finish."""
    _signal(
        ctx, "pause", queue, node=node, instance=instance, limit=None, wait=wait, as_json=as_json
    )


@queues_group.command("resume")
@signal_options
@pass_ctx
def queues_resume(
    ctx: CliContext,
    queue: str,
    node: str | None,
    instance: str | None,
    wait: float,
    as_json: bool,
) -> None:
    """Resume QUEUE ('*': every queue) after a pause."""
    _signal(
        ctx, "resume", queue, node=node, instance=instance, limit=None, wait=wait, as_json=as_json
    )


@queues_group.command("scale")
@signal_options
@LIMIT
@pass_ctx
def queues_scale(
    ctx: CliContext,
    queue: str,
    node: str | None,
    instance: str | None,
    wait: float,
    as_json: bool,
    limit: int,
) -> None:
    """Set QUEUE's concurrency limit on the nodes that serve it."""
    _signal(
        ctx, "scale", queue, node=node, instance=instance, limit=limit, wait=wait, as_json=as_json
    )


@queues_group.command("start")
@signal_options
@LIMIT
@pass_ctx
def queues_start(
    ctx: CliContext,
    queue: str,
    node: str | None,
    instance: str | None,
    wait: float,
    as_json: bool,
    limit: int,
) -> None:
    """Start serving QUEUE at run time on every node (or --node) that does not yet."""
    _signal(
        ctx, "start", queue, node=node, instance=instance, limit=limit, wait=wait, as_json=as_json
    )


@queues_group.command("stop")
@signal_options
@pass_ctx
def queues_stop(
    ctx: CliContext,
    queue: str,
    node: str | None,
    instance: str | None,
    wait: float,
    as_json: bool,
) -> None:
    """Stop serving QUEUE: its producers stop claiming and let running jobs finish."""
    _signal(
        ctx, "stop", queue, node=node, instance=instance, limit=None, wait=wait, as_json=as_json
    )
