"""Workers for the process-executor tests, in a module of their own: a child process finds a
body by importing its module, so these cannot live inside a test function.

Each body is registered twice under the same name, in ``THREADS`` (a thread of the node) and in
``PROCESSES`` (``executor="process"``): one function object, so its frames in an error entry are
the same whichever executor ran it. ``fn.spec`` ends up as the process twin's (registered
last), which is what the child process looks for.

Bodies that must be seen to stop write ``<dir>/<id>.pid`` when they start and
``<dir>/<id>.after`` if they ever get past their sleep: the test asserts that file never appears.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from bridge import Cancel, Discard, Error, Job, Registry, Snooze, worker

THREADS = Registry()
PROCESSES = Registry()


def _both(name: str, **options: Any) -> Any:
    def register(fn: Any) -> Any:
        worker(name=name, registry=THREADS, **options)(fn)
        return worker(name=name, registry=PROCESSES, executor="process", **options)(fn)

    return register


def _no_backoff(job: Job) -> int:
    return 0


@_both("t.Ok", queue="twin", recorded=True)
def ok(job: Job) -> Any:
    return {"sum": sum(job.args["xs"]), "by": "python"}


@_both("t.Raises", queue="twin", max_attempts=3)
def raises(job: Job) -> None:
    raise ValueError(f"bad input {job.args['n']}")


@_both("t.Cancels", queue="twin")
def cancels(job: Job) -> Cancel:
    return Cancel({"why": "no badge_id", "n": [1, 2]})


@_both("t.Discards", queue="twin")
def discards(job: Job) -> Discard:
    return Discard("gone")


@_both("t.Errors", queue="twin", max_attempts=2)
def errors(job: Job) -> Error:
    return Error("try later")


@_both("t.Snoozes", queue="twin")
def snoozes(job: Job) -> Snooze:
    return Snooze(60)


@_both("t.TooBig", queue="twin", recorded=True)
def too_big(job: Job) -> Any:
    return 1j  # not encodable as a recorded value: the attempt errors


@_both("t.Unpicklable", queue="twin")
def unpicklable(job: Job) -> Any:
    return lambda: 1  # completes; the result cannot cross back from a child (telemetry only)


@_both("t.TimesOut", queue="twin", timeout=0.3, max_attempts=1)
def times_out(job: Job) -> None:
    time.sleep(1.0)


class ClassRaises:
    def process(self, job: Job) -> None:
        raise KeyError("missing")


worker(name="t.ClassRaises", queue="twin", registry=THREADS)(ClassRaises)
worker(name="t.ClassRaises", queue="twin", registry=PROCESSES, executor="process")(ClassRaises)


@_both("t.Sleeps", queue="faults", max_attempts=1, timeout=None)
def sleeps(job: Job) -> None:
    _mark_and_sleep(job)


@_both("t.Overruns", queue="faults", max_attempts=1, timeout=0.5)
def overruns(job: Job) -> None:
    _mark_and_sleep(job)


@_both("t.Exits", queue="faults", max_attempts=3, backoff=_no_backoff)
def exits(job: Job) -> str:
    _note_attempt(job)
    if job.attempt == 1:
        os._exit(9)
    return "second attempt"


@_both("t.Killed", queue="faults", max_attempts=3, backoff=_no_backoff)
def killed(job: Job) -> str:
    _note_attempt(job)
    if job.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return "second attempt"


def _note_attempt(job: Job) -> None:
    Path(job.args["dir"], f"{job.id}.{job.attempt}.pid").write_text(str(os.getpid()))


@_both("t.Pid", queue="faults")
def pid(job: Job) -> None:
    Path(job.args["dir"], f"{job.id}.pid").write_text(str(os.getpid()))


def _mark_and_sleep(job: Job) -> None:
    folder = Path(job.args["dir"])
    (folder / f"{job.id}.pid").write_text(str(os.getpid()))
    time.sleep(float(job.args["seconds"]))
    (folder / f"{job.id}.after").write_text("the body ran on")
