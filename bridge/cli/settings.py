"""Worker settings: command-line options, ``BRIDGE_*`` environment variables and a TOML file
(``[tool.bridge]`` in ``pyproject.toml`` or a file of its own), in that order of precedence.

Example::

    [tool.bridge]
    prefix = "public"
    queues = { badges = 10, default = 5 }
    workers = ["myapp.workers"]
    node = "worker-1"
    processes = 2            # one node per process (worker-1-1, worker-1-2); 1 by default
    process_pool = 4         # child processes per node for executor="process" workers (cores)
    process_max_jobs = 500   # replace such a child after this many jobs; off by default
    grace = 15
    rescue_after = 3600      # enable the lifeline (seconds); off by default
    rescue_interval = 60     # how often the leader looks (default: rescue_after / 10, 1 to 60)
    prune_after = 86400      # enable the pruner (seconds); off by default
    gossip = true            # send queue checks on oban_gossip for Oban Web; off by default
    workflows = ["myapp.flows"]          # Python workflows this node runs (module names)
    workflow_queue = "bridge_workflows"  # their orchestration queue (default)
    workflow_concurrency = 10
    workflow_config_key = "bridge"
    workflow_repair_after = 60  # enable the workflow lifeline (grace, seconds); off by default
    workflow_repair_interval = 6  # how often it looks (default: repair_after / 10, 1 to 30)
    workflow_inline_advance = false  # HephaestusOban's job rows: an AdvanceWorker per result
    log_format = "json"
    wait_for_database = 120

One table (``SETTINGS``) lists every setting with its option, variable and key; ``bridge worker
--help`` and the README print it, so the three can never disagree. A value given at a higher
level replaces the lower one whole (``--workers b`` does not add to ``workers = ["a"]``).

The database URL is deliberately not read from the file: it belongs in the environment
(``BRIDGE_DATABASE_URL``), not in a file that gets committed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
CONFIG_ENV = "BRIDGE_CONFIG"


class ConfigError(ValueError):
    """A setting is malformed; the message names where it came from (file and key, or the
    environment variable)."""


@dataclass
class WorkerSettings:
    queues: dict[str, int] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)
    prefix: str | None = None
    node: str | None = None
    processes: int | None = None
    process_pool: int | None = None
    process_max_jobs: int | None = None
    name: str | None = None
    grace: float | None = None
    poll_interval: float | None = None
    rescue_after: float | None = None
    rescue_interval: float | None = None
    prune_after: float | None = None
    gossip: bool | None = None
    workflows: list[str] = field(default_factory=list)
    workflow_queue: str | None = None
    workflow_concurrency: int | None = None
    workflow_config_key: str | None = None
    workflow_repair_after: float | None = None
    workflow_repair_interval: float | None = None
    workflow_inline_advance: bool | None = None
    app_dir: list[str] = field(default_factory=list)
    cron: list[str] = field(default_factory=list)
    cron_timezone: str | None = None
    wait_for_database: float | None = None
    log_format: str | None = None
    log_level: str | None = None


_KNOWN = {f.name for f in fields(WorkerSettings)}


@dataclass(frozen=True)
class Setting:
    """One worker setting as a user meets it: option, variable, TOML key and default."""

    key: str  # the [tool.bridge] key and the WorkerSettings field
    option: str
    env: str | None
    default: str
    meaning: str


# Every setting of `bridge worker`, in the order --help and the README list them.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "queues", "--queues", "BRIDGE_QUEUES", "none", 'queues and limits, "badges:10,default"'
    ),
    Setting("workers", "--workers", "BRIDGE_WORKERS", "none", "modules with @worker/@delegated"),
    Setting("workflows", "--workflows", "BRIDGE_WORKFLOWS", "none", "modules with Workflows"),
    Setting("app_dir", "--app-dir", "BRIDGE_APP_DIR", "current dir", "where those modules are"),
    Setting("prefix", "--prefix", "BRIDGE_PREFIX", "public", "schema of the Oban tables"),
    Setting("node", "--node", "BRIDGE_NODE", "host name", "node name in attempted_by"),
    Setting(
        "processes",
        "--processes",
        "BRIDGE_PROCESSES",
        "1",
        "nodes, each a process of its own (node-1, node-2, ...)",
    ),
    Setting(
        "process_pool",
        "--process-pool",
        "BRIDGE_PROCESS_POOL",
        "cores",
        'child processes per node for @worker(executor="process")',
    ),
    Setting(
        "process_max_jobs",
        "--process-max-jobs",
        "BRIDGE_PROCESS_MAX_JOBS",
        "off",
        "jobs a child runs before it is replaced (memory)",
    ),
    Setting("name", "--name", "BRIDGE_NAME", "Oban", "Elixir instance whose signals it obeys"),
    Setting("grace", "--grace", "BRIDGE_GRACE", "15", "seconds running jobs get to finish"),
    Setting("poll_interval", "--poll-interval", "BRIDGE_POLL_INTERVAL", "1", "seconds"),
    Setting("rescue_after", "--rescue-after", "BRIDGE_RESCUE_AFTER", "off", "lifeline, seconds"),
    Setting(
        "rescue_interval",
        "--rescue-interval",
        "BRIDGE_RESCUE_INTERVAL",
        "rescue_after/10, 1-60",
        "seconds between the lifeline's looks",
    ),
    Setting("prune_after", "--prune-after", "BRIDGE_PRUNE_AFTER", "off", "pruner, seconds"),
    Setting("gossip", "--gossip", "BRIDGE_GOSSIP", "off", "queue checks for Oban Web"),
    Setting("cron", "--cron", "BRIDGE_CRON", "none", "cron entries (variable: one per line)"),
    Setting("cron_timezone", "--cron-timezone", "BRIDGE_CRON_TIMEZONE", "Etc/UTC", "cron zone"),
    Setting(
        "workflow_queue",
        "--workflow-queue",
        "BRIDGE_WORKFLOW_QUEUE",
        "bridge_workflows",
        "queue of the workflow jobs",
    ),
    Setting(
        "workflow_concurrency",
        "--workflow-concurrency",
        "BRIDGE_WORKFLOW_CONCURRENCY",
        "10",
        "its concurrency",
    ),
    Setting(
        "workflow_config_key",
        "--workflow-config-key",
        "BRIDGE_WORKFLOW_CONFIG_KEY",
        "bridge",
        "config_key in their job args",
    ),
    Setting(
        "workflow_repair_after",
        "--workflow-repair-after",
        "BRIDGE_WORKFLOW_REPAIR_AFTER",
        "off",
        "workflow lifeline, seconds",
    ),
    Setting(
        "workflow_repair_interval",
        "--workflow-repair-interval",
        "BRIDGE_WORKFLOW_REPAIR_INTERVAL",
        "repair_after/10, 1-30",
        "seconds between the workflow lifeline's looks",
    ),
    Setting(
        "workflow_inline_advance",
        "--workflow-inline-advance",
        "BRIDGE_WORKFLOW_INLINE_ADVANCE",
        "on",
        "step jobs apply their own results (off: an AdvanceWorker each)",
    ),
    Setting(
        "wait_for_database",
        "--wait-for-database",
        "BRIDGE_WAIT_FOR_DATABASE",
        "60",
        "seconds to retry an unreachable database at start (0: no retry)",
    ),
    Setting("log_format", "--log-format", "BRIDGE_LOG_FORMAT", "text", "text or json"),
    Setting("log_level", "--log-level", "BRIDGE_LOG_LEVEL", "info", "debug, info, warning, error"),
)


def settings_epilog() -> str:
    """The settings table for ``bridge worker --help`` (click keeps ``\\b`` blocks as typed)."""
    rows = [("option", "environment", "[tool.bridge]", "default")]
    rows += [(s.option, s.env or "-", s.key, s.default) for s in SETTINGS]
    rows.append(("--config", CONFIG_ENV, "-", "./pyproject.toml"))
    rows.append(("--database-url", "BRIDGE_DATABASE_URL", "- (never in a file)", "DATABASE_URL"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]
    return (
        "Settings: an option wins over its environment variable, which wins over the TOML file "
        "(--config, else [tool.bridge] in ./pyproject.toml), which wins over the default. "
        "--prefix and --database-url are options of `bridge` itself (before `worker`). "
        "Lists in variables are comma-separated (BRIDGE_APP_DIR: like PYTHONPATH; BRIDGE_CRON: "
        "one entry per line).\n\n\b\n" + "\n".join(lines)
    )


# -- values ---------------------------------------------------------------------------------------


def parse_queues(spec: str) -> dict[str, int]:
    """``"badges:10,default:5"`` -> ``{"badges": 10, "default": 5}`` (a bare name gets 10)."""
    queues: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, limit = part.partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"empty queue name in {spec!r}")
        try:
            queues[name] = int(limit) if limit else 10
        except ValueError:
            raise ValueError(f"queue {name!r}: limit must be an integer, got {limit!r}") from None
        if queues[name] < 1:
            raise ValueError(f"queue {name!r}: limit must be >= 1")
    return queues


def split_list(text: str, separator: str = ",") -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: the list syntax of variables and options."""
    return [part.strip() for part in text.split(separator) if part.strip()]


