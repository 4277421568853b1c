"""``bridge workflows export-elixir``, run as users run it: the installed script, from a scratch
directory. The fixture compiles the committed output for ``interop_tests.cold_flows``
(``elixir_fixture/lib/fixture_workflows/python_declared.ex``), so equality here means the
declaration the interop tests exercise on the real BEAM is what the command prints."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import ROOT, run_bridge

DECLARED = ROOT / "elixir_fixture" / "lib" / "fixture_workflows" / "python_declared.ex"
MODULE = "interop_tests.cold_flows"


def test_prints_the_declarations_the_fixture_compiles(tmp_path: Path) -> None:
    result = run_bridge("workflows", "export-elixir", "--app-dir", str(ROOT), MODULE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == DECLARED.read_text(encoding="utf-8")


def test_writes_and_checks_a_file(tmp_path: Path) -> None:
    out = tmp_path / "python_workflows.ex"
    args = ("workflows", "export-elixir", "--app-dir", str(ROOT), MODULE, "--output", str(out))
    written = run_bridge(*args, cwd=tmp_path)
    assert (written.returncode, written.stdout) == (
        0,
        f"wrote the declarations of 2 workflows to {out}\n",
    )
    assert out.read_text(encoding="utf-8") == DECLARED.read_text(encoding="utf-8")
    fresh = run_bridge(*args, "--check", cwd=tmp_path)
    assert (fresh.returncode, fresh.stdout) == (0, f"{out} declares 2 workflows of {MODULE}\n")
    out.write_text(out.read_text(encoding="utf-8").replace(":mode_zq, ", ""), encoding="utf-8")
    stale = run_bridge(*args, "--check", cwd=tmp_path)
    assert (stale.returncode, stale.stderr) == (
        1,
        f"Error: {out} is stale: regenerate it with "
        f"`bridge workflows export-elixir {MODULE} --output {out}`\n",
    )


def test_errors_are_one_line(tmp_path: Path) -> None:
    missing = run_bridge("workflows", "export-elixir", "nosuch_flows", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr == (
        "Error: cannot import workflows module 'nosuch_flows': ModuleNotFoundError: No module "
        "named 'nosuch_flows' (run from the directory that holds it, or pass --app-dir)\n"
    )
    (tmp_path / "empty_flows.py").write_text("X = 1\n", encoding="utf-8")
    empty = run_bridge("workflows", "export-elixir", "empty_flows", cwd=tmp_path)
    assert empty.returncode == 2 and "module empty_flows defines no Workflow" in empty.stderr
    nowhere = tmp_path / "no" / "such" / "dir.ex"
    unwritable = run_bridge(
        "workflows",
        "export-elixir",
        "--app-dir",
        str(ROOT),
        MODULE,
        "-o",
        str(nowhere),
        cwd=tmp_path,
    )
    assert (unwritable.returncode, unwritable.stderr) == (
        2,
        f"Error: cannot write {nowhere}: No such file or directory\n",
    )
