"""The user's Elixir application as a real process in the test run.

:class:`ElixirApp` starts the app's command (``mix run --no-halt`` in its Mix project, or a
release's ``bin/my_app start``) with the test database in its environment, waits until its Oban
node is up, keeps its output in a log file, and stops it the way a deployment does: SIGTERM,
which a BEAM answers with a graceful ``init:stop/0`` (queues drained, the leader's
``oban_peers`` row deleted), then SIGKILL after a grace period.

"Up" means its row in ``oban_peers``: Oban's default peer (``Oban.Peers.Database``) writes it
during its first election, after the notifier and queues of its supervision tree have started,
and only once the app reached the database given to it. The test database starts with no row
of that name, so the row is this app's. Where an app runs another peer (``peer: false``,
``Oban.Peers.Global``) no row comes, and the start times out saying so.

The app reads where to connect from its environment, which its ``config/runtime.exs`` turns into
Oban's config: :data:`URL_VARIABLE` and :data:`PREFIX_VARIABLE`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# What the app's config/runtime.exs reads (docs/testing.md shows the lines).
URL_VARIABLE = "DATABASE_URL"
PREFIX_VARIABLE = "OBAN_PREFIX"

DEFAULT_COMMAND: tuple[str, ...] = ("mix", "run", "--no-halt")
# A first `mix run` compiles the app; later ones start in about two seconds.
DEFAULT_START_TIMEOUT = 120.0
# Oban's own shutdown_grace_period is 15 s: a SIGTERM waits that long for running jobs.
DEFAULT_STOP_TIMEOUT = 20.0
DEFAULT_PEER_NAME = "Oban"
LOG_LINES = 60
POLL_SECONDS = 0.1

# The keys of [tool.bridge.testing] this module reads.
SETTINGS = {
    "elixir_app": "the Mix project (or release) directory, relative to pyproject.toml",
    "elixir_command": "the command that starts it, a string or a list",
    "elixir_env": "extra environment variables for it (a table)",
    "elixir_start_timeout": "seconds to wait for its oban_peers row",
    "elixir_stop_timeout": "seconds between SIGTERM and SIGKILL",
    "elixir_peer_name": "the Oban instance name in oban_peers (inspect(name): 'Oban')",
}

NOT_CONFIGURED = (
    "bridge_elixir_app: no Elixir app configured: pass --bridge-elixir-app PATH (a Mix project) "
    "or set elixir_app in [tool.bridge.testing] of pyproject.toml"
)


class ElixirAppError(Exception):
    """The app could not be configured, started, or it died: the message says why and shows
    the end of its log."""


@dataclass(frozen=True)
class ElixirAppConfig:
    """How to start the app: where, with what command and environment, how long to wait."""

    path: Path
    command: tuple[str, ...] = DEFAULT_COMMAND
    env: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float = DEFAULT_START_TIMEOUT
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    peer_name: str = DEFAULT_PEER_NAME


def read_settings(pyproject: Path) -> dict[str, Any]:
    """``[tool.bridge.testing]`` of ``pyproject`` ({} when there is none); an unknown key is an
    error naming the known ones, so a typo does not silently start nothing."""
    if not pyproject.is_file():
        return {}
    with pyproject.open("rb") as handle:
        data = tomllib.load(handle)
    table = data.get("tool", {}).get("bridge", {}).get("testing", {})
    if not isinstance(table, dict):
        raise ElixirAppError(f"{pyproject}: [tool.bridge.testing] must be a table")
    unknown = sorted(set(table) - set(SETTINGS))
    if unknown:
        raise ElixirAppError(
            f"{pyproject}: unknown key(s) in [tool.bridge.testing]: {', '.join(unknown)} "
            f"(known: {', '.join(SETTINGS)})"
        )
    return table


def _command(value: Any, origin: str) -> tuple[str, ...]:
    parts = shlex.split(value) if isinstance(value, str) else value
    if (
        not isinstance(parts, list | tuple)
        or not parts
        or not all(isinstance(part, str) for part in parts)
    ):
        raise ElixirAppError(f"{origin}: elixir_command must be a non-empty string or list")
    return tuple(parts)


def load_config(
    app_option: str | None,
    command_option: str | None,
    pyproject: Path,
    invocation_dir: Path,
) -> ElixirAppConfig | None:
    """The app's config: the options first, then ``[tool.bridge.testing]`` of ``pyproject``
    (its paths relative to that file); None when neither names an app."""
    settings = read_settings(pyproject)
    origin = str(pyproject)
    if app_option:
        path = (invocation_dir / app_option).resolve()
    elif settings.get("elixir_app"):
        path = (pyproject.parent / str(settings["elixir_app"])).resolve()
    else:
        return None
    env = settings.get("elixir_env", {})
    if not isinstance(env, dict):
        raise ElixirAppError(f"{origin}: elixir_env must be a table of strings")
    command = DEFAULT_COMMAND
    if command_option:
        command = _command(command_option, "--bridge-elixir-command")
    elif "elixir_command" in settings:
        command = _command(settings["elixir_command"], origin)
    return ElixirAppConfig(
        path=path,
        command=command,
        env={str(key): str(value) for key, value in env.items()},
        start_timeout=float(settings.get("elixir_start_timeout", DEFAULT_START_TIMEOUT)),
        stop_timeout=float(settings.get("elixir_stop_timeout", DEFAULT_STOP_TIMEOUT)),
        peer_name=str(settings.get("elixir_peer_name", DEFAULT_PEER_NAME)),
    )


def app_environment(
    config: ElixirAppConfig, url: str, prefix: str, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The app's environment: ours, the configured extras, then the database (last, so nothing
    configured can point the app elsewhere)."""
    env = dict(os.environ if base is None else base)
    env.update(config.env)
    env[URL_VARIABLE] = url
    env[PREFIX_VARIABLE] = prefix
    return env


