"""Unit-testing a worker: run it on a realistic job, without a database.

As Oban's ``perform_job/3`` (and the ``oban`` package's ``process_job``): the job is built as
an insert builds it (the worker's defaults, ``Job.new``'s validation, args and meta through a
JSON round trip so a tuple arrives as the list a row would give), then given what a claim gives
it (an id, ``attempt`` 1, ``attempted_at``), and run through the node's executor, which decides
the outcome. An exception the worker raises is raised from here, as both do; ``safe=True``
returns it as the ``failure`` outcome instead.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import Any

from bridge.jobs.client.job import Job, JobValidationError
from bridge.jobs.client.registry import Registry, WorkerSpec, default_registry
from bridge.jobs.runtime.executor import JobExecutor
from bridge.testing.running import CapturingRegistry, ContextThreads, Outcome
from bridge.wire import jsonfmt
from bridge.wire.timefmt import utc_now

# What a claim sets rather than an insert; perform_job takes them too, as Oban's does.
CLAIM_FIELDS = ("id", "attempt", "attempted_at", "attempted_by", "errors", "inserted_at")

_ids = itertools.count(1)


def worker_spec(worker: Any, registry: Registry | None = None) -> WorkerSpec:
    """The registered spec of a ``@worker`` class or function, a spec, or a worker name."""
    if isinstance(worker, WorkerSpec):
        return worker
    spec = getattr(worker, "spec", None)
    if isinstance(spec, WorkerSpec):
        return spec
    if isinstance(worker, str):
        found = (registry or default_registry).resolve(worker)
        if found is not None:
            return found
        raise AssertionError(
            f"no worker is registered as {worker!r} (import the module that defines it, or pass "
            "the @worker class or function itself)"
        )
    raise AssertionError(f"expected a @worker class or function or a worker name, got {worker!r}")


def build_job(worker: Any, args: dict[str, Any] | None = None, **options: Any) -> Job:
    """The job ``perform_job`` runs: built as an insert builds it, claimed as a claim claims it.

    ``options`` are ``Job.new``'s (``queue``, ``max_attempts``, ``priority``, ``tags``, ``meta``,
    ``scheduled_at``, ...) and the claim's: ``id``, ``attempt`` (1 by default), ``attempted_at``,
    ``attempted_by``, ``errors``, ``inserted_at``. Raises :class:`AssertionError` with the reason
    for a job an insert would refuse."""
    spec = worker_spec(worker, options.pop("registry", None))
    claim = {name: options.pop(name) for name in CLAIM_FIELDS if name in options}
    try:
        job = spec.new(args, **options)
    except (JobValidationError, TypeError) as exc:
        raise AssertionError(f"expected args and options to build a valid job: {exc}") from exc
    now = utc_now()
    job.args = jsonfmt.loads(jsonfmt.dumps(job.args))
    job.meta = jsonfmt.loads(jsonfmt.dumps(job.meta))
    job.id = claim.get("id", next(_ids))
    job.attempt = claim.get("attempt", 1)
    job.attempted_at = claim.get("attempted_at", now)
    job.attempted_by = claim.get("attempted_by")
    job.errors = list(claim.get("errors", []))
    job.inserted_at = claim.get("inserted_at", now)
    job.scheduled_at = job.scheduled_at or now
    job.state = "executing"
    if not isinstance(job.attempt, int) or not 1 <= job.attempt <= job.max_attempts:
        # The table's attempt_range check: a claimed job's attempt is 1..max_attempts.
        raise AssertionError(
            f"expected attempt within 1..max_attempts ({job.max_attempts}), got {job.attempt!r}"
        )
    return job


async def perform_job_async(
    worker: Any,
    args: dict[str, Any] | None = None,
    *,
    safe: bool = False,
    registry: Registry | None = None,
    **options: Any,
) -> Outcome:
    """Run ``worker`` once on ``build_job(worker, args, **options)``; its :class:`Outcome`.

    The worker runs as a node runs it (its timeout, a sync body on a thread of its own); the
    outcome is the executor's. A raised exception is raised again unless ``safe``."""
    spec = worker_spec(worker, registry)
    job = build_job(spec, args, **options)
    one = Registry()
    one.register(spec)
    capturing = CapturingRegistry(one)
    threads = ContextThreads(capturing)
    try:
        ack = await JobExecutor(capturing, threads).run(job)
    finally:
        threads.shutdown(wait=False)
    raised = capturing.take()
    if raised is not None and not safe:
        raise raised
    return Outcome.of(job, ack, raised)


def perform_job(
    worker: Any,
    args: dict[str, Any] | None = None,
    *,
    safe: bool = False,
    registry: Registry | None = None,
    **options: Any,
) -> Outcome:
    """The sync face of :func:`perform_job_async`, for tests without an event loop."""
    _no_running_loop("perform_job")
    return asyncio.run(perform_job_async(worker, args, safe=safe, registry=registry, **options))


def _no_running_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{name} was called inside a running event loop: use {name}_async there")


def naive_utc(moment: datetime) -> datetime:
    """A datetime as the table stores it: naive UTC (an aware one converted, a naive one kept)."""
    from datetime import UTC

    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)
