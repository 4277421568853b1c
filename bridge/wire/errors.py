"""Error entries exactly as Oban appends them to ``oban_jobs.errors``.

An entry is ``{"attempt": n, "at": "<UTC …Z>", "error": text}`` (``Job.format_attempt/1``).
The text follows the genuine stack (golden ``error-entries/``, ``timeout/``, ``cancel-job/``):

- a returned value: ``** (Oban.PerformError) <Worker> failed with {:error, <inspect>}``, one line
  (likewise ``:cancel`` and ``:discard``);
- a raise: ``** (Kind) message`` then one line per stack frame, innermost first, each indented four
  spaces, ending in a newline. For a Python exception ``Kind`` is the class name (qualified by
  its module unless it is a builtin) and the frames are the Python traceback's, shaped like
  Elixir's: ``    (package) path/file.py:42: module.function``;
- a timeout: ``** (Oban.TimeoutError) <Worker> timed out after <N>ms``;
- an unregistered worker: ``** (RuntimeError) unknown worker: <name>``
  (``Oban.Worker.from_string``).
"""

from __future__ import annotations

import traceback
from datetime import datetime
from typing import Any

from bridge.wire.atom import Atom, atom
from bridge.wire.inspect import inspect
from bridge.wire.timefmt import format_utc

__all__ = [
    "atom",
    "entry",
    "exception_entry",
    "exception_text",
    "result_entry",
    "timeout_entry",
    "unknown_worker_entry",
]


def entry(attempt: int, at: datetime, text: str) -> dict[str, Any]:
    return {"attempt": attempt, "at": format_utc(at), "error": text}


def result_entry(worker: str, kind: str, reason: Any, attempt: int, at: datetime) -> dict[str, Any]:
    """``{:error | :cancel | :discard, reason}`` returned by a worker."""
    value = (Atom(kind), reason)
    return entry(attempt, at, f"** (Oban.PerformError) {worker} failed with {inspect(value)}")


def timeout_entry(worker: str, timeout_ms: int, attempt: int, at: datetime) -> dict[str, Any]:
    return entry(attempt, at, f"** (Oban.TimeoutError) {worker} timed out after {timeout_ms}ms")


def unknown_worker_entry(worker: str, attempt: int, at: datetime) -> dict[str, Any]:
    return entry(attempt, at, f"** (RuntimeError) unknown worker: {worker}")


def exception_kind(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_text(exc: BaseException) -> str:
    """``** (Kind) message`` + frames, innermost first, as Exception.format/3 lays them out."""
    lines = [f"** ({exception_kind(exc)}) {exc}"]
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        module, path = _module_of(frame.filename)
        package = module.split(".", 1)[0] if module else "python"
        lines.append(f"    ({package}) {path}:{frame.lineno}: {module}.{frame.name}")
    return "\n".join(lines) + "\n"


def exception_entry(exc: BaseException, attempt: int, at: datetime) -> dict[str, Any]:
    return entry(attempt, at, exception_text(exc))


def _module_of(filename: str) -> tuple[str, str]:
    """Dotted module name and import-root-relative path of a source file (like Elixir's
    ``lib/app/x.ex``), so rows do not carry deployment paths."""
    import sys
    from pathlib import Path

    path = Path(filename)
    best: Path | None = None
    for root in sys.path:
        if not root:
            continue
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if best is None or len(rel.parts) < len(best.parts):
            best = rel
    if best is None:
        return path.stem, path.name
    return ".".join(best.with_suffix("").parts), best.as_posix()
