"""The loop of one child process of an ``executor="process"`` pool: receive a job, run its
body, send back its outcome.

The child finds the body by the module and qualified name the node's registry gave the parent
(``WorkerSpec.target``), importing that module itself; nothing a database row says names a
module here (a row only names a worker, which the parent resolved in its registry). The outcome
is built here with the same functions the node's executor uses for a thread
(:mod:`bridge.jobs.runtime.acks`), so a body leaves byte-identical entries either way; only the
finished :class:`Ack` crosses back, never a traceback or the body's own objects (the result is
sent along for telemetry when it pickles, else left out).

The child ignores SIGINT and SIGTERM: a Ctrl-C in a terminal or a service manager signalling
the whole process group must not kill bodies under a node that is draining them; the node stops
a child with SIGKILL. A watcher thread kills the child when the node's end of its lifeline pipe
closes, so a node that dies (SIGKILL, OOM) takes its bodies with it, as it takes its threads.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import WorkerSpec
from bridge.jobs.runtime.acks import Ack, raised_ack, result_ack


class Request:
    """One job for a child: the body's location (from the registry) and the job's fields."""

    __slots__ = ("job", "module", "qualname")

    def __init__(self, module: str, qualname: str, job: Job) -> None:
        self.module = module
        self.qualname = qualname
        self.job = job


def child_main(conn: Connection, lifeline: Connection, preload: list[str]) -> None:
    """Serve requests on ``conn`` until it closes or brings ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_die_with_node, args=(lifeline,), daemon=True).start()
    failed = {}
    for module in preload:
        try:
            importlib.import_module(module)
        except BaseException as exc:  # reported to the node, which logs it
            failed[module] = f"{type(exc).__name__}: {exc}"
    conn.send(("ready", failed))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        reply = run_request(request)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError):
            reply.detail = None  # the body's result does not pickle: only telemetry loses it
            conn.send(reply)


def run_request(request: Request) -> Ack:
    """The outcome of one job, built as the node's executor builds it for a thread."""
    job = request.job
    try:
        spec = find_spec(request.module, request.qualname)
    except Exception as exc:
        return raised_ack(job, None, exc)
    try:
        result = spec.perform(job)
    except (KeyboardInterrupt, SystemExit):
        raise  # ends the child: the node writes the crash entry with its exit status
    except BaseException as exc:
        return raised_ack(job, spec, exc)
    return result_ack(job, spec, result)


def find_spec(module: str, qualname: str) -> WorkerSpec:
    """The worker at ``module.qualname``, imported the first time it is asked for."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    spec = getattr(target, "spec", None)
    if not isinstance(spec, WorkerSpec):
        raise LookupError(f"{module}.{qualname} is not a @worker in the child process")
    return spec


def _die_with_node(lifeline: Connection) -> None:
    """Block until the node's end of the lifeline closes (it never sends), then die at once."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    os.kill(os.getpid(), signal.SIGKILL)
