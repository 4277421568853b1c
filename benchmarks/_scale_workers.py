"""bridge workers for ``bench_scale_out.py``, loaded by ``bridge worker -w _scale_workers``.

``bench.ScaleNoop`` does nothing, so a drain of it measures what claiming and storing outcomes
cost (the nodes' and PostgreSQL's share); ``bench.ScaleBurn`` is ``bench_cpu.py``'s CPU-bound
body, a sync worker burning ``args["n"]`` rounds of pure-Python arithmetic on a node thread.
"""

from __future__ import annotations

from _cpu_burn import burn

from bridge import worker
from bridge.jobs.client.job import Job


@worker(name="bench.ScaleNoop", queue="q1")
async def scale_noop(job: Job) -> None:
    del job


@worker(name="bench.ScaleBurn", queue="cpu")
def scale_burn(job: Job) -> None:
    burn(int(job.args["n"]))
