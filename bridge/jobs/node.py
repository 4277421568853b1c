"""A running Python node: pool, notifier, one producer per queue (storing outcomes through the
acker), plugins, signals.

It is to the database what an Elixir node running Oban is: it claims jobs in the queues it is
configured for, writes their outcomes as Oban does, and obeys the same signals. Stopping is
graceful: stop claiming, let running jobs finish within a grace period, write every outcome,
and leave anything still running as ``executing`` for a lifeline to rescue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from bridge.db import DEFAULT_PREFIX, configure_pool_connection, redact_url
from bridge.jobs.client.job import Job
from bridge.jobs.client.registry import Registry, default_registry
from bridge.jobs.plugins import Plugin
from bridge.jobs.plugins.gossip import Gossip
from bridge.jobs.plugins.peer import Peer
from bridge.jobs.plugins.sonar import Sonar
from bridge.jobs.plugins.stager import Stager
from bridge.jobs.runtime import telemetry
from bridge.jobs.runtime.acker import Acker
from bridge.jobs.runtime.executor import Ack, JobExecutor
from bridge.jobs.runtime.notifier import Handler, Notifier
from bridge.jobs.runtime.process_pool import ProcessPool, process_worker_modules
from bridge.jobs.runtime.producer import Producer
from bridge.jobs.runtime.threads import JobThreads

log = logging.getLogger("bridge.node")
# How long a stopping plugin may take for its last write (a leader deleting its oban_peers row)
# before the shutdown goes on without it: its lease then runs out by itself.
PLUGIN_STOP_SECONDS = 5.0


@dataclass
class NodeConfig:
    url: str
    queues: dict[str, int]
    prefix: str = DEFAULT_PREFIX
    node: str = field(default_factory=socket.gethostname)
    # The Elixir instance name whose signals this node obeys when they are targeted at it:
    # Oban's ident is "<inspect(name)>.<node>", e.g. "Oban.worker-1".
    name: str = "Oban"
    poll_interval: float = 1.0
    shutdown_grace: float = 15.0
    registry: Registry = field(default_factory=lambda: default_registry)
    plugins: list[Plugin] | None = None  # None: the defaults (stager, peer, sonar)
    # Send oban_met's queue checks on oban_gossip (what an Elixir node with Oban Web sends), so
    # Oban Web lists this node's queues. Off: OSS Oban 2.23 sends nothing there.
    gossip: bool = False
    async_commit: bool = False
    pool_size: int = 4
    # CPython hands the GIL over every 5 ms by default; with CPU-bound sync workers spinning in
    # threads, the event loop then waits several of those slices for every socket read and
    # claiming slows to a crawl (convoy effect). 0.5 ms keeps other queues moving (measured in
    # tests/jobs/runtime/test_node.py). None leaves the interpreter's setting alone.
    switch_interval: float | None = 0.0005
    # Child processes for executor="process" workers (None: one per core), started when first
    # needed; a child is replaced after process_max_jobs jobs (None: never).
    process_pool_size: int | None = None
    process_max_jobs: int | None = None

    def add_plugin(self, plugin: Plugin) -> None:
        """Run ``plugin`` besides the others: a config still on the defaults gets them first
        (with gossip when asked), so adding a lifeline never silently drops leadership, staging
        or the queue checks."""
        if self.plugins is None:
            self.plugins = default_plugins(gossip=self.gossip)
        self.plugins.append(plugin)


def default_plugins(*, gossip: bool = False) -> list[Plugin]:
    """The plugins every node runs unless told otherwise: staging, leadership and presence
    pings, as OSS Oban 2.23 runs them, plus queue checks on oban_gossip when ``gossip``. Code that
    adds a plugin to a config without any starts from these, so adding one never silently drops
    leadership."""
    plugins: list[Plugin] = [Stager(), Peer(), Sonar()]
    return [*plugins, Gossip()] if gossip else plugins


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.prefix = config.prefix
        self.ident = f"{config.name}.{config.node}"
        # Sync bodies start at once on a thread, never waiting for one; the queues' slots bound
        # how many run (a timed-out body keeps its slot until its thread returns). As many idle
        # threads as the queues have slots are kept for reuse.
        self.threads = JobThreads(keep=max(1, sum(config.queues.values())))
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            config.url,
            min_size=1,
            max_size=max(2, config.pool_size),
            kwargs={"autocommit": True},
            configure=configure_pool_connection,  # JSON read as Jason reads it
            open=False,
        )
        self.processes = ProcessPool(
            config.process_pool_size,
            max_jobs_per_child=config.process_max_jobs,
            preload=process_worker_modules(config.registry),
        )
        self.executor = JobExecutor(config.registry, self.threads, self.processes)
        self.acker = Acker(self.pool, self.prefix, async_commit=config.async_commit)
        self.producers: dict[str, Producer] = {}
        # `leader` is for the Peer plugin (a leader stepping down): one LISTEN connection a node.
        self.notifier = Notifier(config.url, self.prefix, ["insert", "signal", "leader"])
        self.plugins = (
            list(config.plugins)
            if config.plugins is not None
            else default_plugins(gossip=config.gossip)
        )
        if config.gossip and not any(isinstance(p, Gossip) for p in self.plugins):
            self.plugins.append(Gossip())
        self.listeners: list[Any] = []  # callables (job, ack) for instrumentation
        self._stopped = asyncio.Event()

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        log.info(
            "node %s starting on %s (prefix %s): %s",
            self.config.node,
            redact_url(self.config.url),
            self.prefix,
            ", ".join(f"{q}:{n}" for q, n in self.config.queues.items()),
        )
        if self.config.switch_interval is not None:
            sys.setswitchinterval(self.config.switch_interval)
        await self.pool.open(wait=True)
        self.notifier.subscribe(self._on_notification)
        self.notifier.start()
        for queue, limit in self.config.queues.items():
            self._start_queue(queue, limit)
        for plugin in self.plugins:
            plugin.start(self)

    def _start_queue(self, queue: str, limit: int, paused: bool = False) -> Producer:
        producer = Producer(
            queue=queue,
            limit=limit,
            node=self.config.node,
            prefix=self.prefix,
            pool=self.pool,
            executor=self.executor,
            acker=self.acker,
            poll_interval=self.config.poll_interval,
            paused=paused,
            on_ack=self._on_ack,
        )
        self.producers[queue] = producer
        producer.start()
        return producer

    async def stop(self) -> None:
        """Stop plugins, drain producers (each stores its outcomes before its stop returns),
        close the rest. It ends whatever the database does: a plugin's last write (the
        leader giving up its row) gets ``PLUGIN_STOP_SECONDS``, a producer's stop is bounded
        by itself, and the job threads are released even if a step failed, since an idle
        thread left waiting would keep the process from exiting."""
        grace = self.config.shutdown_grace
        try:
            for plugin in self.plugins:
                try:
                    await asyncio.wait_for(plugin.stop(), PLUGIN_STOP_SECONDS)
                except Exception as exc:
                    log.warning(
                        "plugin %s did not stop cleanly (%s: %s); going on with the shutdown",
                        plugin.name,
                        type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "timed out",
                    )
            await asyncio.gather(*(p.stop(grace) for p in self.producers.values()))
            await self.notifier.stop()
            await self.pool.close()
        finally:
            self.threads.shutdown(wait=False, cancel_futures=True)
            await self.processes.close()
            self._stopped.set()
        log.info("node %s stopped", self.config.node)

    async def run_until_signalled(self) -> None:
        """Run until SIGTERM/SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("node %s: signal received, draining", self.config.node)
        await self.stop()

    # queue control ---------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """Leader of this node's peer name; with no Peer plugin a node is alone, so it leads."""
        peers = [p for p in self.plugins if isinstance(p, Peer)]
        return all(p.leader for p in peers)

    def listen(self, handler: Handler) -> None:
        """Hand ``handler`` every notification the node hears (for plugins)."""
        self.notifier.subscribe(handler)

    def wake(self, queue: str) -> None:
        producer = self.producers.get(queue)
        if producer is not None:
            producer.wake()

    def check_queue(self, queue: str) -> dict[str, Any] | None:
        producer = self.producers.get(queue)
        return producer.check() if producer is not None else None

    async def _on_notification(self, channel: str, payload: dict[str, Any]) -> None:
        if channel == "insert":
            queue = payload.get("queue")
            if isinstance(queue, str):
                self.wake(queue)
        elif channel == "signal":
            self.handle_signal(payload)

    def handle_signal(self, payload: dict[str, Any]) -> None:
        """Obey a signal whose ident is ``any`` or ours, as Oban's notifier and producer do.

        Every signal is logged at INFO with what this node did about it, so an operator who
        sent one can see in the node's log that it arrived and whether it applied here."""
        outcome = self._obey_signal(payload)
        log.info("signal %s: %s", describe_signal(payload), outcome)

    def _obey_signal(self, payload: dict[str, Any]) -> str:
        ident = payload.get("ident", "any")
        if ident not in ("any", self.ident):
            return "ignored (not ours)"
        action = payload.get("action")
        queue = payload.get("queue")
        targets = (
            list(self.producers.values())
            if queue == "*"
            else [p for name, p in self.producers.items() if name == queue]
        )
        if action in ("pause", "resume", "scale") and not targets:
            return "ignored (queue not served here)"
        if action == "pause":
            for producer in targets:
                producer.pause()
        elif action == "resume":
            for producer in targets:
                producer.resume()
        elif action == "scale":
            limit = payload.get("limit")
            if not isinstance(limit, int):
                return "ignored (no valid limit)"
            for producer in targets:
                producer.scale(limit)
            if limit < 1:
                return "ignored (no valid limit)"
        elif action == "pkill":
            job_id = payload.get("job_id")
            killed = False
            for producer in self.producers.values():
                if isinstance(job_id, int) and producer.pkill(job_id):
                    log.info("job %s killed by signal", job_id)
                    killed = True
            if not killed:
                return "ignored (job not running here)"
        elif action == "start":
            if not isinstance(queue, str):
                return "ignored (no queue name)"
            if queue in self.producers:
                return "ignored (queue already running here)"
            limit = payload.get("limit", 10)
            self._start_queue(queue, limit if isinstance(limit, int) else 10)
        elif action == "stop":
            if not isinstance(queue, str) or queue not in self.producers:
                return "ignored (queue not served here)"
            producer = self.producers.pop(queue)
            asyncio.get_running_loop().create_task(producer.stop(self.config.shutdown_grace))
        else:
            return "ignored (unknown action)"
        return "obeyed"

    def _on_ack(self, job: Job, ack: Ack) -> None:
        if telemetry.has_handlers():
            telemetry.emit(*telemetry.stop_event(job, ack))
        for listener in self.listeners:
            listener(job, ack)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until no producer has running jobs and all outcomes are stored (for tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not all(p.idle for p in self.producers.values()):
            if loop.time() > deadline:
                raise TimeoutError("jobs still running or outcomes not stored")
            await asyncio.sleep(0.01)


def describe_signal(payload: dict[str, Any]) -> str:
    """``pause queue=badges ident=any``: a signal in a log line, whatever its values hold."""
    parts = [_signal_field(payload.get("action"))]
    keys = ("job_id",) if payload.get("action") == "pkill" else ("queue", "limit", "node")
    for key in keys:
        if key in payload:
            parts.append(f"{key}={_signal_field(payload[key])}")
    parts.append(f"ident={_signal_field(payload.get('ident', 'any'))}")
    return " ".join(parts)


def _signal_field(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
