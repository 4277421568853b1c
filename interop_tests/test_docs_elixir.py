"""docs/testing.md's cross-language samples, run as a user runs them: the page's files (its
``# pyproject.toml`` block included) in a scratch directory, plain pytest with the plugin from
the installed package, and the Elixir app named by ``--bridge-elixir-app`` (elixir_fixture/,
whose BadgeForge.PrintCenter is the print center the samples talk to)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.testing.elixir import PREFIX_VARIABLE, URL_VARIABLE
from tests.testing.test_docs import DOC, ELIXIR_SAMPLES, doc_files

ROOT = Path(__file__).resolve().parents[1]
_TOML = re.compile(r"^```toml\n# pyproject\.toml\n(.*?)^```", re.S | re.M)
_ELIXIR = re.compile(r"^```elixir\n# config/runtime\.exs\n(.*?)^```", re.S | re.M)

pytestmark = pytest.mark.usefixtures("compiled_fixture")
pytest_plugins = ["pytester"]


def test_the_runtime_config_sample_reads_the_variables_the_harness_sets() -> None:
    [runtime] = _ELIXIR.findall(DOC.read_text(encoding="utf-8"))
    assert f'System.get_env("{URL_VARIABLE}")' in runtime
    assert f'System.get_env("{PREFIX_VARIABLE}", "public")' in runtime


def test_the_elixir_samples_pass_with_plain_pytest(
    pytester: pytest.Pytester, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for path, body in doc_files().items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    (pytester.path / "myapp" / "__init__.py").write_text("")
    [pyproject] = _TOML.findall(DOC.read_text(encoding="utf-8"))
    (pytester.path / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    monkeypatch.setenv("MIX_ENV", "dev")  # the build compiled_fixture made
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--bridge-database-url",
        database_url,
        f"--bridge-elixir-app={ROOT / 'elixir_fixture'}",
        "--bridge-elixir-command=mix run --no-halt --no-compile",  # sessions share its _build
        *ELIXIR_SAMPLES,
    )
    result.assert_outcomes(passed=2)
