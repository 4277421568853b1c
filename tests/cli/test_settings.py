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


# -- environment variables and precedence ---------------------------------------------------


def test_every_setting_has_a_variable_and_a_key() -> None:
    from dataclasses import fields

    from bridge.cli.settings import SETTINGS

    keys = [setting.key for setting in SETTINGS]
    assert sorted(keys) == sorted(f.name for f in fields(WorkerSettings))
    assert all(s.env == "BRIDGE_" + s.key.upper() for s in SETTINGS)


def test_option_beats_variable_beats_file_beats_default(tmp_path: Path) -> None:
    from bridge.cli.settings import resolve_settings

    path = tmp_path / "bridge.toml"
    path.write_text('node = "file"\ngrace = 3\nqueues = "a:1"\nlog_level = "error"\n')
    environ = {"BRIDGE_NODE": "env", "BRIDGE_GRACE": "4.5", "BRIDGE_WORKERS": "m1, m2,"}
    settings = resolve_settings(path, {"node": "option", "grace": None, "workers": ()}, environ)
    assert (settings.node, settings.grace, settings.workers) == ("option", 4.5, ["m1", "m2"])
    assert (settings.queues, settings.log_level, settings.poll_interval) == (
        {"a": 1},
        "error",
        None,
    )
    # A list given at a higher level replaces the lower one; "a,b" in one option is two modules.
    settings = resolve_settings(path, {"workers": ("x,y", "z")}, environ)
    assert settings.workers == ["x", "y", "z"]


def test_variables_of_every_kind(tmp_path: Path) -> None:
    from bridge.cli.settings import env_values

    environ = {
        "BRIDGE_QUEUES": "badges:10,default",
        "BRIDGE_WORKFLOWS": "f1,f2",
        "BRIDGE_APP_DIR": f"{tmp_path}:{tmp_path}",
        "BRIDGE_CRON": "* * * * * A\n0 * * * * B\n",
        "BRIDGE_WORKFLOW_CONCURRENCY": "7",
        "BRIDGE_WAIT_FOR_DATABASE": "0",
        "BRIDGE_LOG_FORMAT": "JSON",
        "BRIDGE_NAME": "MyApp.Oban",
        "BRIDGE_PRUNE_AFTER": "",  # empty: unset
        "BRIDGE_PREFIX": "ignored",  # the root command's option reads it
    }
    assert env_values(environ) == {
        "queues": {"badges": 10, "default": 10},
        "workflows": ["f1", "f2"],
        "app_dir": [str(tmp_path), str(tmp_path)],
        "cron": ["* * * * * A", "0 * * * * B"],
        "workflow_concurrency": 7,
        "wait_for_database": 0.0,
        "log_format": "json",
        "name": "MyApp.Oban",
    }


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BRIDGE_GRACE", "0", "must be a positive number"),
        ("BRIDGE_POLL_INTERVAL", "nan", "must be a positive number"),
        ("BRIDGE_QUEUES", "a:x", "queue 'a': limit must be an integer, got 'x'"),
        ("BRIDGE_LOG_LEVEL", "loud", "must be one of debug, info, warning, error"),
        ("BRIDGE_APP_DIR", "/no/such/dir", "no such directory '/no/such/dir'"),
        ("BRIDGE_GOSSIP", "maybe", "must be true or false (1/0, yes/no, on/off in a variable)"),
    ],
)
def test_a_malformed_variable_names_itself(name: str, value: str, message: str) -> None:
    from bridge.cli.settings import env_values

    with pytest.raises(ConfigError) as caught:
        env_values({name: value})
    assert str(caught.value) == f"environment variable {name}={value!r}: {message}"


def test_file_keys_for_the_new_settings(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    path = tmp_path / "bridge.toml"
    path.write_text(
        'app_dir = "src"\ncron = ["* * * * * A"]\ncron_timezone = "Europe/Paris"\n'
        'wait_for_database = 0\nlog_format = "json"\nlog_level = "debug"\n'
    )
    settings = load_settings(path)
    assert settings.app_dir == [str(tmp_path / "src")]  # relative to the file
    assert (settings.cron, settings.cron_timezone) == (["* * * * * A"], "Europe/Paris")
    assert (settings.wait_for_database, settings.log_format, settings.log_level) == (
        0.0,
        "json",
        "debug",
    )
    path.write_text('app_dir = "missing"\n')
    with pytest.raises(ConfigError, match="app_dir: no such directory"):
        load_settings(path)
    path.write_text("wait_for_database = -1\n")
    with pytest.raises(ConfigError, match="wait_for_database must be a number of seconds >= 0"):
        load_settings(path)


def test_gossip_is_a_boolean_everywhere(tmp_path: Path) -> None:
    from bridge.cli.settings import env_values, resolve_settings

    path = tmp_path / "bridge.toml"
    path.write_text("gossip = true\n")
    assert load_settings(path).gossip is True
    path.write_text('gossip = "yes"\n')  # a string reads as the variable's text does
    assert load_settings(path).gossip is True
    path.write_text("gossip = 1\n")
    with pytest.raises(ConfigError, match="gossip must be true or false"):
        load_settings(path)
    assert env_values({"BRIDGE_GOSSIP": "off"}) == {"gossip": False}
    path.write_text("gossip = true\n")
    assert resolve_settings(path, {"gossip": False}, {}).gossip is False  # --no-gossip wins
    assert resolve_settings(path, {"gossip": None}, {}).gossip is True
