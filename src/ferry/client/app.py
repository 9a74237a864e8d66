"""The whole client role: the tunnel to the egress plus the local SOCKS5/HTTP proxy port.

With a :class:`~ferry.client.local_page.LocalPageConfig` (``ClientConfig.page``) it also
serves the local status page, keeps trying to hold a session up (so the page can say why it
is not connected), and can restart its tunnel with another bridge line without restarting
the process (:meth:`ClientApp.reconnect`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import aiohttp
from prometheus_client import CollectorRegistry

from ferry.client.local_page import LocalPage, LocalPageConfig
from ferry.client.local_proxy import LocalProxy, LocalProxyConfig
from ferry.client.rendezvous import HttpRendezvous, Rendezvous
from ferry.client.self_check import (
    SELF_CHECK_FETCH,
    FetchTarget,
    ReachabilityProbe,
    SelfCheck,
    SelfCheckConfig,
)
from ferry.client.session import PrefixedStream, TunnelClient, TunnelConfig, TunnelStatus
from ferry.core.addresses import Target
from ferry.core.bridge_line import BridgeLine
from ferry.errors import FerryError, LocalError
from ferry.logs import get_logger
from ferry.tasks import TaskOwner

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Settings of the client role."""

    broker_url: str
    """The broker's base URL."""
    tunnel: TunnelConfig
    """The tunnel: bridge line, volunteers, timeouts."""
    proxy: LocalProxyConfig = field(default_factory=LocalProxyConfig)
    """The local proxy port."""
    pairing: str | None = None
    """A private pairing code: only volunteers holding the same code relay for this client
    (``ferry volunteer --pairing`` or the widget's private link). ``None``: any volunteer."""
    page: LocalPageConfig | None = None
    """The local status page; ``None``: no page."""
    check: SelfCheckConfig = field(default_factory=SelfCheckConfig)
    """Time limits of the self-check (``--check`` and the page's button)."""
    check_fetch: FetchTarget = SELF_CHECK_FETCH
    """What the self-check fetches through the chain (``--check-url``)."""
    session_retry_interval: float = 2.0
    """With the page on: seconds between attempts to set up a session while there is none."""


class _CurrentTunnel:
    """The proxy's stream opener: whichever tunnel the client runs now."""

    def __init__(self, client: ClientApp) -> None:
        self._client = client

    async def open_stream(self, target: Target) -> PrefixedStream:
        tunnel = self._client.tunnel
        if tunnel is None:
            raise LocalError("the tunnel is not running")
        return await tunnel.open_stream(target)


