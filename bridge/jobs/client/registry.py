"""Workers by registry, never by import path from a row.

A row names a worker with a string. Only names registered here run in this process: an
unknown name gets Oban's "unknown worker" error entry and its retry/discard path. Nothing in a
row can make this process import a module (the peer ``oban`` package does, which lets any
writer of ``oban_jobs`` run code on every worker host).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from bridge.jobs.client.job import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, DEFAULT_QUEUE, Job

Backoff = Callable[[Job], int]
T = TypeVar("T")

# Where a sync body runs: a thread of the node (the default), or a child process of the node's
# pool (bridge.jobs.runtime.process_pool), which can be killed on timeout or pkill.
EXECUTORS = ("thread", "process")


class WorkerRegistrationError(ValueError):
    """A worker definition that cannot be registered (bad name, duplicate, no process)."""


@dataclass
class WorkerSpec:
    """A registered worker: how to run it and the defaults its jobs are built with."""

    name: str
    perform: Callable[[Job], Any]
    is_async: bool
    queue: str = DEFAULT_QUEUE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    priority: int = DEFAULT_PRIORITY
    tags: list[str] = field(default_factory=list)
    unique: Any = None  # bridge.wire.unique options, validated at insert time
    timeout: float | None = None  # seconds; None: no limit (Oban's :infinity)
    recorded: bool = False
    backoff: Backoff | None = None
    target: Any = None  # the decorated class or function
    executor: str = "thread"  # one of EXECUTORS; "process" only for sync workers

    def new(self, args: dict[str, Any] | None = None, **options: Any) -> Job:
        """A job for this worker with its defaults, overridable per call like ``Worker.new/2``."""
        options.setdefault("queue", self.queue)
        options.setdefault("max_attempts", self.max_attempts)
        options.setdefault("priority", self.priority)
        options.setdefault("tags", list(self.tags))
        if self.unique is not None:
            options.setdefault("unique", self.unique)
        return Job.new(self.name, args, **options)


class Registry:
    """Name -> worker. One per process by default; tests and embedders may make their own."""

    def __init__(self) -> None:
        self._workers: dict[str, WorkerSpec] = {}

    def register(self, spec: WorkerSpec) -> WorkerSpec:
        if not spec.name or len(spec.name) >= 128:
            raise WorkerRegistrationError(f"worker name must be 1..127 characters: {spec.name!r}")
        existing = self._workers.get(spec.name)
        if existing is not None and existing.target is not spec.target:
            raise WorkerRegistrationError(f"worker name {spec.name!r} is already registered")
        self._workers[spec.name] = spec
        return spec

    def resolve(self, name: str) -> WorkerSpec | None:
        return self._workers.get(name)

    def names(self) -> list[str]:
        return sorted(self._workers)

    def __contains__(self, name: object) -> bool:
        return name in self._workers

    def unregister(self, name: str) -> None:
        self._workers.pop(name, None)


default_registry = Registry()


def default_name(target: Any) -> str:
    """``module.QualName``, the string an Elixir app uses to enqueue for this worker."""
    return f"{target.__module__}.{target.__qualname__}"


def _perform_callable(target: Any) -> tuple[Callable[[Job], Any], bool]:
    cls: Any = target
    if inspect.isclass(cls):
        method = getattr(cls, "process", None)
        if method is None:
            raise WorkerRegistrationError(f"{cls.__qualname__} has no process(job) method")

        def perform(job: Job) -> Any:
            instance: Any = cls()
            return instance.process(job)

        async def perform_async(job: Job) -> Any:
            instance: Any = cls()
            return await instance.process(job)

        is_async = inspect.iscoroutinefunction(method)
        return (perform_async if is_async else perform), is_async
    if callable(target):
        return target, inspect.iscoroutinefunction(target)
    raise WorkerRegistrationError(f"cannot register {target!r} as a worker")


@overload
def worker(target: T) -> T: ...
@overload
def worker(
    target: None = None,
    *,
    name: str | None = ...,
    queue: str = ...,
    max_attempts: int = ...,
    priority: int = ...,
    tags: list[str] | None = ...,
    unique: Any = ...,
    timeout: float | None = ...,
    recorded: bool = ...,
    backoff: Backoff | None = ...,
    executor: str = ...,
    registry: Registry | None = ...,
) -> Callable[[T], T]: ...
def worker(
    target: Any = None,
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    priority: int = DEFAULT_PRIORITY,
    tags: list[str] | None = None,
    unique: Any = None,
    timeout: float | None = None,
    recorded: bool = False,
    backoff: Backoff | None = None,
    executor: str = "thread",
    registry: Registry | None = None,
) -> Any:
    """Register a class with ``process(job)`` or a function ``f(job)``, sync or async.

    ``timeout`` is in seconds. ``backoff(job) -> seconds`` replaces Oban's default exponential
    backoff. ``executor="process"`` runs a sync body in a child process of the node's pool
    instead of a thread, so a timeout or a pkill stops it (docs/worker.md). The decorated object
    gains ``.spec`` and ``.new(args, **opts)``.
    """

    def decorate(obj: Any) -> Any:
        perform, is_async = _perform_callable(obj)
        _check_executor(obj, executor, is_async)
        spec = WorkerSpec(
            name=name or default_name(obj),
            perform=perform,
            is_async=is_async,
            queue=queue,
            max_attempts=max_attempts,
            priority=priority,
            tags=list(tags or []),
            unique=unique,
            timeout=timeout,
            recorded=recorded,
            backoff=backoff if backoff is not None else _method_backoff(obj),
            target=obj,
            executor=executor,
        )
        (registry or default_registry).register(spec)
        obj.spec = spec
        obj.new = spec.new
        return obj

    if target is not None:
        return decorate(target)
    return decorate


def _check_executor(obj: Any, executor: str, is_async: bool) -> None:
    """Refuse what a child process could not run, at decoration rather than at the first job.

    A child finds the body again by importing its module and walking its qualified name (never
    by anything a row says), so the body must be reachable that way; an ``async def`` body runs
    on the node's event loop and gains nothing from a process."""
    label = getattr(obj, "__qualname__", repr(obj))
    if executor not in EXECUTORS:
        raise WorkerRegistrationError(
            f"{label}: executor must be one of {', '.join(map(repr, EXECUTORS))}, got {executor!r}"
        )
    if executor != "process":
        return
    if is_async:
        raise WorkerRegistrationError(
            f"{label}: executor='process' runs sync workers only; an async worker runs on the "
            "node's event loop (drop executor=, or make process a plain def)"
        )
    module = getattr(obj, "__module__", None)
    if not module or module == "__main__" or "<locals>" in label:
        raise WorkerRegistrationError(
            f"{label}: executor='process' needs a worker defined at the top level of an "
            "importable module (not __main__, not inside a function): the child process imports "
            "it by module name"
        )


def _method_backoff(obj: Any) -> Backoff | None:
    cls: Any = obj
    if inspect.isclass(cls) and callable(getattr(cls, "backoff", None)):

        def backoff(job: Job) -> int:
            instance: Any = cls()
            return int(instance.backoff(job))

        return backoff
    return None
