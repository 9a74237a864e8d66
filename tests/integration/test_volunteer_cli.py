"""``ferry volunteer``'s limits and test-only impairment flags, as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from .processes import free_port
from .test_cli import FerryProcesses, run_ferry

pytestmark = pytest.mark.integration


def test_help_shows_the_limits_and_hides_the_test_only_flags() -> None:
    status, output = run_ferry(["volunteer", "--help"])
    assert status == 0, output
    for word in ("--max-rate", "FERRY_VOLUNTEER_MAX_RATE", "--quota", "FERRY_VOLUNTEER_QUOTA"):
        assert word in output, f"--help omits {word}:\n{output}"
    assert "impair" not in output.lower(), output


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--max-rate", "2.5M"], ("--max-rate", "'2.5M'", "whole number")),
        (["--quota", "lots"], ("--quota", "'lots'", "byte count")),
        (["--quota", "99999999T"], ("--quota", "too large")),
        (["--test-impair-loss", "1.5"], ("--test-impair-loss",)),
    ],
)
def test_bad_limits_are_refused_with_a_clear_message(
    arguments: list[str], words: tuple[str, ...]
) -> None:
    status, output = run_ferry(["volunteer", "--broker", "http://127.0.0.1:9", *arguments])
    assert status == 2, output
    assert "Traceback" not in output
    text = " ".join(output.split())
    for word in words:
        assert word in text, f"the message does not name {word}:\n{output}"


def test_limits_from_environment_variables_and_the_test_only_warning(tmp_path: Path) -> None:
    # Nothing listens on the broker port: the volunteer polls, fails and retries meanwhile.
    broker = f"http://127.0.0.1:{free_port()}"
    ready = tmp_path / "volunteer.json"
    with FerryProcesses(tmp_path) as ferry:
        volunteer = ferry.start(
            "volunteer",
            [
                "volunteer",
                "--broker",
                broker,
                "--ice-address",
                "127.0.0.1",
                "--test-impair-loss",
                "0.05",
                "--ready-file",
                str(ready),
            ],
            environment={"FERRY_VOLUNTEER_MAX_RATE": "2M", "FERRY_VOLUNTEER_QUOTA": "10Gi"},
        )
        content = volunteer.wait_for_ready_file(ready)
        assert content["max_rate"] == 2_000_000
        assert content["quota"] == 10 * 1024**3
        volunteer.stop()
    output = " ".join(volunteer.output().split())
    assert "at most 2000000 bytes/s" in output, output
    assert "at most 10737418240 bytes per UTC day" in output, output
    assert "TESTING ONLY" in output, output
