"""docs/guide/'s pages marked ``<!-- guide: elixir -->``, each run top to bottom as its reader
would (tests/guide/runner.py), with elixir_fixture/ playing the reader's Elixir app.

``<!-- guide: start the Elixir app -->`` starts the fixture as ``bridge_elixir_app`` starts a
user's app (bridge.testing.elixir.ElixirApp: ``DATABASE_URL``/``OBAN_PREFIX`` from the page, wait
for its ``oban_peers`` row), with every ``# lib/….ex`` file the page wrote so far added by
``mix run -r``. Mix requires those files after the application started, so the command ends
with ``-e`` printing :data:`LOADED` and the runner waits for that line too: a job the page
enqueues next finds its worker module."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bridge.testing.elixir import ElixirApp, ElixirAppConfig
from tests.guide.runner import ElixirStarter, guide_pages, load, run_page_test
from tests.support.cli import ROOT

PAGES = [path for path in guide_pages() if load(path).elixir]
APP = ROOT / "elixir_fixture"
LOADED = "guide: the page's lib/ files are loaded"
LOAD_TIMEOUT = 120.0

pytestmark = pytest.mark.usefixtures("compiled_fixture")


def start_command(lib_files: list[Path]) -> tuple[str, ...]:
    requires = [part for path in lib_files for part in ("-r", str(path))]
    return ("mix", "run", "--no-halt", "--no-compile", *requires, "-e", f"IO.puts({LOADED!r})")


def app_starter(database_url: str, log_dir: Path) -> ElixirStarter:
    def start(lib_files: list[Path], extra_env: dict[str, str], scratch: Path) -> ElixirApp:
        config = ElixirAppConfig(
            path=APP,
            command=start_command(lib_files),
            env={"MIX_ENV": "dev", **extra_env},  # dev: the build compiled_fixture made
        )
        app = ElixirApp(config, database_url, "public", log_dir / "elixir-app.log").start()
        deadline = time.monotonic() + LOAD_TIMEOUT
        while LOADED not in app.log_text():
            app.check()
            if time.monotonic() > deadline:
                app.stop()
                raise RuntimeError(f"the app never printed {LOADED!r}:\n{app.log_tail()}")
            time.sleep(0.1)
        return app

    return start


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", PAGES, ids=[path.stem for path in PAGES])
def test_the_page_runs_as_written(path: Path, server_url: str, tmp_path: Path) -> None:
    run_page_test(path, server_url, tmp_path, lambda url: app_starter(url, tmp_path))
