"""docs/guide/'s pages without Elixir, each run top to bottom as its reader would (see
tests/guide/runner.py): a scratch directory outside the repository, a fresh empty database of
the page's own, the installed ``bridge`` script. Pages marked ``<!-- guide: elixir -->`` run in
interop_tests/test_guide.py, which has the BEAM."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guide.runner import guide_pages, load, run_page_test

PAGES = [path for path in guide_pages() if not load(path).elixir]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", PAGES, ids=[path.stem for path in PAGES])
def test_the_page_runs_as_written(path: Path, server_url: str, tmp_path: Path) -> None:
    run_page_test(path, server_url, tmp_path)