_POSITIVE = (
    "grace",
    "poll_interval",
    "rescue_after",
    "rescue_interval",
    "prune_after",
    "workflow_repair_after",
    "workflow_repair_interval",
)
_STRINGS = ("prefix", "node", "name", "cron_timezone", "workflow_queue", "workflow_config_key")
_LISTS = ("workers", "workflows", "app_dir", "cron")
_BOOLEANS = ("gossip", "workflow_inline_advance")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _boolean(value: Any) -> bool:
    """true/false from TOML, or a variable's 1/0, true/false, yes/no, on/off."""
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, bool):
        return value
    raise ValueError("must be true or false (1/0, yes/no, on/off in a variable)")


def _number(value: Any, *, allow_zero: bool) -> float:
    """Seconds: a positive number (or >= 0), from TOML or a variable's text."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    number_like = isinstance(value, int | float) and not isinstance(value, bool)
    if not number_like or value != value or value in (float("inf"), float("-inf")):  # NaN, inf
        value = -1
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            "must be a number of seconds >= 0" if allow_zero else "must be a positive number"
        )
    return float(value)


def _check(key: str, value: Any) -> Any:
    """``value`` (from TOML, or a variable's text) as the type of ``key``; ValueError saying
    what the value must be."""
    if key == "queues":
        if isinstance(value, str):
            return parse_queues(value)
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for k, v in value.items()
        ):
            raise ValueError("must map queue names to limits >= 1")
        return dict(value)
    if key in _LISTS:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            noun = "cron entries" if key == "cron" else "directories" if key == "app_dir" else None
            raise ValueError(f"must be a list of {noun or 'module names'}")
        return list(value)
    if key in _STRINGS:
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty string")
        return value
    if key in _BOOLEANS:
        return _boolean(value)
    if key in _POSITIVE:
        return _number(value, allow_zero=False)
    if key == "wait_for_database":
        return _number(value, allow_zero=True)
    if key in ("workflow_concurrency", "processes", "process_pool", "process_max_jobs"):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("must be an integer >= 1")
        return value
    if key == "log_format":
        if not isinstance(value, str) or value.lower() not in LOG_FORMATS:
            raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
        return value.lower()
    if key == "log_level":
        if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.lower()
    raise ValueError(f"unknown key {key}")  # pragma: no cover - _KNOWN guards this


# -- sources --------------------------------------------------------------------------------------


def load_settings(path: Path | None = None) -> WorkerSettings:
    """Read ``path`` (its ``[tool.bridge]`` table if it is a pyproject.toml, else the whole
    file), or ``./pyproject.toml`` when no path is given; missing default file -> defaults.

    ``app_dir`` entries are relative to the file's directory, as a reader of the file expects."""
    explicit = path is not None
    path = path or Path("pyproject.toml")
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: no such file")
        return WorkerSettings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
    table: Any = data.get("tool", {}).get("bridge", {}) if path.name == "pyproject.toml" else data
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.bridge] must be a table")
    # [tool.bridge.testing] belongs to the pytest plugin (bridge.testing.elixir reads it).
    table = {key: value for key, value in table.items() if key != "testing"}
    unknown = set(table) - _KNOWN
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    settings = WorkerSettings()
    for key, value in table.items():
        try:
            checked = _check(key, value)
        except ValueError as exc:
            message = str(exc)
            glue = " " if message.startswith("must") else ": "
            raise ConfigError(f"{path}: {key}{glue}{message}") from exc
        if key == "app_dir":
            checked = [str(path.parent / entry) for entry in checked]
            missing = _missing_dirs(checked)
            if missing:
                raise ConfigError(f"{path}: app_dir: no such directory {missing[0]!r}")
        setattr(settings, key, checked)
    return settings


