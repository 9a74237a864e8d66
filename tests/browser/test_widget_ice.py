"""The widget answers each match with the STUN and TURN servers of its poll response, and
does not wait for a STUN server that never answers (docs/widget.md, "ICE servers").

The broker here is a fake one run by the test (``FakeBroker``): its poll answers with a real
offer from a Python :class:`OfferingPeer` and whatever ``ice_servers`` the test chooses, which
name STUN servers the test runs on 127.0.0.1. The widget's own path is tested end to end: its
decoder, the ``RTCPeerConnection`` it builds, Chromium's gathering and the answer it posts.

What Debian's Chromium does on loopback (measured, and relied on below): it sends STUN Binding
requests to a ``stun:127.0.0.1:PORT`` server from its host candidates' sockets, the requests
arriving from 127.0.0.1; it turns the answer's XOR-MAPPED-ADDRESS into a ``typ srflx``
candidate within milliseconds; and while one STUN server stays silent it retransmits to it
and keeps ``iceGatheringState`` at ``"gathering"`` for well over ten seconds (no
``icecandidateerror`` within 15 s either). But as soon as one ICE connection becomes
writable it stops gathering and reports ``"complete"``: answering the Python peer's offer
as it is, Chromium connects to its 127.0.0.1 candidate within milliseconds (the peer answers
checks before it has the answer) and the silent server no longer matters. A client far away
is not that quick, so the offers here are sent without their candidates
(:func:`without_candidates`): Chromium then checks nothing and gathers alone. The responders
map every request to ``MAPPED_HOST`` so that the srflx candidate can only have come from them.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aioice import stun
from playwright.async_api import Page

from ferry.core.broker_messages import MessageError, decode_ice_servers_response
from ferry.transport.webrtc import OfferingPeer

from .support import CLIENT_WEBRTC, WIDGET_JS, chromium, wait_for_widget

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

MATCH_ID = "match-ABCDEFGHIJKLMNOP"
MAPPED_HOST = "127.0.0.9"
"""The address the test's STUN servers tell Chromium it has (loopback, and unlike any of its
own addresses)."""

RECORD_PEER_CONNECTIONS = (
    "window.peerConfigs = []; const Original = window.RTCPeerConnection;"
    "window.RTCPeerConnection = function (config) { window.peerConfigs.push(config);"
    " return new Original(config); };"
)
"""Init script: every configuration the page passes to ``RTCPeerConnection``."""


class UdpServer(asyncio.DatagramProtocol):
    """A STUN server on 127.0.0.1 that answers Binding requests with ``MAPPED_HOST`` and the
    sender's port, or (``silent``) reads every datagram and never answers."""

    def __init__(self, *, silent: bool = False) -> None:
        self.silent = silent
        self.requests = 0
        self.datagrams = 0
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.datagrams += 1
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_class != stun.Class.REQUEST:
            return
        self.requests += 1
        if self.silent or request.message_method != stun.Method.BINDING:
            return
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = (MAPPED_HOST, addr[1])
        assert self._transport is not None
        self._transport.sendto(bytes(response), addr)

    @property
    def url(self) -> str:
        return f"stun:127.0.0.1:{self.port}"

    @classmethod
    @asynccontextmanager
    async def running(cls, *, silent: bool = False) -> AsyncIterator[UdpServer]:
        server = cls(silent=silent)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: server, local_addr=("127.0.0.1", 0)
        )
        server._transport = transport
        server.port = transport.get_extra_info("sockname")[1]
        try:
            yield server
        finally:
            transport.close()


def without_candidates(sdp: str) -> str:
    """``sdp`` without its ``a=candidate`` and ``a=end-of-candidates`` lines."""
    lines = sdp.split("\r\n")
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-cand"))]
    return "\r\n".join(kept)


