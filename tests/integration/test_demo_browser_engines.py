"""The demo network with the browser engine on both ends: a browser-engine client and
browser-engine volunteers on one machine carry a download, with no setting beyond the demo's
own (candidates on 127.0.0.1). Before, two engines each announced only mDNS (``.local``)
names, which ferry removes, so they had no candidate to try and never connected.

Also: the engine's own SDP names its host candidates by address, never by an mDNS name
(creating an offer sends nothing anywhere: no STUN server is given)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from ferry.demo import LoopbackNetwork, LoopbackNetworkConfig
from ferry.transport.browser_webrtc import BrowserEngine, BrowserEngineConfig, WebRtcMode
from ferry.transport.webrtc import WebRtcConfig

from .processes import origin_server, payload, start_curl

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.timeout(240)]

WAIT = 60.0
"""Upper bound of the wait for the first session, in seconds."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_browser_engines_on_both_ends_of_the_demo_carry_a_download(tmp_path: Path) -> None:
    body = payload(8 * 1024 * 1024)
    config = LoopbackNetworkConfig(
        state_dir=tmp_path,
        volunteers=2,
        client_paths=2,
        allow_private_destinations=True,
        client_webrtc=WebRtcMode.BROWSER,
        volunteer_webrtc=WebRtcMode.BROWSER,
    )
    with origin_server(body) as port:
        async with LoopbackNetwork(config) as net:
            assert net.client is not None and net.volunteer_stack is not None
            assert net.client.webrtc.stack_status().stack == "browser"
            assert net.volunteer_stack.stack_status().stack == "browser"
            assert all(volunteer.kind == "python-browser-engine" for volunteer in net.volunteers)
            await asyncio.wait_for(net.wait_ready(), WAIT)
            output = tmp_path / "download.bin"
            host, proxy_port = net.proxy
            curl = start_curl(f"{host}:{proxy_port}", f"http://127.0.0.1:{port}/big", output)
            for _ in range(1700):  # curl's own --max-time is 150 s
                if curl.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                curl.kill()
            _, error = curl.communicate(timeout=10)
            assert curl.returncode == 0, error.decode()
            assert _sha(output.read_bytes()) == _sha(body)
            served = sum(volunteer.bytes_relayed for volunteer in net.volunteers)
            assert served >= len(body)  # it went through the browser-engine volunteers


async def test_the_engine_announces_host_addresses_not_mdns_names() -> None:
    engine = BrowserEngine(BrowserEngineConfig(), WebRtcConfig())
    await engine.start()
    try:
        peer = engine.offering_peer()
        try:
            offer = await peer.create_offer()
        finally:
            await peer.close()
    finally:
        await engine.close()
    candidates = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
    assert candidates, offer
    assert not any(line.split()[4].endswith(".local") for line in candidates), candidates
