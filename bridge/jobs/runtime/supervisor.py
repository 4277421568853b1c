"""Keep N node processes running: the supervisor behind ``bridge worker --processes N``.

A node runs sync bodies on threads of one interpreter, so under the GIL it uses one core for
CPU-bound work however many the machine has. The supervisor runs N ordinary nodes instead, each
a process of its own with its own producers, connections and node name, so the machine's cores
all run job bodies, and everything a node guarantees holds unchanged in each of them.

What it does, and nothing more: it starts the children, forwards SIGTERM/SIGINT to them (each
drains within its own grace), replaces a child that dies while not asked to stop (after calling
``on_death``, which lets the caller settle the jobs the dead child was running before its
replacement claims anything), and ends every child and itself with a child's start-up failure
(exit statuses ``fatal``: a bad setting, no database, the wrong schema would fail each
replacement the same way). A child tells it it is past start-up by writing a byte to the
pipe whose descriptor it finds in ``READY_ENV`` (:func:`report_ready`): only before that is an
exit status a start-up failure; after it, every exit is a death (a body may ``os._exit(2)``).
It never imports the operator's modules: the children do.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import FrameType

from bridge.wire.timefmt import utc_now

log = logging.getLogger("bridge.node")

READY_ENV = "BRIDGE_SUPERVISOR_READY_FD"
POLL_SECONDS = 0.2
RESTART_DELAY = 1.0  # first wait before replacing a child that died
MAX_RESTART_DELAY = 30.0  # doubled up to this while children die young
YOUNG_SECONDS = 10.0  # a child that lived less than this died young
KILL_AFTER_GRACE = 10.0  # seconds past the children's own grace before SIGKILL


@dataclass
class Child:
    """One slot of the supervisor: its index (1..N) and the process filling it now."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # monotonic
    started_at: datetime | None = None  # naive UTC, as attempted_at is stored
    delay: float = RESTART_DELAY  # the wait before replacing it, should it die young
    restart_at: float | None = None
    deaths: int = 0
    ready_fd: int | None = None  # the read end of the child's pipe, until it said it is ready
    ready: bool = False

    def poll_ready(self) -> bool:
        """Whether the child has written its byte (non-blocking)."""
        if not self.ready and self.ready_fd is not None:
            try:
                self.ready = bool(os.read(self.ready_fd, 1))
            except BlockingIOError:
                return False
            self._close_pipe()
        return self.ready

    def _close_pipe(self) -> None:
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None


def report_ready() -> None:
    """In a supervised child: tell the supervisor start-up is over (no-op when unsupervised)."""
    fd = os.environ.pop(READY_ENV, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"r")
        os.close(int(fd))
    except (OSError, ValueError):
        pass  # the supervisor is gone: nothing to tell


def describe_exit(returncode: int) -> str:
    """``exit status 3`` or ``signal SIGKILL``: how a child ended, for the log."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class Supervisor:
    """Runs ``count`` children made by ``command(index)`` until SIGTERM/SIGINT.

    ``env(index)`` is each child's environment; ``on_death(index, returncode, started_at)`` runs
    after a child died unasked and before it is replaced (its exceptions are logged, never
    fatal); ``grace`` is the children's own shutdown grace, after which (plus
    ``KILL_AFTER_GRACE``) a child still running is killed."""

    def __init__(
        self,
        count: int,
        command: Callable[[int], Sequence[str]],
        env: Callable[[int], Mapping[str, str]],
        *,
        grace: float,
        on_death: Callable[[int, int, datetime], None] | None = None,
        fatal: Collection[int] = (),
    ) -> None:
        self.children = [Child(i) for i in range(1, count + 1)]
        self.command = command
        self.env = env
        self.grace = grace
        self.on_death = on_death
        self.fatal = frozenset(fatal)
        self._stopping: int | None = None  # the signal that asked for the stop

    def run(self) -> int:
        """Supervise until signalled; the exit status: 0 after a signal, else a child's fatal
        start-up status."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for child in self.children:
                self._start(child)
            status = self._watch()
            self._stop_all()
            return status
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self._stopping is None:
            self._stopping = signum
            log.info("supervisor: %s received, stopping its nodes", signal.Signals(signum).name)
            # The same signal, once: a Ctrl-C on a terminal reaches the children too, and a
            # node treats a second SIGINT/SIGTERM while draining as the first.
            self._signal_all(signal.Signals(signum))

    def _start(self, child: Child) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        env = {**self.env(child.index), READY_ENV: str(write_fd)}
        try:
            child.process = subprocess.Popen(
                list(self.command(child.index)), env=env, pass_fds=(write_fd,)
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        child._close_pipe()
        child.ready_fd, child.ready = read_fd, False
        child.started = time.monotonic()
        child.started_at = utc_now()
        child.restart_at = None
        log.info("supervisor: node process %d started (pid %d)", child.index, child.process.pid)

    def _watch(self) -> int:
        while self._stopping is None:
            now = time.monotonic()
            for child in self.children:
                if child.process is None:
                    if child.restart_at is not None and now >= child.restart_at:
                        self._start(child)
                    continue
                code = child.process.poll()
                if code is None or self._stopping is not None:
                    continue
                if not child.poll_ready() and code in self.fatal:
                    log.error(
                        "supervisor: node process %d failed to start (%s); stopping",
                        child.index,
                        describe_exit(code),
                    )
                    return code
                self._died(child, code, now)
            time.sleep(POLL_SECONDS)
        return 0

    def _died(self, child: Child, code: int, now: float) -> None:
        """Settle what the dead child was running, then schedule its replacement."""
        child.deaths += 1
        lived = now - child.started
        wait = child.delay if lived < YOUNG_SECONDS else RESTART_DELAY
        child.delay = min(wait * 2, MAX_RESTART_DELAY)  # the next wait, should it die young
        log.error(
            "supervisor: node process %d (pid %d) died (%s); replacing it in %.0f s",
            child.index,
            child.process.pid if child.process else 0,
            describe_exit(code),
            wait,
        )
        if self.on_death is not None and child.started_at is not None:
            try:
                self.on_death(child.index, code, child.started_at)
            except Exception:
                log.exception("supervisor: settling node process %d's jobs failed", child.index)
        child.process = None
        child._close_pipe()
        child.restart_at = now + wait

    def _signal_all(self, sig: signal.Signals) -> None:
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(sig)

    def _stop_all(self) -> None:
        """Stop every child still running (SIGTERM unless a signal was forwarded already), wait
        its grace, then kill what is left."""
        if self._stopping is None:
            self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + KILL_AFTER_GRACE
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("supervisor: node process %d outlived its grace; killed", child.index)
                child.process.kill()
                child.process.wait()
