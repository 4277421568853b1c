"""The ``oban`` package's node for ``bench_cpu.py``: ``python _cpu_oban_side.py URL LIMIT``.

Runs in the oban virtualenv and imports nothing from bridge. oban 0.7's workers are coroutines
on one event loop, so the burn runs on the loop, as a user's CPU-bound ``process`` would; the
node runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from _cpu_burn import burn
from oban import Oban, worker  # type: ignore[import-not-found,unused-ignore]


@worker(queue="cpu")  # type: ignore[untyped-decorator,misc,unused-ignore]
class Burn:
    async def process(self, job: Any) -> None:
        burn(int(job.args["n"]))


async def main(url: str, limit: int) -> None:
    pool = await Oban.create_pool(url)
    node = Oban(pool=pool, queues={"cpu": limit})
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await node.stop()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
