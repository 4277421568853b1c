"""The base of the workflow runner (:mod:`bridge.workflows.run.runner`): settings, connections,
threads and the paths every job kind shares — failing an instance, cancelling its pending jobs,
queueing an advance under the instance's lock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from functools import partial
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import sql

from bridge.db import DEFAULT_PREFIX, LazyPool, read_json_as_jason
from bridge.jobs.client.enqueue import insert_one_unless
from bridge.jobs.client.insert_rows import atomic
from bridge.jobs.client.job import Job
from bridge.jobs.client.outcome import Discard
from bridge.wire import notify
from bridge.workflows.model.definition import (
    Workflow,
    lookup,
    registry,
)
from bridge.workflows.model.engine import fail_workflow
from bridge.workflows.model.instance import Instance
from bridge.workflows.run.jobs import (
    ADVANCE_WORKER,
    DEFAULT_CONFIG_KEY,
    DEFAULT_QUEUE,
    WORKERS,
    RunnerError,
    advance_job,
    resume_job,
)
from bridge.workflows.store.batch import AConn
from bridge.workflows.store.coalesce import AsyncCoalescer
from bridge.workflows.store.instances import (
    Conn,
    InstanceNotFoundError,
    begin_locked,
    load_instance,
    lock_instance,
    save_instance,
    take_pending,
)

log = logging.getLogger("bridge.workflows")
P = ParamSpec("P")
T = TypeVar("T")

PENDING_STATES = ("available", "scheduled", "executing", "retryable")
FINISHED = ("completed", "failed")
BATCH_APPLICATION_NAME = "bridge-workflow-batches"

# The guard of an advance insert (insert_one_unless): an advance of the instance not started.
UNSTARTED_ADVANCE = """
SELECT 1 FROM {prefix}.oban_jobs
WHERE state IN ('available', 'scheduled') AND worker = %(guard_worker)s
  AND args @> jsonb_build_object('instance_id', %(guard_instance_id)s::text)
"""

_CANCEL_PENDING = """
UPDATE {prefix}.oban_jobs AS j SET state = 'cancelled', cancelled_at = timezone('UTC', now())
FROM (SELECT id, state FROM {prefix}.oban_jobs
      WHERE args @> jsonb_build_object('instance_id', %(instance_id)s::text)
        AND worker = ANY(%(workers)s) AND state::text = ANY(%(states)s)
        AND id <> %(own)s
      FOR UPDATE) AS x
