"""The widget passes a client's routing key on to the egress (docs/protocol.md §3.1), in real
Chromium: it reads ``a=x-ferry-route`` from the offer exactly as ``core/route_key.py`` does
(``tests/vectors/route_keys.json``, run in the page), opens its egress WebSocket at
``…/v1/relay?route=KEY`` for a real Python client's offer, and refuses an offer whose key is
malformed without answering it. The last two tests show the same of the Python volunteer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from ferry.core.route_key import new_route_key, with_route_key
from ferry.demo import LOOPBACK_WEBRTC
from ferry.transport.webrtc import OfferingPeer
from ferry.volunteer.relay import Volunteer, VolunteerConfig

from ..integration.fake_broker import FakeBroker
from .support import CLIENT_WEBRTC, WIDGET_JS, chromium, wait_for_widget

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "route_keys.json").read_text())

RUN_VECTORS = """(vectors) => {
  const { routeKeyOf, relayUrlWithRoute } = customElements.get('ferry-widget').routeKey;
  const offers = vectors.offers.map((c) => {
    const key = routeKeyOf(c.sdp);
    return key === undefined ? 'bad_route' : key;
  });
  const urls = vectors.urls.map((c) => relayUrlWithRoute(c.url, c.key));
  return { offers, urls };
}"""


class RecordingEgress:
    """A WebSocket endpoint at ``/v1/relay`` on 127.0.0.1 that records each query string."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.opened = asyncio.Event()
        self.port = 0

    async def _relay(self, request: web.Request) -> web.WebSocketResponse:
        self.queries.append(request.query_string)
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.opened.set()
        async for _ in socket:
            pass
        return socket

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RecordingEgress]:
        app = web.Application()
        app.router.add_get("/v1/relay", self._relay)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        try:
            yield self
        finally:
            await runner.cleanup()


def _page_routes(app: web.Application) -> None:
    async def page(request: web.Request) -> web.Response:
        broker = f"http://127.0.0.1:{request.url.port}"
        html = (
            "<!doctype html><html><head><meta charset='utf-8'><title>a site</title></head>"
            f'<body><ferry-widget data-broker="{broker}"></ferry-widget>'
            '<script src="/widget.js" async></script></body></html>'
        )
        return web.Response(text=html, content_type="text/html")

    async def widget(request: web.Request) -> web.Response:
        return web.Response(body=WIDGET_JS.read_bytes(), content_type="text/javascript")

    app.router.add_get("/page", page)
    app.router.add_get("/widget.js", widget)


async def test_the_widget_reads_every_route_key_vector_as_python_does() -> None:
    fake = FakeBroker(egress="ws://127.0.0.1:9/v1/relay", matches=0)
    async with fake.running(_page_routes) as broker, chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{broker.url}/page")
        await wait_for_widget(page, "true")
        got = await page.evaluate(RUN_VECTORS, VECTORS)
    assert got["offers"] == [case["expect"] for case in VECTORS["offers"]]
    assert got["urls"] == [case["expect"] for case in VECTORS["urls"]]


async def _serve_one_offer(
    offer_for: Callable[[str], str],
) -> tuple[RecordingEgress, FakeBroker, OfferingPeer]:
    """A widget in Chromium gets one match whose offer is ``offer_for(real offer)``; the
    client's answer is applied when one comes. Returns after the widget handled the match."""
    peer = OfferingPeer(CLIENT_WEBRTC)
    offer = offer_for(await peer.create_offer())
    async with RecordingEgress().running() as egress:
        fake = FakeBroker(egress=f"ws://127.0.0.1:{egress.port}/v1/relay", offer=offer, matches=1)
        async with fake.running(_page_routes) as broker, chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"{broker.url}/page")
            await page.get_by_role("switch").click()
            await broker.wait_for_polls(2)  # the poll after the match: the relay started
            # A relay that accepts the offer answers after gathering candidates (within a
            # second or two on loopback); one that refuses it never does.
            for _ in range(40):
                if broker.answers:
                    break
                await asyncio.sleep(0.1)
            if broker.answers:
                channel = await peer.accept_answer(broker.answers[0])
                await asyncio.wait_for(egress.opened.wait(), 30)
                await channel.close()
    return egress, fake, peer


async def test_the_widget_opens_the_egress_websocket_with_the_clients_route_key() -> None:
    key = new_route_key()
    egress, broker, peer = await _serve_one_offer(lambda offer: with_route_key(offer, key))
    await peer.close()
    assert len(broker.answers) == 1
    assert egress.queries == [f"route={key}"]


async def test_the_widget_refuses_an_offer_with_a_malformed_route_key() -> None:
    bad = "a=x-ferry-route:AAAA&admin=1\r\nm="
    egress, broker, peer = await _serve_one_offer(lambda offer: offer.replace("m=", bad, 1))
    await peer.close()
    assert broker.answers == []
    assert egress.queries == []


async def _python_volunteer_serves_one_offer(
    offer_for: Callable[[str], str],
) -> tuple[RecordingEgress, FakeBroker, Volunteer]:
    """The same as :func:`_serve_one_offer` with a Python volunteer in this process."""
    peer = OfferingPeer(CLIENT_WEBRTC)
    offer = offer_for(await peer.create_offer())
    try:
        async with RecordingEgress().running() as egress:
            fake = FakeBroker(
                egress=f"ws://127.0.0.1:{egress.port}/v1/relay", offer=offer, matches=1
            )
            async with fake.running() as broker:
                volunteer = Volunteer(
                    VolunteerConfig(
                        broker_url=broker.url, webrtc=LOOPBACK_WEBRTC, allow_internal_egress=True
                    )
                )
                volunteer.start()
                try:
                    await broker.wait_for_polls(2)
                    for _ in range(40):
                        if broker.answers:
                            break
                        await asyncio.sleep(0.1)
                    if broker.answers:
                        channel = await peer.accept_answer(broker.answers[0])
                        await asyncio.wait_for(egress.opened.wait(), 30)
                        await channel.close()
                finally:
                    await volunteer.close()
    finally:
        await peer.close()
    return egress, fake, volunteer


async def test_the_python_volunteer_passes_the_route_key_on_too() -> None:
    key = new_route_key()
    egress, broker, _ = await _python_volunteer_serves_one_offer(
        lambda offer: with_route_key(offer, key)
    )
    assert len(broker.answers) == 1
    assert egress.queries == [f"route={key}"]


async def test_the_python_volunteer_refuses_and_counts_a_malformed_route_key() -> None:
    bad = "a=x-ferry-route:AAAA&admin=1\r\nm="
    egress, broker, volunteer = await _python_volunteer_serves_one_offer(
        lambda offer: offer.replace("m=", bad, 1)
    )
    assert broker.answers == []
    assert egress.queries == []
    refused = volunteer.metrics.registry.get_sample_value(
        "ferry_volunteer_rejected_total", {"reason": "bad_route"}
    )
    assert refused == 1.0
