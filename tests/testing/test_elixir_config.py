"""Where bridge_elixir_app finds the user's app: --bridge-elixir-app / --bridge-elixir-command
over [tool.bridge.testing], paths relative to where each was given, the database last in the
app's environment; what a user sees when nothing or something wrong is configured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.cli.settings import load_settings
from bridge.testing.elixir import (
    DEFAULT_COMMAND,
    NOT_CONFIGURED,
    ElixirApp,
    ElixirAppConfig,
    ElixirAppError,
    app_environment,
    load_config,
)

pytest_plugins = ["pytester"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_nothing_configured(tmp_path: Path) -> None:
    assert load_config(None, None, tmp_path / "pyproject.toml", tmp_path) is None
    write(tmp_path / "pyproject.toml", "[tool.bridge]\nqueues = 'a'\n")
    assert load_config(None, None, tmp_path / "pyproject.toml", tmp_path) is None


def test_pyproject_settings_relative_to_the_file(tmp_path: Path) -> None:
    pyproject = write(
        tmp_path / "pyproject.toml",
        """
[tool.bridge.testing]
elixir_app = "../apps/shop"
elixir_command = ["_build/prod/rel/shop/bin/shop", "start"]
elixir_env = { MIX_ENV = "test", PORT = 4002 }
elixir_start_timeout = 30
elixir_stop_timeout = 5
elixir_peer_name = "Shop.Oban"
""",
    )
    config = load_config(None, None, pyproject, tmp_path / "elsewhere")
    assert config == ElixirAppConfig(
        path=(tmp_path.parent / "apps" / "shop").resolve(),
        command=("_build/prod/rel/shop/bin/shop", "start"),
        env={"MIX_ENV": "test", "PORT": "4002"},
        start_timeout=30.0,
        stop_timeout=5.0,
        peer_name="Shop.Oban",
    )


def test_options_win_and_are_relative_to_the_invocation_dir(tmp_path: Path) -> None:
    pyproject = write(
        tmp_path / "pyproject.toml",
        '[tool.bridge.testing]\nelixir_app = "app"\nelixir_command = "mix run"\n',
    )
    config = load_config("other", "mix run --no-halt --no-compile", pyproject, tmp_path / "sub")
    assert config is not None
    assert config.path == (tmp_path / "sub" / "other").resolve()
    assert config.command == ("mix", "run", "--no-halt", "--no-compile")
    default = load_config("app", None, tmp_path / "none.toml", tmp_path)
    assert default is not None and default.command == DEFAULT_COMMAND == ("mix", "run", "--no-halt")


def test_mistakes_are_named(tmp_path: Path) -> None:
    pyproject = write(tmp_path / "pyproject.toml", '[tool.bridge.testing]\nelixir_ap = "x"\n')
    with pytest.raises(ElixirAppError, match=r"unknown key\(s\) in \[tool.bridge.testing\]: "):
        load_config(None, None, pyproject, tmp_path)
    write(pyproject, '[tool.bridge.testing]\nelixir_app = "x"\nelixir_command = []\n')
    with pytest.raises(ElixirAppError, match="elixir_command must be a non-empty string or list"):
        load_config(None, None, pyproject, tmp_path)


def test_the_database_comes_last_in_the_environment(tmp_path: Path) -> None:
    config = ElixirAppConfig(path=tmp_path, env={"DATABASE_URL": "postgresql://prod", "A": "1"})
    env = app_environment(config, "postgresql://test/db", "public", base={"HOME": "/h", "A": "0"})
    assert env == {
        "HOME": "/h",
        "A": "1",
        "DATABASE_URL": "postgresql://test/db",
        "OBAN_PREFIX": "public",
    }


def test_a_missing_app_is_refused_before_anything_starts(tmp_path: Path) -> None:
    app = ElixirApp(ElixirAppConfig(path=tmp_path / "nope"), "postgresql://x", "p", tmp_path / "l")
    with pytest.raises(ElixirAppError, match=r"no Elixir app at .*nope: not a directory"):
        app.start()
    app = ElixirApp(ElixirAppConfig(path=tmp_path), "postgresql://x", "p", tmp_path / "l")
    with pytest.raises(
        ElixirAppError, match=re.escape(f"no Mix project at {tmp_path}: it has no mix.exs")
    ):
        app.start()
    assert not app.running


def test_bridge_worker_settings_ignore_the_plugin_table(tmp_path: Path) -> None:
    """bridge worker reads [tool.bridge] of the same file: the plugin's table is not its key."""
    pyproject = write(
        tmp_path / "pyproject.toml",
        '[tool.bridge]\nqueues = "badges:2"\n\n[tool.bridge.testing]\nelixir_app = "app"\n',
    )
    assert load_settings(pyproject).queues == {"badges": 2}


def test_a_test_without_a_configured_app_fails_saying_how(
    pytester: pytest.Pytester, database_url: str
) -> None:
    pytester.makepyfile(test_app="def test_it(bridge_elixir_app):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--bridge-database-url", database_url
    )
    result.assert_outcomes(errors=1)
    assert NOT_CONFIGURED in result.stdout.lines  # one line, as written
    result.stdout.no_fnmatch_line("*Traceback*")
    help_text = pytester.runpytest_subprocess("--help").stdout.str()
    assert "--bridge-elixir-app=PATH" in help_text and "--bridge-elixir-command=CMD" in help_text
