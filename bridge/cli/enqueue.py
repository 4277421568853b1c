"""``bridge enqueue``: insert jobs for any worker, Python or Elixir, by its string name.

One job from the options, or many from a JSON-lines file (``--from-file``). With worker
modules (``--workers``, else ``BRIDGE_WORKERS``, else ``workers`` in ``[tool.bridge]``: the
sources ``bridge worker`` reads, so a project's node and its shell agree on a worker's queue) a
registered worker's defaults (queue, max_attempts, priority, tags, unique) apply as they do for
``Worker.new`` in code; options override them. The row is inserted before anything is
printed, and printing cannot fail (``output.json_text``), so a user never has to wonder whether
to enqueue again.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import EXIT_USAGE, bad_parameter, echo_json, fail, usage_error
from bridge.cli.startup import app_dir_option, import_user_modules

BATCH = 1000  # rows per insert_all of --from-file (COPY above 64)
CLEAR_LINE = "\r\x1b[K"  # the progress line of a terminal, erased once the result is known
LINE_KEYS = {
    "worker",
    "args",
    "queue",
    "priority",
    "max_attempts",
    "tags",
    "meta",
    "schedule_in",
    "scheduled_at",
}


class LineError(ValueError):
    """A line of ``--from-file`` that is not a job; the message says why."""


def unique_flags(
    period: str | None, fields: str | None, keys: str | None, states: str | None
) -> dict[str, Any]:
    """The ``--unique-*`` options as Oban's unique keyword list (only those given)."""
    from bridge.cli.settings import split_list
    from bridge.jobs.client.unique import FIELDS, STATE_GROUPS, STATES

    given: dict[str, Any] = {}
    if period is not None:
        text = period.strip().lower()
        if text in ("infinity", "inf"):
            given["period"] = "infinity"
        else:
            try:
                given["period"] = int(text)
            except ValueError:
                raise bad_parameter(
                    f"expected a whole number of seconds or infinity, got {period!r}",
                    "--unique-period",
                ) from None
    if fields is not None:
        given["fields"] = split_list(fields)
        if not given["fields"] or any(name not in FIELDS for name in given["fields"]):
            raise bad_parameter(
                f"expected fields among {', '.join(FIELDS)}, got {fields!r}", "--unique-fields"
            )
    if keys is not None:
        given["keys"] = split_list(keys)
    if states is not None:
        names = split_list(states)
        if len(names) == 1 and names[0] in STATE_GROUPS:
            given["states"] = names[0]
        elif names and all(name in STATES for name in names):
            given["states"] = names
        else:
            raise bad_parameter(
                f"expected a group ({', '.join(sorted(STATE_GROUPS))}) or states among "
                f"{', '.join(STATES)}, got {states!r}",
                "--unique-states",
            )
    return given


def merged_unique(worker_unique: Any, given: dict[str, Any]) -> Any:
    """The worker's unique options with the command's on top; None when neither has any."""
    from bridge.jobs.client.unique import UniqueOptions

    base = UniqueOptions.build(worker_unique)
    if base is None:
        return given or None
    if not given:
        return base
    return {
        "fields": list(base.fields),
        "keys": list(base.keys),
        "period": "infinity" if base.period is None else base.period,
        "states": list(base.states),
        "timestamp": base.timestamp,
        "replace": {state: list(names) for state, names in base.replace.items()},
        **given,
    }


class JobBuilder:
    """Jobs for worker names, with the registered worker's defaults when there is one."""

    def __init__(
        self, modules: Sequence[str], defaults: dict[str, Any], unique: dict[str, Any]
    ) -> None:
        from bridge.jobs.client.registry import default_registry

        self.registry = default_registry
        self.modules = list(modules)
        self.defaults = defaults  # options given on the command line
        self.unique = unique
        self.noted: set[str] = set()

    def build(self, worker: str, args: Any, options: dict[str, Any]) -> Any:
        """``Job.new`` with (registered defaults <) command-line options < ``options``."""
        from bridge.jobs.client.job import Job

        spec = self.registry.resolve(worker) if self.modules else None
        if self.modules and spec is None and worker not in self.noted:
            self.noted.add(worker)
            click.echo(
                f"note: {worker!r} is not a worker of {', '.join(self.modules)}; inserting it "
                "with the command's defaults (an Elixir worker needs no registration)",
                err=True,
            )
        chosen = {**self.defaults, **options}
        if spec is None:
            if self.unique:
                chosen.setdefault("unique", self.unique)
            return Job.new(worker, args, **chosen)
        unique = merged_unique(spec.unique, self.unique)
        if unique is not None:
            chosen.setdefault("unique", unique)
        return spec.new(args, **chosen)


