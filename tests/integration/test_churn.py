"""Sessions that outlive volunteers and egress restarts: separate processes, SIGKILL.

Volunteers are killed with SIGKILL (no goodbye on the data channel: the client must notice
the silence itself), while curl downloads through the client's SOCKS port. Downloads are
rate-limited by curl so that they last long enough for every kill to land mid-transfer.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.waiting import wait_until_blocking

from .processes import (
    download_while_killing_volunteers,
    origin_server,
    payload,
    process_network,
    start_curl,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_survives_a_volunteer_killed_every_two_seconds(tmp_path: Path) -> None:
    body = payload(64 * 1024 * 1024)
    # The origin paces itself (about 40 s in all): curl's --limit-rate let a fast chain
    # deliver much of the body in a first burst, so it could end before the fifth kill.
    with (
        origin_server(body, rate=1.6e6) as port,
        process_network(tmp_path, volunteers=3) as net,
    ):
        download_while_killing_volunteers(
            net, f"http://127.0.0.1:{port}/big", body, tmp_path / "download.bin"
        )


def test_download_resumes_after_every_volunteer_dies_at_once(tmp_path: Path) -> None:
    body = payload(24 * 1024 * 1024)
    # The origin paces itself (about 16 s in all), so the download cannot end during the
    # 10 s outage: with curl's --limit-rate alone, what the chain had already delivered into
    # buffers let curl finish from them (seen once in CI, on a fast run).
    with (
        origin_server(body, rate=1.6e6) as port,
        process_network(tmp_path, volunteers=3) as net,
    ):
        output = tmp_path / "download.bin"
        curl = start_curl(net.proxy, f"http://127.0.0.1:{port}/big", output, limit_rate="2000K")
        time.sleep(2.0)
        assert curl.poll() is None
        for volunteer in net.volunteers:
            volunteer.kill()
        net.volunteers.clear()
        size_at_outage = output.stat().st_size if output.exists() else 0
        time.sleep(10.0)
        assert curl.poll() is None, "curl gave up during the outage"
        for _ in range(3):
            net.add_volunteer()
        _, error = curl.communicate(timeout=150)
        assert curl.returncode == 0, f"{error.decode()}\n{net.logs()}"
        assert 0 < size_at_outage < len(body)
        assert _sha(output.read_bytes()) == _sha(body)


def test_a_scout_path_ends_the_wait_when_the_volunteer_carrying_every_path_dies(
    tmp_path: Path,
) -> None:
    """One volunteer carries all three of the client's paths (the only one online when it
    connected); it is SIGKILLed while the session is idle and another volunteer waits. Nothing
    is in flight, so every path falls silent with none hearing the egress after another went
    quiet: the client asks for one more path (a scout) and, when the egress answers through
    it, drops the dead ones, instead of waiting out the long all-silent timeout (8 s). The
    session carries on: not lost, not restarted."""
    body = payload(4 * 1024 * 1024)
    with origin_server(body) as port, process_network(tmp_path, volunteers=1) as net:
        wait_until_blocking(lambda: "(3 in use)" in net.client.log(), "three paths open")
        only = net.volunteers[0]
        wait_until_blocking(lambda: "(3 active)" in only.log(), "all three through one volunteer")
        net.add_volunteer()
        victim = net.volunteers.pop(0)
        victim.kill()
        wait_until_blocking(
            lambda: net.client.log().count("went silent and was dropped") >= 3,
            "the three dead paths dropped",
            timeout=60,
        )
        output = tmp_path / "download.bin"
        curl = start_curl(net.proxy, f"http://127.0.0.1:{port}/big", output)
        _, error = curl.communicate(timeout=150)
        log = net.client.log()
        assert curl.returncode == 0, f"{error.decode()}\n{net.logs()}"
        assert _sha(output.read_bytes()) == _sha(body)
        assert "every volunteer path went silent" in log, net.logs()
        # the scout opened before any dead path was dropped: it ended the wait
        assert "(4 in use)" in log, net.logs()
        assert log.index("(4 in use)") < log.index("went silent and was dropped"), net.logs()
        assert "egress stopped answering" not in log


def test_an_egress_restart_fails_old_streams_and_new_ones_work(tmp_path: Path) -> None:
    body = payload(32 * 1024 * 1024)
    with origin_server(body) as port, process_network(tmp_path, volunteers=3) as net:
        url = f"http://127.0.0.1:{port}/big"
        old = start_curl(net.proxy, url, tmp_path / "old.bin", limit_rate="1000K")
        time.sleep(2.0)
        assert old.poll() is None
        assert net.egress is not None
        net.egress.kill()
        net.start_egress()  # same port, same state folder: same bridge line
        old.communicate(timeout=60)
        assert old.returncode != 0, "a stream of the lost session cannot complete"
        deadline = time.monotonic() + 10.0
        fresh = tmp_path / "fresh.bin"
        small = f"http://127.0.0.1:{port}/size/65536"
        succeeded = False
        while time.monotonic() < deadline and not succeeded:
            attempt = start_curl(net.proxy, small, fresh)
            attempt.communicate(timeout=30)
            succeeded = attempt.returncode == 0 and fresh.read_bytes() == body[:65536]
        assert succeeded, f"no new connection succeeded within 10 s\n{net.logs()}"
        assert "egress stopped answering" in net.client.log()
