"""The whole ferry network in one process on loopback: broker, egress, volunteers, client
(and, when asked, the client's local status page).

``ferry demo`` runs it for a newcomer; the integration tests and benchmarks run the same
:class:`LoopbackNetwork`, so what the demo shows is what the tests check.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.client.app import ClientApp, ClientConfig
from ferry.client.local_page import LocalPageConfig
from ferry.client.local_proxy import LocalProxyConfig
from ferry.client.session import TunnelConfig
from ferry.egress.policy import DestinationPolicy
from ferry.egress.server import Egress, EgressConfig
from ferry.egress.upstream import Resolver
from ferry.transport.browser_webrtc import WebRtcMode, WebRtcStack
from ferry.transport.webrtc import WebRtcConfig
from ferry.volunteer.relay import Clock, RelayTap, Volunteer, VolunteerConfig

LOOPBACK_WEBRTC = WebRtcConfig(host_candidate_addresses=("127.0.0.1",))
"""WebRTC that gathers candidates on loopback only: the demo never leaves this machine."""


@dataclass(frozen=True, slots=True)
class LoopbackNetworkConfig:
    """Shape of an in-process network."""

    proxy_port: int = 0
    """The client's proxy port (0 = any free port)."""
    volunteers: int = 2
    """Volunteers to start."""
    client_paths: int = 2
    """Volunteer paths the client keeps open."""
    allow_private_destinations: bool = False
    """Let the egress reach loopback and private addresses (local testing only)."""
    policy: DestinationPolicy | None = None
    """The egress's whole destination policy (tests); when set, it replaces the one built
    from ``allow_private_destinations``."""
    state_dir: Path | None = None
    """Egress state folder (default: a temporary folder removed at close)."""
    resolver: Resolver | None = None
    """The egress's name resolver (default: the system's); tests pass a fixed table."""
    volunteer_tap: RelayTap | None = None
    """Sees every datagram the volunteers relay (tests)."""
    volunteer_config: VolunteerConfig | None = None
    """Settings of every volunteer (tests); its broker URL and WebRTC settings are replaced
    by the network's own (loopback only), and it relays to the internal (loopback) egress."""
    volunteer_clock: Clock | None = None
    """The volunteers' clock for their limits (tests; default ``time.time``)."""
    client_webrtc: WebRtcMode = WebRtcMode.PYTHON
    """The client's WebRTC stack (``ferry demo --webrtc``; tests, benchmarks)."""
    volunteer_webrtc: WebRtcMode = WebRtcMode.PYTHON
    """The volunteers' WebRTC stack; with the browser engine, one engine (one Chromium) runs
    the connections of every volunteer of the network."""
    tunnel: TunnelConfig | None = None
    """Overrides for the client's tunnel (its bridge is filled in from the egress)."""
    egress: EgressConfig | None = None
    """Settings of the egress (tests: limits, admin address); its state folder, listen
    address and policy are replaced by the network's own."""
    page: LocalPageConfig | None = None
    """The client's local status page (``ferry demo``: the proxy port + 1); ``None``: no
    page. See ``page_optional``."""
    page_optional: bool = True
    """When the page's port is taken, log a warning and run without the page (the demo's
    default address); ``False``: starting the network fails instead."""


