"""Options every command shares, through the installed script: a prefix no command could use is
refused before anything runs, and the exit statuses are listed where a script writer looks."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import run_bridge


def test_a_prefix_no_command_could_use_is_refused_once_for_every_command(tmp_path: Path) -> None:
    for args in (["jobs", "list"], ["enqueue", "W"], ["worker", "-q", "a:1"], ["schema", "show"]):
        result = run_bridge("--prefix", "a%sb", *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result)
        assert result.stderr == (
            "Error: --prefix: the schema name \"a%sb\" holds '%', which bridge's parameterised "
            "queries cannot carry: choose a name without it\n"
        ), args
    long = run_bridge("--prefix", "x" * 52, "jobs", "list", cwd=tmp_path)
    assert long.returncode == 2
    assert "is 52 bytes long" in long.stderr and "at most 51 bytes" in long.stderr


def test_the_exit_statuses_are_listed(tmp_path: Path) -> None:
    result = run_bridge("--help-exit-codes", cwd=tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "2", "3", "4", "5", "6", "130"]
    assert "--help-exit-codes" in run_bridge("--help", cwd=tmp_path).stdout
