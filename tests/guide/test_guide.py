"""docs/guide/'s pages without Elixir, each run top to bottom as its reader would (see
tests/guide/runner.py): a scratch directory outside the repository, a fresh empty database of
the page's own, the installed ``bridge`` script. Pages marked ``<!-- guide: elixir -->`` run in
interop_tests/test_guide.py, which has the BEAM."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guide.runner import PageRun, guide_pages, load
from tests.support.pg import scratch_database

PAGES = [path for path in guide_pages() if not load(path).elixir]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", PAGES, ids=[path.stem for path in PAGES])
def test_the_page_runs_as_written(path: Path, server_url: str, tmp_path: Path) -> None:
    page = load(path)
    with scratch_database(server_url) as database_url:
        run = PageRun(page, tmp_path / "reader", database_url)
        run.scratch.mkdir()
        failure = None
        try:
            run.run()
        except AssertionError as failed:
            failure = str(failed)  # failed outside the except: no "during handling" chain
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    for skipped in run.skipped:
        print(f"{page.name}:{skipped.line}: ```{skipped.language} block not run: {skipped.reason}")