class LoopbackNetwork:
    """Starts and stops a whole network on 127.0.0.1."""

    def __init__(self, config: LoopbackNetworkConfig | None = None) -> None:
        self.config = config or LoopbackNetworkConfig()
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        self.broker: Broker | None = None
        self.egress: Egress | None = None
        self.volunteers: list[Volunteer] = []
        self.client: ClientApp | None = None
        self.volunteer_stack: WebRtcStack | None = None
        """The volunteers' shared WebRTC stack (``None`` until started)."""
        self.broker_url = ""
        self.egress_url = ""
        self.bridge_line = ""
        self.proxy: tuple[str, int] = ("", 0)

    async def start(self) -> None:
        """Start every role; returns once the client's proxy port is open."""
        config = self.config
        state_dir = config.state_dir
        if state_dir is None:
            self._temp = tempfile.TemporaryDirectory(prefix="ferry-demo-")
            state_dir = Path(self._temp.name)
        self.egress = Egress(
            replace(
                config.egress or EgressConfig(state_dir=state_dir),
                state_dir=state_dir,
                host="127.0.0.1",
                port=0,
                policy=config.policy
                or DestinationPolicy(allow_private=config.allow_private_destinations),
            ),
            registry=CollectorRegistry(),
            resolver=config.resolver,
        )
        bridge = await self.egress.start()
        self.egress_url, self.bridge_line = bridge.url, str(bridge)
        self.broker = Broker(
            BrokerConfig(
                host="127.0.0.1",
                port=0,
                allowed_egresses=(bridge.url,),
                quiet_about_loopback_peers=True,
            ),
            registry=CollectorRegistry(),
        )
        self.broker_url = await self.broker.start()
        self.volunteer_stack = WebRtcStack(config.volunteer_webrtc, LOOPBACK_WEBRTC)
        await self.volunteer_stack.start()
        for _ in range(config.volunteers):
            volunteer = Volunteer(
                replace(
                    config.volunteer_config or VolunteerConfig(broker_url=""),
                    broker_url=self.broker_url,
                    webrtc=LOOPBACK_WEBRTC,
                    allow_internal_egress=True,  # the egress is on 127.0.0.1
                ),
                tap=config.volunteer_tap,
                clock=config.volunteer_clock or time.time,
                peers=self.volunteer_stack,
            )
            volunteer.start()
            self.volunteers.append(volunteer)
        if config.tunnel is None:
            tunnel = TunnelConfig(
                bridge=bridge, volunteers=config.client_paths, webrtc=LOOPBACK_WEBRTC
            )
        else:
            tunnel = replace(config.tunnel, bridge=bridge)
        self.client = ClientApp(
            ClientConfig(
                broker_url=self.broker_url,
                tunnel=tunnel,
                proxy=LocalProxyConfig(host="127.0.0.1", port=config.proxy_port),
                page=config.page,
                page_optional=config.page_optional,
                webrtc_mode=config.client_webrtc,
            ),
            registry=CollectorRegistry(),
        )
        self.proxy = await self.client.start()

    @property
    def page_url(self) -> str:
        """The client's status page's URL, or ``""`` when it has none (not asked for, or
        its port was taken)."""
        return self.client.page_url if self.client is not None else ""

    async def wait_ready(self) -> None:
        """Wait until the client's first session to the egress is up."""
        assert self.client is not None and self.client.tunnel is not None
        await self.client.tunnel.ensure_session()

    async def close(self) -> None:
        """Stop every role (client first, so volunteers see their channels close)."""
        if self.client is not None:
            await self.client.close()
        for volunteer in self.volunteers:
            await volunteer.close()
        if self.volunteer_stack is not None:
            await self.volunteer_stack.close()
            self.volunteer_stack = None
        if self.broker is not None:
            await self.broker.close()
        if self.egress is not None:
            await self.egress.close()
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None

    async def __aenter__(self) -> LoopbackNetwork:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class DemoRole:
    """``ferry demo`` as a role app (:class:`ferry.roles.RoleApp`): a :class:`LoopbackNetwork`
    that tells the newcomer how to use it."""

    def __init__(self, config: LoopbackNetworkConfig) -> None:
        self.config = config
        self.network = LoopbackNetwork(config)

    async def start(self) -> dict[str, object]:
        """Start the network and wait for the client's first session; the ready file's
        content (proxy, broker, egress and, if on, the page)."""
        from ferry import __version__
        from ferry.roles import console

        network = self.network
        await network.start()
        host, proxy_port = network.proxy
        console.print(f"[bold]ferry demo[/] {__version__}: a whole network on this machine")
        console.print(f"  broker     {network.broker_url}  (matches clients with volunteers)")
        console.print(f"  egress     {network.egress_url}  (exit to the internet)")
        stack = network.volunteer_stack.stack_status().stack if network.volunteer_stack else ""
        console.print(
            f"  volunteers {self.config.volunteers} volunteers relaying over WebRTC ({stack})"
        )
        console.print(f"  client     SOCKS5 and HTTP proxy on {host}:{proxy_port}")
        if network.page_url:
            console.print(f"  page       {network.page_url}  (the client's status page)")
        elif self.config.page is not None:
            console.print(
                f"  [yellow]page       not started: port {self.config.page.port} is taken "
                "(choose another with --ui-listen)[/]"
            )
        console.print("Waiting for the client's encrypted session to the egress...")
        await network.wait_ready()
        return {
            "proxy": f"{host}:{proxy_port}",
            "broker": network.broker_url,
            "egress": network.egress_url,
            **({"ui": network.page_url} if network.page_url else {}),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Say how to try it, then run until ``stop``."""
        from ferry.roles import console

        host, proxy_port = self.network.proxy
        console.print("[green]Ready.[/] Try it:")
        private = self.config.allow_private_destinations
        target = "http://127.0.0.1:8000/" if private else "https://example.com/"
        console.print(f"  curl --socks5-hostname {host}:{proxy_port} {target}")
        console.print(f"  curl --proxytunnel -x http://{host}:{proxy_port} {target}")
        if not private:
            console.print(
                "  (the egress refuses loopback and private addresses; to reach a server on "
                "this machine, restart with --unsafe-allow-private-destinations)"
            )
        console.print("Press Ctrl-C to stop.")
        await stop.wait()
        console.print("Stopping...")

    def stop_now(self) -> None:
        """Nothing to drain."""

    async def close(self) -> None:
        """Stop every role of the network."""
        await self.network.close()