def worker_modules(
    config_path: Path | None, modules: Sequence[str], app_dirs: Sequence[Path]
) -> tuple[list[str], list[str]]:
    """The worker modules and app directories, from the sources ``bridge worker`` reads them
    (option > ``BRIDGE_*`` variable > settings file); a bad setting stops the command (exit 2)
    with the line naming it."""
    from bridge.cli.settings import ConfigError, resolve_settings

    options = {"workers": tuple(modules), "app_dir": tuple(str(d) for d in app_dirs)}
    try:
        settings = resolve_settings(config_path, options, keys=("workers", "app_dir"))
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    return settings.workers, settings.app_dir


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)  # the stdlib keeps integers beyond 64 bits exact
    except json.JSONDecodeError as exc:
        raise bad_parameter(f"{what} is not valid JSON: {exc}", f"--{what}") from exc
    except RecursionError:
        raise bad_parameter(f"{what} is nested too deeply to read", f"--{what}") from None
    if not isinstance(value, dict):
        raise bad_parameter(
            f"{what} must be a JSON object, got {type(value).__name__}", f"--{what}"
        )
    return value


@click.command("enqueue")
@click.argument("worker_name", required=False)
@click.option("--args", "args_json", default=None, help="Job args as a JSON object ({}).")
@click.option("--queue", default=None, help="Queue (the worker's, else default).")
@click.option("--priority", default=None, type=int, help="0 (highest) to 9 (the worker's, else 0).")
@click.option(
    "--max-attempts",
    default=None,
    type=int,
    help="Attempts before discard (the worker's, else 20).",
)
@click.option("--schedule-in", default=None, type=float, help="Seconds from now.")
@click.option("--tag", "tags", multiple=True, help="Tag (repeatable; replaces the worker's).")
@click.option("--meta", "meta_json", default=None, help="Job meta as a JSON object.")
@click.option(
    "--workers",
    "-w",
    "modules",
    multiple=True,
    help="Module(s) defining the worker: its queue, max_attempts, priority, tags and unique "
    "options become the defaults [env BRIDGE_WORKERS; default: workers in [tool.bridge]].",
)
@app_dir_option
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML settings to take workers and app_dir from ([tool.bridge] of ./pyproject.toml "
    "by default) [env BRIDGE_CONFIG].",
)
@click.option(
    "--unique-period",
    metavar="SECONDS|infinity",
    default=None,
    help="Unique: no duplicate inserted within this many seconds (Oban's default 60).",
)
@click.option(
    "--unique-fields",
    metavar="FIELDS",
    default=None,
    help="Unique: compared fields, comma-separated among args, queue, worker, meta "
    "(args,queue,worker).",
)
@click.option(
    "--unique-keys",
    metavar="KEYS",
    default=None,
    help="Unique: compare only these args/meta keys (comma-separated).",
)
@click.option(
    "--unique-states",
    metavar="STATES",
    default=None,
    help="Unique: a group (successful, all, incomplete, scheduled) or comma-separated states "
    "(successful).",
)
@click.option(
    "--from-file",
    "from_file",
    type=click.File("r", encoding="utf-8"),
    default=None,
    metavar="PATH|-",
    help="Insert many jobs: one JSON object per line (worker, args, queue, priority, "
    "max_attempts, tags, meta, schedule_in, scheduled_at), all or none, in batches. Options "
    "give the defaults.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the row (or a summary) as JSON.")
@pass_ctx
def enqueue_command(
    ctx: CliContext,
    worker_name: str | None,
    args_json: str | None,
    queue: str | None,
    priority: int | None,
    max_attempts: int | None,
    schedule_in: float | None,
    tags: tuple[str, ...],
    meta_json: str | None,
    modules: tuple[str, ...],
    app_dirs: tuple[Path, ...],
    config_path: Path | None,
    unique_period: str | None,
    unique_fields: str | None,
    unique_keys: str | None,
    unique_states: str | None,
    from_file: IO[str] | None,
    as_json: bool,
) -> None:
    """Insert a job for WORKER_NAME (any worker, Python or Elixir, by its string name), or the
    jobs of --from-file.

    On a unique conflict nothing is inserted and the existing job is shown (exit 0)."""
    from bridge.jobs.client.job import JobValidationError

    if (worker_name is None) == (from_file is None):
        raise usage_error("give WORKER_NAME or --from-file, not both or neither")
    names, import_dirs = worker_modules(config_path, modules, app_dirs)
    import_user_modules(names, import_dirs, kind="worker")
    defaults: dict[str, Any] = {
        key: value
        for key, value in {
            "queue": queue,
            "priority": priority,
            "max_attempts": max_attempts,
            "schedule_in": schedule_in,
            "tags": list(tags) if tags else None,
            "meta": _json_object(meta_json, "meta") if meta_json is not None else None,
        }.items()
        if value is not None
    }
    unique = unique_flags(unique_period, unique_fields, unique_keys, unique_states)
    builder = JobBuilder(names, defaults, unique)
    if from_file is not None:
        if args_json is not None:
            raise usage_error("--args applies to WORKER_NAME; give args on each line instead")
        if unique:
            raise usage_error(_BULK_UNIQUE)
        _enqueue_file(ctx, builder, from_file, as_json)
        return
    assert worker_name is not None
    args = _json_object(args_json, "args") if args_json is not None else {}
    try:
        job = builder.build(worker_name, args, {})
    except JobValidationError as exc:
        raise bad_parameter(str(exc)) from exc
    _enqueue_one(ctx, job, as_json)


