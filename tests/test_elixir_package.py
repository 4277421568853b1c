"""integrations/elixir is the Mix package ``oban_bridge``, ready for Hex, and says what it uses.

The project is read by Mix itself (``Mix.Project.config/0`` of its ``mix.exs``), so the facts an
app's dependency resolution sees are the ones checked: the app name, the four genuine libraries
as dependencies, the Hex metadata and the files it ships. Its README must name every function of
Oban, Hephaestus, HephaestusOban and HephaestusEcto its ``lib/`` calls, so an Elixir team knows
exactly which upstream API it rests on. ``mix format --check-formatted`` keeps it clean.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "integrations" / "elixir"
LIBRARIES = ("Oban", "HephaestusOban", "HephaestusEcto", "Hephaestus")
# `Oban.insert(`, `HephaestusOban.JobMetadata.build(`: a remote call into one of the libraries.
_CALL = re.compile(r"\b((?:Oban|Hephaestus\w*)(?:\.[A-Z]\w*)*)\.([a-z_]\w*[?!]?)\(")
_DOC_LINE = re.compile(r"^\s*(#|\w.*::|@spec|@type)")

pytestmark = pytest.mark.skipif(shutil.which("mix") is None, reason="Elixir is not installed")


def mix_config(*expressions: str) -> list[str]:
    """Each expression evaluated against the package's Mix project config, one line each."""
    script = 'Mix.start(); Code.require_file("mix.exs"); c = Mix.Project.config(); ' + "; ".join(
        f"IO.puts(inspect({e}, limit: :infinity))" for e in expressions
    )
    proc = subprocess.run(
        ["elixir", "-e", script], cwd=PACKAGE, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_mix_project_is_the_oban_bridge_app_on_the_genuine_libraries() -> None:
    app, version, deps, paths = mix_config(
        "c[:app]", "c[:version]", "c[:deps]", "c[:elixirc_paths]"
    )
    assert app == ":oban_bridge"
    assert re.fullmatch(r'"\d+\.\d+\.\d+"', version)
    assert deps == (
        '[oban: "~> 2.23", hephaestus: "~> 0.3", hephaestus_oban: "~> 0.5", '
        'hephaestus_ecto: "~> 0.3"]'
    )
    assert paths == '["lib"]'
    changelog = (PACKAGE / "CHANGELOG.md").read_text()
    assert "## " + version.strip('"') in changelog


def test_hex_metadata_and_shipped_files() -> None:
    description, licenses, files = mix_config(
        "c[:description]", "c[:package][:licenses]", "c[:package][:files]"
    )
    assert len(description) > 40
    assert licenses == '["Apache-2.0"]'
    shipped = re.findall(r'"([^"]+)"', files)
    assert {"lib", "mix.exs", "README.md", "CHANGELOG.md"} <= set(shipped)
    assert all((PACKAGE / name).exists() for name in shipped), shipped


def library_calls() -> set[str]:
    """`Module.function` of every call into the libraries in lib/, comments and specs aside."""
    calls = set()
    for source in sorted((PACKAGE / "lib").rglob("*.ex")):
        in_doc = False
        for line in source.read_text().splitlines():
            if line.strip().startswith(('@moduledoc """', '@doc """', '@typedoc """')):
                in_doc = True
                continue
            if in_doc:
                in_doc = line.strip() != '"""'
                continue
            if _DOC_LINE.match(line):
                continue
            calls |= {
                f"{m}.{f}"
                for m, f in _CALL.findall(line)
                if m.split(".")[0] in LIBRARIES and f != "t"  # `Oban.Job.t()`: a type in a spec
            }
    return calls


def test_readme_names_every_upstream_function_lib_calls() -> None:
    calls = library_calls()
    assert {"Oban.insert", "Oban.Job.new", "HephaestusOban.StepResults.insert"} <= calls
    readme = (PACKAGE / "README.md").read_text()
    section = readme.split("## What it calls", 1)[1].split("\n## ", 1)[0]
    missing = sorted(call for call in calls if f"`{call}/" not in section)
    assert not missing, f"calls missing from README's 'What it calls' table: {missing}"


def test_package_is_mix_formatted() -> None:
    proc = subprocess.run(
        ["mix", "format", "--check-formatted"],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_docs_no_longer_say_to_copy_the_modules() -> None:
    docs = [ROOT / "README.md", PACKAGE / "README.md", *(ROOT / "docs").rglob("*.md")]
    copying = re.compile(r"(copy (them|these|the modules|`lib/oban_bridge)|modules to copy)", re.I)
    offenders = [str(d.relative_to(ROOT)) for d in docs if copying.search(d.read_text())]
    assert not offenders
