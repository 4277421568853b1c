"""Worker settings from TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli.settings import ConfigError, WorkerSettings, load_settings


def test_tool_bridge_table_in_pyproject(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        '[project]\nname = "x"\n[tool.bridge]\nqueues = { badges = 10, default = 5 }\n'
        'workers = ["myapp.workers"]\nnode = "w1"\ngrace = 3\nrescue_after = 600\n'
    )
    settings = load_settings(path)
    assert settings == WorkerSettings(
        queues={"badges": 10, "default": 5},
        workers=["myapp.workers"],
        node="w1",
        grace=3.0,
        rescue_after=600.0,
    )


def test_standalone_file_and_queue_string(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text('queues = "a:2,b"\nworkers = "m"\n')
    assert load_settings(path) == WorkerSettings(queues={"a": 2, "b": 10}, workers=["m"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("queues = { a = 0 }", "queues must map queue names to limits >= 1"),
        ("database_url = 'postgres://u:secret@h/db'", "unknown key(s) database_url"),
        ("grace = -1", "grace must be a positive number"),
        ("workers = [1]", "workers must be a list of module names"),
        ("queues = [", "bridge.toml"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(path)


def test_missing_default_file_gives_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings() == WorkerSettings()
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml")
