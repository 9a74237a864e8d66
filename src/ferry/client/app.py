"""The whole client role: the tunnel to the egress plus the local SOCKS5/HTTP proxy port.

With a :class:`~ferry.client.local_page.LocalPageConfig` (``ClientConfig.page``) it also
serves the local status page, keeps trying to hold a session up (so the page can say why it
is not connected), and can restart its tunnel with another bridge line without restarting
the process (:meth:`ClientApp.reconnect`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from ferry.client.local_page import LocalPage, LocalPageConfig
from ferry.client.local_proxy import LocalProxy, LocalProxyConfig
from ferry.client.rendezvous import (
    HttpRendezvous,
    HttpRendezvousConfig,
    Rendezvous,
    fronted_url,
)
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
from ferry.core.ice_servers import nat_discovery_servers
from ferry.core.nat_behaviour import NatClass, NatDiscoveryConfig, StunServer
from ferry.errors import BrokerError, ConfigError, FerryError, LocalError, RemoteError
from ferry.logs import get_logger, scrub_library_loggers
from ferry.tasks import TaskOwner
from ferry.transport.broker_http import exchange_with_broker, plain_http_warning
from ferry.transport.browser_webrtc import BrowserEngineConfig, WebRtcMode, WebRtcStack
from ferry.transport.stun import NatBehaviourMonitor, RefusedStunReplies, discover_with_servers

log = get_logger(__name__)


def open_proxy_warning(host: str) -> str | None:
    """A warning for the log when the proxy listens on ``host`` other than loopback, else
    ``None``: the proxy has no password, so everyone who reaches that address uses this
    client's volunteers and egress (and its traffic looks like this client's)."""
    name = host.strip("[]").rstrip(".").lower()
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = name == "localhost"
    if loopback:
        return None
    return (
        f"the proxy listens on {host}, not on loopback: anyone who can reach this machine on "
        "that address can use the proxy, without a password; listen on 127.0.0.1 unless that "
        "is what you want"
    )


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
    page_optional: bool = False
    """When the page's port cannot be bound, log a warning and run without the page instead
    of failing (the default page address of ``ferry client`` and ``ferry demo``, ``auto``, uses
    this: the proxy is the client's job, the page a convenience)."""
    check: SelfCheckConfig = field(default_factory=SelfCheckConfig)
    """Time limits of the self-check (``--check`` and the page's button)."""
    check_fetch: FetchTarget = SELF_CHECK_FETCH
    """What the self-check fetches through the chain (``--check-url``)."""
    session_retry_interval: float = 2.0
    """Seconds between the starts of two attempts of the reconnect loop to set up a session
    while there is none (the loop runs with the page on, and in ``ferry client``)."""
    webrtc_mode: WebRtcMode = WebRtcMode.PYTHON
    """Which WebRTC stack runs the paths (``--webrtc``; the command line defaults to auto)."""
    browser: BrowserEngineConfig = field(default_factory=BrowserEngineConfig)
    """The browser engine's settings, for ``browser`` and ``auto``."""
    stun_servers: tuple[StunServer, ...] = ()
    """RFC 5780 STUN servers for NAT discovery (``--nat-stun``), tried in order; none: the
    STUN servers the broker hands out for ICE are tried (unless ``broker_ice_servers`` is
    off), and without any the NAT class sent to the broker stays ``unknown``."""
    broker_ice_servers: bool = True
    """Ask the broker for STUN and TURN servers before each offer (``--no-broker-ice-servers``
    turns it off; the user's own ``--ice-server`` ones are always used)."""
    allow_internal_ice_servers: bool = False
    """Accept broker-given ICE servers on loopback, private or link-local addresses (tests
    and private networks: ``--unsafe-allow-internal-ice-servers``)."""
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


class FrontProbe:
    """The self-check's front step: ``GET /healthz`` of the broker through the front."""

    def __init__(
        self,
        broker_url: str,
        front: str,
        http: aiohttp.ClientSession,
        ssl_context: ssl.SSLContext | None,
        timeout: float,
    ) -> None:
        self._fronted = fronted_url(broker_url.rstrip("/") + "/healthz", front)
        self._front = front
        self._http = http
        self._ssl_context = ssl_context
        self._timeout = timeout

    async def probe(self) -> str:
        """``"through FRONT"``; :class:`BrokerError` if the broker did not answer 200."""
        status = (
            await exchange_with_broker(
                self._http,
                "GET",
                self._fronted.connect_url,
                None,
                timeout=self._timeout,
                max_response_bytes=4096,
                host_header=self._fronted.host_header,
                ssl_context=self._ssl_context,
            )
        ).status
        if status != 200:
            raise BrokerError(f"the front answered HTTP status {status} for the broker")
        return f"through {self._front}"


class NatProbe:
    """The self-check's STUN step: one NAT discovery against the configured servers."""

    def __init__(
        self,
        servers: tuple[StunServer, ...],
        config: NatDiscoveryConfig,
        refused: RefusedStunReplies | None = None,
    ) -> None:
        """``refused`` counts the replies it cannot use (the client's monitor's counter)."""
        self._servers = servers
        self._config = config
        self._refused = refused

    async def probe(self) -> str:
        """The NAT class and behaviour; :class:`RemoteError` if no server could run the
        tests."""
        behaviour = await discover_with_servers(self._servers, self._config, self._refused)
        if behaviour.nat_class is NatClass.UNKNOWN:
            raise RemoteError("no STUN server answered the NAT tests")
        return (
            f"{behaviour.nat_class.value} (mapping {behaviour.mapping.value}, "
            f"filtering {behaviour.filtering.value})"
        )


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
        on_session_failure: Callable[[FerryError], None] | None = None,
    ) -> None:
        """``front_probe`` and ``nat_probe`` are the self-check's steps 2 and 3 (reaching the
        broker through the front; STUN and the NAT type); without them those steps are
        reported as not configured. ``on_session_failure`` hears of every failed attempt of
        the reconnect loop (``ferry client`` prints them while it waits)."""
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
        self._on_session_failure = on_session_failure
        self._session_up = asyncio.Event()
        self.nat = NatBehaviourMonitor(
            config.stun_servers, config.nat_discovery, role="client", registry=self.registry
        )
        """The client's NAT behaviour, rediscovered periodically; sent with every offer."""
        self._ssl_context = broker_ssl_context(config.broker_ca)
        self.webrtc = WebRtcStack(
            config.webrtc_mode, config.tunnel.webrtc, config.browser, registry=self.registry
        )
        """The WebRTC stack (browser engine or aiortc); its status is in the tunnel's."""

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
                self.config.broker_url,
                self._http_session(),
                pairing=self.config.pairing,
                nat_class=lambda: self.nat.nat_class,
                front=self.config.front,
                ssl_context=self._ssl_context,
                registry=self.registry,
                config=HttpRendezvousConfig(
                    ask_ice_servers=self.config.broker_ice_servers,
                    allow_internal_ice_servers=self.config.allow_internal_ice_servers,
                ),
            )
        return self._rendezvous

    async def _broker_stun_servers(self) -> tuple[StunServer, ...]:
        """The broker's STUN servers (``stun:`` over UDP), for NAT discovery."""
        return nat_discovery_servers(await self._rendezvous_channel().ice_servers())

    def _new_tunnel(self) -> TunnelClient:
        return TunnelClient(
            replace(self.config.tunnel, bridge=self._bridge),
            self._rendezvous_channel(),
            self.webrtc,
        )

    async def start(self) -> tuple[str, int]:
        """Start the WebRTC stack, open the proxy port (and the page) and start looking for
        volunteers; returns the proxy address. Raises :class:`~ferry.errors.LocalError` if
        ``webrtc_mode`` is ``browser`` and no browser starts."""
        scrub_library_loggers()
        for warning in (
            plain_http_warning(self.config.broker_url),
            open_proxy_warning(self.config.proxy.host),
        ):
            if warning is not None:
                log.warning("%s", warning)
        await self.webrtc.start()
        try:
            if self.config.broker_ice_servers:
                self.nat.start_when_known(self._broker_stun_servers)
            else:
                self.nat.start()
            self.tunnel = self._new_tunnel()
            self.proxy = LocalProxy(_CurrentTunnel(self), self.config.proxy, self.registry)
            self.proxy_address = await self.proxy.start()
            self.tunnel.start()
        except BaseException:
            await self.close()
            raise
        if self.config.page is not None:
            self.page = LocalPage(self, self.config.page, self.registry)
            try:
                await self.page.start()
            except ConfigError as exc:
                self.page = None  # it closed itself
                if not self.config.page_optional:
                    await self.close()
                    raise
                log.warning("%s; running without the status page", exc)
            except BaseException:
                self.page = None  # it closed itself
                await self.close()
                raise
            if self.page is not None:
                self._keep_session_up()
        return self.proxy_address

    async def wait_for_session(self) -> None:
        """Keep a session to the egress up from now on (the reconnect loop, which the page
        also starts) and wait until it has one. Each failed attempt goes to
        ``on_session_failure``."""
        self._keep_session_up()
        await self._session_up.wait()

    def _keep_session_up(self) -> None:
        if self._keep_task is None or self._keep_task.done():
            self._keep_task = self._tasks.spawn(self._keep_session(), name="keep-session")

    async def _keep_session(self) -> None:
        """The client's one reconnect loop: whenever the tunnel has no session, set one up.
        An attempt starts at most once per ``session_retry_interval``: one that failed after
        a long wait (no volunteer within ``volunteer_wait``) is retried at once, one that
        failed at once waits out the rest of the interval."""
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            tunnel = self.tunnel
            if tunnel is not None and tunnel.session is not None:
                self._session_up.set()
            elif tunnel is not None:
                try:
                    await tunnel.ensure_session()
                except FerryError as exc:
                    if tunnel is self.tunnel:
                        self._session_failure = exc
                        if self._on_session_failure is not None:
                            self._on_session_failure(exc)
                else:
                    self._session_failure = None
                    self._session_up.set()
            elapsed = loop.time() - began
            await asyncio.sleep(max(0.0, self.config.session_retry_interval - elapsed))

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
                self._keep_task = None
                self._keep_session_up()
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
            front_probe=self._front_probe or self._configured_front_probe(),
            nat_probe=self._nat_probe or self._configured_nat_probe(),
            config=self.config.check,
        )

    def _configured_front_probe(self) -> ReachabilityProbe | None:
        if self.config.front is None:
            return None
        return FrontProbe(
            self.config.broker_url,
            self.config.front,
            self._http_session(),
            self._ssl_context,
            self.config.check.front_timeout,
        )

    def _configured_nat_probe(self) -> ReachabilityProbe | None:
        if not self.config.stun_servers:
            return None
        return NatProbe(self.config.stun_servers, self.config.nat_discovery, self.nat.refused)

    async def close(self) -> None:
        """Close the page, the proxy port, the tunnel, the browser engine, NAT discovery and
        the HTTP client."""
        await self._tasks.close()
        await self.nat.close()
        if self.page is not None:
            await self.page.close()
        if self.proxy is not None:
            await self.proxy.close()
        if self.tunnel is not None:
            await self.tunnel.close()
        await self.webrtc.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
