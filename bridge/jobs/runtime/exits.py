"""How Elixir would print the end of a process that died, for Oban's crash entry.

Oban's executor wraps a crashed job process's exit in ``Oban.CrashError``
(``Exception.format_banner(:exit, reason)``). Used for a ``--processes`` node process that died
(:mod:`bridge.jobs.runtime.crashed`) and for an ``executor="process"`` child that did
(:mod:`bridge.jobs.runtime.executor`); pure.
"""

from __future__ import annotations

import signal

from bridge.wire.atom import atom
from bridge.wire.inspect import inspect


def exit_reason(returncode: int) -> str:
    """How Elixir would print the exit of a process that ended so; pure.

    Killed (SIGKILL, what the OOM killer sends) is Erlang's ``killed``; another signal is
    ``{:signal, :sigsegv}``; an exit status is ``{:exit_status, 3}``."""
    if returncode == -signal.SIGKILL:
        return "killed"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name.lower()
        except ValueError:
            name = f"sig{-returncode}"
        return inspect((atom("signal"), atom(name)))
    return inspect((atom("exit_status"), returncode))


def crash_text(returncode: int) -> str:
    """The first line of Oban's entry for a job whose process exited so; pure."""
    return f"** (Oban.CrashError) ** (exit) {exit_reason(returncode)}"
