"""A PostgreSQL cluster of a test's own, on a spare port, for tests that stop, crash or
reconfigure a server: the shared one (127.0.0.1:5432) is never stopped or restarted.

``initdb`` and ``pg_ctl`` are the system's (``/usr/lib/postgresql/*/bin``, newest first), else
the ones the ``embedded`` extra (pgserver) bundles. PostgreSQL refuses to run as root, so as
root the cluster runs as the first of ``postgres``, ``pgserver``, ``nobody`` that exists.

```python
with Cluster.create() as cluster:        # initdb + start; removed at the end, even on failure
    url = cluster.url
    cluster.restart("immediate")         # a crash; "fast" is an orderly shutdown
```
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

StopMode = Literal["smart", "fast", "immediate"]
_RUN_AS = ("postgres", "pgserver", "nobody")


def pg_bin() -> Path:
    """The directory holding initdb and pg_ctl: the system's PostgreSQL, else pgserver's."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port nothing listens on right now, below the kernel's ephemeral range: a server
    restarted on it must not find it taken by the local end of some client's connection (the
    chaos run's nodes reconnect by the dozen while it is down)."""
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _server_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in _RUN_AS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError(f"running as root and none of the users {_RUN_AS} exists to run PostgreSQL")


class Cluster:
    """One cluster: its data directory and socket under a temporary base directory, TCP on
    127.0.0.1 at ``port``. Start and stop it as often as needed (same port, same data);
    :meth:`remove` (or leaving the ``with`` block) stops it at once and deletes everything."""

    def __init__(self, base: Path, port: int, user: str | None) -> None:
        self.base = base
        self.port = port
        self.user = user
        self.bindir = pg_bin()
        self.data = base / "data"
        self.log = base / "server.log"

    @classmethod
    def create(
        cls,
        *,
        initdb_args: Sequence[str] = (),
        files: dict[str, str] | None = None,
        start: bool = True,
    ) -> Cluster:
        """initdb a new cluster (superuser ``postgres``, trust unless ``initdb_args`` say
        otherwise) and start it. ``files`` are written into the base directory first (readable
        by the server's user), and ``{base}`` in ``initdb_args`` names that directory."""
        base = Path(tempfile.mkdtemp(prefix="bridge-cluster-"))
        user = _server_user()
        cluster = cls(base, free_port(), user)
        try:
            if user is not None:
                shutil.chown(base, user)
            for name, text in (files or {}).items():
                (base / name).write_text(text)
                if user is not None:
                    shutil.chown(base / name, user)
            args = [arg.replace("{base}", str(base)) for arg in initdb_args]
            cluster._run("initdb", "-D", str(cluster.data), "-U", "postgres", "--no-sync", *args)
            if start:
                cluster.start()
        except BaseException:
            cluster.remove()
            raise
        return cluster

    @property
    def url(self) -> str:
        """A URL for the ``postgres`` database as its superuser, over TCP (no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            user=self.user,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            log = text.strip().splitlines()[-5:]
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed: {result.stderr.strip()}; server log: "
                + " | ".join(log)
            )

    def start(self) -> None:
        """Start the server on the cluster's port and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.base} -h 127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options,
                  "start")  # fmt: skip

    def stop(self, mode: StopMode = "fast", wait: bool = True) -> None:
        """``pg_ctl -m MODE stop``: fast rolls back sessions and shuts down cleanly; immediate
        is a crash (recovery on the next start); smart waits for every session to end, refusing
        new ones meanwhile ("the database system is shutting down"). ``wait=False`` returns
        at once (``-W``)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w" if wait else "-W", "stop")

    def restart(self, mode: StopMode = "fast", down_for: float = 0.0) -> None:
        """Stop with ``mode``, stay down ``down_for`` seconds, start again on the same port."""
        self.stop(mode)
        time.sleep(down_for)
        self.start()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        """Stop the server if it runs (immediate: nothing in it is kept) and delete the base
        directory."""
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
