"""The demo starts the client's local status page and names it.

In process: a :class:`LoopbackNetwork` with the page on (real broker, egress, volunteers,
client, WebRTC and QUIC on 127.0.0.1), its page fetched with aiohttp over loopback; with the
page's port taken, the network runs without it (or fails, when the page is required). As a
process: ``ferry demo --port 0`` prints the page's address and writes it to its ready file.
Nothing asserts a duration; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from ferry.client.local_page import LocalPageConfig
from ferry.demo import LoopbackNetwork, LoopbackNetworkConfig
from ferry.errors import ConfigError

from .test_cli import FerryProcesses, _one_line, proxy_address, ready_string, run_ferry

pytestmark = pytest.mark.timeout(180)

WAIT = 30.0
"""Upper bound of any single wait in these tests, in seconds."""


async def test_the_demo_network_serves_the_client_page_guarded(tmp_path: Path) -> None:
    config = LoopbackNetworkConfig(state_dir=tmp_path, page=LocalPageConfig(port=0))
    async with LoopbackNetwork(config) as net, aiohttp.ClientSession() as http:
        await asyncio.wait_for(net.wait_ready(), WAIT)
        url = net.page_url
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        host, port = net.proxy
        async with http.get(url) as response:
            assert response.status == 200
            page = await response.text()
        assert f"chromium --proxy-pac-url={url}proxy.pac" in page
        async with http.get(f"{url}proxy.pac") as response:
            assert response.status == 200
            assert f'"SOCKS5 {host}:{port}"' in await response.text()
        async with http.get(f"{url}v1/status") as response:
            assert response.status == 200
            status = await response.json()
        assert status["connected"] is True and status["state"] == "connected"
        assert status["bridge"] == net.bridge_line
        # The client's guards: a foreign Host (DNS rebinding) and a POST without the token.
        async with http.get(url, headers={"Host": f"attacker.example:{port}"}) as response:
            assert response.status == 403
        async with http.post(f"{url}v1/reconnect") as response:
            assert response.status == 403
        assert net.client is not None
        refused = net.client.registry.get_sample_value
        assert refused("ferry_client_page_refused_total", {"reason": "host"}) == 1
        assert refused("ferry_client_page_refused_total", {"reason": "token"}) == 1


async def test_the_demo_network_runs_without_the_page_when_its_port_is_taken(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        page = LocalPageConfig(port=taken.getsockname()[1])
        config = LoopbackNetworkConfig(state_dir=tmp_path, page=page)
        async with LoopbackNetwork(config) as net:
            await asyncio.wait_for(net.wait_ready(), WAIT)
            assert net.page_url == ""
            assert net.client is not None and net.client.page is None
        required = LoopbackNetworkConfig(state_dir=tmp_path, page=page, page_optional=False)
        network = LoopbackNetwork(required)
        try:
            with pytest.raises(ConfigError, match="status page cannot listen"):
                await network.start()
        finally:
            await network.close()


def fetch(url: str) -> tuple[int, bytes]:
    """GET ``url`` (loopback, no proxy); its status and body."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=WAIT) as response:
        return int(response.status), bytes(response.read())


def test_ferry_demo_prints_the_page_and_names_it_in_the_ready_file(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready.json"
    with FerryProcesses(tmp_path) as ferry:
        demo = ferry.start("demo", ["demo", "--port", "0", "--ready-file", str(ready_file)])
        ready = demo.wait_for_ready_file(ready_file)
        proxy = proxy_address(ready)
        page = ready_string(ready, "ui")
        assert page.startswith("http://127.0.0.1:") and page != f"http://{proxy}/"
        code, body = fetch(page)
        assert code == 200
        assert f"--proxy-pac-url={page}proxy.pac".encode() in body
        code, body = fetch(f"{page}proxy.pac")
        assert code == 200
        assert f'"SOCKS5 {proxy}"'.encode() in body
        code, body = fetch(f"{page}v1/status")
        assert code == 200
        assert json.loads(body)["connected"] is True

        assert demo.stop(signal.SIGINT) == 0, "ferry demo did not exit 0 on SIGINT"
        said = _one_line(demo.output())
        assert f"SOCKS5 and HTTP proxy on {proxy}" in said
        assert f"page {page} (the client's status page)" in said, said
        assert "Traceback" not in said, said


def test_ferry_demo_help_shows_the_page_option() -> None:
    code, output = run_ferry(["demo", "--help"])
    assert code == 0
    assert "--ui-listen" in output and "FERRY_DEMO_UI_LISTEN" in output
