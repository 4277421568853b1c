"""tests/guide/runner.py on small pages of its own (no database is reached): a sample that does
not do what the page says fails with the page, the line, the command and its output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guide.runner import GuideFailure, PageRun
from tests.support.guide import parse_page

FENCE = "```"
NO_DATABASE = "postgresql://nobody@127.0.0.1:1/none"


def run(tmp_path: Path, *lines: str) -> PageRun:
    scratch = tmp_path / "reader"
    scratch.mkdir(parents=True)
    page_run = PageRun(
        parse_page("docs/guide/99-x.md", "\n".join(lines) + "\n"), scratch, NO_DATABASE
    )
    page_run.run()
    return page_run


def test_a_failing_command_names_page_line_command_and_output(tmp_path: Path) -> None:
    with pytest.raises(GuideFailure) as failed:
        run(tmp_path, "# x", f"{FENCE}sh", "echo fine", "echo broken >&2; exit 3", FENCE)
    message = str(failed.value)
    assert message.startswith(
        "docs/guide/99-x.md:4: `echo broken >&2; exit 3` exited 3, the page expects 0"
    ), message
    assert "    broken" in message


def test_expected_status_and_output(tmp_path: Path) -> None:
    run(
        tmp_path,
        f"{FENCE}sh",
        "export WHO=ada",
        "mkdir -p sub",
        "cd sub",
        'echo "hi $WHO from $(basename $PWD)"; exit 5  # exits 5',
        FENCE,
        f"{FENCE}output",
        "hi ... from sub",
        FENCE,
    )
    with pytest.raises(GuideFailure) as failed:
        run(tmp_path / "2", f"{FENCE}sh", "echo one", FENCE, f"{FENCE}output", "two", FENCE)
    assert "printed something else than the output block at line 4" in str(failed.value)


def test_files_python_and_the_page_environment(tmp_path: Path) -> None:
    run(
        tmp_path,
        f"{FENCE}python",
        "# myapp/greet.py",
        "WORD = 'hello'",
        FENCE,
        f"{FENCE}sh",
        "touch myapp/__init__.py",
        "export BRIDGE_DATABASE_URL=postgresql://postgres@localhost:5432/myapp_dev",
        FENCE,
        f"{FENCE}python",
        "import os, sys",
        "from myapp.greet import WORD",
        "print(WORD, os.environ['BRIDGE_DATABASE_URL'], os.environ.get('PYTHONPATH'))",
        FENCE,
        f"{FENCE}output",
        f"hello {NO_DATABASE} None",
        FENCE,
    )


def test_background_commands_are_stopped_and_must_exit_0(tmp_path: Path) -> None:
    run(
        tmp_path,
        f"{FENCE}sh",
        "trap 'exit 0' TERM; while true; do sleep 0.1; done &",
        "sleep 1",  # the trap is set
        FENCE,
    )
    with pytest.raises(GuideFailure) as failed:
        run(tmp_path / "2", f"{FENCE}sh", "echo started; exit 4 &", "sleep 1", FENCE)
    assert "exited 4 before the page ended" in str(failed.value)
    assert "started" in str(failed.value)


def test_output_is_retried_while_something_runs_in_the_background(tmp_path: Path) -> None:
    run(
        tmp_path,
        f"{FENCE}sh",
        "trap 'exit 0' TERM; sleep 1; echo done > state; while true; do sleep 0.1; done &",
        "cat state",
        FENCE,
        f"{FENCE}output",
        "done",
        FENCE,
    )


def test_a_failing_python_block_and_an_elixir_block_that_does_not_parse(tmp_path: Path) -> None:
    with pytest.raises(GuideFailure) as failed:
        run(tmp_path, "# x", f"{FENCE}python", "import sys", "sys.exit('no such thing')", FENCE)
    assert str(failed.value).startswith("docs/guide/99-x.md:2: `python - (this block on stdin)`")
    assert "no such thing" in str(failed.value)
    with pytest.raises(GuideFailure) as failed:
        run(tmp_path / "2", f"{FENCE}elixir", "defmodule X do", FENCE)
    assert str(failed.value).startswith("docs/guide/99-x.md:1: this elixir block does not parse")


def test_a_command_that_never_ends_is_stopped_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.guide.runner.COMMAND_TIMEOUT", 1.0)
    with pytest.raises(GuideFailure) as failed:
        run(tmp_path, f"{FENCE}sh", "echo waiting; sleep 30; echo never", FENCE)
    assert "`echo waiting; sleep 30; echo never` still ran after 1 s" in str(failed.value)
    assert "    waiting" in str(failed.value)


def test_the_app_loads_lib_files_of_blocks_and_of_commands(tmp_path: Path) -> None:
    """A page's elixir blocks and the files its commands write under elixir_app/lib/ (the
    declaration `bridge workflows export-elixir --output` generates) are all loaded."""
    started: list[tuple[list[str], dict[str, str]]] = []

    class App:
        def stop(self) -> int | None:
            return 0

        def log_text(self, since: int = 0) -> str:
            return ""

    def start(lib_files: list[Path], env: dict[str, str], scratch: Path) -> App:
        started.append(([str(path.relative_to(scratch)) for path in lib_files], env))
        return App()

    scratch = tmp_path / "reader"
    scratch.mkdir()
    page = parse_page(
        "docs/guide/99-x.md",
        "\n".join(
            [
                "<!-- guide: elixir -->",
                "# x",
                f"{FENCE}elixir",
                "# lib/my_app/step.ex",
                "defmodule MyApp.Step do",
                "end",
                FENCE,
                f"{FENCE}sh",
                "mkdir -p elixir_app/lib/my_app",
                "echo '# generated' > elixir_app/lib/my_app/gen.ex",
                FENCE,
                "<!-- guide: start the Elixir app: FIXTURE_QUEUES=default:5 -->",
            ]
        )
        + "\n",
    )
    PageRun(page, scratch, NO_DATABASE, start_elixir=start, parse_elixir=None).run()
    assert started == [
        (
            ["elixir_app/lib/my_app/step.ex", "elixir_app/lib/my_app/gen.ex"],
            {"FIXTURE_QUEUES": "default:5"},
        )
    ]


def test_a_process_a_command_leaves_running_is_stopped_and_reported(tmp_path: Path) -> None:
    """`cmd > log & echo $! > pid` keeps running after its command; a page that never stops
    it (or fails before the line that does) must not leave it behind."""
    marker = f"guide-leftover-{tmp_path.name}"
    with pytest.raises(GuideFailure) as failed:
        run(tmp_path, f"{FENCE}sh", f"exec -a {marker} sleep 300 > /dev/null 2>&1 & echo $!", FENCE)
    assert "still ran when the page ended" in str(failed.value)
    assert marker not in _process_names()
    run(tmp_path / "2", f"{FENCE}sh", "sleep 300 > /dev/null 2>&1 & kill $!", FENCE)


def _process_names() -> str:
    names = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            names.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return "\n".join(names)
