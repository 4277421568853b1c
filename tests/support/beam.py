"""Run code in a real BEAM (Debian's `elixir`) to get reference values for wire tests.

Tests that compare our bytes with the VM's must not be skipped when the VM is missing: CI
installs it, so a missing `elixir` is a failure with a clear message.
"""

from __future__ import annotations

import glob
import shutil
import subprocess


def erlang_lib_ebins() -> list[str]:
    """The ebin directory of Debian's jiffy, for `elixir -pa`."""
    dirs: list[str] = []
    for pattern in ("/usr/lib/erlang/lib/jiffy-*/ebin",):
        dirs.extend(sorted(glob.glob(pattern))[-1:])
    return dirs


def elixir_executable() -> str:
    path = shutil.which("elixir")
    if path is None:
        raise RuntimeError(
            "Debian's `elixir` is not installed: apt-get install elixir erlang-jiffy "
            "(.ci/run does this)"
        )
    return path


def run_elixir(code: str, *, stdin: bytes | None = None, timeout: float = 120.0) -> bytes:
    """Evaluate Elixir `code` in a fresh VM and return its stdout bytes."""
    args = [elixir_executable()]
    for ebin in erlang_lib_ebins():
        args += ["-pa", ebin]
    args += ["-e", code]
    proc = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"elixir exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}"
        )
    return proc.stdout
