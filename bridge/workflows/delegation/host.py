"""Python step bodies for Elixir workflows: the worker side of ``ObanBridge.DelegatedStep``.

An Elixir step declared with ``use ObanBridge.DelegatedStep, worker: "myapp.steps.Render"``
enqueues a job for that worker and returns ``{:async}``. Here the body registered under that
name runs and completes the Elixir step through the door (:mod:`delegation_door`). The body is
looked up only in this host's own table of registered bodies, never from a row.

Outcomes (``docs/workflow-delegation.md`` has the whole protocol):

- ``StepOk`` whose event and context-update keys the Elixir step declares: the step is completed
  (result row + AdvanceWorker + NOTIFY, one transaction). A violation is refused before anything
  is written: the job is discarded with an entry naming the offending names, and the step's
  failure policy applies (it can never succeed).
- an exception or ``StepError``: retried as any job; on the last attempt the failure policy
  applies: the declared ``failure_event`` completes the step, else the Elixir instance is failed
  as HephaestusOban's own failure path fails it. The job then ends ``discarded``.
- an instance that is gone or finished, or a step no longer active or already completed: a no-op.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeAlias

from psycopg import sql

from bridge.db import DEFAULT_PREFIX, LazyPool
from bridge.jobs.client.job import Job
from bridge.jobs.client.outcome import Discard, Error, Snooze
from bridge.jobs.client.registry import Registry, WorkerSpec
from bridge.workflows.delegation.door import (
    NO_OPS,
    DoorResult,
    complete_elixir_step,
    fail_elixir_instance,
    judge,
    step_state,
)
from bridge.workflows.delegation.elixir import ElixirStepRun
from bridge.workflows.delegation.protocol import (
    ELIXIR_ADVANCE_QUEUE,
    DelegationArgs,
    DelegationArgsError,
    DelegationError,
    DelegationViolation,
    RemoteOutcome,
    check_remote_outcome,
    job_args,
)
from bridge.workflows.model.definition import Step, StepError, StepOk, short_name
from bridge.workflows.model.instance import Context
from bridge.workflows.model.serializer import KnownNames, unloadable_names
from bridge.workflows.store.instances import Conn

log = logging.getLogger("bridge.workflows.delegation")

DEFAULT_QUEUE = "python"
DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class DelegatedCall:
    """What a delegated body sees: the Elixir step's instance, config and context (as JSON:
    string keys), and the job attempt it runs in."""

    instance_id: str
    workflow: str
    step_ref: str
    workflow_version: int
    config: Mapping[str, Any] | None
    context: Context
    attempt: int
    max_attempts: int


DelegatedResult: TypeAlias = "StepOk | StepError"
DelegatedFn: TypeAlias = Callable[[DelegatedCall], "DelegatedResult | Awaitable[DelegatedResult]"]


@dataclass(frozen=True)
class DelegatedStep:
    """A Python body registered as the worker ``worker`` for Elixir delegated steps.

    ``steps``, when given, lists the Elixir step modules allowed to use this worker; ``events``
    and ``context_keys``, when given, narrow what the body may return further than the Elixir
    declaration does (both must allow it).
    """

    worker: str
    run: DelegatedFn
    queue: str = DEFAULT_QUEUE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    steps: frozenset[str] | None = None
    events: frozenset[str] | None = None
    context_keys: frozenset[str] | None = None


def delegated(
    *,
    worker: str,
    queue: str = DEFAULT_QUEUE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    steps: Iterable[str] | None = None,
    events: Iterable[str] | None = None,
    context_keys: Iterable[str] | None = None,
) -> Callable[[DelegatedFn], DelegatedStep]:
    """Decorate ``fn(call) -> StepOk | StepError`` (sync or ``async def``) as ``worker``."""

    def wrap(fn: DelegatedFn) -> DelegatedStep:
        if not callable(fn):
            raise DelegationError(f"{worker}: the body must be callable")
        return DelegatedStep(
            worker=worker,
            run=fn,
            queue=queue,
            max_attempts=max_attempts,
            steps=None if steps is None else frozenset(steps),
            events=None if events is None else frozenset(events),
            context_keys=None if context_keys is None else frozenset(context_keys),
        )

    return wrap


class DelegationHost:
    """Runs registered delegated bodies and completes their Elixir steps.

    ``settle_timeout`` bounds how long a finished body waits (polling, without holding the lock)
    for the Elixir side to settle the step (its ``__async__`` processed, the instance waiting);
    after that the job snoozes ``snooze_seconds`` and runs again.
    """

    def __init__(
        self,
        url: str,
        steps: Iterable[DelegatedStep],
        *,
        prefix: str = DEFAULT_PREFIX,
        pool_size: int = 5,
        settle_timeout: float = 10.0,
        snooze_seconds: int = 5,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.pool_size = pool_size
        self.settle_timeout = settle_timeout
        self.snooze_seconds = snooze_seconds
        self.steps: dict[str, DelegatedStep] = {}
        for item in steps:
            if not isinstance(item, DelegatedStep):
                raise DelegationError(f"not a DelegatedStep: {item!r}")
            if item.worker in self.steps:
                raise DelegationError(f"two delegated steps are registered as {item.worker}")
            self.steps[item.worker] = item
        self._pool = LazyPool(url, pool_size)

    def connection(self) -> AbstractContextManager[Conn]:
        return self._pool.connection()

    def close(self) -> None:
        self._pool.close()

    def register(self, registry: Registry) -> list[WorkerSpec]:
        """One worker per delegated step, under its own name and queue."""
        return [
            registry.register(
                WorkerSpec(
                    name=item.worker,
                    perform=self._performer(item),
                    is_async=False,
                    queue=item.queue,
                    max_attempts=item.max_attempts,
                    target=self,
                )
            )
            for item in self.steps.values()
        ]

    def _performer(self, item: DelegatedStep) -> Callable[[Job], Any]:
        def perform(job: Job) -> Any:
            return self.perform(item, job)

        return perform

    # the job body

    def perform(self, item: DelegatedStep, job: Job) -> Any:
        try:
            args = DelegationArgs.parse(job.args)
        except DelegationArgsError as exc:
            return Discard(f"{item.worker}: {exc}")
        if item.steps is not None and args.step_ref not in item.steps:
            return Discard(f"{item.worker} does not serve the step {args.step_ref}")
        with self.connection() as conn, conn.transaction():
            verdict, detail = judge(step_state(conn, self.prefix, args.instance_id, args.step_ref))
        if verdict in NO_OPS:
            log.info("%s %s: nothing to do: %s", args.instance_id, args.step_ref, detail)
            return None
        try:
            value = self._run(item, args, job)
        except Exception as exc:
            return self._failed(job, args, exc, raised=True)
        if isinstance(value, StepError):
            return self._failed(job, args, value.reason, raised=False)
        if not isinstance(value, StepOk):
            reason = f"a delegated body must return StepOk or StepError, got {value!r}"
            return self._failed(job, args, reason, raised=False)
        try:
            outcome = self._check(item, args, value)
        except DelegationViolation as exc:
            self.apply_failure_policy(job, args, str(exc))
            return Discard(f"{args.step_ref} ({item.worker}): {exc}")
        return self._complete(job, args, outcome)

    def _run(self, item: DelegatedStep, args: DelegationArgs, job: Job) -> Any:
        call = DelegatedCall(
            instance_id=args.instance_id,
            workflow=args.workflow,
            step_ref=args.step_ref,
            workflow_version=args.workflow_version,
            config=args.config,
            context=args.context,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
        )
        value: Any = item.run(call)
        if inspect.isawaitable(value):
            value = asyncio.run(_await(value))
        return value

    def _check(self, item: DelegatedStep, args: DelegationArgs, value: StepOk) -> RemoteOutcome:
        outcome = check_remote_outcome(
            args, value.event, value.context_updates, value.metadata_updates
        )
        if item.events is not None and outcome.event not in item.events:
            raise DelegationViolation(f"{item.worker} does not declare the event {value.event!r}")
        if item.context_keys is not None:
            extra = sorted(set(outcome.context_updates) - item.context_keys)
            if extra:
                raise DelegationViolation(f"{item.worker} does not declare the keys {extra}")
        return outcome

    def _complete(self, job: Job, args: DelegationArgs, outcome: RemoteOutcome) -> Any:
        result = self._settled(
            lambda conn: complete_elixir_step(
                conn, self.prefix, args, outcome, meta=job.meta, tags=job.tags
            )
        )
        if result.verdict == "not_ready":
            log.info("%s %s: %s; snoozing", args.instance_id, args.step_ref, result.detail)
            return Snooze(self.snooze_seconds)
        log.info("%s %s: %s", args.instance_id, args.step_ref, result.detail)
        return None

    def _settled(self, attempt: Callable[[Conn], DoorResult]) -> DoorResult:
        """Try the door until the step is settled or ``settle_timeout`` passes; each try is
        its own short transaction, so the lock is never held while waiting."""
        deadline = time.monotonic() + self.settle_timeout
        pause = 0.02
        while True:
            with self.connection() as conn, conn.transaction():
                result = attempt(conn)
            if result.verdict != "not_ready" or time.monotonic() >= deadline:
                return result
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

    def _failed(self, job: Job, args: DelegationArgs, reason: Any, *, raised: bool) -> Any:
        if job.attempt < job.max_attempts:
            if raised and isinstance(reason, BaseException):
                raise reason
            return Error(reason)
        self.apply_failure_policy(job, args, repr(reason))
        if raised and isinstance(reason, BaseException):
            raise reason
        return Error(reason)

    def apply_failure_policy(self, job: Job, args: DelegationArgs, why: str) -> None:
        """The step can no longer succeed: complete it with its failure event, or fail the
        instance, so that it never waits for ever."""
        if args.failure_event is not None:
            outcome = RemoteOutcome(args.failure_event, {}, {})
            result = self._settled(
                lambda conn: complete_elixir_step(
                    conn, self.prefix, args, outcome, meta=job.meta, tags=job.tags
                )
            )
            if result.verdict != "not_ready":
                self._log_failure(args, why, result)
                return
        # no failure event, or the step never settled: fail the instance rather than leave it
        with self.connection() as conn, conn.transaction():
            result = fail_elixir_instance(conn, self.prefix, args, own_job=job.id or 0)
        self._log_failure(args, why, result)

    def _log_failure(self, args: DelegationArgs, why: str, result: DoorResult) -> None:
        log.warning(
            "%s %s failed for good (%s): %s", args.instance_id, args.step_ref, why, result.detail
        )


async def _await(value: Any) -> Any:
    return await value


class UndeclaredResumeError(DelegationViolation):
    """A resume of an Elixir step from Python with an event or context-update key that the
    step's declaration does not list. Nothing was written: an undeclared key is not an atom in
    the Elixir VM, and one such key in a row makes every later job of the instance crash."""


def resume_elixir_step(
    conn: Conn,
    prefix: str,
    instance_id: str,
    step: Step,
    event: str,
    context_updates: Mapping[str, Any] | None = None,
    *,
    config_key: str,
    workflow_tags: Iterable[str] = (),
    workflow_metadata: Mapping[str, Any] | None = None,
    advance_queue: str = ELIXIR_ADVANCE_QUEUE,
) -> DoorResult:
    """Complete a waiting async step of an Elixir-owned instance from Python, with updates.

    ``step`` is the step's declaration, ``elixir_step(name=..., events=[...],
    context_keys=[...])``: its events and context keys are the only ones accepted, so the
    names are checked against the same declaration the Elixir side holds as literals, never
    against lists the caller makes up at the call (an undeclared key bricks the instance:
    :class:`UndeclaredResumeError`). ``config_key`` is the HephaestusOban runner's. One
    transaction on ``conn`` (which must not be inside one): ``not_ready`` writes nothing and
    may be retried once the instance is waiting.
    """
    declared = _resume_declaration(step)
    updates = dict(context_updates or {})
    _check_resume(step, declared, event, updates)
    row = conn.execute(
        sql.SQL(
            "SELECT workflow, workflow_version FROM {}.workflow_instances WHERE id = %s"
        ).format(sql.Identifier(prefix)),
        (instance_id,),
    ).fetchone()
    if row is None:
        return DoorResult("gone", "the instance no longer exists")
    workflow, version = row
    args = DelegationArgs.parse(
        job_args(
            instance_id=instance_id,
            step_ref=step.name,
            workflow=workflow,
            workflow_version=version,
            config_key=config_key,
            advance_queue=advance_queue,
            context_key=step.context_key,
            events=list(step.events),
            context_keys=declared,
            failure_event=None,
            context=Context(),
            config=None,
        )
    )
    outcome = check_remote_outcome(args, event, updates)
    meta = {
        **(workflow_metadata or {}),
        "heph_workflow": short_name(workflow),
        "instance_id": instance_id,
        "workflow_version": version,
        "step": short_name(step.name),
    }
    tags = list(dict.fromkeys([short_name(workflow), *workflow_tags]))
    with conn.transaction():
        return complete_elixir_step(conn, prefix, args, outcome, meta=meta, tags=tags)


def _resume_declaration(step: object) -> frozenset[str]:
    if not isinstance(step, Step) or not isinstance(step.run, ElixirStepRun):
        raise DelegationError(
            f"resume_elixir_step needs the step's declaration, elixir_step(name=..., "
            f"events=[...], context_keys=[...]), got {step!r}"
        )
    return step.run.context_keys


def _check_resume(
    step: Step, declared: frozenset[str], event: str, updates: Mapping[str, Any]
) -> None:
    if event not in step.events:
        raise UndeclaredResumeError(
            f"{step.name} does not declare the event {event!r} (events: {list(step.events)}); "
            "nothing was written"
        )
    only_declared = KnownNames(frozenset(), declared)
    problems = unloadable_names({"context": {"steps": {step.context_key: updates}}}, only_declared)
    undeclared = sorted(
        {p.name for p in problems if p.path != f"state.context.steps.{step.context_key}"}
    )
    if undeclared:
        raise UndeclaredResumeError(
            f"context update keys {undeclared} are not declared by {step.name} (context_keys: "
            f"{sorted(declared)}): they are not atoms on the Elixir side and would make the "
            "instance unloadable; declare them in its elixir_step(context_keys=...) and as "
            "literals of the Elixir app. Nothing was written"
        )
