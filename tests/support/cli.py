"""Run the installed ``bridge`` script as a user does: from a scratch directory outside the
repository, with no ``PYTHONPATH``, so a command that only works from inside this tree fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Variables that would point the command at something else than the test asks for.
_CLEARED = (
    "PYTHONPATH",
    "BRIDGE_DATABASE_URL",
    "DATABASE_URL",
    "BRIDGE_PREFIX",
    "BRIDGE_EMBEDDED",
    "BRIDGE_EMBEDDED_DIR",
)


def bridge_script() -> str:
    """The console script installed beside this interpreter (``pip install -e .`` put it there)."""
    here = Path(sys.executable).parent / "bridge"
    if here.exists():
        return str(here)
    found = shutil.which("bridge")
    if found is None:
        raise RuntimeError("the `bridge` script is not installed: pip install -e '.[dev]'")
    return found


def run_bridge(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``bridge ARGS…`` in ``cwd`` (which must not be inside the repository), output captured.

    The environment is the test process's without the variables in ``_CLEARED``; ``env`` adds
    or overrides variables."""
    resolved = cwd.resolve()
    assert ROOT not in (resolved, *resolved.parents), f"{cwd} is inside the repository"
    environment = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    environment.update(env or {})
    return subprocess.run(
        [bridge_script(), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )
