"""The shipped nginx configuration (``deploy/nginx-ferry.conf``) in front of a real broker and
egress: clients behind it get a rate limit each, and cannot forge their source.

Debian's nginx runs the file as shipped, with only its ports, names and certificate paths put
to the test's own. Two clients connect from two loopback addresses (127.0.0.1 and
127.0.0.2), as two people would from two homes.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.egress.policy import DestinationPolicy
from ferry.egress.server import Egress, EgressConfig

from ..host_tools import require_host
from ..support_front import NGINX, NginxFront, make_test_ca

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "nginx-ferry.conf"
SDP = "v=0\r\ns=-\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"


@pytest.fixture(autouse=True)
def _host_has_nginx() -> None:
    require_host(NGINX)


def shipped_config(
    *, egress_port: int, broker_port: int, egress_backend: int, broker_backend: int, cert: Path,
    key: Path,
) -> str:  # fmt: skip
    """The shipped file with the test's ports and certificates, nothing else changed."""
    text = SHIPPED.read_text("utf-8")
    listens = iter((egress_port, broker_port))
    text = re.sub(r"listen 443 ssl;", lambda _: f"listen 127.0.0.1:{next(listens)} ssl;", text)
    text = re.sub(r"/etc/ssl/ferry/\w+\.pem", str(cert), text)
    text = re.sub(r"/etc/ssl/ferry/\w+\.key", str(key), text)
    text = text.replace("http://127.0.0.1:8443", f"http://127.0.0.1:{egress_backend}")
    return text.replace("http://127.0.0.1:8080", f"http://127.0.0.1:{broker_backend}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def nginx_with_shipped_config(folder: Path, egress_backend: int, broker_backend: int) -> Iterator[
    tuple[int, int, Path]
]:  # fmt: skip
    """Debian's nginx with the shipped file; yields (egress port, broker port, CA path)."""
    ca, cert, key = make_test_ca(folder)
    front = NginxFront(folder, broker_name="unused", backend="http://127.0.0.1:9", cert=cert,
                       key=key)  # fmt: skip
    egress_port, broker_port = front.port, free_port()
    included = folder / "ferry.conf"
    included.write_text(
        shipped_config(
            egress_port=egress_port,
            broker_port=broker_port,
            egress_backend=egress_backend,
            broker_backend=broker_backend,
            cert=cert,
            key=key,
        )
    )
    wrapper = front.config_path.read_text()
    http_start = wrapper.index("http {")
    front.config_path.write_text(
        wrapper[:http_start]
        + "http {\n"
        + "\n".join(line for line in wrapper.splitlines() if "_temp_path" in line)
        + f"\n    include {included};\n}}\n"
    )
    front.port = broker_port  # start() waits for this port
    front.start()
    try:
        yield egress_port, broker_port, ca
    finally:
        front.stop()


@asynccontextmanager
async def broker_and_egress(trusted_header: str | None) -> AsyncIterator[tuple[Broker, str]]:
    with tempfile.TemporaryDirectory(prefix="ferry-egress-") as state:
        egress = Egress(
            EgressConfig(
                state_dir=Path(state), host="127.0.0.1", port=0, policy=DestinationPolicy()
            ),
            registry=CollectorRegistry(),
        )
        bridge = await egress.start()
        broker = Broker(
            BrokerConfig(
                host="127.0.0.1",
                port=0,
                allowed_egresses=(bridge.url,),
                client_timeout=0.2,
                offer_rate=0.01,
                offer_burst=2,
                trusted_source_header=trusted_header,
            ),
            registry=CollectorRegistry(),
        )
        await broker.start()
        try:
            yield broker, bridge.url
        finally:
            await broker.close()
            await egress.close()


async def offer_statuses(
    url: str, egress: str, ca: Path, source: str, count: int, headers: dict[str, str]
) -> list[int]:
    """``count`` client offers sent from the loopback address ``source``."""
    context = ssl.create_default_context(cafile=str(ca))
    connector = aiohttp.TCPConnector(local_addr=(source, 0), ssl=context)
    body = json.dumps({"version": 1, "offer": SDP, "egress": egress})
    statuses = []
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(count):
            async with session.post(
                url + "/v1/client/offer",
                data=body,
                headers={"Content-Type": "application/json", **headers},
            ) as response:
                await response.read()
                statuses.append(response.status)
    return statuses


@pytest.mark.parametrize("trusted", [True, False])
async def test_two_clients_behind_the_shipped_nginx_get_a_rate_limit_each(trusted: bool) -> None:
    """With ``--trusted-source-header X-Forwarded-For`` (as shipped) each client has its own
    bucket and a forged header buys nothing; without it, as before the fix, the second
    client is refused for what the first one did."""
    with tempfile.TemporaryDirectory(prefix="ferry-nginx-") as folder:
        async with broker_and_egress("X-Forwarded-For" if trusted else None) as (broker, relay):
            egress_backend = int(relay.rsplit(":", 1)[1].split("/")[0])
            broker_backend = int(broker.base_url.rsplit(":", 1)[1])
            with nginx_with_shipped_config(Path(folder), egress_backend, broker_backend) as (
                egress_port,
                broker_port,
                ca,
            ):
                url = f"https://127.0.0.1:{broker_port}"
                first = await offer_statuses(url, relay, ca, "127.0.0.1", 3, {})
                forged = await offer_statuses(
                    url, relay, ca, "127.0.0.1", 1, {"X-Forwarded-For": "192.0.2.77"}
                )
                second = await offer_statuses(url, relay, ca, "127.0.0.2", 2, {})
                context = ssl.create_default_context(cafile=str(ca))
                async with (
                    aiohttp.ClientSession() as session,
                    session.ws_connect(
                        f"wss://127.0.0.1:{egress_port}/v1/relay", ssl=context
                    ) as relay,
                ):
                    relay_open = not relay.closed
    assert first == [503, 503, 429]  # no volunteer (the offer is held), twice; then the limit
    assert forged == [429]  # nginx overwrote the header: still the first client
    if trusted:
        assert second == [503, 503]  # the second client's own bucket
    else:
        assert second == [429, 429]  # one shared bucket: the flaw the shipped config fixes
    assert relay_open  # the egress's WebSocket passes through the same file
