"""tests/support/guide.py: page text -> steps, output matching and pip lines (no database)."""

from __future__ import annotations

import pytest

from tests.guide.runner import GUIDE, guide_pages, load
from tests.support.guide import (
    Command,
    GuideSyntaxError,
    ParseElixir,
    RunPython,
    Shell,
    Skipped,
    StartElixirApp,
    WriteFile,
    output_matches,
    parse_page,
    pip_problem,
)

FENCE = "```"


def page(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def test_file_blocks_are_written_and_a_bare_python_block_runs() -> None:
    text = page(
        "# Title",
        "",
        f"{FENCE}python",
        "# myapp/workers.py",
        "X = 1",
        FENCE,
        f"{FENCE}toml",
        "# pyproject.toml",
        "[tool.bridge]",
        FENCE,
        f"{FENCE}sql",
        "-- schema.sql",
        "SELECT 1;",
        FENCE,
        f"{FENCE}python",
        "print('hi')",
        FENCE,
    )
    steps = parse_page("p.md", text).steps
    assert steps == (
        WriteFile(3, "python", "myapp/workers.py", "# myapp/workers.py\nX = 1\n"),
        WriteFile(7, "toml", "pyproject.toml", "# pyproject.toml\n[tool.bridge]\n"),
        WriteFile(11, "sql", "schema.sql", "-- schema.sql\nSELECT 1;\n"),
        RunPython(15, "print('hi')\n"),
    )


def test_sh_lines_become_commands_of_their_kind() -> None:
    text = page(
        f"{FENCE}sh",
        "# a comment",
        "pip install 'oban-bridge[embedded]'",
        "",
        "export BRIDGE_DATABASE_URL=postgresql://postgres@localhost/myapp_dev",
        "export NAME=ada",
        "cd myapp",
        "bridge worker --queues default:5 \\",
        "    --workers myapp.workers &",
        "bridge schema verify   # exits 5",
        "bridge jobs list  # newest first",
        FENCE,
    )
    [shell] = parse_page("p.md", text).steps
    assert isinstance(shell, Shell)
    assert shell.commands == (
        Command(3, "pip install 'oban-bridge[embedded]'", kind="pip"),
        Command(
            5,
            "export BRIDGE_DATABASE_URL=postgresql://postgres@localhost/myapp_dev",
            kind="database",
            name="BRIDGE_DATABASE_URL",
            value="postgresql://postgres@localhost/myapp_dev",
        ),
        Command(6, "export NAME=ada", kind="export", name="NAME", value="ada"),
        Command(7, "cd myapp", kind="cd", value="myapp"),
        Command(8, "bridge worker --queues default:5 --workers myapp.workers", kind="background"),
        Command(10, "bridge schema verify   # exits 5", exits=5),
        Command(11, "bridge jobs list  # newest first"),
    )


def test_an_output_block_belongs_to_the_block_before_it() -> None:
    text = page(
        f"{FENCE}sh",
        "bridge jobs list",
        FENCE,
        "You see:",
        f"{FENCE}output",
        "ID  WORKER",
        "...",
        FENCE,
        f"{FENCE}python",
        "print(1)",
        FENCE,
        f"{FENCE}output",
        "1",
        FENCE,
    )
    shell, python = parse_page("p.md", text).steps
    assert isinstance(shell, Shell) and isinstance(python, RunPython)
    assert shell.expected is not None and shell.expected.line == 5
    assert shell.expected.text == "ID  WORKER\n...\n"
    assert python.expected is not None and python.expected.text == "1\n"


def test_skips_are_listed_with_their_reason_and_take_their_output_along() -> None:
    text = page(
        "<!-- guide: skip: hex.pm is unreachable here -->",
        f"{FENCE}sh",
        "mix deps.get",
        FENCE,
        f"{FENCE}output",
        "Resolving Hex dependencies...",
        FENCE,
        "<!-- guide: skip: a systemd unit -->",
        f"{FENCE}ini",
        "[Service]",
        FENCE,
    )
    assert parse_page("p.md", text).skipped == (
        Skipped(2, "sh", "hex.pm is unreachable here"),
        Skipped(9, "ini", "a systemd unit"),
    )


def test_elixir_pages_start_the_app_and_parse_their_blocks() -> None:
    text = page(
        "<!-- guide: elixir -->",
        "# First job",
        f"{FENCE}elixir",
        "# lib/my_app/hello.ex",
        "defmodule MyApp.Hello do",
        "end",
        FENCE,
        f"{FENCE}elixir",
        '{:oban_bridge, "~> 0.1"}',
        FENCE,
        "<!-- guide: start the Elixir app -->",
        "<!-- guide: start the Elixir app: FIXTURE_BRIDGE_STEPS=A.B,C.D X=1 -->",
    )
    parsed = parse_page("p.md", text)
    assert parsed.elixir
    assert parsed.steps == (
        ParseElixir(
            3, "# lib/my_app/hello.ex\ndefmodule MyApp.Hello do\nend\n", "lib/my_app/hello.ex"
        ),
        ParseElixir(8, '{:oban_bridge, "~> 0.1"}\n', None),
        StartElixirApp(11),
        StartElixirApp(12, (("FIXTURE_BRIDGE_STEPS", "A.B,C.D"), ("X", "1"))),
    )
    assert not parse_page(
        "p.md", page("# x", "", "", "", "", "<!-- guide: skip: x -->", f"{FENCE}sh", "x", FENCE)
    ).elixir


def test_indented_blocks_lose_their_indent() -> None:
    text = page("1. Run:", "", f"   {FENCE}sh", "   bridge doctor", f"   {FENCE}")
    [shell] = parse_page("p.md", text).steps
    assert isinstance(shell, Shell) and shell.commands == (Command(4, "bridge doctor"),)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((f"{FENCE}", "x", FENCE), "p.md:1: a code block needs a language"),
        ((f"{FENCE}text", "x", FENCE), "p.md:1: the runner does not know ```text blocks"),
        ((f"{FENCE}output", "x", FENCE), "p.md:1: an output block must come right after"),
        ((f"{FENCE}toml", "[x]", FENCE), "p.md:1: a ```toml block must start with a path line"),
        ((f"{FENCE}sql", "-- /etc/x.sql", FENCE), "p.md:1: a ```sql block must start with a path"),
        ((f"{FENCE}sh", "x"), "p.md:1: a code block that is never closed"),
        (("<!-- guide: skip: -->", f"{FENCE}sh", "x", FENCE), "p.md:1: a skip needs its reason"),
        (("<!-- guide: skip: why -->", "text", f"{FENCE}sh", FENCE), "p.md:2: a skip directive"),
        (("<!-- guide: start the Elixir app -->",), "p.md:1: <!-- guide: start the Elixir app"),
        (("<!-- guide: run it -->",), "p.md:1: unknown guide directive"),
        (
            ("<!-- guide: elixir -->", "<!-- guide: start the Elixir app: steps -->"),
            "p.md:2: 'steps': the app's variables are NAME=value",
        ),
        ((f"{FENCE}sh", "bridge worker &", FENCE, f"{FENCE}output", FENCE), "p.md:4: the block"),
        ((f"{FENCE}sh", "bridge worker &  # exits 1", FENCE), "p.md:2: a background command"),
    ],
)
def test_what_the_runner_cannot_run_is_an_error_naming_the_line(
    lines: tuple[str, ...], message: str
) -> None:
    with pytest.raises(GuideSyntaxError) as raised:
        parse_page("p.md", page(*lines))
    assert str(raised.value).startswith(message), raised.value


