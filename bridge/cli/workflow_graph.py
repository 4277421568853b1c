"""``bridge workflows graph [WORKFLOW] [--instance ID]``: a picture of a workflow.

The graph is drawn from the Python definition the command is given (``--workflows``, as
``start`` takes it), never from the database: rows hold no transitions. With ``--instance`` the
same graph is marked with what that instance did, read from its rows as ``show`` reads them
(:mod:`bridge.cli.workflow_rows`): each step's state from ``active_steps``, ``completed_steps``,
the status and the step results, and the language that ran it from the step's jobs (an
ExecuteStepWorker on ``hephaestus`` is Elixir's, on another queue the Python runner's; a
delegated job runs in the other language than the owner). An Elixir-owned workflow is drawn
from a Python mirror of its definition. Mermaid and DOT are text; SVG and PNG are Graphviz's
``dot`` run on the DOT text.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bridge.cli.context import CliContext, connect, pass_ctx
from bridge.cli.output import EXIT_USAGE, bad_parameter, fail, printable, usage_error
from bridge.cli.startup import app_dir_option

if TYPE_CHECKING:
    from bridge.workflows.model.definition import Workflow
    from bridge.workflows.model.graph import Language, StepJob

FORMATS = ("mermaid", "dot", "svg", "png")
_SUFFIXES = {".mmd": "mermaid", ".mermaid": "mermaid", ".dot": "dot", ".gv": "dot"}
_SUFFIXES.update({".svg": "svg", ".png": "png"})
MIRROR_HINT = (
    "a Python mirror of it: a Workflow with the same name, step modules, events and "
    "transitions, its steps declared without bodies (Step(name=..., events=[...]))"
)

GRAPH_EPILOG = (
    "With --instance, each step shows its state (completed, active, waiting, failed, not "
    "reached) and the language of the job that ran it (Python or Elixir); the edges the "
    "instance went along are drawn thick. An Elixir-owned workflow is drawn from a Python "
    "mirror of its definition given with --workflows. svg and png need Graphviz's dot on PATH."
)


@click.command("graph", epilog=GRAPH_EPILOG)
@click.argument("workflow_name", metavar="[WORKFLOW]", required=False)
@click.option(
    "--instance",
    "instance_id",
    default=None,
    metavar="ID",
    help="Mark the graph with this instance's step states and languages (reads the database).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="mermaid (default), dot, or svg/png rendered by Graphviz's dot; default: from the "
    "--output suffix (.mmd .dot .gv .svg .png), else mermaid.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the graph to this file instead of printing it (png needs one on a terminal).",
)
@click.option(
    "--workflows",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="Module defining the workflows (repeatable; default: workflows in [tool.bridge]).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML settings ([tool.bridge] of ./pyproject.toml by default).",
)
@app_dir_option
@pass_ctx
def graph_command(
    ctx: CliContext,
    workflow_name: str | None,
    instance_id: str | None,
    fmt: str | None,
    output: Path | None,
    modules: tuple[str, ...],
    config_path: Path | None,
    app_dirs: tuple[Path, ...],
) -> None:
    """Draw WORKFLOW's steps and transitions as Mermaid or Graphviz DOT (or SVG/PNG); with
    --instance ID, the steps of that instance (WORKFLOW may then be left out)."""
    from bridge.cli.workflow_defs import pick_from
    from bridge.workflows.model.graph import to_dot, to_mermaid

    fmt = fmt or _SUFFIXES.get(output.suffix.lower() if output else "", "mermaid")
    if workflow_name is None and instance_id is None:
        raise usage_error("name the WORKFLOW to draw, or give --instance ID")
    renderer = None
    if fmt in ("svg", "png"):
        renderer = shutil.which("dot")
        if renderer is None:
            raise fail(
                f"--format {fmt} needs Graphviz's dot, which is not on PATH: install Graphviz "
                "(apt-get install graphviz, brew install graphviz) or use --format dot or mermaid",
                EXIT_USAGE,
            )
        if fmt == "png" and output is None and sys.stdout.isatty():
            raise usage_error("--format png writes binary data: give --output FILE")
    names, flows = _load(modules, config_path, app_dirs)
    kwargs: dict[str, Any] = {}
    if instance_id is None:
        assert workflow_name is not None
        if not names:
            raise usage_error("name the workflows: --workflows MODULE (or [tool.bridge])")
        workflow = pick_from(flows, names, workflow_name)
        kwargs["elixir_steps"] = _elixir_steps(workflow)
    else:
        workflow, kwargs = _instance(ctx, instance_id, workflow_name, names, flows)
    draw = to_mermaid if fmt == "mermaid" else to_dot
    text = draw(workflow, **kwargs)
    data = text.encode() if renderer is None else _render(renderer, fmt, text)
    _emit(data, output)


def _load(
    modules: tuple[str, ...], config_path: Path | None, app_dirs: tuple[Path, ...]
) -> tuple[list[str], list[Workflow]]:
    """The module names and their workflows, imported as ``start`` imports them; no runner and
    no database."""
    from bridge.cli.settings import ConfigError, load_settings
    from bridge.cli.startup import import_user_modules
    from bridge.workflows.model.definition import WorkflowError
    from bridge.workflows.serving import load_workflows

    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    names = list(modules) or settings.workflows
    import_user_modules(names, list(app_dirs) or settings.app_dir, kind="workflows")
    try:
        return names, load_workflows(names) if names else []
    except WorkflowError as exc:
        raise bad_parameter(str(exc), "--workflows") from exc


def _elixir_steps(workflow: Workflow) -> list[str]:
    """Steps whose body runs in Elixir whoever owns the instance: ``elixir_step`` ones, and
    steps declared without a body."""
    from bridge.workflows.delegation.elixir import ElixirStepRun

    return [
        name
        for name, step in workflow.steps.items()
        if step.run is None or isinstance(step.run, ElixirStepRun)
    ]


def _instance(
    ctx: CliContext,
    instance_id: str,
    workflow_name: str | None,
    names: list[str],
    flows: list[Workflow],
) -> tuple[Workflow, dict[str, Any]]:
    """The instance's definition and the marks to draw it with, from its rows."""
    from bridge.cli.workflow_rows import show_data
    from bridge.workflows.model.graph import result_events, step_marks

    with connect(ctx) as conn:
        data = show_data(conn, ctx, instance_id)
    row, owner = data["instance"], data["owner"]
    owner_kind = owner["kind"] if isinstance(owner, dict) else None
    workflow = _definition(instance_id, row["workflow"], owner_kind, workflow_name, names, flows)
    state = row["state"] if isinstance(row["state"], dict) else {}
    active = _names(state.get("active_steps"))
    completed = _names(state.get("completed_steps"))
    current = state.get("current_step")
    if active is None or completed is None or not isinstance(current, str | None):
        raise fail(
            f"cannot graph {instance_id!r}: its state holds no readable lists of active and "
            f"completed steps; `bridge workflows show {shlex.quote(instance_id)}` shows what "
            "it holds"
        )
    unknown = sorted({*active, *completed} - set(workflow.steps))
    if unknown:
        raise fail(
            f"instance {instance_id!r} (version {row['workflow_version']}) has steps that "
            f"{workflow.name} (version {workflow.version}) lacks: {', '.join(unknown)}; "
            "give --workflows the definition it ran"
        )
    results = [
        (r["step_ref"], r["event"])
        for r in data["step_results"]
        if isinstance(r["step_ref"], str) and isinstance(r["event"], str)
    ]
    marks = step_marks(
        workflow,
        status=row["status"],
        current_step=current,
        active=active,
        completed=completed,
        results=results,
        jobs=_step_jobs(data["jobs"], owner_kind),
    )
    return workflow, {"marks": marks, "events": result_events(results), "instance": instance_id}