class FakeBroker:
    """Serves a page with the widget (same origin) and the two volunteer endpoints: the first
    poll gets ``first_response`` (``"match": "OFFER"`` becomes a match with a real offer, sent
    without its candidates), later polls get
    ``{"match": null}`` after a short hold; answers are recorded and accepted."""

    def __init__(self, first_response: dict[str, Any]) -> None:
        self.first_response = first_response
        self.polls = 0
        self.answers: list[dict[str, Any]] = []
        self.answered = asyncio.Event()
        self.offer = ""
        self.url = ""

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><html><head><meta charset='utf-8'><title>site</title></head>"
            f"<body><ferry-widget data-broker='{self.url}' data-lang='en'></ferry-widget>"
            "<script src='/widget.js' async></script></body></html>",
            content_type="text/html",
        )

    async def _widget(self, request: web.Request) -> web.Response:
        return web.Response(body=WIDGET_JS.read_bytes(), content_type="text/javascript")

    async def _poll(self, request: web.Request) -> web.Response:
        await request.read()
        self.polls += 1
        if self.polls == 1:
            body = dict(self.first_response)
            if body.get("match") == "OFFER":
                body["match"] = {
                    "id": MATCH_ID,
                    "offer": self.offer,
                    "egress": "ws://127.0.0.1:9/v1/relay",
                }
            return web.json_response(body)
        await asyncio.sleep(0.5)
        return web.json_response({"match": None})

    async def _answer(self, request: web.Request) -> web.Response:
        self.answers.append(json.loads(await request.read()))
        self.answered.set()
        return web.json_response({"ok": True})

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeBroker]:
        client = OfferingPeer(CLIENT_WEBRTC)
        self.offer = without_candidates(await client.create_offer())
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/widget.js", self._widget)
        app.router.add_post("/v1/volunteer/poll", self._poll)
        app.router.add_post("/v1/volunteer/answer", self._answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield self
        finally:
            await runner.cleanup()
            await client.close()


async def _switch_on(page: Page, broker: FakeBroker) -> None:
    await page.add_init_script(RECORD_PEER_CONNECTIONS)
    await page.goto(broker.url + "/")
    await wait_for_widget(page, "s.state === 'off'")
    await page.get_by_role("switch").click()


async def _answer_and_gathering(page: Page, broker: FakeBroker) -> tuple[str, dict[str, Any]]:
    await asyncio.wait_for(broker.answered.wait(), 30)
    [answer] = broker.answers
    assert answer["match_id"] == MATCH_ID
    gathering = await page.evaluate(
        "document.querySelector('ferry-widget').volunteer.lastGathering"
    )
    assert isinstance(gathering, dict)
    return answer["answer"], gathering


def _srflx_candidates(sdp: str) -> list[str]:
    return re.findall(r"^a=candidate:.* typ srflx .*$", sdp, flags=re.MULTILINE)


async def test_a_matchs_ice_servers_reach_the_peer_connection() -> None:
    async with (
        UdpServer.running() as stun_server,
        UdpServer.running(silent=True) as turn_server,
    ):
        turn_url = f"turn:127.0.0.1:{turn_server.port}?transport=udp"
        ice_servers = [
            {"url": stun_server.url},
            {"url": turn_url, "username": "1767225600:ab", "credential": "c2VjcmV0+/="},
            {"url": "turn:127.0.0.1:9"},  # no credentials: the browser could not use it
        ]
        fake = FakeBroker({"match": "OFFER", "ice_servers": ice_servers})
        async with fake.running() as broker, chromium() as browser:
            page = await browser.new_page()
            await _switch_on(page, broker)
            sdp, gathering = await _answer_and_gathering(page, broker)
            configs = await page.evaluate("window.peerConfigs")
    expected = [
        {"urls": stun_server.url},
        {"urls": turn_url, "username": "1767225600:ab", "credential": "c2VjcmV0+/="},
    ]
    assert configs == [{"iceServers": expected}]
    assert gathering["iceServers"] == expected
    assert stun_server.requests >= 1  # Chromium sent a Binding request to 127.0.0.1
    assert turn_server.requests >= 1  # and a TURN Allocate request
    srflx = _srflx_candidates(sdp)
    assert srflx and all(f" {MAPPED_HOST} " in candidate for candidate in srflx)
    # a TURN server was given and never answered: no relay candidate, so the full wait
    assert gathering["reason"] == "timeout"
    assert " typ relay " not in sdp


async def test_the_answer_does_not_wait_for_a_silent_stun_server() -> None:
    async with (
        UdpServer.running() as live,
        UdpServer.running(silent=True) as silent,
    ):
        ice_servers = [{"url": silent.url}, {"url": live.url}]
        fake = FakeBroker({"match": "OFFER", "ice_servers": ice_servers})
        async with fake.running() as broker, chromium() as browser:
            page = await browser.new_page()
            await _switch_on(page, broker)
            sdp, gathering = await _answer_and_gathering(page, broker)
    assert live.requests >= 1
    assert silent.requests >= 1  # asked, never answered: Chromium was still waiting for it
    assert gathering["reason"] == "enough"
    assert gathering["state"] == "gathering"
    srflx = _srflx_candidates(sdp)
    assert srflx and all(f" {MAPPED_HOST} " in candidate for candidate in srflx)


async def test_without_ice_servers_gathering_ends_when_chromium_completes() -> None:
    fake = FakeBroker({"match": "OFFER"})
    async with fake.running() as broker, chromium() as browser:
        page = await browser.new_page()
        await _switch_on(page, broker)
        sdp, gathering = await _answer_and_gathering(page, broker)
        configs = await page.evaluate("window.peerConfigs")
    assert configs == [{"iceServers": []}]
    assert gathering["reason"] == "complete"
    assert " typ host " in sdp and " typ srflx " not in sdp


async def test_a_poll_response_with_a_bad_ice_server_is_refused_whole() -> None:
    # a valid match next to an ICE server URL Python refuses (an IPv4 octet with a leading 0)
    fake = FakeBroker({"match": "OFFER", "ice_servers": [{"url": "stun:127.0.0.01:3478"}]})
    async with fake.running() as broker, chromium() as browser:
        page = await browser.new_page()
        await _switch_on(page, broker)
        await wait_for_widget(page, "s.state === 'error'")
        error = await page.evaluate("document.querySelector('ferry-widget').volunteer.lastError")
        assert "ice_servers.0.url" in error
        # still on: it backs off (1 s) and polls again, and the next response is fine
        await wait_for_widget(page, "s.state === 'looking'")
        assert broker.polls >= 2
        assert await page.get_by_role("switch").get_attribute("aria-checked") == "true"
        assert await page.evaluate("window.peerConfigs") == []
    assert broker.answers == []


def _odd_urls(count: int) -> list[str]:
    """Seeded random STUN/TURN URLs near the edges of the grammar (IPv6 forms above all)."""
    chooser = random.Random(14)

    def ipv6() -> str:
        groups = [
            format(chooser.randrange(0x10000), "x")[: chooser.randint(1, 5)]
            for _ in range(chooser.randint(1, 9))
        ]
        text = ":".join(groups)
        if chooser.random() < 0.6:
            at = chooser.randint(0, len(text))
            text = text[:at] + "::" + text[at:]
        if chooser.random() < 0.3:
            octets = chooser.choice(["1.2.3.4", "0.0.0.0", "255.255.255.255", "1.2.3", "01.2.3.4"])
            text += (":" if chooser.random() < 0.8 else "") + octets
        return text

    def name() -> str:
        return ".".join(
            "".join(chooser.choice("ab9-Z_") for _ in range(chooser.randint(0, 4)))
            for _ in range(chooser.randint(1, 4))
        )

    urls = []
    for _ in range(count):
        scheme = chooser.choice(["stun", "stuns", "turn", "turns"])
        host = chooser.choice([f"[{ipv6()}]", f"[{ipv6()}]", name(), "1.2.300.4", "1.2.3.04"])
        port = chooser.choice(["", "", ":1", ":65535", ":65536", ":0", ":007"])
        transport = chooser.choice(["", "", "?transport=udp", "?transport=tcp"])
        urls.append(f"{scheme}:{host}{port}{transport}")
    return urls


async def test_odd_ice_server_urls_are_judged_like_python() -> None:
    urls = [
        "stun:[::]",
        "stun:[::1.2.3.4]",
        "stun:[1::2::3]",
        "stun:[:1:2:3:4:5:6:7]",
        "stun:[1:2:3:4:5:6:7:]",
        "stun:[1:2:3:4:5:6:7::]",
        "stun:[::1:2:3:4:5:6:7]",
        "stun:[1:2:3:4:5:6:1.2.3.4]",
        "stun:[1:2:3:4:5:6:7:1.2.3.4]",
        "stun:[12345::1]",
        "stun:[1.2.3.4]",
        "stun:[::1.2.3]",
        "stun:a.example.",
        "stun:1.2.3.4.",
        "stun:example.123",
        "stun:123.example",
        "stun:" + "a" * 63 + ".example",
        "stun:" + "a" * 64 + ".example",
        *_odd_urls(3000),
    ]
    bodies = [json.dumps({"ice_servers": [{"url": url}], "ttl": 60}) for url in urls]
    expected = []
    for body in bodies:
        try:
            decode_ice_servers_response(body.encode())
        except MessageError as exc:
            expected.append(f"{exc.field} {exc.reason}")
        else:
            expected.append("valid")
    assert 100 < expected.count("valid") < len(urls) - 100  # both sides well covered
    fake = FakeBroker({"match": None})
    async with fake.running() as broker, chromium() as browser:
        page = await browser.new_page()
        await page.goto(broker.url + "/")
        await wait_for_widget(page, "s.state === 'off'")
        results = await page.evaluate(
            """(bodies) => {
              const { decode } = customElements.get('ferry-widget').protocol;
              return bodies.map((body) => {
                const bytes = new TextEncoder().encode(body);
                try { decode('ice_servers_response', bytes); return 'valid'; }
                catch (e) { return `${e.field} ${e.reason}`; }
              });
            }""",
            bodies,
        )
    mismatches = [
        (url, want, got)
        for url, want, got in zip(urls, expected, results, strict=True)
        if want != got
    ]
    assert mismatches == []
