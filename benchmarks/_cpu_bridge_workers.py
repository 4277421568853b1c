"""bridge workers for ``bench_cpu.py``, loaded by ``bridge worker --workers _cpu_bridge_workers``.

``bench.Burn`` is a plain sync worker (threads, or one node per process with ``--processes``);
``bench.BurnProcess`` is the same body with ``executor="process"`` (the node's pool of child
processes, ``--process-pool``); ``bench.BurnPool`` is the earlier prototype of a per-worker
process pool: an async body that hands the burn to a ``ProcessPoolExecutor``.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from _cpu_burn import burn

from bridge import worker
from bridge.jobs.client.job import Job

_POOL: ProcessPoolExecutor | None = None


@worker(name="bench.Burn", queue="cpu")
def burn_sync(job: Job) -> None:
    burn(int(job.args["n"]))


@worker(name="bench.BurnProcess", queue="cpu", executor="process")
def burn_process(job: Job) -> None:
    burn(int(job.args["n"]))


@worker(name="bench.BurnPool", queue="cpu")
async def burn_pool(job: Job) -> None:
    global _POOL
    if _POOL is None:
        size = int(os.environ.get("BENCH_POOL", os.cpu_count() or 1))
        _POOL = ProcessPoolExecutor(max_workers=size)
    loop = asyncio.get_running_loop()
    result: Any = await loop.run_in_executor(_POOL, burn, int(job.args["n"]))
    del result