def _definition(
    instance_id: str,
    stored: str,
    owner: str | None,
    workflow_name: str | None,
    names: list[str],
    flows: list[Workflow],
) -> Workflow:
    """The definition of the instance's workflow among those given, or one line saying what
    to give."""
    if workflow_name is not None:
        from bridge.cli.workflow_defs import pick_from

        picked = pick_from(flows, names, workflow_name)
        if picked.name != stored:
            raise usage_error(f"{instance_id} is an instance of {stored}, not of {picked.name}")
    found = next((w for w in flows if w.name == stored), None)
    if found is not None:
        return found
    where = f"in {', '.join(names)}" if names else "(no --workflows given)"
    if owner == "elixir":
        raise fail(
            f"{instance_id} is an Elixir-owned instance of {printable(stored)}, which has no "
            f"Python definition {where}: give --workflows a module with {MIRROR_HINT}",
            EXIT_USAGE,
        )
    raise fail(
        f"{instance_id} is an instance of {printable(stored)}, which has no definition {where}: "
        "give --workflows the module that defines it",
        EXIT_USAGE,
    )


def _names(value: Any) -> list[str] | None:
    """A list of step names; ``None`` for anything else (undecodable, another shape)."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return value
    return None


def _step_jobs(jobs: list[dict[str, Any]], owner: str | None) -> list[StepJob]:
    """The jobs that run step bodies, with the language of the node that runs each."""
    from bridge.workflows.model.graph import StepJob
    from bridge.workflows.run.jobs import EXECUTE_STEP_WORKER, WORKERS
    from bridge.workflows.run.repair import ELIXIR_QUEUE

    found = []
    for job in jobs:
        args = job["args"]
        if not isinstance(args, dict) or not isinstance(args.get("step_ref"), str):
            continue
        language: Language | None = None
        delegated = "protocol" in args and job["worker"] not in WORKERS
        if job["worker"] == EXECUTE_STEP_WORKER:
            language = "elixir" if job["queue"] == ELIXIR_QUEUE else "python"
        elif delegated and owner is not None:
            language = "python" if owner == "elixir" else "elixir"  # the other side's worker
        if language is not None:
            step_ref = args["step_ref"]
            found.append(StepJob(job["id"], step_ref, job["state"], language, delegated))
    return found


def _render(renderer: str, fmt: str, text: str) -> bytes:
    """Graphviz's ``dot -T<fmt>`` on the DOT text."""
    try:
        done = subprocess.run(
            [renderer, f"-T{fmt}"], input=text.encode(), capture_output=True, check=False
        )
    except OSError as exc:
        raise fail(f"cannot run {renderer}: {exc.strerror}") from exc
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise fail(f"{renderer} -T{fmt} failed: {lines[0] if lines else done.returncode}")
    return done.stdout


def _emit(data: bytes, output: Path | None) -> None:
    if output is None:
        click.get_binary_stream("stdout").write(data)
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror}", EXIT_USAGE) from exc
    click.echo(f"wrote {output}")
