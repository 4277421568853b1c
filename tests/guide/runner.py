"""Run one docs/guide/ page as its reader would: every step of tests/support/guide.py's parse, in
order, in a scratch directory outside the repository, on a database of the page's own.

The reader's shell is ``bash -c`` with the installed ``bridge`` script and this interpreter's
``python`` first on ``PATH``, no ``PYTHONPATH``, and ``BRIDGE_DATABASE_URL``/``DATABASE_URL``
naming the page's database. A failure raises :class:`GuideFailure` with the page and line, the
command, its exit status and output, what the page expected, and the output of whatever runs in
the background (``bridge worker … &``, the Elixir app), because "exited 1" alone says nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import pytest

from bridge import db
from tests.support.cli import _CLEARED as CLEARED
from tests.support.cli import ROOT, bridge_script
from tests.support.guide import (
    Command,
    Expected,
    Page,
    ParseElixir,
    RunPython,
    Shell,
    Skipped,
    StartElixirApp,
    WriteFile,
    output_matches,
    parse_page,
    pip_problem,
)
from tests.support.pg import scratch_database

GUIDE = ROOT / "docs" / "guide"
COMMAND_TIMEOUT = 180.0  # one command; a first `bridge demo` or pytest run takes a while
RETRY_SECONDS = 60.0  # "after a moment you see": while something runs in the background
RETRY_PAUSE = 0.5
STOP_SECONDS = 30.0  # a background command must end this long after SIGTERM
TAIL_LINES = 40
ELIXIR_DIR = "elixir_app"  # where a page's ```elixir files go in its scratch directory


class GuideFailure(AssertionError):
    """A step of a page did not do what the page says."""


class ElixirApp(Protocol):
    """What the runner needs of the started app (bridge.testing.elixir.ElixirApp fits)."""

    def stop(self) -> int | None: ...

    def log_text(self, since: int = 0) -> str: ...


# lib files written so far, the app's extra variables, the scratch dir -> the running app
ElixirStarter = Callable[[list[Path], dict[str, str], Path], ElixirApp]
ElixirParser = Callable[[str], str | None]  # code -> None, or why it does not parse


def guide_pages() -> list[Path]:
    return sorted(GUIDE.glob("[0-9][0-9]-*.md"))


def load(path: Path) -> Page:
    return parse_page(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))


def project_extras() -> set[str]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        data = tomllib.load(handle)
    return set(data["project"].get("optional-dependencies", {}))


def page_environment(database_url: str) -> dict[str, str]:
    """The reader's environment: ours without anything pointing bridge elsewhere, the page's
    database in both variables the commands read, the installed script first on PATH.
    ``BRIDGE_TEST_DATABASE_URL`` stays: it names a server, as a reader's test setup does."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in CLEARED
        and not key.startswith("PYTEST")
        and (not key.startswith(("BRIDGE_", "OBAN_")) or key == "BRIDGE_TEST_DATABASE_URL")
    }
    bins = [str(Path(bridge_script()).parent), str(Path(sys.executable).parent)]
    env["PATH"] = os.pathsep.join([*dict.fromkeys(bins), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr in the order a terminal shows them
    env["BRIDGE_DATABASE_URL"] = database_url
    env["DATABASE_URL"] = database_url
    return env


def elixir_parses(code: str) -> str | None:
    """None when Elixir's own parser reads ``code``, else its complaint."""
    if shutil.which("elixir") is None:
        return "`elixir` is not installed, so the block cannot be checked: apt-get install elixir"
    proc = subprocess.run(
        ["elixir", "-e", "IO.read(:stdio, :eof) |> Code.string_to_quoted!()"],
        input=code,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    return None if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()


@dataclass
class Background:
    command: Command
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass
class PageRun:
    """One run of ``page`` in ``scratch`` (outside the repository) on ``database_url``."""

    page: Page
    scratch: Path
    database_url: str
    start_elixir: ElixirStarter | None = None
    parse_elixir: ElixirParser | None = elixir_parses
    env: dict[str, str] = field(init=False)
    cwd: Path = field(init=False)
    background: list[Background] = field(default_factory=list)
    # Process groups of foreground commands, with their text: a command may leave a process
    # running (`cmd > log & echo $! > pid`, stopped by a later line); if the page fails first,
    # or never stops it, the end of the page does.
    groups: dict[int, str] = field(default_factory=dict)
    lib_files: list[Path] = field(default_factory=list)
    app: ElixirApp | None = None
    skipped: list[Skipped] = field(default_factory=list)
    step_line: int = 0

    def __post_init__(self) -> None:
        assert ROOT not in (self.scratch.resolve(), *self.scratch.resolve().parents)
        self.env = page_environment(self.database_url)
        self.cwd = self.scratch

    # The page -------------------------------------------------------------------------------

    def run(self) -> None:
        """Every step, then everything in the background stopped and checked."""
        try:
            for step in self.page.steps:
                self.step_line = step.line
                if isinstance(step, WriteFile):
                    self._write(step.language, step.path, step.text)
                elif isinstance(step, ParseElixir):
                    self._elixir_block(step)
                elif isinstance(step, RunPython):
                    self._python(step)
                elif isinstance(step, Shell):
                    self._shell(step)
                elif isinstance(step, StartElixirApp):
                    self._start_app(step)
                elif isinstance(step, Skipped):
                    self.skipped.append(step)
        except BaseException:
            self._stop_all(check=False)
            raise
        self._stop_all(check=True)

    def _where(self, line: int) -> str:
        return f"{self.page.name}:{line}"

    def fail(self, line: int, message: str, output: str | None = None) -> GuideFailure:
        parts = [f"{self._where(line)}: {message}"]
        if output is not None:
            parts.append(_section("its output", output))
        for job in self.background:
            parts.append(
                _section(
                    f"background `{job.command.text}` (line {job.command.line})",
                    _tail(job.output()),
                )
            )
        if self.app is not None:
            parts.append(_section("the Elixir app's log", _tail(self.app.log_text())))
        return GuideFailure("\n".join(parts))

    # Files ---------------------------------------------------------------------------------

    def _write(self, language: str, path: str, text: str) -> Path:
        base = self.scratch / ELIXIR_DIR if language == "elixir" else self.cwd
        target = base / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return target

    def _elixir_block(self, step: ParseElixir) -> None:
        if self.parse_elixir is not None:
            problem = self.parse_elixir(step.code)
            if problem is not None:
                raise self.fail(step.line, "this elixir block does not parse", problem)
        if step.path is None:
            return
        target = self._write("elixir", step.path, step.code)
        if step.path.startswith("lib/") and step.path.endswith(".ex"):
            if self.app is not None:
                raise self.fail(step.line, "a lib/ file after the Elixir app started is not loaded")
            if target not in self.lib_files:
                self.lib_files.append(target)

    def _start_app(self, step: StartElixirApp) -> None:
        if self.start_elixir is None:
            raise self.fail(step.line, "this page needs the Elixir app: run it in interop_tests")
        if self.app is not None:
            raise self.fail(step.line, "the Elixir app is already running")
        # lib/ files a command wrote count too (`bridge workflows export-elixir --output
        # elixir_app/lib/...`, the declaration a reader compiles into the app), after the blocks'.
        app_lib = self.scratch / ELIXIR_DIR / "lib"
        written = sorted(app_lib.rglob("*.ex")) if app_lib.is_dir() else []
        lib_files = self.lib_files + [path for path in written if path not in self.lib_files]
        try:
            self.app = self.start_elixir(lib_files, dict(step.env), self.scratch)
        except Exception as exc:
            raise self.fail(step.line, f"the Elixir app did not start: {exc}") from exc

    # Python ----------------------------------------------------------------------------------

    def _python(self, step: RunPython) -> None:
        self._until_expected(
            step.line, "python - (this block on stdin)", 0, step.expected, step.code, python=True
        )

    # Shell ------------------------------------------------------------------------------------

    def _shell(self, step: Shell) -> None:
        for index, command in enumerate(step.commands):
            last = index == len(step.commands) - 1
            if command.kind == "pip":
                problem = pip_problem(command.text, project_extras())
                if problem:
                    raise self.fail(command.line, f"`{command.text}`: {problem}")
            elif command.kind == "cd":
                self._cd(command)
            elif command.kind == "export":
                self.env[command.name] = self._expand(command)
            elif command.kind == "database":
                value = self._expand(command)
                if not value.startswith(("postgresql://", "postgres://")):
                    raise self.fail(command.line, f"`{command.text}`: not a postgresql:// URL")
            elif command.kind == "background":
                self._start_background(command)
            else:
                expected = step.expected if last else None
                self._until_expected(command.line, command.text, command.exits, expected)

    def _cd(self, command: Command) -> None:
        target = (self.cwd / os.path.expanduser(command.value)).resolve()
        if not target.is_dir():
            raise self.fail(command.line, f"`{command.text}`: no directory {target}")
        if self.scratch.resolve() not in (target, *target.parents):
            raise self.fail(command.line, f"`{command.text}` leaves the page's directory")
        self.cwd = target

    def _expand(self, command: Command) -> str:
        proc = self._run(f'export {command.name}={command.value} && printf %s "${command.name}"')
        if proc.returncode != 0:
            raise self.fail(command.line, f"`{command.text}` failed", proc.stdout)
        return proc.stdout

    def _run(self, text: str, *, python: bool = False) -> subprocess.CompletedProcess[str]:
        """The command in a process group of its own, so a timeout ends whatever it started
        (a child left holding the output pipe would block us too)."""
        args = [sys.executable, "-"] if python else ["bash", "-c", text]
        with subprocess.Popen(
            args,
            stdin=subprocess.PIPE if python else subprocess.DEVNULL,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        ) as proc:
            self.groups[proc.pid] = text if not python else "a python block"
            try:
                output, _ = proc.communicate(text if python else None, timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                output, _ = proc.communicate()
                raise subprocess.TimeoutExpired(args, COMMAND_TIMEOUT, output=output) from exc
        return subprocess.CompletedProcess(args, proc.returncode, output)

    def _until_expected(
        self,
        line: int,
        shown: str,
        status: int,
        expected: Expected | None,
        text: str | None = None,
        *,
        python: bool = False,
    ) -> None:
        """Run the command; while a background process runs, again until it does what the page
        says (or ``RETRY_SECONDS`` pass)."""
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                proc = self._run(shown if text is None else text, python=python)
            except subprocess.TimeoutExpired as exc:
                partial = exc.stdout if isinstance(exc.stdout, str) else ""
                raise self.fail(
                    line, f"`{shown}` still ran after {COMMAND_TIMEOUT:g} s", partial
                ) from exc
            status_ok = proc.returncode == status
            output_ok = expected is None or output_matches(expected.text, proc.stdout)
            if status_ok and output_ok:
                return
            if not self._something_runs() or time.monotonic() >= deadline:
                break
            time.sleep(RETRY_PAUSE)
        if not status_ok:
            raise self.fail(
                line, f"`{shown}` exited {proc.returncode}, the page expects {status}", proc.stdout
            )
        assert expected is not None
        raise self.fail(
            line,
            f"`{shown}` printed something else than the output block at line {expected.line}"
            + (f" (retried for {RETRY_SECONDS:g} s)" if self._something_runs() else "")
            + "\n"
            + _section("expected", expected.text),
            proc.stdout,
        )

    def _something_runs(self) -> bool:
        return self.app is not None or any(job.proc.poll() is None for job in self.background)

    # Background -------------------------------------------------------------------------------

    def _start_background(self, command: Command) -> None:
        log_path = self.scratch.parent / f"background-{command.line}.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(
            ["bash", "-c", command.text],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: SIGTERM reaches it, not us
        )
        self.background.append(Background(command, proc, log_path, log))

    def _stop_all(self, *, check: bool) -> None:
        problems: list[str] = []
        for job in self.background:
            if job.proc.poll() is not None:
                problems.append(
                    f"`{job.command.text}` (line {job.command.line}) exited "
                    f"{job.proc.returncode} before the page ended"
                )
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.proc.pid, signal.SIGTERM)
            try:
                job.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.proc.pid, signal.SIGKILL)
                job.proc.wait()
                problems.append(
                    f"`{job.command.text}` (line {job.command.line}) still ran "
                    f"{STOP_SECONDS:g} s after SIGTERM"
                )
                continue
            if job.proc.returncode != 0:
                problems.append(
                    f"`{job.command.text}` (line {job.command.line}) exited "
                    f"{job.proc.returncode} on SIGTERM"
                )
        for job in self.background:
            job.log.close()
        for group, text in self.groups.items():
            if _kill_group(group):
                problems.append(f"a process started by `{text}` still ran when the page ended")
        if self.app is not None:
            self.app.stop()
        for pgdata in self.scratch.rglob(".bridge/pgdata"):
            db.stop_embedded(pgdata)  # `bridge demo` leaves it running; a failed page, too
        if check and problems:
            raise self.fail(self.step_line, "at the end of the page: " + "; ".join(problems))


def run_page_test(
    path: Path,
    server_url: str,
    tmp_path: Path,
    elixir_starter: Callable[[str], ElixirStarter] | None = None,
) -> None:
    """The body of a page's test, with or without the Elixir app: the page on a scratch database
    of its own (``elixir_starter`` makes the app's starter for that database), a failure as the
    runner's message alone, and the blocks not run listed in the test's output."""
    page = load(path)
    with scratch_database(server_url) as database_url:
        start_elixir = elixir_starter(database_url) if elixir_starter else None
        run = PageRun(page, tmp_path / "reader", database_url, start_elixir=start_elixir)
        run.scratch.mkdir()
        failure = None
        try:
            run.run()
        except AssertionError as failed:
            failure = str(failed)  # failed outside the except: no "during handling" chain
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    for skipped in run.skipped:
        print(f"{page.name}:{skipped.line}: ```{skipped.language} block not run: {skipped.reason}")


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    shown = text.rstrip("\n").splitlines()
    cut = [f"... ({len(shown) - lines} earlier lines)"] if len(shown) > lines else []
    return "\n".join(cut + shown[-lines:])


def _section(title: str, body: str) -> str:
    indented = "\n".join("    " + line for line in body.rstrip("\n").splitlines())
    return f"--- {title} ---\n{indented or '    (nothing)'}"


def _kill_group(group: int) -> bool:
    """SIGTERM then SIGKILL to what is left of a foreground command's process group; whether
    anything was left (zombies, which only their parent can reap, count as gone)."""
    if not _group_alive(group):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    return True


def _group_alive(group: int) -> bool:
    """Whether a process of ``group`` is running (from /proc: state and process group are the
    third and fifth fields after the command's closing parenthesis)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and fields[0] != "Z" and int(fields[2]) == group:
            return True
    return False
