"""Drive the real-BEAM Elixir fixture (``elixir_fixture/``) from Python.

The fixture speaks JSON lines: one command per line on stdin, one reply per line on stdout,
logs on stderr. :class:`ElixirFixture` builds the Mix project once per process (``mix compile``
under a file lock, so parallel sessions do not race on ``_build``), starts one VM, and turns every
failure -- a missing toolchain, a VM that died, a reply that never came, a command the VM
rejected -- into :class:`ElixirFixtureError` carrying the tail of the VM's stderr, because a
bare timeout says nothing about what went wrong on the other side.
"""

from __future__ import annotations

import collections
import fcntl
import functools
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

PROJECT_DIR = Path(__file__).resolve().parent.parent / "elixir_fixture"
ENTRY = "Fixture.CLI.main()"
DEFAULT_TIMEOUT = 30.0
STDERR_LINES = 200

Json = dict[str, Any]


class ElixirFixtureError(RuntimeError):
    """The fixture could not be built or started, died, timed out, or rejected a command."""


class CommandFailed(ElixirFixtureError):
    """The VM answered ``ok: false``; ``type`` is the Elixir exception module."""

    def __init__(self, message: str, *, command: str, error: str, type_: str) -> None:
        super().__init__(message)
        self.command = command
        self.error = error
        self.type = type_


def _executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ElixirFixtureError(f"`{name}` is not installed: apt-get install elixir erlang-jiffy")
    return path


