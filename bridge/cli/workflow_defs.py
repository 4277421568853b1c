"""The Python workflow definitions a ``bridge workflows`` command acts on: the ``--workflows``
modules and settings, the runner built from them, the checks that an instance is Python-owned
and loadable before a command changes it."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import psycopg
from psycopg.rows import dict_row

from bridge.cli.context import CliContext
from bridge.cli.output import (
    EXIT_USAGE,
    bad_parameter,
    fail,
    usage_error,
)
from bridge.cli.workflow_rows import (
    READ_INSTANCE,
    instance_owner,
    render_sql,
)
from bridge.jobs.client.admin import Undecodable, decode_json

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from bridge.workflows.model.definition import Workflow
    from bridge.workflows.run.runner import WorkflowRunner


def definition_options(fn: F) -> F:
    """The options that name the Python workflows a command acts on, and their runner."""
    from bridge.cli.startup import app_dir_option

    options = [
        click.option(
            "--workflows",
            "modules",
            multiple=True,
            metavar="MODULE",
            help="Module defining the Python workflows (repeatable; default: workflows in "
            "[tool.bridge]).",
        ),
        click.option(
            "--config",
            "config_path",
            type=click.Path(path_type=Path),
            default=None,
            help="TOML settings ([tool.bridge] of ./pyproject.toml by default).",
        ),
        click.option(
            "--queue",
            default=None,
            metavar="QUEUE",
            help="The runner's queue (default: workflow_queue in the settings, else "
            "bridge_workflows).",
        ),
        click.option(
            "--config-key",
            default=None,
            metavar="KEY",
            help="The runner's config_key in job args (default bridge).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    decorated: F = app_dir_option(fn)
    return decorated


@dataclass(frozen=True)
class Definitions:
    """The runner over the workflows a command was given, and the modules they came from."""

    runner: WorkflowRunner
    modules: list[str]


@contextmanager
def definitions_from(
    ctx: CliContext,
    modules: tuple[str, ...],
    config_path: Path | None,
    queue: str | None,
    config_key: str | None,
    app_dirs: tuple[Path, ...],
    *,
    required: bool = True,
) -> Iterator[Definitions | None]:
    """The runner over the named workflows, their modules imported as ``bridge worker`` imports
    them: from ``--app-dir`` and the current directory first (``startup.import_user_module``)."""
    from bridge.cli.settings import ConfigError, load_settings
    from bridge.cli.startup import import_user_modules
    from bridge.workflows.model.definition import WorkflowError
    from bridge.workflows.run.runner import DEFAULT_CONFIG_KEY, DEFAULT_QUEUE, WorkflowRunner
    from bridge.workflows.serving import load_workflows

    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc  # names the file and the key
    names = list(modules) or settings.workflows
    if not names and required:
        raise usage_error("name the workflows: --workflows MODULE (or [tool.bridge])")
    import_user_modules(names, list(app_dirs) or settings.app_dir, kind="workflows")
    try:
        flows = load_workflows(names) if names else []
    except WorkflowError as exc:
        raise bad_parameter(str(exc), "--workflows") from exc
    if not flows:
        yield None
        return
    runner = WorkflowRunner(
        ctx.url,
        flows,
        prefix=ctx.prefix,
        queue=queue or settings.workflow_queue or DEFAULT_QUEUE,
        config_key=config_key or settings.workflow_config_key or DEFAULT_CONFIG_KEY,
    )
    try:
        yield Definitions(runner, names)
    finally:
        runner.close()


def _last_segment(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def pick_workflow(definitions: Definitions, name: str) -> Workflow:
    """The workflow named by its module (with or without ``Elixir.``) or, when only one has
    it, by its last segment (``Order``) or Hephaestus's short name (``order``)."""
    return pick_from(definitions.runner.workflows.values(), definitions.modules, name)


def pick_from(workflows: Iterable[Workflow], modules: Sequence[str], name: str) -> Workflow:
    """``pick_workflow`` among ``workflows`` loaded from ``modules``, for a command that needs
    no runner (``bridge workflows graph``)."""
    flows = sorted(workflows, key=lambda w: w.name)
    for workflow in flows:
        if name in (workflow.name, workflow.name.removeprefix("Elixir.")):
            return workflow
    matches = [w for w in flows if name in (_last_segment(w.name), w.short_name)]
    where = ", ".join(modules)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise fail(
            f"workflow {name!r} is ambiguous in {where}: "
            f"{', '.join(w.name for w in matches)}; give the full name",
            EXIT_USAGE,
        )
    known = ", ".join(f"{w.name} ({_last_segment(w.name)})" for w in flows)
    raise fail(f"no workflow {name!r} in {where}: known: {known}", EXIT_USAGE)


def python_owned(conn: psycopg.Connection[Any], ctx: CliContext, instance_id: str) -> None:
    owner = instance_owner(conn, ctx.prefix, instance_id)
    if isinstance(owner, dict) and owner["kind"] == "elixir":
        raise fail(
            f"{instance_id} is Elixir-owned (its jobs run in queue {owner['queue']}); "
            "drive it from its Elixir app"
        )


def loadable(
    conn: psycopg.Connection[Any],
    ctx: CliContext,
    runner: WorkflowRunner,
    instance_id: str,
    verb: str,
) -> None:
    """Refuse, in one line, to act on an instance the runner could not load: a state too deep
    to decode, or of a shape (names, keys) its definition does not have."""
    from bridge.workflows.model.definition import UnknownStepError, WorkflowError
    from bridge.workflows.model.serializer import SerializationError, from_row

    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(render_sql(READ_INSTANCE, ctx.prefix), {"id": instance_id})
        row = cur.fetchone()
    if row is None:
        raise fail(f"no workflow instance {instance_id!r}")
    state = decode_json(row["state"])
    if isinstance(state, Undecodable):
        raise fail(
            f"cannot {verb} {instance_id!r}: its state cannot be decoded: {state.reason}; "
            f"`bridge workflows show {shlex.quote(instance_id)}` shows what it holds"
        )
    try:
        from_row({**row, "state": state}, runner.workflows)
    except (SerializationError, UnknownStepError) as exc:
        reason = str(exc).removeprefix(f"{instance_id}: ")
        raise fail(f"cannot {verb} {instance_id!r}: its state cannot be decoded: {reason}") from exc
    except WorkflowError:
        pass  # e.g. a workflow the command was not given: the runner's own error says it
