"""The ``bridge worker`` processes of a chaos run and every fault done to them.

Each node is the installed ``bridge`` script run from the scratch directory, as an operator
runs it; a node killed is started again at once under the same ``--node`` name (a supervisor
restarting it), so the pids, not the names, tell incarnations apart. Every fault is logged
with the wall-clock time (``time.time()``, the clock the records use) so the checks can match
each interrupted attempt with what interrupted it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.support.cli import bridge_script


@dataclass(frozen=True)
class Fault:
    """``kind``: kill, freeze, thaw, exit (a node that ended by itself), db-down, db-up."""

    kind: str
    t: float
    pid: int = 0
    node: str = ""
    detail: str = ""


@dataclass
class Incarnation:
    node: str  # the slot in the fleet
    name: str  # its --node name: the slot's, or a new one when it came back under another
    process: subprocess.Popen[bytes]
    log: Path
    handle: IO[Any]


@dataclass
class Fleet:
    """``size`` nodes named ``chaos-1`` … ``chaos-N``, each ``bridge worker WORKER_ARGS``."""

    url: str
    scratch: Path
    records: Path
    worker_args: list[str]
    size: int
    faults: list[Fault] = field(default_factory=list)
    running: dict[str, Incarnation] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    started: int = 0

    def start_all(self) -> None:
        for i in range(1, self.size + 1):
            self.start(f"chaos-{i}")

    def start(self, node: str, rename: bool = False) -> None:
        """Start the slot ``node``; ``rename``: under a new ``--node`` name (a replacement
        host), so the killed process's leadership lease is not simply taken back."""
        self.started += 1
        name = f"{node}.{self.started}" if rename else node
        log = self.scratch / "logs" / f"{node}.{self.started}.log"
        log.parent.mkdir(exist_ok=True)
        handle = log.open("wb")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL")}
        env.update(BRIDGE_DATABASE_URL=self.url, CHAOS_RECORDS=str(self.records))
        process = subprocess.Popen(
            [bridge_script(), "worker", "--node", name, *self.worker_args],
            cwd=self.scratch,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        self.running[node] = Incarnation(node, name, process, log, handle)

    def pid(self, node: str) -> int:
        return self.running[node].process.pid

    def name(self, node: str) -> str:
        return self.running[node].name

    def kill(self, node: str, leader: bool = False, rename: bool = False) -> None:
        """SIGKILL the node's process (no shutdown, no outcome stored) and start it again at
        once (under a new name with ``rename``). ``leader``: it led, as far as the driver saw."""
        incarnation = self.running[node]
        incarnation.process.kill()
        detail = ("leader" if leader else "") + (", renamed" if rename else "")
        self.faults.append(Fault("kill", time.time(), incarnation.process.pid, node, detail))
        incarnation.process.wait(30)
        incarnation.handle.close()
        self.frozen.discard(node)
        self.start(node, rename=rename)

    def kill_random(self, rng: random.Random, leader: str | None) -> str:
        """Kill a random node that is not frozen; half the time it comes back renamed."""
        node = rng.choice(sorted(n for n in self.running if n not in self.frozen))
        self.kill(node, leader=self.name(node) == leader, rename=rng.random() < 0.5)
        return node

    def freeze(self, node: str) -> None:
        os.kill(self.pid(node), signal.SIGSTOP)
        self.faults.append(Fault("freeze", time.time(), self.pid(node), node))
        self.frozen.add(node)

    def thaw(self, node: str) -> None:
        os.kill(self.pid(node), signal.SIGCONT)
        self.faults.append(Fault("thaw", time.time(), self.pid(node), node))
        self.frozen.discard(node)

    def reap(self) -> list[Fault]:
        """Nodes that ended by themselves (a defect: a node must outlive a database restart),
        logged as ``exit`` faults with the end of their log, and started again."""
        ended = []
        for node, incarnation in list(self.running.items()):
            code = incarnation.process.poll()
            if code is None:
                continue
            incarnation.handle.close()
            tail = incarnation.log.read_text(errors="replace").strip().splitlines()[-3:]
            fault = Fault("exit", time.time(), incarnation.process.pid, node,
                          f"exit status {code}: " + " | ".join(tail))  # fmt: skip
            self.faults.append(fault)
            ended.append(fault)
            self.start(node)
        return ended

    def stop_all(self, grace: float = 20.0) -> None:
        """SIGTERM every node (thawed first), wait up to ``grace`` s, then SIGKILL what is left."""
        for node in list(self.frozen):
            self.thaw(node)
        for incarnation in self.running.values():
            if incarnation.process.poll() is None:
                incarnation.process.terminate()
        deadline = time.monotonic() + grace
        for incarnation in self.running.values():
            try:
                incarnation.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                incarnation.process.kill()
                incarnation.process.wait(10)
            incarnation.handle.close()
        self.running.clear()
