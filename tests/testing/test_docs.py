"""docs/testing.md, run as a user runs it: every ``python`` block whose first line is
``# some/path.py`` is written to a scratch directory outside the repository, and plain
``python -m pytest`` runs there with the plugin loaded from the installed package (its
``pytest11`` entry point; no conftest), against the real PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_PATH = re.compile(r"# ([\w/]+\.py)\n")
# The samples that need the Elixir app (a BEAM): interop_tests/test_docs_elixir.py runs them.
ELIXIR_SAMPLES = ("tests/test_with_elixir.py",)


def doc_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for body in _BLOCK.findall(DOC.read_text(encoding="utf-8")):
        found = _PATH.match(body)
        assert found, f"a python block of docs/testing.md names no file:\n{body[:200]}"
        files[found.group(1)] = body
    return files


def test_every_sample_is_a_file() -> None:
    files = doc_files()
    assert "myapp/workers.py" in files and "tests/test_workers.py" in files
    assert len(files) == len(_BLOCK.findall(DOC.read_text(encoding="utf-8")))


def test_the_samples_pass_with_plain_pytest(pytester: pytest.Pytester, database_url: str) -> None:
    for path, body in doc_files().items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    (pytester.path / "myapp" / "__init__.py").write_text("")
    ignored = [f"--ignore={path}" for path in ELIXIR_SAMPLES]
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--bridge-database-url", database_url, *ignored, "tests"
    )
    result.assert_outcomes(passed=12)
