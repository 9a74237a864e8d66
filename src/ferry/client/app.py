"""The whole client role: the tunnel to the egress plus the local SOCKS5/HTTP proxy port."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from prometheus_client import CollectorRegistry

from ferry.client.local_proxy import LocalProxy, LocalProxyConfig
from ferry.client.rendezvous import HttpRendezvous, Rendezvous
from ferry.client.session import TunnelClient, TunnelConfig
from ferry.logs import get_logger
from ferry.transport.browser_webrtc import BrowserEngineConfig, WebRtcMode, WebRtcStack

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
    webrtc_mode: WebRtcMode = WebRtcMode.PYTHON
    """Which WebRTC stack runs the paths (``--webrtc``; the command line defaults to auto)."""
    browser: BrowserEngineConfig = field(default_factory=BrowserEngineConfig)
    """The browser engine's settings, for ``browser`` and ``auto``."""


class ClientApp:
    """A running client: local proxy → tunnel → volunteers → egress."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        registry: CollectorRegistry | None = None,
        rendezvous: Rendezvous | None = None,
    ) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self._http: aiohttp.ClientSession | None = None
        self._rendezvous = rendezvous
        self.tunnel: TunnelClient | None = None
        self.proxy: LocalProxy | None = None
        self.proxy_address: tuple[str, int] = ("", 0)
        self.webrtc = WebRtcStack(
            config.webrtc_mode, config.tunnel.webrtc, config.browser, registry=self.registry
        )
        """The WebRTC stack (browser engine or aiortc); its status is in the tunnel's."""

    async def start(self) -> tuple[str, int]:
        """Start the WebRTC stack, open the proxy port and start looking for volunteers;
        returns the proxy address. Raises :class:`~ferry.errors.LocalError` if
        ``webrtc_mode`` is ``browser`` and no browser starts."""
        await self.webrtc.start()
        try:
            rendezvous = self._rendezvous
            if rendezvous is None:
                self._http = aiohttp.ClientSession()
                rendezvous = HttpRendezvous(
                    self.config.broker_url, self._http, pairing=self.config.pairing
                )
            self.tunnel = TunnelClient(self.config.tunnel, rendezvous, self.webrtc)
            self.proxy = LocalProxy(self.tunnel, self.config.proxy, self.registry)
            self.proxy_address = await self.proxy.start()
            self.tunnel.start()
        except BaseException:
            await self.webrtc.close()
            raise
        return self.proxy_address

    async def close(self) -> None:
        """Close the proxy port, the tunnel, the browser engine and the HTTP client."""
        if self.proxy is not None:
            await self.proxy.close()
        if self.tunnel is not None:
            await self.tunnel.close()
        await self.webrtc.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
