"""Each example's tests run as its README says: plain ``pytest`` in the example's folder (its own
pyproject.toml: pythonpath, and [tool.bridge.testing] naming elixir_fixture/ as the Elixir app),
with only the database given. Nothing of this repository's conftests is loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.usefixtures("compiled_fixture")


@pytest.mark.parametrize(
    ("example", "tests"), [("badge_forge", 3), ("mixed_workflow", 2), ("elixir_workflow", 2)]
)
def test_the_example_tests_pass_with_plain_pytest(
    database_url: str, example: str, tests: int
) -> None:
    pytest_script = Path(sys.executable).parent / "pytest"
    env = dict(
        os.environ,
        BRIDGE_TEST_DATABASE_URL=database_url,
        MIX_ENV="dev",  # the build compiled_fixture made, so `mix run` compiles nothing
        PYTHONDONTWRITEBYTECODE="1",  # leave the example's folder as it was
    )
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(pytest_script), "-p", "no:cacheprovider", "-q"],
        cwd=EXAMPLES / example,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert f"{tests} passed" in output.splitlines()[-1], output
