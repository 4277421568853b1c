"""Workers the bridge.testing tests run, each in a registry of the tests' own."""

from __future__ import annotations

from typing import Any

from bridge import Cancel, Discard, Error, Job, Snooze, worker
from bridge.jobs.client.registry import Registry

REGISTRY = Registry()


@worker(name="tests.testing.Outcomes", queue="outcomes", max_attempts=3, registry=REGISTRY)
class Outcomes:
    """Does what its args say, so one worker covers every outcome."""

    def process(self, job: Job) -> Any:
        action = job.args.get("do", "ok")
        if action == "raise":
            raise ValueError(f"asked to fail on attempt {job.attempt}")
        if action == "snooze":
            return Snooze(30)
        if action == "cancel":
            return Cancel("not wanted")
        if action == "discard":
            return Discard("bad input")
        if action == "error":
            return Error("try again")
        return {"seen": job.args, "attempt": job.attempt, "meta": job.meta, "tags": job.tags}


@worker(name="tests.testing.AsyncEcho", queue="outcomes", recorded=True, registry=REGISTRY)
async def async_echo(job: Job) -> Any:
    return {"echo": job.args}


@worker(name="tests.testing.AsyncRaise", queue="outcomes", max_attempts=3, registry=REGISTRY)
async def async_raise(job: Job) -> Any:
    raise KeyError(job.args.get("key", "k"))
