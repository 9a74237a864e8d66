"""The whole chain with the client's WebRTC in Chromium (``ferry client --webrtc browser``).

Separate processes, real curl, SHA-256 compared; the volunteers run aiortc or, with
``ferry volunteer --webrtc browser``, Chromium too. The churn test of the volunteer pool
(tests/integration/test_churn.py) is repeated with the browser client.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pytest

from ferry.transport.browser_webrtc import find_browser

from .processes import (
    download_while_killing_volunteers,
    origin_server,
    payload,
    process_network,
    start_curl,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.timeout(240)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _browser(log: str) -> tuple[int, Path]:
    found = re.search(r"browser engine \S+ running \(pid (\d+), profile (\S+)\)", log)
    assert found, f"the client did not say which browser it started:\n{log}"
    return int(found.group(1)), Path(found.group(2))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("volunteer_webrtc", ["python", "browser"])
def test_download_through_the_browser_client_is_intact(
    tmp_path: Path, volunteer_webrtc: str
) -> None:
    body = payload(16 * 1024 * 1024)
    with (
        origin_server(body) as port,
        process_network(
            tmp_path,
            volunteers=2,
            client_webrtc="browser",
            volunteer_arguments=("--webrtc", volunteer_webrtc),
        ) as net,
    ):
        ready = json.loads((tmp_path / "client.ready.json").read_text())
        assert ready["webrtc"] == "browser"
        assert f"WebRTC: browser engine ({find_browser()})" in net.client.log()
        for volunteer in net.volunteers:
            assert (
                json.loads((tmp_path / f"{volunteer.name}.ready.json").read_text())["webrtc"]
                == volunteer_webrtc
            )
        output = tmp_path / "download.bin"
        curl = start_curl(net.proxy, f"http://127.0.0.1:{port}/big", output)
        _, error = curl.communicate(timeout=150)
        assert curl.returncode == 0, f"{error.decode()}\n{net.logs()}"
        assert _sha(output.read_bytes()) == _sha(body)
        pid, profile = _browser(net.client.log())
        assert _alive(pid) and profile.is_dir()
        net.client.stop()  # SIGTERM: the client kills its browser on the way out
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.05)
        assert not _alive(pid), "the client left its browser running"
        assert not profile.exists(), "the client left its browser's profile behind"


def test_download_survives_volunteers_killed_under_the_browser_client(tmp_path: Path) -> None:
    body = payload(48 * 1024 * 1024)
    with (
        origin_server(body) as port,
        process_network(tmp_path, volunteers=3, client_webrtc="browser") as net,
    ):
        download_while_killing_volunteers(
            net,
            f"http://127.0.0.1:{port}/big",
            body,
            tmp_path / "download.bin",
            # 48 MiB at 2 MB/s: 25 s, well over the ~15 s the five kills take (at 3 MB/s the
            # download, faster since the engine socket stopped compressing, sometimes ended
            # before the fifth kill)
            limit_rate="2000K",
        )
        assert "WebRTC: browser engine" in net.client.log()