@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        ("a\nb\n", "a  \nb\n\n", True),
        ("a\nb\n", "a\nc\n", False),
        ("a\n...\nz\n", "a\nb\nc\nz\n", True),
        ("a\n...\nz\n", "a\nz\n", True),
        ("a\n...\nz\n", "a\nb\n", False),
        ("job 1 ... completed\n", "job 1 (GenerateBadge) completed\n", True),
        ("job ...\n", "job 1\nmore\n", False),
        ("...\nlast\n", "x\ny\nlast\n", True),
        ("a.b*c\n", "a.b*c\n", True),
        ("a.b*c\n", "axb*c\n", False),
    ],
)
def test_output_matching(expected: str, actual: str, matches: bool) -> None:
    assert output_matches(expected, actual) is matches


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("pip install oban-bridge", None),
        ("pip install 'oban-bridge[embedded]'", None),
        ("pip install -e '.[embedded,examples]'", None),
        ("python -m pip install -e .", None),
        ("pip install requests", "'requests' is not this project"),
        ("pip install 'oban-bridge[postgres]'", "'oban-bridge[postgres]': no extra postgres"),
        ("pip uninstall oban-bridge", "only `pip install …` lines"),
    ],
)
def test_pip_lines_must_install_this_project(command: str, problem: str | None) -> None:
    found = pip_problem(command, {"embedded", "examples", "dev"})
    assert (found is None) if problem is None else (found or "").startswith(problem), found


@pytest.mark.parametrize("path", guide_pages(), ids=lambda path: path.stem)
def test_every_guide_page_parses(path: object) -> None:
    from pathlib import Path

    assert isinstance(path, Path)
    load(path)


def test_the_table_of_contents_runs_nothing() -> None:
    readme = GUIDE / "README.md"
    if readme.exists():
        assert parse_page("docs/guide/README.md", readme.read_text(encoding="utf-8")).steps == ()
