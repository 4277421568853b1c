"""The README, followed literally by a newcomer: the package built as a wheel, installed into a
fresh virtual environment, and every command of the README run from a scratch directory outside
the repository through the installed ``bridge`` script.

The README is the script of this test: its fenced blocks are read, not copied here. A
``python`` block whose first line is ``# some/path.py`` is a file the reader creates; any other
``python`` block is run as it stands; each line of an ``sh`` block is typed at a shell. So when
the README changes, this test runs the new text, and a command that does not work as written
fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# The section of the README each test walks.
FIRST_RUN = "Two commands"
WALKTHROUGH = ("Usage", "Workflows")

_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


@dataclass
class Block:
    lang: str
    body: str


def sections() -> dict[str, list[Block]]:
    """The README's fenced blocks by ``##`` section."""
    out: dict[str, list[Block]] = {}
    for part in re.split(r"^## ", README.read_text(encoding="utf-8"), flags=re.M)[1:]:
        title, _, text = part.partition("\n")
        out[title.strip()] = [Block(m.group(1), m.group(2)) for m in _BLOCK.finditer(text)]
    return out


def shell_lines(block: Block) -> list[str]:
    """A block's commands: one a line, comments dropped, ``a && b`` split in two."""
    commands = []
    for line in block.body.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        command: list[str] = []
        for word in words:
            if word == "&&":
                commands.append(shlex.join(command))
                command = []
            else:
                command.append(word)
        commands.append(shlex.join(command))
    return commands


