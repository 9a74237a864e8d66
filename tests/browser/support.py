"""Real Chromium (Debian's package, driven by Playwright) running the widget on loopback.

:class:`WidgetNetwork` starts a broker, an egress (allowed to reach loopback), an origin
server, and a *host page* server on its own port, so the widget is embedded cross-origin
exactly as on a real website. Python clients and volunteers join when a test asks.

Chromium is confined to loopback:

* ``--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1`` answers every name lookup
  with "not found" inside Chromium (measured with tcpdump on eth0: without it Chromium 156
  still looks up Google's update and account servers through the system resolver,
  background-networking flags or not); pages use IP literals only.
* ``--disable-features=WebRtcHideLocalIpsWithMdns``: by default Chromium names its host
  candidates with random ``.local`` names and announces them with mDNS, which (captured on
  eth0 with tcpdump) sends multicast to 224.0.0.251 and IGMP reports out of the machine.
  With the feature off it registers no name and sends no multicast; its SDP then lists its
  real interface addresses, which the Python client leaves out
  (``WebRtcConfig.remote_candidate_addresses=("127.0.0.1",)``).
* The widget uses no STUN server, and the Python client offers only 127.0.0.1 candidates,
  so Chromium's ICE checks go to 127.0.0.1 only; the suite's audit hook checks that every
  packet this process sends (ICE answers included) goes to a loopback address.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker
from ferry.client.app import ClientApp, ClientConfig
from ferry.client.local_proxy import LocalProxyConfig
from ferry.client.session import TunnelConfig
from ferry.core.bridge_line import BridgeLine
from ferry.demo import LOOPBACK_WEBRTC
from ferry.egress.server import Egress
from ferry.transport.browser_webrtc import (
    NO_NAME_LOOKUPS,
    QUIET_HEADLESS_CHROMIUM,
    sandbox_arguments,
)
from ferry.volunteer.relay import Volunteer, VolunteerConfig

from ..integration.chain import Origin, egress_and_broker

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    *QUIET_HEADLESS_CHROMIUM,
    *sandbox_arguments(os.geteuid()),  # Playwright adds --no-sandbox itself; a plain start not
    NO_NAME_LOOKUPS,
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
CLIENT_WEBRTC = replace(LOOPBACK_WEBRTC, remote_candidate_addresses=("127.0.0.1",))
"""The Python client's WebRTC: loopback candidates only, and only loopback peers checked."""
WIDGET_JS = Path(__file__).parents[2] / "src" / "ferry" / "web" / "widget.js"


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, under Playwright (never a downloaded browser)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class WidgetNetwork:
    """Broker, egress, origin and a host page server on 127.0.0.1; see the module docstring."""

    def __init__(self) -> None:
        self.origin = Origin()
        self.broker: Broker | None = None
        self.egress: Egress | None = None
        self.bridge: BridgeLine | None = None
        self.host_url = ""
        self.clients: list[ClientApp] = []
        self.volunteers: list[Volunteer] = []

    @property
    def broker_url(self) -> str:
        assert self.broker is not None
        return self.broker.base_url

    def page_url(self, *, self_hosted: bool = False, **attributes: str) -> str:
        """The host page embedding the widget with these ``data-*`` attributes.

        ``self_hosted``: the page serves widget.js itself instead of loading it from the
        broker (so that a test can tell that the page never contacts the broker).
        """
        query = "&".join(f"{name}={value}" for name, value in attributes.items())
        return f"{self.host_url}/{'self-hosted' if self_hosted else 'page'}?{query}"

    async def _page(self, request: web.Request) -> web.Response:
        self_hosted = request.path == "/self-hosted"
        script = "/widget.js" if self_hosted else f"{self.broker_url}/widget.js"
        attributes = {"broker": self.broker_url, **request.query}
        data = " ".join(f'data-{name}="{value}"' for name, value in attributes.items())
        html = (
            "<!doctype html><html><head><meta charset='utf-8'><title>a website</title>"
            "<style>body{margin:16px;font:16px serif;background:#fafafa}"
            "button{all:unset}p{color:red !important}</style></head><body>"
            f"<p>A website that embeds ferry.</p><ferry-widget {data}></ferry-widget>"
            f'<script src="{script}" async></script></body></html>'
        )
        return web.Response(text=html, content_type="text/html")

    async def _widget(self, request: web.Request) -> web.Response:
        return web.Response(body=WIDGET_JS.read_bytes(), content_type="text/javascript")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[WidgetNetwork]:
        async with (
            self.origin.running(),
            egress_and_broker() as (self.egress, self.bridge, self.broker),
        ):
            app = web.Application()
            app.router.add_get("/page", self._page)
            app.router.add_get("/self-hosted", self._page)
            app.router.add_get("/widget.js", self._widget)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.host_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            try:
                yield self
            finally:
                for client in self.clients:
                    await client.close()
                for volunteer in self.volunteers:
                    await volunteer.close()
                await runner.cleanup()

    async def start_client(
        self, *, volunteers: int = 1, pairing: str | None = None, spare_volunteers: int = 1
    ) -> ClientApp:
        """A Python client (loopback WebRTC) using this broker; closed with the network.
        ``spare_volunteers``: paths kept open beyond ``volunteers`` (TunnelConfig's)."""
        assert self.bridge is not None
        client = ClientApp(
            ClientConfig(
                broker_url=self.broker_url,
                tunnel=TunnelConfig(
                    bridge=self.bridge,
                    volunteers=volunteers,
                    spare_volunteers=spare_volunteers,
                    webrtc=CLIENT_WEBRTC,
                ),
                proxy=LocalProxyConfig(host="127.0.0.1", port=0),
                pairing=pairing,
            ),
            registry=CollectorRegistry(),
        )
        self.clients.append(client)
        await client.start()
        assert client.tunnel is not None
        await asyncio.wait_for(client.tunnel.ensure_session(), 30)
        return client

    def start_python_volunteer(self) -> Volunteer:
        """A Python volunteer (loopback WebRTC); closed with the network."""
        volunteer = Volunteer(
            VolunteerConfig(
                broker_url=self.broker_url, webrtc=LOOPBACK_WEBRTC, allow_internal_egress=True
            )
        )
        volunteer.start()
        self.volunteers.append(volunteer)
        return volunteer


async def widget_status(page: Page) -> dict[str, object]:
    """The widget's ``status`` (state, helping, peopleHelped, bytesRelayed, ...)."""
    status = await page.evaluate("document.querySelector('ferry-widget').status")
    assert isinstance(status, dict)
    return status


async def wait_for_widget(page: Page, condition: str, timeout: float = 30.0) -> None:
    """Wait until ``condition`` (JS, over ``s``, the widget's status) holds."""
    await page.wait_for_function(
        f"(() => {{ const w = document.querySelector('ferry-widget');"
        f" if (!w || !w.shadowRoot || !w.shadowRoot.firstChild) return false;"
        f" const s = w.status; return {condition}; }})()",
        timeout=timeout * 1000,
    )
