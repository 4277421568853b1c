"""Command-line argument errors are clear and start nothing."""

from __future__ import annotations

from click.testing import CliRunner

from bridge.cli import main


def test_worker_rejects_a_bad_cron_entry(database_url: str) -> None:
    result = CliRunner().invoke(
        main, ["--database-url", database_url, "worker", "-q", "a:1", "--cron", "bad"]
    )
    assert result.exit_code == 2
    assert "expected '<expression> <worker> [<json options>]', got 'bad'" in result.output


def test_worker_rejects_bad_queue_limits(database_url: str) -> None:
    result = CliRunner().invoke(main, ["--database-url", database_url, "worker", "-q", "a:0"])
    assert result.exit_code == 2
    assert "queue 'a': limit must be >= 1" in result.output


def test_enqueue_rejects_args_that_are_not_an_object(database_url: str) -> None:
    result = CliRunner().invoke(
        main, ["--database-url", database_url, "enqueue", "W", "--args", "[1, 2]"]
    )
    assert result.exit_code == 2
    assert "args must be a JSON object, got list" in result.output