_BULK_UNIQUE = (
    "--from-file inserts like Oban's insert_all, without a uniqueness check: drop the "
    "--unique-* options, or enqueue unique jobs one at a time"
)


def _enqueue_one(ctx: CliContext, job: Any, as_json: bool) -> None:
    from bridge.jobs.client.enqueue import insert

    with connect(ctx) as conn:
        inserted = insert(conn, job, prefix=ctx.prefix)
    if as_json:
        echo_json({**inserted.to_dict(), "conflict": inserted.conflict})
    elif inserted.conflict:
        click.echo(
            f"job {inserted.id} ({inserted.worker}) already exists in queue {inserted.queue} "
            f"({inserted.state}): unique conflict, nothing inserted"
        )
    else:
        click.echo(
            f"inserted job {inserted.id} ({inserted.worker}) in queue {inserted.queue}: "
            f"{inserted.state}"
        )


def _lines(source: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; LineError naming the line otherwise."""
    for number, text in enumerate(source, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text.strip())
        except json.JSONDecodeError as exc:
            raise LineError(
                f"line {number}: not valid JSON ({exc.msg}, column {exc.colno})"
            ) from None
        except RecursionError:
            raise LineError(f"line {number}: JSON nested too deeply to read") from None
        if not isinstance(value, dict):
            raise LineError(f"line {number}: expected a JSON object, got {type(value).__name__}")
        yield number, value


def _line_job(builder: JobBuilder, number: int, line: dict[str, Any]) -> Any:
    from bridge.jobs.client.job import JobValidationError

    unknown = sorted(set(line) - LINE_KEYS)
    if "unique" in unknown:
        raise LineError(f"line {number}: unique: {_BULK_UNIQUE}")
    if unknown:
        raise LineError(f"line {number}: unknown key(s) {', '.join(unknown)}")
    worker = line.get("worker")
    if not isinstance(worker, str):
        raise LineError(f"line {number}: worker must be a string naming the worker")
    options = {k: v for k, v in line.items() if k not in ("worker", "args")}
    if isinstance(options.get("scheduled_at"), str):
        try:
            options["scheduled_at"] = datetime.fromisoformat(options["scheduled_at"])
        except ValueError as exc:
            raise LineError(f"line {number}: scheduled_at: {exc}") from None
    if "scheduled_at" in options:  # the line's time replaces a --schedule-in default
        options.setdefault("schedule_in", None)
    tags = options.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise LineError(f"line {number}: tags must be a list of strings")
    try:
        job = builder.build(worker, line.get("args", {}), options)
    except (JobValidationError, TypeError) as exc:
        raise LineError(f"line {number}: {exc}") from None
    if job.unique is not None:
        if worker not in builder.noted:
            builder.noted.add(worker)
            click.echo(
                f"note: {worker}'s unique options are not checked by --from-file (as Oban's "
                "insert_all)",
                err=True,
            )
        job.unique = None
    return job


def _enqueue_file(ctx: CliContext, builder: JobBuilder, source: IO[str], as_json: bool) -> None:
    """Every line's job in one transaction, in batches: a bad line leaves nothing inserted."""
    from bridge.jobs.client.enqueue import insert_all

    name = getattr(source, "name", "-")
    shown = "stdin" if name in ("-", "<stdin>") else name
    progress = sys.stderr.isatty()
    inserted: list[int] = []
    batch: list[Any] = []
    with connect(ctx) as conn:
        try:
            with conn.transaction():
                for number, line in _lines(source):
                    batch.append(_line_job(builder, number, line))
                    if len(batch) >= BATCH:
                        inserted += _insert_batch(insert_all, conn, batch, ctx.prefix)
                        batch = []
                        if progress:
                            click.echo(
                                f"\rinserting: {len(inserted)} jobs so far", nl=False, err=True
                            )
                inserted += _insert_batch(insert_all, conn, batch, ctx.prefix)
        except LineError as exc:
            if progress and inserted:
                click.echo(CLEAR_LINE, nl=False, err=True)
            raise fail(f"{shown}, {exc}; nothing inserted", EXIT_USAGE) from None
    if progress and len(inserted) >= BATCH:
        click.echo(CLEAR_LINE, nl=False, err=True)
    if as_json:
        echo_json({"inserted": len(inserted), "ids": inserted})
    else:
        click.echo(f"inserted {len(inserted)} job(s) from {shown}")


def _insert_batch(insert_all: Any, conn: Any, batch: list[Any], prefix: str) -> list[int]:
    if not batch:
        return []
    return [job.id for job in insert_all(conn, batch, prefix=prefix)]
