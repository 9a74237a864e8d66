"""The whole client role: the tunnel to the egress plus the local SOCKS5/HTTP proxy port."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from ferry.client.local_proxy import LocalProxy, LocalProxyConfig
from ferry.client.rendezvous import HttpRendezvous, Rendezvous
from ferry.client.session import TunnelClient, TunnelConfig
from ferry.core.nat_behaviour import NatDiscoveryConfig, StunServer
from ferry.errors import ConfigError
from ferry.logs import get_logger
from ferry.transport.stun import NatBehaviourMonitor

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
    stun_servers: tuple[StunServer, ...] = ()
    """RFC 5780 STUN servers for NAT discovery (``--stun``), tried in order; none: the NAT
    class sent to the broker stays ``unknown``."""
    nat_discovery: NatDiscoveryConfig = field(default_factory=NatDiscoveryConfig)
    """Timing of NAT discovery (including how often it runs again)."""
    front: str | None = None
    """Reach the broker through this front (``HOST`` or ``HOST:PORT``): TCP and TLS (SNI) go
    to it, the HTTP ``Host`` header names the broker. ``None``: connect to the broker."""
    broker_ca: Path | None = None
    """PEM file of the certificate authorities trusted for the broker (or front) instead of the
    system's. ``None``: the system's."""


def broker_ssl_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """A TLS context trusting only ``ca_file`` (``None`` → ``None``: the system's trust);
    :class:`ConfigError` if the file cannot be read as PEM certificates."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--broker-ca {ca_file}: cannot load CA certificates ({exc})") from None


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
        self.nat = NatBehaviourMonitor(config.stun_servers, config.nat_discovery, role="client")
        """The client's NAT behaviour, rediscovered periodically; sent with every offer."""

    async def start(self) -> tuple[str, int]:
        """Open the proxy port and start looking for volunteers; returns the proxy address."""
        rendezvous = self._rendezvous
        if rendezvous is None:
            self._http = aiohttp.ClientSession()
            rendezvous = HttpRendezvous(
                self.config.broker_url,
                self._http,
                pairing=self.config.pairing,
                nat_class=lambda: self.nat.nat_class,
                front=self.config.front,
                ssl_context=broker_ssl_context(self.config.broker_ca),
            )
        self.nat.start()
        self.tunnel = TunnelClient(self.config.tunnel, rendezvous)
        self.proxy = LocalProxy(self.tunnel, self.config.proxy, self.registry)
        self.proxy_address = await self.proxy.start()
        self.tunnel.start()
        return self.proxy_address

    async def close(self) -> None:
        """Close the proxy port, the tunnel, NAT discovery and the HTTP client."""
        await self.nat.close()
        if self.proxy is not None:
            await self.proxy.close()
        if self.tunnel is not None:
            await self.tunnel.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