def env_values(environ: Mapping[str, str], keys: Collection[str] | None = None) -> dict[str, Any]:
    """The settings given by ``BRIDGE_*`` variables (empty ones count as unset); a malformed
    one raises ConfigError naming the variable. With ``keys``, only those settings' variables
    are read: a command that uses two settings is not stopped by a third one's typo."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.env is None or setting.key == "prefix":  # BRIDGE_PREFIX: the root's option
            continue
        if keys is not None and setting.key not in keys:
            continue
        text = environ.get(setting.env, "").strip()
        if not text:
            continue
        raw: Any = text
        if setting.key in ("workers", "workflows"):
            raw = split_list(text)
        elif setting.key == "app_dir":
            raw = split_list(text, os.pathsep)
        elif setting.key == "cron":
            raw = split_list(text, "\n")
        try:
            values[setting.key] = _check(setting.key, raw)
            missing = _missing_dirs(values[setting.key]) if setting.key == "app_dir" else []
            if missing:
                raise ValueError(f"no such directory {missing[0]!r}")
        except ValueError as exc:
            raise ConfigError(f"environment variable {setting.env}={text!r}: {exc}") from exc
    return values


def _missing_dirs(paths: list[str]) -> list[str]:
    return [entry for entry in paths if not Path(entry).is_dir()]


def option_values(options: Mapping[str, Any]) -> dict[str, Any]:
    """The settings given on the command line: ``None`` and empty tuples mean not given."""
    values: dict[str, Any] = {}
    for key, value in options.items():
        if value is None or value == ():
            continue
        if key in ("workers", "workflows"):  # "--workers a,b" as well as "-w a -w b"
            value = [name for item in value for name in split_list(item)]
        values[key] = list(value) if isinstance(value, tuple) else value
    return values


def resolve_settings(
    config_path: Path | None,
    options: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    keys: Collection[str] | None = None,
) -> WorkerSettings:
    """Option > environment variable > file > default, one setting at a time.

    ``keys`` limits the variables read to those settings (``bridge enqueue`` takes ``workers``
    and ``app_dir`` only); the file is still checked whole, as ``bridge worker`` checks it."""
    environ = os.environ if environ is None else environ
    if config_path is None and environ.get(CONFIG_ENV, "").strip():
        config_path = Path(environ[CONFIG_ENV].strip())
    settings = load_settings(config_path)
    for values in (env_values(environ, keys), option_values(options)):
        for key, value in values.items():
            setattr(settings, key, value)
    return settings
