"""The widget refuses egresses a hostile broker names inside the visitor's network (issue 15,
item 6), in real Chromium: the same rules as the Python volunteer, pinned by
``tests/vectors/volunteer_egress.json``, and a broker naming a loopback egress to a page that
is not itself on loopback gets no answer and no connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from ferry.transport.browser_webrtc import QUIET_HEADLESS_CHROMIUM
from ferry.transport.webrtc import OfferingPeer

from ..integration.fake_broker import FakeBroker, Listener
from .support import CHROMIUM, CLIENT_WEBRTC, WIDGET_JS, WidgetNetwork, chromium, wait_for_widget

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "volunteer_egress.json").read_text("utf-8")
)
SITE = "widget.test"
"""A name Chromium maps to 127.0.0.1: page and broker are then not on loopback for the
widget, as on a real website, while every packet stays on this machine."""

RUN_VECTORS = """(vectors) => {
  const { refuseEgress, parseAllowEntry, EgressSettingError } =
    customElements.get('ferry-widget').egressChoice;
  const cases = vectors.cases.map((c) => {
    const refusal = refuseEgress(c.url, c.allowed, c.allow_internal);
    return refusal && { reason: refusal.reason, label: refusal.addressClass,
                        prefix: refusal.message.startsWith(`refusing egress ${c.url}: `) };
  });
  const bad = vectors.bad_entries.map((entry) => {
    try { parseAllowEntry(entry); return 'accepted'; }
    catch (e) { return e instanceof EgressSettingError ? 'refused' : `crashed: ${e}`; }
  });
  return { cases, bad };
}"""


@asynccontextmanager
async def chromium_with_site() -> AsyncIterator[Browser]:
    """Debian's Chromium that resolves only ``SITE`` (to 127.0.0.1)."""
    rules = f"--host-resolver-rules=MAP {SITE} 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    arguments = [*QUIET_HEADLESS_CHROMIUM, rules, "--disable-features=WebRtcHideLocalIpsWithMdns"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=arguments)
        try:
            yield browser
        finally:
            await browser.close()


async def test_the_widget_gives_the_python_answers_for_every_egress_vector() -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await page.goto(net.page_url())
        await wait_for_widget(page, "true")
        got = await page.evaluate(RUN_VECTORS, VECTORS)
    expected = [
        None
        if case["expect"] is None
        else {"reason": case["expect"], "label": case["label"], "prefix": True}
        for case in VECTORS["cases"]
    ]
    mismatches = [
        (case["url"], case["allowed"], want, have)
        for case, want, have in zip(VECTORS["cases"], expected, got["cases"], strict=True)
        if want != have
    ]
    assert mismatches == []
    assert got["bad"] == ["refused"] * len(VECTORS["bad_entries"])


def _site_routes(**attributes: str) -> Callable[[web.Application], None]:
    def add(app: web.Application) -> None:
        async def page(request: web.Request) -> web.Response:
            origin = f"http://{SITE}:{request.url.port}"
            data = " ".join(
                f'data-{name}="{value}"' for name, value in {"broker": origin, **attributes}.items()
            )
            html = (
                "<!doctype html><html><head><meta charset='utf-8'><title>a site</title></head>"
                f"<body><ferry-widget {data}></ferry-widget>"
                '<script src="/widget.js" async></script></body></html>'
            )
            return web.Response(text=html, content_type="text/html")

        async def widget(request: web.Request) -> web.Response:
            return web.Response(body=WIDGET_JS.read_bytes(), content_type="text/javascript")

        app.router.add_get("/page", page)
        app.router.add_get("/widget.js", widget)

    return add


@pytest.mark.parametrize("allowlist", [False, True])
async def test_a_loopback_egress_is_not_answered_by_a_widget_on_a_website(allowlist: bool) -> None:
    peer = OfferingPeer(CLIENT_WEBRTC)
    try:
        offer = await peer.create_offer()  # a real offer: a widget that accepts it answers
        async with Listener().running() as victim:
            egress = f"ws://127.0.0.1:{victim.port}/admin/ws"
            fake = FakeBroker(egress=egress, offer=offer, matches=1)
            attributes = {"egress": "wss://egress.example/v1/relay"} if allowlist else {}
            async with (
                fake.running(_site_routes(**attributes)) as broker,
                chromium_with_site() as browser,
            ):
                page = await browser.new_page()
                await page.goto(f"http://{SITE}:{broker.url.rsplit(':', 1)[1]}/page")
                await page.get_by_role("switch").click()
                await broker.wait_for_polls(2)  # the poll after the match: it was handled
                await wait_for_widget(page, "s.egressRefused === 1")
            assert broker.answers == []
            assert victim.connections == 0
    finally:
        await peer.close()
