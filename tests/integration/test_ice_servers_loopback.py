"""ICE servers from the broker, on loopback: the endpoint, the poll response, the secret that
never leaves the broker, and real Python clients and volunteers gathering with them.

The NAT-traversal tests with real home routers and coturn live in
``tests/integration/test_nat_traversal.py``; these check the parts that need no namespace.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.client.app import ClientApp, ClientConfig
from ferry.client.local_proxy import LocalProxyConfig
from ferry.client.session import TunnelConfig
from ferry.core.broker_messages import decode_ice_servers_response
from ferry.core.ice_servers import IceServer
from ferry.demo import LOOPBACK_WEBRTC
from ferry.volunteer.broker_client import BrokerClient, new_volunteer_id
from ferry.volunteer.relay import Volunteer, VolunteerConfig

from ..support_nat import Rfc5780StunServer
from .chain import Origin, egress_and_broker, run_curl

SECRET = b"test-secret-0123456789-never-leaves"
EGRESS = "ws://127.0.0.1:9/v1/relay"
SDP = "v=0\r\ns=-\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
CLIENT_WEBRTC = replace(LOOPBACK_WEBRTC, remote_candidate_addresses=("127.0.0.1",))


@asynccontextmanager
async def broker_with(config: BrokerConfig) -> AsyncIterator[Broker]:
    broker = Broker(config, registry=CollectorRegistry())
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


async def post(url: str, body: bytes) -> tuple[int, bytes, str | None]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"Content-Type": "application/json"}) as response,
    ):
        return response.status, await response.read(), response.headers.get("Retry-After")


def public_servers() -> tuple[IceServer, ...]:
    """Servers handed out but never contacted in these tests (documentation addresses)."""
    return (
        IceServer("stun:198.51.100.1:3478"),
        IceServer("stun:198.51.100.2:3478"),
        IceServer("stun:198.51.100.3:3478"),
        IceServer("turn:198.51.100.9:3478?transport=udp"),
    )


async def test_the_endpoint_hands_each_peer_a_random_subset_with_fresh_turn_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    config = BrokerConfig(
        port=0,
        allowed_egresses=(EGRESS,),
        ice_servers=public_servers(),
        ice_servers_per_peer=2,
        turn_secret=SECRET,
        turn_credential_ttl=600,
        ice_burst=50,
    )
    async with broker_with(config) as broker:
        url = broker.base_url + "/v1/ice-servers"
        lists = []
        for _ in range(12):
            status, body, _ = await post(url, b'{"version":1}')
            assert status == 200, body
            lists.append(decode_ice_servers_response(body))
        for response in lists:
            assert response.ttl == 300
            stun = [s for s in response.ice_servers if not s.is_turn]
            turn = [s for s in response.ice_servers if s.is_turn]
            assert len(stun) == 2 and len(turn) == 1
            username, credential = turn[0].username, turn[0].credential
            assert username is not None and credential is not None
            digest = hmac.new(SECRET, username.encode(), hashlib.sha1).digest()
            assert credential == base64.b64encode(digest).decode()
        assert len({r.ice_servers[2].username for r in lists}) == 12  # minted per request
        assert len({r.ice_servers[:2] for r in lists}) > 1  # the subsets differ
        pages = []
        async with aiohttp.ClientSession() as session:
            for path in ("/metrics", "/status", "/openapi.json", "/v1/stats", "/"):
                async with session.get(broker.base_url + path) as response:
                    pages.append(await response.text())
        assert "ferry_broker_turn_credentials_total 12.0" in pages[0]
    secret_text = SECRET.decode()
    assert not [page for page in pages if secret_text in page]
    assert secret_text not in caplog.text
    assert secret_text not in repr(config)


async def test_a_match_carries_its_own_ice_servers_to_the_volunteer() -> None:
    config = BrokerConfig(
        port=0,
        allowed_egresses=(EGRESS,),
        ice_servers=public_servers(),
        ice_servers_per_peer=1,
        turn_secret=SECRET,
    )
    async with broker_with(config) as broker, aiohttp.ClientSession() as session:
        volunteer = BrokerClient(broker.base_url, session)
        poll = asyncio.create_task(volunteer.poll_response(new_volunteer_id(), 1))
        await asyncio.sleep(0.2)
        offer = asyncio.create_task(
            post(
                broker.base_url + "/v1/client/offer",
                json.dumps({"version": 1, "offer": SDP, "egress": EGRESS}).encode(),
            )
        )
        response = await asyncio.wait_for(poll, 10)
        offer.cancel()
        await asyncio.gather(offer, return_exceptions=True)
    assert response.match is not None
    assert len(response.ice_servers) == 2
    turn = next(s for s in response.ice_servers if s.is_turn)
    assert turn.username is not None and turn.credential is not None


async def test_malformed_and_too_frequent_requests_are_refused_and_counted() -> None:
    config = BrokerConfig(
        port=0, allowed_egresses=(EGRESS,), ice_servers=public_servers()[:1], ice_burst=2
    )
    async with broker_with(config) as broker:
        url = broker.base_url + "/v1/ice-servers"
        status, body, _ = await post(url, b'{"version":1,"nat":"restricted"}')
        assert status == 400 and b'"field":"nat"' in body
        statuses = [(await post(url, b'{"version":1}'))[0] for _ in range(2)]
        status, body, retry_after = await post(url, b'{"version":1}')
        async with (
            aiohttp.ClientSession() as session,
            session.get(broker.base_url + "/metrics") as metrics,
        ):
            text = await metrics.text()
    assert statuses == [200, 200]
    assert status == 429 and retry_after is not None and int(retry_after) >= 1
    assert 'endpoint="ice_servers",reason="unknown_field"' in text
    assert 'endpoint="ice_servers",reason="rate_limited"' in text


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str) -> None:
    """Wait (20 s at most) until ``text`` was logged."""
    for _ in range(200):
        if text in caplog.text:
            return
        await asyncio.sleep(0.1)


class SilentUdpServer:
    """A UDP socket on 127.0.0.1 that reads and never answers (a blocked STUN server)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.port = self.socket.getsockname()[1]

    def received(self) -> int:
        count = 0
        while count < 10_000:
            try:
                self.socket.recv(2048)
            except BlockingIOError:
                return count
            count += 1
        return count