WHERE j.id = x.id
RETURNING j.id, x.state::text
"""


def _q(template: str, prefix: str) -> sql.Composed:
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


@contextmanager
def locked(conn: Conn, instance_id: str, *, shared: bool = False) -> Iterator[None]:
    """``conn.transaction()`` with the instance lock taken in its BEGIN's round trip
    (:func:`begin_locked`): committed at the end, rolled back on an exception."""
    begin_locked(conn, instance_id, shared=shared)
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


class RunnerCore:
    """What the runner's job kinds share: its settings and connections, the thread pool for
    step bodies, failing an instance and cancelling its jobs, queueing an advance, timers."""

    def __init__(
        self,
        url: str,
        workflows: Iterable[Workflow],
        *,
        prefix: str = DEFAULT_PREFIX,
        queue: str = DEFAULT_QUEUE,
        config_key: str = DEFAULT_CONFIG_KEY,
        pool_size: int = 10,
        coalesce: bool = True,
        step_threads: int = 100,
        inline_advance: bool = True,
    ) -> None:
        if not isinstance(config_key, str) or not config_key:
            raise RunnerError(f"config_key must be a non-empty string, got {config_key!r}")
        self.url = url
        self.workflows = registry(*workflows)
        self.prefix = prefix
        self.queue = queue
        self.config_key = config_key
        self.pool_size = pool_size
        self._pool = LazyPool(url, pool_size)
        # Concurrent job bodies (run_*) share transactions (bridge.workflows.store.coalesce); off,
        # each job sends its own, as HephaestusOban does. The rows are the same either way.
        self.coalesce = coalesce
        self.step_threads = step_threads
        # A step job applies its own result (bridge.workflows.run.inline): one job per step;
        # off, it queues an AdvanceWorker as HephaestusOban does. Instance and result rows are
        # the same either way.
        self.inline_advance = inline_advance
        self._threads: ThreadPoolExecutor | None = None
        self._open_drains()

    def _open_drains(self) -> None:
        """Create the batch drains of the job kinds the concrete runner composes (none here)."""

    def _connection(self) -> AbstractContextManager[Conn]:
        return self._pool.connection()

    def _coalescer(self, batch: Any, name: str) -> Any:
        """A coalescer whose drain works on a connection of its own (:meth:`_aopen`)."""
        return AsyncCoalescer(batch, open=self._aopen, close=_aclose, usable=_usable, name=name)

    async def _aopen(self) -> AConn:
        """A batch drain's own connection (autocommit: every batch sends its own BEGIN), named
        so that ``pg_stat_activity`` tells it apart."""
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name=BATCH_APPLICATION_NAME
        )
        read_json_as_jason(conn)  # states and results nested deep or with long integers
        return conn

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False)
            self._threads = None
        self._pool.close()

    def _workflow(self, name: object) -> Workflow:
        return lookup(self.workflows, name)

    def cancel(self, conn: Conn, instance_id: str) -> list[int]:
        """Fail the instance and cancel its pending jobs; returns the cancelled job ids."""
        with atomic(conn):
            return self._fail(conn, instance_id, own_job=0)

    def _fail(self, conn: Conn, instance_id: str, *, own_job: int) -> list[int]:
        lock_instance(conn, instance_id)
        instance = load_instance(conn, self.prefix, instance_id, self.workflows, for_update=True)
        take_pending(conn, self.prefix, instance_id)
        if instance.status not in FINISHED:
            save_instance(conn, self.prefix, fail_workflow(instance))
        return self._cancel_jobs(conn, instance_id, own_job)

    def _cancel_jobs(self, conn: Conn, instance_id: str, own_job: int) -> list[int]:
        params = {
            "instance_id": instance_id,
            "workers": list(WORKERS),
            "states": list(PENDING_STATES),
            "own": own_job,
        }
        rows = conn.execute(_q(_CANCEL_PENDING, self.prefix), params).fetchall()
        channel = notify.channel(self.prefix, "signal")
        for job_id, old_state in rows:
            if old_state == "executing":
                payload = notify.encode({"action": "pkill", "job_id": job_id})
                conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        return sorted(row[0] for row in rows)

    def _enqueue_advance(
        self, conn: Conn, workflow: Workflow, instance: Instance, step_ref: str
    ) -> None:
        """Queue an advance unless one that has not started yet exists (caller holds the lock).

        An unstarted advance reads results only after taking the lock we hold (shared: an
        advance takes it exclusively), so it will see ours; an executing one may already have
        read them, so it does not count. Another recorder's advance, not committed yet, is not
        seen, so both may queue one: the second advance finds nothing pending.
        """
        job = self._advance_job(workflow, instance, step_ref)
        guard = {"guard_worker": ADVANCE_WORKER, "guard_instance_id": instance.id}
        insert_one_unless(conn, job, UNSTARTED_ADVANCE, guard, prefix=self.prefix)

    def _advance_job(self, workflow: Workflow, instance: Instance, step_ref: str) -> Job:
        return advance_job(
            workflow, instance, queue=self.queue, config_key=self.config_key, step_ref=step_ref
        )

    def _timer_job(self, workflow: Workflow, instance: Instance, step_ref: str, delay: int) -> Job:
        return resume_job(
            workflow,
            instance,
            step_ref,
            "timeout",
            queue=self.queue,
            config_key=self.config_key,
            schedule_in=timedelta(milliseconds=delay),
        )

    def check_job(self, job: Job) -> Discard | None:
        """A job this runner must not run (another runner's config key, malformed args)."""
        if job.args.get("config_key") != self.config_key:
            return Discard(f"config_key {job.args.get('config_key')!r} is not {self.config_key!r}")
        return None

    async def _outcome_in_thread(
        self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T | Exception:
        """:meth:`_in_thread`, with an exception returned as the outcome (a batch's answer)."""
        try:
            return await self._in_thread(call, *args, **kwargs)
        except Exception as exc:
            return exc

    async def _in_thread(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                self.step_threads, thread_name_prefix="bridge-workflow"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, partial(call, *args, **kwargs))


async def _aclose(conn: AConn) -> None:
    await conn.close()


def _usable(conn: AConn) -> bool:
    return not (conn.closed or conn.broken)


def step_active(instance: Instance, step: str) -> bool:
    return step in instance.active_steps and instance.status not in FINISHED


def found_instance(loaded: Instance | Exception | None, instance_id: str) -> Instance:
    """An instance a batch read for one of its items, or the error that item's own read gave."""
    if loaded is None:
        raise InstanceNotFoundError(f"no workflow instance with id {instance_id!r}")
    if isinstance(loaded, Exception):
        raise loaded
    return loaded
