"""Run the Python side of Badge Forge: a node serving queue ``badges``.

    python examples/badge_forge/run.py --database-url URL [--prefix public] [--out badges/]
        [--concurrency 4] [--node NAME] [--install-schema]
        [--enqueue "b-1=Alasdair Fraser" ...] [--stop-after N]

It is ``bridge worker --queues badges:4 --workers badge_forge.generator`` plus what a demo needs:
``--enqueue`` inserts badge jobs the way the Elixir app would (to try it without one),
``--stop-after N`` drains gracefully and exits once N badge jobs are done (for scripts and
tests), and one line per badge is printed as it is acked, then a summary. Exit status: 0, or 1
when a badge job failed (a retry or a discard; a refused badge is ``cancelled``, not a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from badge_forge import generator
from bridge import Job, Node, NodeConfig, insert
from bridge.jobs.client.registry import default_registry

QUEUE = "badges"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Badge Forge: the Python badge generator node.")
    parser.add_argument("--database-url", required=True, help="PostgreSQL URL (libpq form).")
    parser.add_argument("--prefix", default="public", help="Oban schema prefix.")
    parser.add_argument("--out", type=Path, default=None, help="Also save each PNG here.")
    parser.add_argument("--concurrency", type=int, default=4, help="Badges drawn at once.")
    parser.add_argument("--node", default="badge-forge", help="Node name in attempted_by.")
    parser.add_argument(
        "--install-schema", action="store_true", help="Create the Oban tables if missing."
    )
    parser.add_argument(
        "--enqueue",
        action="append",
        default=[],
        metavar="ID=NAME",
        help="Insert a badge job first, as the Elixir app would (repeatable).",
    )
    parser.add_argument(
        "--stop-after", type=int, default=None, help="Exit after this many badge jobs."
    )
    args = parser.parse_args(argv)
    for item in args.enqueue:
        if "=" not in item:
            parser.error(f"--enqueue wants ID=NAME, got {item!r}")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def prepare(args: argparse.Namespace) -> None:
    import psycopg

    with psycopg.connect(args.database_url, autocommit=True) as conn:
        if args.install_schema:
            from bridge import schema

            schema.install(conn, args.prefix)
        for item in args.enqueue:
            badge_id, name = item.split("=", 1)
            job = generator.GenerateBadge.new({"id": badge_id, "name": name})  # type: ignore[attr-defined]
            inserted = insert(conn, job, prefix=args.prefix)
            print(f"enqueued badge {badge_id} as job {inserted.id}", flush=True)


async def serve(args: argparse.Namespace) -> int:
    generator.configure(args.database_url, args.prefix, args.out)
    config = NodeConfig(
        url=args.database_url,
        queues={QUEUE: args.concurrency},
        prefix=args.prefix,
        node=args.node,
        registry=default_registry,
    )
    node = Node(config)
    done = asyncio.Event()
    outcomes: list[str] = []

    def on_ack(job: Job, ack: Any) -> None:
        if job.worker != generator.GenerateBadge.spec.name:  # type: ignore[attr-defined]
            return
        outcomes.append(ack.state)
        value = getattr(ack.detail, "value", None)
        extra = f", print job {value['print_job']}" if isinstance(value, dict) else ""
        print(f"badge {job.args.get('id')} (job {job.id}): {ack.state}{extra}", flush=True)
        if args.stop_after is not None and len(outcomes) >= args.stop_after:
            done.set()

    node.listeners.append(on_ack)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, done.set)
    await node.start()
    print(f"serving queue {QUEUE} as node {args.node} (prefix {args.prefix})", flush=True)
    try:
        await done.wait()
    finally:
        await node.stop()
    counts = {state: outcomes.count(state) for state in sorted(set(outcomes))}
    print("done: " + (", ".join(f"{n} {state}" for state, n in counts.items()) or "no badges"))
    return 1 if {"retryable", "discarded"} & set(counts) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare(args)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
