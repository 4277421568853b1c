"""``bridge workflows export-elixir`` writes what ``mix format`` (the real Elixir 1.14 formatter)
would: ``mix format --check-formatted`` passes on its output, so an app that commits the file and
checks formatting in CI is not broken by it. Workflows with long names, many events, long
context keys, tags and nested metadata exercise every place a line breaks; the command runs
through the installed script from a scratch directory, as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import ROOT, run_bridge

FIXTURE = ROOT / "elixir_fixture"
DECLARED = FIXTURE / "lib" / "fixture_workflows" / "python_declared.ex"

LONG_FLOWS = """\
from bridge.workflows import DONE, Step, StepOk, Unique, Workflow


def ok(instance, config, context):
    return StepOk("done_with_a_rather_long_event_name")


def step(name, *events):
    return Step(name=name, events=events or ("done_with_a_rather_long_event_name",), run=ok)


PICK = step(
    "Elixir.Warehouse.Fulfilment.Steps.PickTheParcelFromTheShelf",
    "picked_from_the_upper_shelf", "picked_from_the_lower_shelf", "shelf_was_empty",
    "shelf_was_locked", "done_with_a_rather_long_event_name",
)
LABEL = step("Elixir.Warehouse.Fulfilment.Steps.PrintTheShippingLabelForTheParcelNow")
SHORT = step("Elixir.W.S")

LONG = Workflow(
    name="Elixir.Warehouse.Fulfilment.Flows.ShipAParcelFromTheWarehouseToTheCustomerDoor",
    start=PICK,
    transitions=[
        (PICK, "picked_from_the_upper_shelf", LABEL),
        (PICK, "picked_from_the_lower_shelf", LABEL),
        (PICK, "shelf_was_empty", DONE),
        (PICK, "shelf_was_locked", DONE),
        (PICK, "done_with_a_rather_long_event_name", SHORT),
        (LABEL, "done_with_a_rather_long_event_name", DONE),
        (SHORT, "done_with_a_rather_long_event_name", DONE),
    ],
    atoms=[f"context_key_number_{n}" for n in range(12)] + ["Odd key #{x}"],
    unique=Unique(key="parcel" + "x" * 90),
    version=123456,
    tags=["warehouse", "fulfilment", "shipping", "parcels", "python", "long-running", "eu"],
    metadata={
        "limits": {"max_parcels_per_hour": 1234567, "ratio": 1234567.25, "nested": [1, [2, 3]]},
        "owner_team_with_a_name_long_enough_to_push_its_value_onto_the_next_line_of_the_file": (
            "logistics"
        ),
        "empty": {},
        "notes": "n" * 95,
    },
)
TINY = Workflow(name="Elixir.T", start=DONE, transitions=[])
WORKFLOWS = [LONG, TINY]
"""


def mix_format_check(directory: Path, line_length: int) -> subprocess.CompletedProcess[str]:
    """``mix format --check-formatted`` on the ``.ex`` files of ``directory``, with a
    ``.formatter.exs`` giving ``line_length`` (an app's formatter configuration)."""
    (directory / ".formatter.exs").write_text(
        f'[inputs: ["*.ex"], line_length: {line_length}]\n', encoding="utf-8"
    )
    mix = shutil.which("mix")
    assert mix is not None, "`mix` is not installed: apt-get install elixir erlang-jiffy"
    return subprocess.run(
        [mix, "format", "--check-formatted"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("line_length", [98, 60, 120])
def test_generated_declarations_are_mix_format_clean(tmp_path: Path, line_length: int) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "long_flows.py").write_text(LONG_FLOWS, encoding="utf-8")
    out = tmp_path / "lib"
    out.mkdir()
    exports = {
        "long_flows": ("long_flows",),
        "cold_flows": ("--app-dir", str(ROOT), "interop_tests.cold_flows"),
    }
    length = () if line_length == 98 else ("--line-length", str(line_length))
    for name, source in exports.items():
        target = out / f"{name}.ex"
        result = run_bridge(
            "workflows", "export-elixir", *source, *length, "--output", str(target), cwd=app
        )
        assert result.returncode == 0, result.stderr
    text = (out / "long_flows.ex").read_text(encoding="utf-8")
    assert max(len(line) for line in text.splitlines()) > line_length  # lines to break
    check = mix_format_check(out, line_length)
    assert check.returncode == 0, check.stdout + check.stderr + text


def test_a_file_the_formatter_would_rewrite_fails_the_check(tmp_path: Path) -> None:
    """The check above can fail: the declaration as the generator wrote it before it laid
    lines out (a step tuple on one 108-character line) is rejected."""
    unformatted = DECLARED.read_text(encoding="utf-8").replace(
        "{ColdPy.Declared.PickZq,\n       key:", "{ColdPy.Declared.PickZq, key:"
    )
    assert unformatted != DECLARED.read_text(encoding="utf-8")
    (tmp_path / "declared.ex").write_text(unformatted, encoding="utf-8")
    check = mix_format_check(tmp_path, 98)
    assert check.returncode == 1 and "declared.ex" in check.stdout + check.stderr


def test_the_committed_fixture_declaration_is_formatted_for_the_fixture() -> None:
    """``python_declared.ex`` (the command's output, ``tests/cli/test_export_elixir.py``) under
    the fixture's own ``.formatter.exs``."""
    mix = shutil.which("mix")
    assert mix is not None
    check = subprocess.run(
        [mix, "format", "--check-formatted", str(DECLARED.relative_to(FIXTURE))],
        cwd=FIXTURE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
