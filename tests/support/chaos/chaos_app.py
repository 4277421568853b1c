"""The application the chaos run's ``bridge worker`` processes serve: copied as ``chaos_app.py``
into the run's scratch directory and named there by ``--workers``/``--workflows``, as an
operator's own module would be. It imports only ``bridge``.

Every run of a job body or a step body appends what it starts and how it ends to a file of its
process's own (``$CHAOS_RECORDS/<pid>.jsonl``, one JSON line per ``os.write`` on an
``O_APPEND`` descriptor, so a SIGKILL never leaves half a line): the driver explains every
duplicate and checks every stored outcome against these lines afterwards.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bridge import Cancel, worker
from bridge.workflows import DONE, StepOk, Workflow, step

QUEUE = "chaos"
_fd: int | None = None
_fd_pid: int | None = None


def record(kind: str, **fields: Any) -> None:
    """Append one line ``{"k": kind, "pid": …, "t": …, **fields}`` to this process's file."""
    global _fd, _fd_pid
    pid = os.getpid()
    if _fd is None or _fd_pid != pid:
        path = os.path.join(os.environ["CHAOS_RECORDS"], f"{pid}.jsonl")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fd_pid = pid
    line = json.dumps({"k": kind, "pid": pid, "t": time.time(), **fields}) + "\n"
    os.write(_fd, line.encode())


def _no_wait(job: Any) -> int:
    # A planned failure is retried at once: the run is about kills, not Oban's backoff.
    return 1


@worker(queue=QUEUE, max_attempts=25, backoff=_no_wait)
def chaos_job(job: Any) -> Any:
    """Sleeps ``args.ms``; ``fail_first`` raises on attempt 1, ``cancel`` cancels."""
    node, producer = (job.attempted_by or ["?", "?"])[:2]
    ident = {"job": job.id, "attempt": job.attempt, "node": node, "uuid": producer}
    record("job_start", slow=bool(job.args.get("slow")), **ident)
    time.sleep(job.args.get("ms", 0) / 1000)
    if job.args.get("fail_first") and job.attempt == 1:
        record("job_end", outcome="raised", **ident)
        raise RuntimeError("planned failure of attempt 1")
    if job.args.get("cancel"):
        record("job_end", outcome="cancel", **ident)
        return Cancel("chosen by the worker")
    record("job_end", outcome="ok", **ident)
    return None


def _body(key: str) -> Any:
    def run(instance: Any, config: Any, context: Any) -> StepOk:
        record("step_start", instance=instance.id, step=key)
        time.sleep(context.initial.get("ms", 0) / 1000)
        record("step_end", instance=instance.id, step=key)
        return StepOk("done", {"by": os.getpid()})

    run.__name__ = key
    return run


FIRST = step(name="Elixir.Chaos.Steps.First", events=["done"])(_body("first"))
SECOND = step(name="Elixir.Chaos.Steps.Second", events=["done"])(_body("second"))
THIRD = step(name="Elixir.Chaos.Steps.Third", events=["done"])(_body("third"))
STEPS = ("first", "second", "third")

WORKFLOWS = [
    Workflow(
        name="Elixir.Chaos.Flows.ThreeSteps",
        start=FIRST,
        transitions=[(FIRST, "done", SECOND), (SECOND, "done", THIRD), (THIRD, "done", DONE)],
        atoms=["by", "ms"],
    )
]
