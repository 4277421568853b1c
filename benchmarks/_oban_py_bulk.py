"""The ``oban`` package's bulk insert for ``bench_bulk_insert.py``, in its own interpreter.

``setup`` installs oban's schema into the (fresh) database; ``insert`` empties ``oban_jobs``,
checkpoints, and prints ``{"seconds": ...}``: ``--jobs`` jobs built with ``Worker.new`` and
inserted with ``Oban.enqueue_many`` in batches of ``--batch``, timed as ``_side_common``'s
``insert_bulk`` times both libraries in ``bench_jobs.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from contextlib import suppress

import psycopg
from _oban_py_side import ObanPySide
from _side_common import insert_bulk


async def run(args: argparse.Namespace) -> dict[str, float]:
    side = ObanPySide(argparse.Namespace(url=args.url, sync_worker=False, async_commit=False))
    if args.command == "setup":
        await side.setup()
        return {"seconds": 0.0}
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute("TRUNCATE oban_jobs")
        with suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")
    return {"seconds": await insert_bulk(side, args.jobs, args.batch)}


def main() -> None:
    parser = argparse.ArgumentParser(description="oban's side of bench_bulk_insert.py")
    parser.add_argument("command", choices=["setup", "insert"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000)
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
