"""``bridge workflows export-elixir MODULE``: the Elixir declarations of Python workflows.

An Elixir app that shares the database must declare every Python-owned workflow (``use
ObanBridge.PythonWorkflow``), or HephaestusEcto raises on its rows. The declarations are
generated from the Python definitions (:func:`bridge.workflows.delegation.declaration.
elixir_declarations`) so the two sides cannot drift; ``--check`` tells a stale file in CI.
The text is laid out as ``mix format`` lays it out (``--line-length``: the app's
``.formatter.exs`` value, 98 by default), so the app's ``mix format --check-formatted`` passes on
it. No database is needed.
"""

from __future__ import annotations

from collections.abc import Sized
from pathlib import Path

import click

from bridge.cli.output import EXIT_USAGE, bad_parameter, fail
from bridge.cli.startup import app_dir_option
from bridge.workflows.delegation.elixir_layout import LINE_LENGTH


@click.command("export-elixir")
@click.argument("modules", nargs=-1, required=True, metavar="MODULE...")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the declarations to this file (e.g. lib/my_app/python_workflows.ex) instead "
    "of printing them.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Do not write: exit 1 if the --output file differs from what would be written.",
)
@click.option(
    "--line-length",
    type=click.IntRange(min=20),
    default=LINE_LENGTH,
    show_default=True,
    help="Lay the text out as `mix format` does with this :line_length (that of the app's "
    ".formatter.exs).",
)
@app_dir_option
def export_elixir_command(
    modules: tuple[str, ...],
    output: Path | None,
    check: bool,
    line_length: int,
    app_dirs: tuple[Path, ...],
) -> None:
    """Print the ObanBridge.PythonWorkflow declarations of the workflows in MODULE.

    Compile them into every Elixir app that reads workflow_instances: without the declaration
    of a Python-owned workflow, loading one of its rows raises in HephaestusEcto."""
    from bridge.cli.startup import import_user_modules
    from bridge.workflows.delegation.declaration import elixir_declarations
    from bridge.workflows.model.definition import WorkflowError
    from bridge.workflows.serving import load_workflows

    if check and output is None:
        raise bad_parameter("--check compares a file: give it with --output FILE", "--check")
    import_user_modules(modules, app_dirs, kind="workflows")
    try:
        flows = load_workflows(modules)
    except WorkflowError as exc:
        raise bad_parameter(str(exc), "MODULE") from exc
    text = elixir_declarations(flows, source=" ".join(modules), line_length=line_length)
    if output is None:
        click.echo(text, nl=False)
        return
    length = f" --line-length {line_length}" if line_length != LINE_LENGTH else ""
    command = f"bridge workflows export-elixir {' '.join(modules)}{length} --output {output}"
    if check:
        try:
            current = output.read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot read {output}: {exc.strerror}; create it with `{command}`") from exc
        if current != text:
            raise fail(f"{output} is stale: regenerate it with `{command}`")
        click.echo(f"{output} declares {_count(flows)} of {' '.join(modules)}")
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror}", EXIT_USAGE) from exc
    click.echo(f"wrote the declarations of {_count(flows)} to {output}")


def _count(flows: Sized) -> str:
    return "1 workflow" if len(flows) == 1 else f"{len(flows)} workflows"
