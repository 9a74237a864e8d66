"""A broker, an egress, an origin and Python volunteers on 127.0.0.1, for client-side tests.

The egress may reach loopback, and resolves the name ``origin.test`` (and only it, from a
fixed table) to 127.0.0.1, so a browser can ask for ``http://origin.test:PORT/`` through the
proxy and get the local origin. Clients are :class:`~ferry.client.app.ClientApp` with the
status page on a free loopback port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker
from ferry.client.app import ClientApp, ClientConfig
from ferry.client.local_page import LocalPageConfig
from ferry.client.local_proxy import LocalProxyConfig
from ferry.client.self_check import SELF_CHECK_FETCH, FetchTarget, SelfCheckConfig
from ferry.client.session import TunnelConfig
from ferry.core.bridge_line import BridgeLine
from ferry.demo import LOOPBACK_WEBRTC
from ferry.egress.server import Egress
from ferry.volunteer.relay import Volunteer, VolunteerConfig

from .chain import Origin, TableResolver, egress_and_broker

ORIGIN_NAME = "origin.test"
"""The name the egress resolves to 127.0.0.1 (and no other name)."""

CLIENT_WEBRTC = replace(LOOPBACK_WEBRTC, remote_candidate_addresses=("127.0.0.1",))
"""The Python client's WebRTC: loopback candidates only."""

FAST_CHECK = SelfCheckConfig(
    broker_timeout=3.0,
    front_timeout=2.0,
    stun_timeout=2.0,
    volunteer_timeout=20.0,
    channel_timeout=10.0,
    identity_timeout=10.0,
    fetch_timeout=10.0,
)
"""Self-check limits for tests (the broker's own wait for a volunteer is 10 s)."""


class ClientNetwork:
    """Broker, egress, origin and volunteers on loopback; see the module docstring."""

    def __init__(self) -> None:
        self.origin = Origin()
        self.resolver = TableResolver({ORIGIN_NAME: ["127.0.0.1"]})
        self.broker: Broker | None = None
        self.egress: Egress | None = None
        self.bridge: BridgeLine | None = None
        self.clients: list[ClientApp] = []
        self.volunteers: list[Volunteer] = []

    @property
    def broker_url(self) -> str:
        assert self.broker is not None
        return self.broker.base_url

    @asynccontextmanager
    async def running(
        self, *, volunteers: int = 1, broker_client_timeout: float = 10.0
    ) -> AsyncIterator[ClientNetwork]:
        async with (
            self.origin.running(),
            egress_and_broker(
                resolver=self.resolver, broker_client_timeout=broker_client_timeout
            ) as (self.egress, self.bridge, self.broker),
        ):
            for _ in range(volunteers):
                self.start_volunteer()
            try:
                yield self
            finally:
                for client in self.clients:
                    await client.close()
                for volunteer in self.volunteers:
                    await volunteer.close()

    def start_volunteer(self) -> Volunteer:
        """A Python volunteer (loopback WebRTC); closed with the network."""
        volunteer = Volunteer(
            VolunteerConfig(
                broker_url=self.broker_url, webrtc=LOOPBACK_WEBRTC, allow_internal_egress=True
            )
        )
        volunteer.start()
        self.volunteers.append(volunteer)
        return volunteer

    def client_config(
        self,
        *,
        bridge: BridgeLine | None = None,
        broker_url: str | None = None,
        language: str = "en",
        page: bool = True,
        check_fetch: FetchTarget = SELF_CHECK_FETCH,
    ) -> ClientConfig:
        """A client of this network (page on a free port, proxy on a free port)."""
        assert self.bridge is not None
        return ClientConfig(
            broker_url=broker_url or self.broker_url,
            tunnel=TunnelConfig(
                bridge=bridge or self.bridge, volunteers=1, spare_volunteers=0, webrtc=CLIENT_WEBRTC
            ),
            proxy=LocalProxyConfig(host="127.0.0.1", port=0),
            page=LocalPageConfig(port=0, language=language) if page else None,
            check=FAST_CHECK,
            check_fetch=check_fetch,
        )

    async def start_client(
        self, config: ClientConfig | None = None, *, connect: bool = True
    ) -> ClientApp:
        """Start a client (closed with the network); wait for its session if ``connect``."""
        client = ClientApp(config or self.client_config(), registry=CollectorRegistry())
        self.clients.append(client)
        await client.start()
        if connect:
            assert client.tunnel is not None
            await asyncio.wait_for(client.tunnel.ensure_session(), 30)
        return client
