"""A real node inside a test process, on an event loop of its own thread.

The node is :class:`bridge.jobs.node.Node` as ``bridge worker`` runs it (producers, acker,
stager, peer, sonar), so what it leaves in the tables is what production leaves. It runs on
its own thread so sync and async tests alike can use it, and it never changes the test
process's GIL switch interval (``switch_interval=None``).
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from bridge.jobs.client.registry import Registry, default_registry
from bridge.jobs.node import Node, NodeConfig

# How long start and stop may take before the test is told.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def parse_queues(queues: Mapping[str, int] | Sequence[str] | str) -> dict[str, int]:
    """``{"default": 5}``, ``["default", "mail:2"]`` or ``"default,mail:2"`` (10 when no
    limit is given, as ``bridge worker --queues``)."""
    if isinstance(queues, Mapping):
        return {str(name): int(limit) for name, limit in queues.items()}
    items = queues.split(",") if isinstance(queues, str) else list(queues)
    out: dict[str, int] = {}
    for item in items:
        name, _, limit = item.strip().partition(":")
        if name:
            out[name] = int(limit) if limit else 10
    return out


class NodeHandle:
    """A started node: ``node`` is the :class:`Node`; :meth:`wait_idle` waits for its queues
    to run dry; :meth:`stop` stops it (the fixture does at teardown)."""

    def __init__(self, node: Node, closers: Iterable[Callable[[], None]] = ()) -> None:
        self.node = node
        self.closers = list(closers)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="bridge-test-node", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.stopped = False

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.node.start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()
        self._finish()

    def _finish(self) -> None:
        """What ``asyncio.run`` does at its end: cancel the tasks still pending (a workflow
        runner's batch drains wait for work for ever), let them finish, close the loop. Left
        pending, the garbage collector finalised them later outside any loop, where they raised
        (and once broke pytest's own end of session)."""
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self) -> NodeHandle:
        self._thread.start()
        if not self._started.wait(START_TIMEOUT):
            raise TimeoutError(f"the node did not start within {START_TIMEOUT:g}s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            if self._error is None:
                future = asyncio.run_coroutine_threadsafe(self.node.stop(), self.loop)
                future.result(STOP_TIMEOUT)
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(STOP_TIMEOUT)
        finally:
            for close in self.closers:
                close()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until none of the node's queues has an ``available`` or ``executing`` job and
        every outcome is stored (scheduled and retryable jobs wait for their time)."""
        config = self.node.config
        query = sql.SQL(
            "SELECT count(*) FROM {}.oban_jobs WHERE queue = ANY(%s)"
            " AND state IN ('available', 'executing')"
        ).format(sql.Identifier(config.prefix))
        deadline = time.monotonic() + timeout
        with psycopg.connect(config.url, autocommit=True) as conn:
            while True:
                row = conn.execute(query, (list(self.node.producers),)).fetchone()
                if row is not None and row[0] == 0:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"queues {', '.join(self.node.producers)} still had {row and row[0]} "
                        f"available or executing jobs after {timeout:g}s"
                    )
                time.sleep(0.02)


def _copy(registry: Registry) -> Registry:
    """The node's own registry holding ``registry``'s workers: the workflow runner's workers a
    node registers stay with that node, so the next test's runner can register its own."""
    copy = Registry()
    for name in registry.names():
        spec = registry.resolve(name)
        if spec is not None:
            copy.register(spec)
    return copy


def start_node(
    url: str,
    prefix: str,
    queues: Mapping[str, int] | Sequence[str] | str = (),
    *,
    workers: Sequence[str] = (),
    workflows: Sequence[Any] = (),
    registry: Registry | None = None,
    **config: Any,
) -> NodeHandle:
    """Start a node on ``url``/``prefix`` serving ``queues``; ``workers`` are modules to import
    (their ``@worker`` definitions register themselves), ``workflows`` Python workflows to
    serve on their own queue; other keywords are :class:`NodeConfig` fields."""
    for module in workers:
        importlib.import_module(module)
    config.setdefault("switch_interval", None)
    node_config = NodeConfig(
        url=url,
        queues=parse_queues(queues),
        prefix=prefix,
        registry=_copy(registry or default_registry),
        **config,
    )
    closers: list[Callable[[], None]] = []
    if workflows:
        from bridge.workflows.serving import serve_workflows

        runner = serve_workflows(node_config, workflows)
        closers.append(runner.close)
    if not node_config.queues:
        raise ValueError("bridge_node needs at least one queue (queues=..., or workflows=...)")
    return NodeHandle(Node(node_config), closers).start()