@contextmanager
def silent_udp_server() -> Iterator[SilentUdpServer]:
    server = SilentUdpServer()
    try:
        yield server
    finally:
        server.socket.close()


async def download_through(client: ClientApp, origin: Origin, size: int) -> bytes:
    assert client.proxy_address is not None
    host, port = client.proxy_address
    code, body, err = await run_curl(
        "--socks5-hostname",
        f"{host}:{port}",
        f"http://127.0.0.1:{origin.port}/bytes/{size}",
        timeout=60,
    )
    assert code == 0, err
    return body


@pytest.mark.parametrize("allow_internal", [True, False])
async def test_clients_and_volunteers_gather_with_the_brokers_stun_servers(
    allow_internal: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """One live STUN server and one silent one, both on loopback. Allowed (tests only),
    both roles ask the live one, leave the silent one out and say so, and connect; not
    allowed (the default), both refuse loopback servers from the broker, count them, and
    still connect with host candidates."""
    caplog.set_level(logging.INFO)
    stun = Rfc5780StunServer(("127.0.0.1", "127.0.0.2"))
    await stun.start()
    origin = Origin()
    with silent_udp_server() as silent:
        servers = (
            IceServer(f"stun:127.0.0.1:{silent.port}"),
            IceServer(f"stun:127.0.0.1:{stun.ports[0]}"),
        )
        try:
            async with (
                origin.running(),
                egress_and_broker(ice_servers=servers) as (_, bridge, broker),
            ):
                volunteer = Volunteer(
                    VolunteerConfig(
                        broker_url=broker.base_url,
                        webrtc=LOOPBACK_WEBRTC,
                        allow_internal_ice_servers=allow_internal,
                        allow_internal_egress=True,
                    ),
                    registry=CollectorRegistry(),
                )
                volunteer.start()
                registry = CollectorRegistry()
                client = ClientApp(
                    ClientConfig(
                        broker_url=broker.base_url,
                        tunnel=TunnelConfig(
                            bridge=bridge, volunteers=1, spare_volunteers=0, webrtc=CLIENT_WEBRTC
                        ),
                        proxy=LocalProxyConfig(host="127.0.0.1", port=0),
                        allow_internal_ice_servers=allow_internal,
                    ),
                    registry=registry,
                )
                try:
                    await client.start()
                    body = await download_through(client, origin, 300_000)
                    assert body == Origin.payload(300_000)
                    if allow_internal:  # the silent server is named once its probe gives up
                        await wait_for_log(caplog, f"stun:127.0.0.1:{silent.port} is left out")
                finally:
                    await client.close()
                    await volunteer.close()
        finally:
            stun.close()
        silent_requests = silent.received()
    refused = registry.get_sample_value(
        "ferry_client_ice_servers_refused_total", {"reason": "internal_address"}
    )
    left_out = f"the STUN server stun:127.0.0.1:{silent.port} is left out"
    if allow_internal:
        assert stun.requests_seen >= 2  # the client's and the volunteer's gathering, at least
        assert silent_requests >= 2  # the probes were sent, and went unanswered
        assert left_out in caplog.text
        assert not refused
    else:
        assert stun.requests_seen == 0 and silent_requests == 0
        assert refused is not None and refused >= 2
        assert "on an internal address; it is not used" in caplog.text
