"""The embedded PostgreSQL: where its data lives, whether it runs, starting and stopping it.

The embedded server (the optional ``pgserver`` package, the ``embedded`` extra) is never
started unasked: a worker with a forgotten URL must not quietly write to a private database
nobody else reads. Once started it keeps running, so that a worker and a later ``bridge jobs``
see the same rows; :func:`embedded_status` and :func:`stop_embedded` let the user see and stop
it. Whether it runs is read from its ``postmaster.pid`` against the process table, so looking
needs neither ``pgserver`` nor a connection.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bridge.db.errors import DatabaseConfigError, DatabaseUnreachableError, NoDatabaseError
from bridge.db.masking import _first_line

log = logging.getLogger("bridge.db")

DEFAULT_EMBEDDED_DIR = Path(".bridge") / "pgdata"
EMBEDDED_DIR_ENV = "BRIDGE_EMBEDDED_DIR"
EMBEDDED_EXTRA = (
    "the embedded PostgreSQL needs the 'embedded' extra: pip install 'oban-bridge[embedded]'"
)


@dataclass(frozen=True)
class EmbeddedServer:
    """What ``postmaster.pid`` in an embedded data directory says, checked against the
    process table (a file left by a crash names a pid that is gone or reused)."""

    data_dir: Path
    pid: int | None = None
    port: int | None = None
    socket_dir: Path | None = None
    host: str | None = None
    status: str | None = None  # PostgreSQL's own word: "starting", "ready", "stopping"

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def url(self) -> str | None:
        """The URL to connect with (user ``postgres``, trust authentication, no password)."""
        if not self.running:
            return None
        if self.socket_dir is not None:
            port = f"&port={self.port}" if self.port not in (None, 5432) else ""
            return f"postgresql://postgres@/postgres?host={quote(str(self.socket_dir))}{port}"
        if self.host and self.port:
            host = "127.0.0.1" if self.host in ("*", "0.0.0.0", "localhost") else self.host
            return f"postgresql://postgres@{host}:{self.port}/postgres"
        return None

    def url_or_fail(self) -> str:
        if self.url is None:
            raise DatabaseUnreachableError(f"the embedded PostgreSQL in {self.data_dir} has no URL")
        return self.url

    def as_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "data_dir": str(self.data_dir),
            "pid": self.pid,
            "port": self.port,
            "socket_dir": None if self.socket_dir is None else str(self.socket_dir),
            "status": self.status,
            "url": self.url,
        }


def embedded_dir(
    data_dir: Path | str | None = None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """The embedded data directory: ``data_dir``, else ``$BRIDGE_EMBEDDED_DIR``, else
    ``./.bridge/pgdata`` of the current directory; absolute, as PostgreSQL records it."""
    env = os.environ if environ is None else environ
    chosen = data_dir or env.get(EMBEDDED_DIR_ENV) or DEFAULT_EMBEDDED_DIR
    return Path(chosen).expanduser().resolve()


def _shown_dir(directory: Path, env: Mapping[str, str]) -> str:
    return str(directory) if env.get(EMBEDDED_DIR_ENV) else f"./{DEFAULT_EMBEDDED_DIR}"


def embedded_status(data_dir: Path | str | None = None) -> EmbeddedServer:
    """Whether an embedded PostgreSQL runs in ``data_dir``, and where to reach it. Reads files
    only: it starts nothing and needs no ``pgserver``."""
    directory = embedded_dir(data_dir)
    try:
        lines = [line.strip() for line in (directory / "postmaster.pid").read_text().splitlines()]
    except (FileNotFoundError, NotADirectoryError):
        return EmbeddedServer(directory)
    if not lines or not lines[0].isdigit() or not _is_postmaster(int(lines[0])):
        return EmbeddedServer(directory)

    def line(index: int) -> str:
        return lines[index] if len(lines) > index else ""

    return EmbeddedServer(
        data_dir=directory,
        pid=int(lines[0]),
        port=int(line(3)) if line(3).isdigit() else None,
        socket_dir=Path(line(4)) if line(4) else None,
        host=line(5) or None,
        status=line(7) or None,
    )


def _is_postmaster(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's (pgserver runs PostgreSQL as its own user under root)
    try:
        executable = os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        # Gone or a zombie where there is a /proc; elsewhere the pid file has to be trusted.
        return not Path("/proc/self").exists()
    except OSError:
        return True  # another user's process: /proc does not say, the pid file does
    return Path(executable).name in ("postgres", "postmaster")


def embedded_system_user() -> tuple[str, bool] | None:
    """``(user, exists)`` when pgserver will run PostgreSQL as another system user: under root
    (PostgreSQL refuses to run as root) it uses the user ``pgserver``, creating it with
    ``useradd`` when missing, makes it own the data directory and adds read and search
    permission for everyone on every directory above it. ``None`` when not root."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam("pgserver")
    except KeyError:
        return "pgserver", False
    return "pgserver", True


def import_pgserver() -> Any:
    """The ``pgserver`` module, or :class:`NoDatabaseError` saying how to install it."""
    try:
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime directory when imported; without
            # XDG_RUNTIME_DIR (root, containers, cron) platformdirs warns about its /tmp
            # fallback on every start, which is fine for the lock file pgserver keeps there.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR", category=UserWarning)
            import pgserver
    except ImportError as exc:
        raise NoDatabaseError(EMBEDDED_EXTRA) from exc
    return pgserver


def start_embedded(data_dir: Path | str | None = None) -> EmbeddedServer:
    """Start the embedded PostgreSQL in ``data_dir`` (or find it running) and return it.

    It outlives this process (``cleanup_mode=None``) so that a worker and a later command see
    the same data; :func:`stop_embedded` stops it."""
    directory = embedded_dir(data_dir)
    server = embedded_status(directory)
    if server.running:
        return server
    pgserver = import_pgserver()
    directory.parent.mkdir(parents=True, exist_ok=True)
    log.debug("starting an embedded PostgreSQL in %s", directory)
    try:
        pgserver.get_server(directory, cleanup_mode=None)
    except Exception as exc:
        raise DatabaseUnreachableError(
            f"the embedded PostgreSQL in {directory} did not start "
            f"({type(exc).__name__}: {_first_line(str(exc))}): see {directory / 'log'}"
        ) from exc
    server = embedded_status(directory)
    if not server.running:
        raise DatabaseUnreachableError(
            f"the embedded PostgreSQL in {directory} did not start: see {directory / 'log'}"
        )
    return server


def stop_embedded(data_dir: Path | str | None = None, *, timeout: float = 30.0) -> EmbeddedServer:
    """Stop the embedded PostgreSQL in ``data_dir`` with PostgreSQL's fast shutdown (what
    ``pg_ctl stop`` sends: SIGINT) and wait for it; return what ran (not running: nothing did).
    The data stays."""
    server = embedded_status(data_dir)
    if server.pid is None:
        return server
    try:
        os.kill(server.pid, signal.SIGINT)
    except ProcessLookupError:
        return server
    deadline = time.monotonic() + timeout
    while _is_postmaster(server.pid):
        if time.monotonic() > deadline:
            raise DatabaseConfigError(
                f"the embedded PostgreSQL in {server.data_dir} (pid {server.pid}) did not stop "
                f"within {timeout:g}s: see {server.data_dir / 'log'}"
            )
        time.sleep(0.1)
    return server
