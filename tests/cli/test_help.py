"""Every command and every option of the whole ``bridge`` tree says what it does in --help:
a new command or option without help text fails here, whoever adds it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click

from bridge.cli import main
from tests.support.cli import run_bridge


def commands(
    group: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, group
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            yield from commands(command, (*path, name))


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, command in commands(main):
        if not (command.help or command.short_help):
            missing.append(f"bridge {' '.join(path)}: no help")
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                missing.append(f"bridge {' '.join(path)} {param.opts[0]}: no help")
    assert not missing, "\n".join(missing)


def test_help_of_every_command_through_the_installed_script(tmp_path: Path) -> None:
    """What a user types: no database is needed, nothing is started, each page names its
    options."""
    for path, command in commands(main):
        result = run_bridge(*path, "--help", cwd=tmp_path)
        assert result.returncode == 0, (path, result.stderr)
        assert result.stderr == "", (path, result.stderr)
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.opts[0] in result.stdout, (path, param.opts[0])
    assert not (tmp_path / ".bridge").exists()