@functools.cache
def build(project_dir: Path = PROJECT_DIR) -> Path:
    """Compile the Mix project (offline, no dependencies) and return its ebin directory."""
    build_dir = project_dir / "_build"
    build_dir.mkdir(exist_ok=True)
    env = dict(os.environ, MIX_ENV="dev")
    with (build_dir / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(
            [_executable("mix"), "compile"],
            cwd=project_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    if proc.returncode != 0:
        raise ElixirFixtureError(
            f"mix compile failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    ebin = build_dir / "dev" / "lib" / "elixir_fixture" / "ebin"
    if not (ebin / "elixir_fixture.app").exists():
        raise ElixirFixtureError(f"mix compile produced no {ebin / 'elixir_fixture.app'}")
    return ebin


def connection_params(url: str) -> Json:
    """Explicit connection parameters for the VM from any libpq URL or key/value string.

    libpq's rules (``?host=/socket/dir``, percent-encoding, key/value strings) are applied by
    psycopg here, so the Elixir side only ever sees plain host/port/user/password/database.
    """
    info = psycopg.conninfo.conninfo_to_dict(url)
    host = str(info.get("host") or "localhost").split(",")[0]
    port = int(str(info.get("port") or 5432).split(",")[0])
    return {
        "host": host,
        "port": port,
        "user": str(info.get("user") or os.environ.get("PGUSER") or "postgres"),
        "password": info.get("password"),
        "database": str(info.get("dbname") or "postgres"),
    }


class ElixirFixture:
    """One fixture VM. Use as a context manager, or call :meth:`start` and :meth:`stop`."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, project_dir: Path = PROJECT_DIR):
        self.timeout = timeout
        self.project_dir = project_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[Json | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._lock = threading.Lock()
        self._next_id = 0

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> ElixirFixture:
        ebin = build(self.project_dir)
        self._proc = subprocess.Popen(
            [_executable("elixir"), "-pa", str(ebin), "-e", ENTRY],
            cwd=self.project_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            self._await_reply(lambda reply: reply.get("ready") is True, self.timeout, "start")
        except ElixirFixtureError:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                self.call("stop", timeout=timeout)
                proc.wait(timeout=timeout)
        except (ElixirFixtureError, subprocess.TimeoutExpired, OSError):
            proc.kill()
            proc.wait(timeout=timeout)
        finally:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            self._proc = None

    def __enter__(self) -> ElixirFixture:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    # Commands ----------------------------------------------------------------------------

    def call(self, cmd: str, /, *, timeout: float | None = None, **params: Any) -> Json:
        """Send one command and return its reply; raise :class:`CommandFailed` on ``ok: false``.

        Commands that wait inside the VM (``wait_idle``, ``heard``) get their own ``timeout_ms``
        added to the reply timeout, so the VM's answer always arrives before ours expires.
        """
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise ElixirFixtureError("the fixture is not running: call start() first")
        if "id" in params:
            raise ValueError("`id` is the request id of the protocol; name the argument otherwise")
        limit = (timeout or self.timeout) + float(params.get("timeout_ms", 0)) / 1000
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            line = json.dumps({"id": request_id, "cmd": cmd, **params}) + "\n"
            try:
                proc.stdin.write(line.encode())
                proc.stdin.flush()
            except OSError as exc:
                raise self._error(f"cannot send {cmd!r}: {exc}") from exc
            reply = self._await_reply(lambda r: r.get("id") == request_id, limit, cmd)
        if reply.get("ok") is not True:
            error = str(reply.get("error"))
            type_ = str(reply.get("type"))
            raise CommandFailed(
                f"{cmd} failed in the VM: ({type_}) {error}\n{reply.get('detail', '')}",
                command=cmd,
                error=error,
                type_=type_,
            )
        return reply

    def connect(self, url: str, prefix: str, **options: Any) -> Json:
        """Point the VM at ``url`` and schema ``prefix`` (replaces any previous connection)."""
        return self.call("connect", params=connection_params(url), prefix=prefix, **options)

    def enqueue(self, jobs: list[Json], *, bulk: bool = False) -> list[Json]:
        """Insert jobs as ``Oban.insert/2`` (or ``insert_all/2`` when ``bulk``); return rows."""
        rows: list[Json] = self.call("enqueue", jobs=jobs, bulk=bulk)["jobs"]
        return rows

    def jobs(self, ids: list[int] | None = None) -> list[Json]:
        rows: list[Json] = self.call("jobs", ids=ids)["jobs"]
        return rows

    def heard(
        self, channel: str | None = None, *, at_least: int = 1, timeout_ms: int = 5000
    ) -> list[Json]:
        """Take what the VM's listener received on ``channel``, waiting for ``at_least`` items.

        Returns early once enough arrived, or whatever there is when ``timeout_ms`` runs out.
        """
        reply = self.call("heard", channel=channel, min=at_least, timeout_ms=timeout_ms)
        found: list[Json] = reply["notifications"]
        return found

    # Plumbing ----------------------------------------------------------------------------

    def _await_reply(self, wanted: Callable[[Json], bool], limit: float, what: str) -> Json:
        deadline = time.monotonic() + limit
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._error(f"no reply to {what!r} within {limit:.1f}s")
            try:
                reply = self._replies.get(timeout=remaining)
            except queue.Empty:
                continue
            if reply is None:
                raise self._error(f"the VM exited while waiting for {what!r}")
            if wanted(reply):
                return reply

    def _error(self, message: str) -> ElixirFixtureError:
        proc = self._proc
        status = "" if proc is None or proc.poll() is None else f" (exit status {proc.returncode})"
        time.sleep(0.05)  # let the stderr reader catch the VM's last words
        return ElixirFixtureError(f"{message}{status}; VM stderr tail:\n{self.stderr_tail}")

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            text = raw.decode(errors="replace").strip()
            try:
                reply = json.loads(text)
            except ValueError:
                reply = None
            if isinstance(reply, dict):
                self._replies.put(reply)
            elif text:
                self._stderr.append(f"[stdout] {text}")
        self._replies.put(None)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())


@contextmanager
def cold_fixture(url: str, prefix: str, **options: Any) -> Iterator[ElixirFixture]:
    """A VM booted for one test only (its own OS process), connected to ``url``/``prefix``.

    The shared per-module VM accumulates atoms: every command it ran, every instance its engine
    advanced, leaves atoms behind for good. A genuine Elixir node that just restarted has only
    the atoms of its loaded code (the fixture loads every module at boot, as a release does), so
    what such a node can load is only seen on a VM that has done nothing else yet.
    """
    with ElixirFixture() as fixture:
        fixture.connect(url, prefix, **options)
        yield fixture


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
