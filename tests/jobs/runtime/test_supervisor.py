"""The ``--processes`` supervisor with real child processes (no database): what it replaces,
what ends it, what it forwards, and what it kills. It runs in a process of its own, as under
``bridge worker``, since it installs signal handlers."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# A child: ``python -c CHILD INDEX DIR BEHAVIOUR``. It records its start, says it is ready (or
# not), then behaves as told.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from bridge.jobs.runtime.supervisor import report_ready

    index, folder, behaviour = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    starts = folder / f"starts-{index}"
    starts.write_text(starts.read_text() + "x" if starts.exists() else "x")
    if behaviour == "refuse" and index == "1":
        sys.exit(5)
    report_ready()
    if behaviour == "die-once" and index == "1" and len(starts.read_text()) == 1:
        os._exit(2)
    if behaviour == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(
            signal.SIGTERM,
            lambda *_: ((folder / f"term-{index}").write_text("t"), sys.exit(0)),
        )
    (folder / f"ready-{index}").write_text("r")
    while True:
        time.sleep(0.05)
    """
)

SUPERVISE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bridge.jobs.runtime import supervisor as sv

    folder, behaviour = Path(sys.argv[1]), sys.argv[2]
    sv.RESTART_DELAY = 0.1
    sv.KILL_AFTER_GRACE = 0.5
    deaths = folder / "deaths"

    def on_death(index, code, started_at):
        with deaths.open("a") as out:
            out.write(f"{index}:{code}\\n")

    child = sys.argv[3]
    status = sv.Supervisor(
        2,
        lambda i: [sys.executable, "-c", child, str(i), str(folder), behaviour],
        lambda i: {},
        grace=0.5,
        on_death=on_death,
        fatal=(2, 3, 4, 5),
    ).run()
    sys.exit(status)
    """
)


def supervise(folder: Path, behaviour: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SUPERVISE, str(folder), behaviour, CHILD],
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def test_a_child_that_dies_after_start_up_is_settled_then_replaced(tmp_path: Path) -> None:
    proc = supervise(tmp_path, "die-once")
    try:
        wait_for(tmp_path / "ready-1")  # the replacement, after the first died with status 2
        wait_for(tmp_path / "ready-2")
        assert (tmp_path / "deaths").read_text() == "1:2\n"  # a death, not a refusal
        assert (tmp_path / "starts-1").read_text() == "xx"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    assert wait_for(tmp_path / "term-1") == "t"
    assert wait_for(tmp_path / "term-2") == "t"


def test_a_start_up_refusal_ends_every_child_with_its_status(tmp_path: Path) -> None:
    proc = supervise(tmp_path, "refuse")
    try:
        assert proc.wait(30) == 5
    finally:
        proc.kill()
    assert not (tmp_path / "deaths").exists()
    assert (tmp_path / "starts-1").read_text() == "x"  # never replaced


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    proc = supervise(tmp_path, "stubborn")
    try:
        wait_for(tmp_path / "ready-1")
        wait_for(tmp_path / "ready-2")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    assert "outlived its grace; killed" in (proc.stderr.read() if proc.stderr else "")
