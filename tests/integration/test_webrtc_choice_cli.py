"""``--webrtc`` and ``--browser`` on the command line: clear refusals and a plain fallback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ferry.core.bridge_line import BridgeLine

from .processes import ferry_command, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BRIDGE = str(BridgeLine("ws://127.0.0.1:9/v1/relay", bytes.fromhex("ab" * 32)))
"""A well-formed bridge line to nowhere (port 9: nothing listens; no volunteer is needed)."""


def _environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    environment["NO_COLOR"] = "1"
    environment["COLUMNS"] = "200"
    return environment


def _client(*arguments: str) -> list[str]:
    return [
        *ferry_command(),
        "client",
        "--broker",
        f"http://127.0.0.1:{free_port()}",
        "--bridge",
        BRIDGE,
        "--listen",
        "127.0.0.1:0",
        "--ice-address",
        "127.0.0.1",
        *arguments,
    ]


def test_browser_mode_without_a_usable_browser_exits_with_a_clear_error() -> None:
    result = subprocess.run(
        _client("--webrtc", "browser", "--browser", "/nonexistent/chromium"),
        capture_output=True,
        text=True,
        timeout=60,
        env=_environment(),
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "could not start the browser /nonexistent/chromium" in output
    assert "Traceback" not in output


def test_an_unknown_webrtc_choice_is_refused() -> None:
    result = subprocess.run(
        _client("--webrtc", "firefox"),
        capture_output=True,
        text=True,
        timeout=60,
        env=_environment(),
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "--webrtc must be browser, python or auto, not 'firefox'" in output


def test_auto_falls_back_to_python_with_a_warning_when_the_browser_fails(tmp_path: Path) -> None:
    log = tmp_path / "client.log"
    with log.open("wb") as output:
        client = subprocess.Popen(
            _client("--webrtc", "auto", "--browser", "/bin/false"),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=_environment(),
        )
    try:
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline and "Looking for volunteers" not in text:
            assert client.poll() is None, log.read_text()
            time.sleep(0.1)
            text = log.read_text()
        assert "WebRTC: Python (aiortc: the browser did not start" in text, text
        assert "Warning: the Python WebRTC stack (aiortc) is in use" in text
        assert "easily" in text and "--webrtc browser" in text
    finally:
        client.send_signal(signal.SIGTERM)
        client.wait(timeout=20)