class ClientApp:
    """A running client: local proxy → tunnel → volunteers → egress."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        registry: CollectorRegistry | None = None,
        rendezvous: Rendezvous | None = None,
        front_probe: ReachabilityProbe | None = None,
        nat_probe: ReachabilityProbe | None = None,
    ) -> None:
        """``front_probe`` and ``nat_probe`` are the self-check's steps 2 and 3 (reaching the
        broker through the front; STUN and the NAT type); without them those steps are
        reported as not configured."""
        self.config = config
        self._front_probe = front_probe
        self._nat_probe = nat_probe
        self.registry = registry or CollectorRegistry()
        self._http: aiohttp.ClientSession | None = None
        self._rendezvous = rendezvous
        self.tunnel: TunnelClient | None = None
        self.proxy: LocalProxy | None = None
        self.page: LocalPage | None = None
        self.proxy_address: tuple[str, int] = ("", 0)
        self._bridge = config.tunnel.bridge
        self._tasks = TaskOwner("client-app")
        self._reconnect_lock = asyncio.Lock()
        self._earlier_sent = 0
        self._earlier_received = 0
        self._session_failure: FerryError | None = None
        self._keep_task: asyncio.Task[None] | None = None

    @property
    def bridge(self) -> BridgeLine:
        """The bridge line in use (changed by :meth:`reconnect`)."""
        return self._bridge

    @property
    def page_url(self) -> str:
        """The status page's URL, or ``""`` without a page."""
        return self.page.url if self.page is not None else ""

    def _http_session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    def _rendezvous_channel(self) -> Rendezvous:
        if self._rendezvous is None:
            self._rendezvous = HttpRendezvous(
                self.config.broker_url, self._http_session(), pairing=self.config.pairing
            )
        return self._rendezvous

    def _new_tunnel(self) -> TunnelClient:
        return TunnelClient(
            replace(self.config.tunnel, bridge=self._bridge), self._rendezvous_channel()
        )

    async def start(self) -> tuple[str, int]:
        """Open the proxy port (and the page) and start looking for volunteers; returns the
        proxy address."""
        self.tunnel = self._new_tunnel()
        self.proxy = LocalProxy(_CurrentTunnel(self), self.config.proxy, self.registry)
        self.proxy_address = await self.proxy.start()
        self.tunnel.start()
        if self.config.page is not None:
            self.page = LocalPage(self, self.config.page, self.registry)
            try:
                await self.page.start()
            except BaseException:
                self.page = None  # it closed itself
                await self.close()
                raise
            self._keep_task = self._tasks.spawn(self._keep_session(), name="keep-session")
        return self.proxy_address

    async def _keep_session(self) -> None:
        while True:
            tunnel = self.tunnel
            if tunnel is not None and tunnel.session is None:
                try:
                    await tunnel.ensure_session()
                except FerryError as exc:
                    if tunnel is self.tunnel:
                        self._session_failure = exc
                else:
                    self._session_failure = None
            await asyncio.sleep(self.config.session_retry_interval)

    # -- what the page asks (ferry.client.local_page.ClientControl) ---------------------------

    def tunnel_status(self) -> TunnelStatus | None:
        """The tunnel's status, ``None`` before :meth:`start`."""
        return self.tunnel.status() if self.tunnel is not None else None

    def traffic_totals(self) -> tuple[int, int]:
        """Bytes sent and received through volunteers since start, over every tunnel."""
        sent, received = self._earlier_sent, self._earlier_received
        if self.tunnel is not None:
            sent += self.tunnel.pool.bytes_sent
            received += self.tunnel.pool.bytes_received
        return sent, received

    def problem(self) -> FerryError | None:
        """The reason the client is not connected, as far as it knows."""
        if self.tunnel is not None and self.tunnel.pool.open_paths == 0:
            return self.tunnel.pool.last_failure or self._session_failure
        return self._session_failure

    async def reconnect(self, bridge: BridgeLine | None = None) -> None:
        """Close the session and every volunteer path and start a new tunnel (with
        ``bridge`` if given). Connections open through the old tunnel end."""
        async with self._reconnect_lock:
            if bridge is not None:
                self._bridge = bridge
            old = self.tunnel
            if old is None:
                return
            self._earlier_sent += old.pool.bytes_sent
            self._earlier_received += old.pool.bytes_received
            self._session_failure = None
            if self._keep_task is not None:
                # It may be waiting on the old tunnel: start it again on the new one.
                self._keep_task.cancel()
                self._keep_task = self._tasks.spawn(self._keep_session(), name="keep-session")
            self.tunnel = self._new_tunnel()
            self.tunnel.start()
            log.info("reconnecting: new tunnel started%s", " with a new bridge line" * bool(bridge))
            await old.close()

    def self_check(self) -> SelfCheck:
        """A self-check of this client's configuration."""
        return SelfCheck(
            broker_url=self.config.broker_url,
            bridge=self._bridge,
            rendezvous=self._rendezvous_channel(),
            http=self._http_session(),
            webrtc=self.config.tunnel.webrtc,
            quic=self.config.tunnel.quic,
            fetch=self.config.check_fetch,
            front_probe=self._front_probe,
            nat_probe=self._nat_probe,
            config=self.config.check,
        )

    async def close(self) -> None:
        """Close the page, the proxy port, the tunnel and the HTTP client."""
        await self._tasks.close()
        if self.page is not None:
            await self.page.close()
        if self.proxy is not None:
            await self.proxy.close()
        if self.tunnel is not None:
            await self.tunnel.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
