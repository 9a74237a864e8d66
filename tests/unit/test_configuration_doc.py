"""docs/configuration.md is generated from the commands: it must match what they say now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ferry.config_doc import REGENERATE, configuration_document

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_document_matches_the_commands() -> None:
    expected = configuration_document()
    assert DOCUMENT.read_text() == expected, (
        f"docs/configuration.md is out of date with the flags of ferry; regenerate it: {REGENERATE}"
    )


def test_the_document_lists_every_setting_with_its_flag_variable_and_default() -> None:
    text = configuration_document()
    for line in (
        "| `allow_destination` | `--allow-destination` | `FERRY_EGRESS_ALLOW_DESTINATION` "
        "| a list of strings | not set |",
        "| `deny_ports` | `--deny-ports` | `FERRY_EGRESS_DENY_PORTS` | a string "
        '| `"25,119,135-139,445,563"` |',
        "| `broker` | `--broker` | `FERRY_VOLUNTEER_BROKER` | a string | required |",
        "| `capacity` | `--capacity` | `FERRY_VOLUNTEER_CAPACITY` | an integer | `5` |",
    ):
        assert line in text
    for role in ("demo", "broker", "egress", "volunteer", "client"):
        assert f"## `ferry {role}`" in text


def test_the_generator_runs_as_the_documented_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ferry.config_doc"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == configuration_document()
