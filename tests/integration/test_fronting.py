"""``ferry client --front``: the broker reached through a real reverse proxy (Debian's nginx).

nginx stands in for a CDN: TLS on loopback with a certificate for ``localhost`` from a CA the
test makes, a virtual server for ``broker.test`` that proxies to the broker, and a default
server answering 421. The client connects (TCP, TLS, SNI) to ``localhost`` and names
``broker.test`` only in the HTTP ``Host`` header, inside TLS.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.client.app import ClientApp, ClientConfig
from ferry.client.local_proxy import LocalProxyConfig
from ferry.client.rendezvous import HttpRendezvous, fronted_url
from ferry.client.session import TunnelConfig
from ferry.demo import LOOPBACK_WEBRTC
from ferry.egress.policy import DestinationPolicy
from ferry.egress.server import Egress, EgressConfig
from ferry.errors import BrokerError, ConfigError
from ferry.volunteer.relay import Volunteer, VolunteerConfig

from ..host_tools import require_host
from ..support_front import NginxFront, make_test_ca
from .chain import Origin, TableResolver, run_curl

pytestmark = [
    pytest.mark.timeout(180),
]


@pytest.fixture(autouse=True)
def _host_has_what_the_test_needs() -> None:
    require_host("nginx")


BROKER_NAME = "broker.test"
SDP = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"


@dataclass
class FrontedSetup:
    """A broker behind nginx, and where its pieces are."""

    broker: Broker
    broker_url: str
    broker_registry: CollectorRegistry
    front: NginxFront
    ca: Path
    egress_url: str


@asynccontextmanager
async def broker_behind_nginx(folder: Path, egress_url: str) -> AsyncIterator[FrontedSetup]:
    ca, cert, key = make_test_ca(folder)
    registry = CollectorRegistry()
    broker = Broker(
        BrokerConfig(host="127.0.0.1", port=0, allowed_egresses=(egress_url,)), registry=registry
    )
    broker_url = await broker.start()
    front = NginxFront(folder, broker_name=BROKER_NAME, backend=broker_url, cert=cert, key=key)
    try:
        await asyncio.to_thread(front.start)
        yield FrontedSetup(broker, broker_url, registry, front, ca, egress_url)
    finally:
        await asyncio.to_thread(front.stop)
        await broker.close()


def _answered(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("ferry_broker_clients_total", {"outcome": "answered"}) or 0.0


async def test_a_fronted_client_downloads_through_the_whole_chain(tmp_path: Path) -> None:
    size = 1_000_000
    egress = Egress(
        EgressConfig(
            state_dir=tmp_path / "egress",
            host="127.0.0.1",
            port=0,
            policy=DestinationPolicy(allow_private=True),
        ),
        registry=CollectorRegistry(),
        resolver=TableResolver({"origin.test": ["127.0.0.1"]}),
    )
    bridge = await egress.start()
    volunteer: Volunteer | None = None
    client: ClientApp | None = None
    try:
        async with (
            Origin().running() as origin,
            broker_behind_nginx(tmp_path, bridge.url) as setup,
        ):
            volunteer = Volunteer(
                VolunteerConfig(
                    broker_url=setup.broker_url,
                    webrtc=LOOPBACK_WEBRTC,
                    allow_internal_egress=True,
                )
            )
            volunteer.start()
            client = ClientApp(
                ClientConfig(
                    broker_url=f"https://{BROKER_NAME}",
                    tunnel=TunnelConfig(
                        bridge=bridge, volunteers=1, spare_volunteers=0, webrtc=LOOPBACK_WEBRTC
                    ),
                    proxy=LocalProxyConfig(host="127.0.0.1", port=0),
                    front=f"localhost:{setup.front.port}",
                    broker_ca=setup.ca,
                ),
                registry=CollectorRegistry(),
            )
            proxy_host, proxy_port = await client.start()
            assert client.tunnel is not None
            await asyncio.wait_for(client.tunnel.ensure_session(), 60)
            code, body, err = await run_curl(
                "--socks5-hostname",
                f"{proxy_host}:{proxy_port}",
                f"http://origin.test:{origin.port}/bytes/{size}",
            )
            assert code == 0, err
            assert (
                hashlib.sha256(body).hexdigest() == hashlib.sha256(origin.payload(size)).hexdigest()
            )
            # The broker answered the offer, and it came through nginx: SNI localhost,
            # Host broker.test.
            assert _answered(setup.broker_registry) >= 1
            offers = [line for line in setup.front.access_lines() if "/v1/client/offer" in line]
            assert offers, setup.front.access_lines()
            assert all(line.startswith(f"localhost {BROKER_NAME} ") for line in offers)
            assert any(line.endswith(" 200") for line in offers)
    finally:
        if client is not None:
            await client.close()
        if volunteer is not None:
            await volunteer.close()
        await egress.close()


async def test_nginx_refuses_any_other_host_and_an_untrusted_certificate_fails(
    tmp_path: Path,
) -> None:
    egress_url = "ws://127.0.0.1:9/v1/relay"
    async with broker_behind_nginx(tmp_path, egress_url) as setup:
        trusted = ssl.create_default_context(cafile=str(setup.ca))
        front = f"localhost:{setup.front.port}"
        wrong_host = HttpRendezvous("https://elsewhere.test", front=front, ssl_context=trusted)
        try:
            with pytest.raises(BrokerError, match="421"):
                await wrong_host.exchange(SDP, egress_url)
        finally:
            await wrong_host.close()
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"https://localhost:{setup.front.port}/v1/client/offer", ssl=trusted, data=b"{}"
            ) as response:
                assert response.status == 421  # Host: localhost is not the broker
            async with session.post(
                f"https://localhost:{setup.front.port}/v1/client/offer",
                ssl=trusted,
                data=b"{}",
                headers={"Host": BROKER_NAME, "Content-Type": "application/json"},
            ) as response:
                assert response.status == 400  # the broker's own refusal of a bad body
                assert (await response.json())["field"] == "version"
        untrusted = HttpRendezvous(f"https://{BROKER_NAME}", front=front)
        try:
            with pytest.raises(BrokerError, match="could not reach the broker"):
                await untrusted.exchange(SDP, egress_url)
        finally:
            await untrusted.close()
    lines = setup.front.access_lines()
    assert any(
        line.startswith("localhost elsewhere.test ") and line.endswith(" 421") for line in lines
    )
    assert _answered(setup.broker_registry) == 0


def test_front_urls() -> None:
    fronted = fronted_url("https://broker.test/v1/client/offer", "localhost:8443")
    assert fronted.connect_url == "https://localhost:8443/v1/client/offer"
    assert fronted.host_header == "broker.test"
    fronted = fronted_url("https://broker.test:444/base", "cdn.test")
    assert fronted.connect_url == "https://cdn.test:444/base"
    assert fronted.host_header == "broker.test:444"
    assert fronted_url("http://b.test/", "[::1]:80").connect_url == "http://[::1]:80/"
    for bad in ("https://cdn.test", "cdn.test/path", "", "cdn.test:99999"):
        with pytest.raises(ConfigError, match="--front"):
            fronted_url("https://broker.test/", bad)
