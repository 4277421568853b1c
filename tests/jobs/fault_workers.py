"""Workers for the fault tests, imported by a real `bridge worker` subprocess via --workers."""

from __future__ import annotations

import time

from bridge import Job, worker


@worker(name="faults.Sleep", queue="faults")
def sleep(job: Job) -> None:
    time.sleep(float(job.args.get("seconds", 30)))


@worker(name="faults.Quick", queue="faults")
def quick(job: Job) -> dict[str, int]:
    return {"ok": 1}
