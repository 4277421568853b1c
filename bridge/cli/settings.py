"""Worker settings from a TOML file: ``[tool.bridge]`` in ``pyproject.toml`` or a file of its own.

Example::

    [tool.bridge]
    prefix = "public"
    queues = { badges = 10, default = 5 }
    workers = ["myapp.workers"]
    node = "worker-1"
    grace = 15
    rescue_after = 3600      # enable the lifeline (seconds); off by default
    prune_after = 86400      # enable the pruner (seconds); off by default
    workflows = ["myapp.flows"]          # Python workflows this node runs (module names)
    workflow_queue = "bridge_workflows"  # their orchestration queue (default)
    workflow_concurrency = 10
    workflow_config_key = "bridge"
    workflow_repair_after = 60  # enable the workflow lifeline (grace, seconds); off by default

Command-line options win over the file. The database URL is deliberately not read from here:
it belongs in the environment (``BRIDGE_DATABASE_URL``), not in a file that gets committed.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """The settings file is malformed; the message names the file and the key."""


@dataclass
class WorkerSettings:
    queues: dict[str, int] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)
    prefix: str | None = None
    node: str | None = None
    name: str | None = None
    grace: float | None = None
    poll_interval: float | None = None
    rescue_after: float | None = None
    prune_after: float | None = None
    workflows: list[str] = field(default_factory=list)
    workflow_queue: str | None = None
    workflow_concurrency: int | None = None
    workflow_config_key: str | None = None
    workflow_repair_after: float | None = None


_KNOWN = {f for f in WorkerSettings.__dataclass_fields__}


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


def load_settings(path: Path | None = None) -> WorkerSettings:
    """Read ``path`` (its ``[tool.bridge]`` table if it is a pyproject.toml, else the whole
    file), or ``./pyproject.toml`` when no path is given; missing default file -> defaults."""
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
    table: Any = data.get("tool", {}).get("bridge", {}) if path.name == "pyproject.toml" else data
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.bridge] must be a table")
    unknown = set(table) - _KNOWN
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    queues = table.get("queues", {})
    if isinstance(queues, str):
        try:
            queues = parse_queues(queues)
        except ValueError as exc:
            raise ConfigError(f"{path}: queues: {exc}") from exc
    if not isinstance(queues, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v >= 1 for k, v in queues.items()
    ):
        raise ConfigError(f"{path}: queues must map queue names to limits >= 1")
    workers = table.get("workers", [])
    if isinstance(workers, str):
        workers = [workers]
    if not isinstance(workers, list) or not all(isinstance(w, str) for w in workers):
        raise ConfigError(f"{path}: workers must be a list of module names")
    settings = WorkerSettings(queues=dict(queues), workers=list(workers))
    flows = table.get("workflows", [])
    flows = [flows] if isinstance(flows, str) else flows
    if not isinstance(flows, list) or not all(isinstance(w, str) for w in flows):
        raise ConfigError(f"{path}: workflows must be a list of module names")
    settings.workflows = list(flows)
    concurrency = table.get("workflow_concurrency")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ConfigError(f"{path}: workflow_concurrency must be an integer >= 1")
    settings.workflow_concurrency = concurrency
    for key in ("prefix", "node", "name", "workflow_queue", "workflow_config_key"):
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: {key} must be a string")
        setattr(settings, key, value)
    for key in ("grace", "poll_interval", "rescue_after", "prune_after", "workflow_repair_after"):
        value = table.get(key)
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            raise ConfigError(f"{path}: {key} must be a positive number")
        setattr(settings, key, None if value is None else float(value))
    return settings