class ElixirApp:
    """One run of the app on ``url``/``prefix``; its output goes to ``log_path``.

    ``node`` is its node name (from its ``oban_peers`` row) once started; :meth:`log_text`
    reads what it printed, from an offset (:meth:`log_offset`) so a test sees its own part.
    """

    def __init__(self, config: ElixirAppConfig, url: str, prefix: str, log_path: Path) -> None:
        self.config = config
        self.url = url
        self.prefix = prefix
        self.log_path = log_path
        self.node: str | None = None
        self.returncode: int | None = None
        self.killed = False  # True when the grace ran out and SIGKILL ended it
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def described(self) -> str:
        return f"the Elixir app in {self.config.path} ({shlex.join(self.config.command)})"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    # Log ----------------------------------------------------------------------------------------

    def log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        """What the app printed (stdout and stderr, interleaved), from byte ``since``."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(since)
                return handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_LINES, since: int = 0) -> str:
        text = self.log_text(since).rstrip("\n").splitlines()
        shown = text[-lines:]
        cut = (
            f"    ... ({len(text) - lines} earlier lines in {self.log_path})\n"
            if len(text) > lines
            else ""
        )
        return cut + "\n".join(f"    {line}" for line in shown)

    def _failure(self, what: str) -> ElixirAppError:
        tail = self.log_tail() or "    (it printed nothing)"
        return ElixirAppError(
            f"{self.described} {what}.\nIts log ({self.log_path}), last lines:\n{tail}"
        )

    # Start ---------------------------------------------------------------------------------------

    def start(self) -> ElixirApp:
        """Start the command and wait for the app's ``oban_peers`` row; an
        :class:`ElixirAppError` with its log tail when it dies or never gets there."""
        config = self.config
        if not config.path.is_dir():
            raise ElixirAppError(f"no Elixir app at {config.path}: not a directory")
        if config.command[0] == "mix" and not (config.path / "mix.exs").is_file():
            raise ElixirAppError(f"no Mix project at {config.path}: it has no mix.exs")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                config.command,
                cwd=config.path,
                env=app_environment(config, self.url, self.prefix),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own: stop() signals the whole tree
            )
        except FileNotFoundError as exc:
            self._log.close()
            raise ElixirAppError(
                f"cannot start {self.described}: {config.command[0]!r} is not on PATH "
                "(install Elixir, or set elixir_command)"
            ) from exc
        try:
            self._await_peer()
        except BaseException:
            self.stop()
            raise
        return self

    def _await_peer(self) -> None:
        import psycopg
        from psycopg import sql

        query = sql.SQL("SELECT node FROM {}.oban_peers WHERE name = %s").format(
            sql.Identifier(self.prefix)
        )
        timeout = self.config.start_timeout
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.url, autocommit=True) as conn:
            while True:
                row = conn.execute(query, (self.config.peer_name,)).fetchone()
                if row is not None:
                    self.node = str(row[0])
                    return
                assert self._proc is not None
                status = self._proc.poll()
                if status is not None:
                    raise self._failure(f"exited with status {status} before its Oban node was up")
                if time.monotonic() >= deadline:
                    raise self._failure(
                        f"wrote no row under name {self.config.peer_name!r} in "
                        f'"{self.prefix}".oban_peers within {timeout:g}s: its Oban must read '
                        f"{URL_VARIABLE} and {PREFIX_VARIABLE} (config/runtime.exs) and run "
                        "the default Database peer"
                    )
                time.sleep(POLL_SECONDS)

    def check(self) -> None:
        """An :class:`ElixirAppError` with its log tail if the app is no longer running."""
        if self._proc is not None and self._proc.poll() is not None:
            raise self._failure(f"is no longer running (exit status {self._proc.returncode})")

    # Stop ----------------------------------------------------------------------------------------

    def stop(self) -> int | None:
        """SIGTERM to the app's process group, SIGKILL after ``stop_timeout``; its exit status."""
        proc = self._proc
        if proc is None:
            return self.returncode
        try:
            if proc.poll() is None:
                self._signal(proc, signal.SIGTERM)
                try:
                    proc.wait(self.config.stop_timeout)
                except subprocess.TimeoutExpired:
                    self.killed = True
                    self._signal(proc, signal.SIGKILL)
                    proc.wait()
            self.returncode = proc.returncode
        finally:
            self._proc = None
            if self._log is not None:
                self._log.close()
                self._log = None
        return self.returncode

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)  # the group start_new_session gave it: ours only


def start_app(
    config: ElixirAppConfig, url: str, prefix: str, log_dir: Path, name: str = "elixir-app"
) -> ElixirApp:
    """Start the app on ``url``/``prefix`` with its log in ``log_dir``."""
    return ElixirApp(config, url, prefix, log_dir / f"{name}.log").start()