# -- a fresh virtual environment with the wheel -----------------------------------------------


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel`` of this tree, installed with its ``embedded`` extra into a new venv."""
    base = tmp_path_factory.mktemp("readme-venv")
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("oban_bridge-*.whl")
    env_dir = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "-q", f"{wheel}[embedded]"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return env_dir


@dataclass
class Shell:
    """A user's terminal: the venv activated, a scratch directory, what they exported."""

    venv: Path
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    background: list[tuple[str, subprocess.Popen[str], Path]] = field(default_factory=list)

    def environ(self) -> dict[str, str]:
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BRIDGE_", "PYTHON", "VIRTUAL_ENV")) and k != "DATABASE_URL"
        }
        keep["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        keep["VIRTUAL_ENV"] = str(self.venv)
        return {**keep, **self.env}

    def run(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        argv = shlex.split(command)
        return subprocess.run(
            argv,
            cwd=self.cwd,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, command: str) -> subprocess.Popen[str]:
        """Start ``command`` as in a second terminal; its output goes to a file (a node logs
        every job: a pipe nobody reads would fill and block it)."""
        log = self.cwd.parent / f"background-{len(self.background)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                shlex.split(command),
                cwd=self.cwd,
                env=self.environ(),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.background.append((command, proc, log))
        return proc

    def output_of(self, proc: subprocess.Popen[str]) -> str:
        return next(log.read_text() for _, p, log in self.background if p is proc)

    def stop_all(self) -> list[tuple[str, int, str]]:
        """SIGTERM every background command (Ctrl-C's graceful twin); their exit and output."""
        results = []
        for command, proc, log in self.background:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            results.append((command, proc.returncode, log.read_text()))
        self.background.clear()
        return results


@pytest.fixture
def own_database(server_url: str) -> Iterator[str]:
    """A database of its own: the README's commands use the default prefix ``public``."""
    name = f"bridge_readme_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(server_url)
    yield urlunsplit(parts._replace(path="/" + name))
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _scratch(tmp_path: Path) -> Path:
    scratch = tmp_path / "newcomer"
    scratch.mkdir()
    assert ROOT not in scratch.resolve().parents
    return scratch


def _run_blocks(shell: Shell, blocks: list[Block], database_url: str) -> list[str]:
    """Do what the blocks say, in order; returns the commands run. Long-running commands
    (``bridge worker``) are started in the background, as in a second terminal."""
    done = []
    for block in blocks:
        if block.lang == "python":
            first = block.body.splitlines()[0] if block.body.strip() else ""
            target = re.match(r"#\s*([\w./-]+\.py)\s*$", first)
            if target:
                path = shell.cwd / target.group(1)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(block.body, encoding="utf-8")
                done.append(f"(wrote {target.group(1)})")
                continue
            result = shell.run(shlex.join([str(shell.venv / "bin" / "python"), "-c", block.body]))
            assert result.returncode == 0, f"README python block failed:\n{block.body}\n{result}"
            done.append("(ran a python block)")
            continue
        if block.lang not in ("sh", "bash", "console"):
            continue
        for command in shell_lines(block):
            words = shlex.split(command)
            if words[0] == "export":
                name, _, value = words[1].partition("=")
                # The reader's own database stands in for the README's example URL.
                shell.env[name] = database_url if name.endswith("DATABASE_URL") else value
            elif words[0] == "pip" or words[:3] == ["python", "-m", "pytest"]:
                continue  # installing and testing: the fixture did the one, CI does the other
            elif words[:2] == ["bridge", "worker"]:
                proc = shell.start(command)
                time.sleep(4)  # a node starts within a second; give a loaded machine slack
                if proc.poll() is not None:
                    pytest.fail(f"{command!r} exited {proc.returncode}:\n{shell.output_of(proc)}")
            elif words[0] == "bridge":
                result = shell.run(command)
                assert result.returncode == 0, (
                    f"README command {command!r} exited {result.returncode}\n"
                    f"stdout: {result.stdout}\nstderr: {result.stderr}"
                )
                assert "Traceback" not in result.stderr, result.stderr
            else:
                pytest.fail(f"the walkthrough does not know how to type {command!r}")
            done.append(command)
    return done


def test_readme_first_command_runs_the_demo_on_an_embedded_database(
    venv: Path, tmp_path: Path
) -> None:
    """`pip install -e '.[embedded]' && bridge demo`, no database given: the demo's own
    embedded PostgreSQL in ./.bridge/pgdata of the scratch directory, announced, stopped after."""
    blocks = sections()[FIRST_RUN]
    first = shell_lines(blocks[0])
    assert first[0].startswith("pip install") and first[1] == "bridge demo", first
    shell = Shell(venv, _scratch(tmp_path))
    try:
        result = shell.run("bridge demo", timeout=300)
        assert result.returncode == 0, result
        assert "Traceback" not in result.stderr
        assert "embedded" in (result.stdout + result.stderr).lower()
        assert "completed" in result.stdout
        assert (shell.cwd / ".bridge" / "pgdata").is_dir()
    finally:
        stopped = shell.run("bridge embedded stop")
        if stopped.returncode != 0:  # leave no server behind, whatever the command said
            subprocess.run(["pkill", "-f", str(shell.cwd / ".bridge" / "pgdata")], check=False)
    assert stopped.returncode == 0, stopped


def test_readme_usage_and_workflows_work_as_written(
    venv: Path, tmp_path: Path, own_database: str
) -> None:
    """Usage then Workflows, every block in order, against the reader's own database."""
    shell = Shell(venv, _scratch(tmp_path), env={"BRIDGE_DATABASE_URL": own_database})
    blocks = [b for title in WALKTHROUGH for b in sections()[title]]
    try:
        done = _run_blocks(shell, blocks, own_database)
        assert any(c.startswith("bridge worker") for c in done), done
        # What the reader then expects to see: every Python job finished, Elixir ones waiting.
        deadline = time.monotonic() + 120
        while True:
            with psycopg.connect(own_database, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT worker, queue, state::text FROM oban_jobs ORDER BY id"
                ).fetchall()
                instances = conn.execute("SELECT id, status FROM workflow_instances").fetchall()
            python_jobs = [r for r in rows if not r[0].startswith("BadgeForge.")]
            settled = all(r[2] in ("completed", "cancelled", "scheduled") for r in python_jobs)
            if settled and all(status == "completed" for _, status in instances):
                break
            assert time.monotonic() < deadline, f"jobs {rows}, instances {instances}"
            time.sleep(0.5)
        elixir_jobs = [r for r in rows if r[0] == "BadgeForge.PrintCenter"]
        assert elixir_jobs and all(r[1:] == ("printing", "available") for r in elixir_jobs), rows
        assert instances, "the README's workflow was not started"
    finally:
        stopped = shell.stop_all()
    for command, status, err in stopped:
        assert status == 0, f"{command!r} exited {status} on SIGTERM:\n{err}"
        assert "Traceback" not in err, f"{command!r}:\n{err}"
