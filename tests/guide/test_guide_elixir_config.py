"""The guide's Elixir config samples are only parsed when a page runs (the stand-in app keeps
its own config), so here they are checked against what the oban_bridge package really reads:
every key of a ``config :oban_bridge`` sample is one ``integrations/elixir/lib`` reads, and a
deps line names the package's application."""

from __future__ import annotations

import re

import pytest

from tests.guide.runner import guide_pages, load
from tests.support.cli import ROOT
from tests.support.guide import ParseElixir

PACKAGE = ROOT / "integrations" / "elixir"
_READS = re.compile(r"setting\(:(\w+)|pick\.\(:\w+, :(\w+)")
_CONFIG = re.compile(r"^config :oban_bridge,\n((?:[ \t]+.*\n?)+)", re.M)
_KEY = re.compile(r"^[ \t]+(\w+):", re.M)
_DEP = re.compile(r"\{:(\w+), path: \"[^\"]*integrations/elixir\"")


def keys_read() -> set[str]:
    found: set[str] = set()
    for source in (PACKAGE / "lib").rglob("*.ex"):
        for match in _READS.finditer(source.read_text(encoding="utf-8")):
            found.add(match.group(1) or match.group(2))
    return found


def elixir_samples() -> list[tuple[str, str]]:
    samples = []
    for path in guide_pages():
        page = load(path)
        samples += [
            (f"{page.name}:{step.line}", step.code)
            for step in page.steps
            if isinstance(step, ParseElixir)
        ]
    return samples


def test_the_package_reads_the_keys_this_test_knows() -> None:
    assert {"repo", "oban", "prefix", "steps", "python_worker_queues"} <= keys_read()


@pytest.mark.parametrize(("where", "code"), elixir_samples(), ids=lambda value: value[:40])
def test_config_keys_and_deps_name_what_the_package_has(where: str, code: str) -> None:
    known = keys_read()
    for block in _CONFIG.findall(code):
        unknown = sorted(set(_KEY.findall(block)) - known)
        assert not unknown, f"{where}: config :oban_bridge keys the package never reads: {unknown}"
    app = re.search(r"app: :(\w+)", (PACKAGE / "mix.exs").read_text(encoding="utf-8"))
    assert app is not None
    for name in _DEP.findall(code):
        assert name == app.group(1), f"{where}: the deps line names :{name}, not :{app.group(1)}"
