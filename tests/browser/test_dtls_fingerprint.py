"""The handshake a censor sees: ferry's browser engine against two plain Chromium pages.

ferry's engine runs its default browser, Chromium's headless shell; the reference is two
pages of the full Chromium browser, the browser people run.

Each test captures, on ``lo`` and on its own peers' UDP ports only, one WebRTC handshake
between two plain Chromium pages (the reference) and one made by ferry, in the same test,
and compares the DTLS hellos with tshark's dissection (tests/integration/dtls_capture.py).

In WebRTC the answerer usually takes ``a=setup:active`` and sends the ClientHello; the
offerer answers with the ServerHello. In ferry the client offers and the volunteer answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Page

from ferry.demo import LOOPBACK_WEBRTC
from ferry.transport.browser_webrtc import (
    BrowserEngine,
    BrowserEngineConfig,
    WebRtcMode,
    WebRtcStack,
    find_browser,
)
from ferry.transport.webrtc import AnsweringPeer

from ..integration.dtls_capture import (
    CERTIFICATE,
    CLIENT_HELLO,
    SERVER_HELLO,
    HandshakeMessage,
    LoopbackCapture,
    candidate_ports,
    dtls_handshakes,
    first,
    held_candidates,
    loopback_candidates,
)
from ..integration.fake_broker import FakeBroker, Listener
from .support import WIDGET_JS, chromium

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

_GATHERED = (
    "(pc) => new Promise((resolve) => { if (pc.iceGatheringState === 'complete') resolve();"
    " pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve(); })"
)
_OFFER = f"""async () => {{
  const gathered = {_GATHERED};
  window.pc = new RTCPeerConnection();
  const channel = pc.createDataChannel('ferry', {{ordered: false, maxRetransmits: 0,
                                                 protocol: 'ferry-quic/1'}});
  channel.onopen = () => {{ window.opened = true; }};
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  return pc.localDescription.sdp;
}}"""
_ANSWER = f"""async (offer) => {{
  const gathered = {_GATHERED};
  window.pc = new RTCPeerConnection();
  pc.ondatachannel = () => {{ window.opened = true; }};
  await pc.setRemoteDescription({{type: 'offer', sdp: offer}});
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  return pc.localDescription.sdp;
}}"""


async def _chromium_reference(pages: tuple[Page, Page], capture: Path) -> tuple[int, int]:
    """Two Chromium pages connect on loopback under capture; (offerer, answerer) ports."""
    offerer, answerer = pages
    offer = loopback_candidates(await offerer.evaluate(_OFFER))
    answer = loopback_candidates(await answerer.evaluate(_ANSWER, held_candidates(offer)))
    offer_port, answer_port = candidate_ports(offer)[0], candidate_ports(answer)[0]
    with LoopbackCapture(candidate_ports(offer) + candidate_ports(answer), capture):
        await offerer.evaluate("(sdp) => pc.setRemoteDescription({type: 'answer', sdp})", answer)
        await offerer.wait_for_function("window.opened === true", timeout=20_000)
        await answerer.wait_for_function("window.opened === true", timeout=20_000)
    return offer_port, answer_port


HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"
"""The engine's default browser where Debian's chromium-headless-shell is installed (as CI
installs it): its handshake is compared with two pages of the full Chromium (``chromium()``
of tests/browser/support.py)."""


def _default_browser() -> str:
    """The browser ferry's engine runs by default here, which must be the headless shell."""
    found = find_browser()
    assert found == HEADLESS_SHELL, (
        f"the engine's default browser is {found}, not {HEADLESS_SHELL}: install Debian's "
        "chromium-headless-shell (scripts/install-system-packages does)"
    )
    return found


@asynccontextmanager
async def _engine() -> AsyncIterator[BrowserEngine]:
    engine = BrowserEngine(BrowserEngineConfig(executable=_default_browser()), LOOPBACK_WEBRTC)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def _assert_same_hello(ferry: HandshakeMessage, reference: HandshakeMessage) -> None:
    assert ferry.versions == reference.versions
    assert ferry.cipher_suites == reference.cipher_suites
    assert set(ferry.extensions) == set(reference.extensions)  # Chromium shuffles the order
    assert ferry.key_share_groups == reference.key_share_groups
    assert ferry.srtp_profiles == reference.srtp_profiles
    assert abs(ferry.length - reference.length) <= 0.1 * reference.length
    assert abs(ferry.datagram_bytes - reference.datagram_bytes) <= 0.1 * reference.datagram_bytes


async def test_ferry_client_and_volunteer_in_the_browser_shake_hands_as_chromium_does(
    tmp_path: Path,
) -> None:
    async with chromium() as browser:
        pages = (await browser.new_page(), await browser.new_page())
        reference_capture = tmp_path / "chromium.pcap"
        ports = await _chromium_reference(pages, reference_capture)
        reference = dtls_handshakes(reference_capture, list(ports))
    reference_client_hello = first(reference, CLIENT_HELLO, ports[1])
    reference_server_hello = first(reference, SERVER_HELLO, ports[0])

    ferry_capture = tmp_path / "ferry.pcap"
    async with _engine() as client, _engine() as volunteer:
        client_peer, volunteer_peer = client.offering_peer(), volunteer.answering_peer()
        offer = await client_peer.create_offer()
        answer = await volunteer_peer.accept_offer(held_candidates(offer))
        client_port, volunteer_port = candidate_ports(offer)[0], candidate_ports(answer)[0]
        with LoopbackCapture([client_port, volunteer_port], ferry_capture):
            channel = await client_peer.accept_answer(answer)
            await volunteer_peer.wait_channel()
            assert channel.is_open
        await client_peer.close()
        await volunteer_peer.close()
    handshake = dtls_handshakes(ferry_capture, [client_port, volunteer_port])

    # the volunteer (`ferry volunteer --webrtc browser`) sends Chromium's ClientHello
    volunteer_hello = first(handshake, CLIENT_HELLO, volunteer_port)
    _assert_same_hello(volunteer_hello, reference_client_hello)
    assert "0xfefc" in volunteer_hello.versions  # DTLS 1.3 offered, as by Chromium
    assert reference_client_hello.datagram_bytes > 1000  # the post-quantum key share
    # the client (`ferry client --webrtc browser`) answers as a Chromium offerer does
    client_hello = first(handshake, SERVER_HELLO, client_port)
    assert client_hello.versions == reference_server_hello.versions
    assert client_hello.cipher_suites == reference_server_hello.cipher_suites
    assert set(client_hello.extensions) == set(reference_server_hello.extensions)
    assert client_hello.key_share_groups == reference_server_hello.key_share_groups
    assert abs(client_hello.length - reference_server_hello.length) <= 0.1 * (
        reference_server_hello.length
    )
    # DTLS 1.3: no certificate crosses the network in clear
    assert not [message for message in handshake if message.kind == CERTIFICATE]


async def test_the_browser_client_with_a_python_volunteer_shows_chromium_server_hello(
    tmp_path: Path,
) -> None:
    """What a censor on the client's network sees when the volunteer runs aiortc: the
    volunteer's aiortc ClientHello (DTLS 1.2 only) comes in, the client's Chromium answers in
    DTLS 1.2 with Chromium's certificate (``CN=WebRTC``) in clear."""
    capture = tmp_path / "mixed.pcap"
    async with _engine() as client:
        client_peer, volunteer_peer = client.offering_peer(), AnsweringPeer(LOOPBACK_WEBRTC)
        offer = await client_peer.create_offer()
        answer = await volunteer_peer.accept_offer(held_candidates(offer))
        client_port, volunteer_port = candidate_ports(offer)[0], candidate_ports(answer)[0]
        with LoopbackCapture([client_port, volunteer_port], capture):
            await client_peer.accept_answer(answer)
            await asyncio.wait_for(volunteer_peer.wait_channel(), 30)
        await client_peer.close()
        await volunteer_peer.close()
    handshake = dtls_handshakes(capture, [client_port, volunteer_port])
    volunteer_hello = first(handshake, CLIENT_HELLO, volunteer_port)
    assert volunteer_hello.versions == ("0xfefd",)  # aiortc: DTLS 1.2 only (a known gap)
    assert volunteer_hello.srtp_profiles == ("0x0001", "0x0008", "0x0007")  # aligned
    server_hello = first(handshake, SERVER_HELLO, client_port)
    assert server_hello.versions == ("0xfefd",)
    client_certificate = first(handshake, CERTIFICATE, client_port)
    assert "WebRTC" in client_certificate.certificate_names
    volunteer_certificate = first(handshake, CERTIFICATE, volunteer_port)
    assert "WebRTC" in volunteer_certificate.certificate_names  # aligned certificate


# --- every pairing the default client has ------------------------------------------------------
#
# "default" is what `ferry client` and `ferry volunteer` run with no option (--webrtc auto:
# the browser engine, Chromium being installed), "python" is --webrtc python, "widget" is the
# web widget in a Chromium page. The client offers, the volunteer answers and sends the
# ClientHello. Each pairing's handshake is captured on its own ports and reported (pytest -s
# prints the table); the two defaults must be a browser's throughout.

PAIRINGS = (
    ("default", "widget"),
    ("default", "default"),
    ("default", "python"),
    ("python", "default"),
    ("python", "widget"),
    ("python", "python"),
)
DTLS_1_3 = "0xfefc"


def _cli_default(role: str) -> object:
    import typer.core
    import typer.main

    from ferry.cli import app

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    for parameter in group.commands[role].params:
        if "--webrtc" in getattr(parameter, "opts", ()):
            return parameter.default
    raise AssertionError(f"ferry {role} has no --webrtc")


def _widget_routes(broker_port: list[int]) -> Callable[[web.Application], None]:
    def add(app: web.Application) -> None:
        async def page(request: web.Request) -> web.Response:
            html = (
                "<!doctype html><html><head><meta charset='utf-8'><title>a site</title></head>"
                f'<body><ferry-widget data-broker="http://127.0.0.1:{broker_port[0]}">'
                '</ferry-widget><script src="/widget.js" async></script></body></html>'
            )
            return web.Response(text=html, content_type="text/html")

        async def widget(request: web.Request) -> web.Response:
            return web.Response(body=WIDGET_JS.read_bytes(), content_type="text/javascript")

        app.router.add_get("/page", page)
        app.router.add_get("/widget.js", widget)

    return add


async def _widget_answer(offer: str) -> AsyncIterator[str]:
    """The widget's answer to ``offer`` (a fake broker hands it over); the widget's page stays
    open until the generator is closed."""
    async with Listener().running() as egress:
        fake = FakeBroker(egress=f"ws://127.0.0.1:{egress.port}/v1/relay", offer=offer, matches=1)
        port: list[int] = []
        async with fake.running(_widget_routes(port)) as broker, chromium() as browser:
            port.append(int(broker.url.rsplit(":", 1)[1]))
            page = await browser.new_page()
            await page.goto(f"{broker.url}/page")
            await page.get_by_role("switch").click()
            for _ in range(300):
                if broker.answers:
                    break
                await asyncio.sleep(0.1)
            assert broker.answers, "the widget gave no answer"
            yield loopback_candidates(broker.answers[0])


async def _capture_pairing(
    client_side: str, volunteer_side: str, stacks: dict[str, WebRtcStack], capture: Path
) -> tuple[list[HandshakeMessage], int, int]:
    """One handshake of the pairing under capture: (messages, client port, volunteer port)."""
    client_peer = stacks[client_side].offering_peer()
    volunteer_peer = None if volunteer_side == "widget" else stacks[volunteer_side].answering_peer()
    widget = None
    try:
        offer = await client_peer.create_offer()
        if volunteer_peer is None:
            widget = _widget_answer(held_candidates(offer))
            answer = await anext(widget)
        else:
            answer = await volunteer_peer.accept_offer(held_candidates(offer))
        client_port, volunteer_port = candidate_ports(offer)[0], candidate_ports(answer)[0]
        with LoopbackCapture([client_port, volunteer_port], capture):
            await client_peer.accept_answer(answer)
            if volunteer_peer is not None:
                await asyncio.wait_for(volunteer_peer.wait_channel(), 30)
    finally:
        await client_peer.close()
        if volunteer_peer is not None:
            await volunteer_peer.close()
        if widget is not None:
            await widget.aclose()
    return dtls_handshakes(capture, [client_port, volunteer_port]), client_port, volunteer_port


def _report_line(pairing: str, message: HandshakeMessage, sender: str) -> str:
    name = {CLIENT_HELLO: "ClientHello", SERVER_HELLO: "ServerHello", CERTIFICATE: "Certificate"}
    return (
        f"{pairing:<20} {sender:<9} {name[message.kind]:<11} "
        f"versions={','.join(message.versions) or '-':<14} "
        f"dtls1.3={'yes' if DTLS_1_3 in message.versions else 'no':<3} "
        f"bytes={message.datagram_bytes}"
    )


async def test_every_pairing_of_the_default_client_and_the_defaults_are_a_browser_s(
    tmp_path: Path,
) -> None:
    # "default" is the browser engine because both commands default to auto and Chromium is here
    assert _cli_default("client") == "auto" and _cli_default("volunteer") == "auto"
    async with chromium() as browser:
        pages = (await browser.new_page(), await browser.new_page())
        reference_ports = await _chromium_reference(pages, tmp_path / "chromium.pcap")
    reference = dtls_handshakes(tmp_path / "chromium.pcap", list(reference_ports))
    reference_client_hello = first(reference, CLIENT_HELLO, reference_ports[1])

    stacks = {
        "default": WebRtcStack(
            WebRtcMode.AUTO, LOOPBACK_WEBRTC, BrowserEngineConfig(_default_browser())
        ),
        "python": WebRtcStack(WebRtcMode.PYTHON, LOOPBACK_WEBRTC),
    }
    report: list[str] = []
    browser_throughout: dict[tuple[str, str], bool] = {}
    try:
        assert (await stacks["default"].start()).stack == "browser"
        await stacks["python"].start()
        for client_side, volunteer_side in PAIRINGS:
            pairing = f"{client_side}/{volunteer_side}"
            capture = tmp_path / f"{client_side}-{volunteer_side}.pcap"
            messages, client_port, volunteer_port = await _capture_pairing(
                client_side, volunteer_side, stacks, capture
            )
            hellos = [m for m in messages if m.kind in (CLIENT_HELLO, SERVER_HELLO)]
            assert {m.kind for m in hellos} == {CLIENT_HELLO, SERVER_HELLO}, (pairing, messages)
            for message in messages:
                sender = "client" if message.source_port == client_port else "volunteer"
                report.append(_report_line(pairing, message, sender))
            certificates = [m for m in messages if m.kind == CERTIFICATE]
            report.append(f"{pairing:<20} cleartext Certificate: {len(certificates)}")
            browser_throughout[(client_side, volunteer_side)] = not certificates and all(
                DTLS_1_3 in m.versions for m in hellos
            )
            if "python" not in pairing:
                volunteer_hello = first(messages, CLIENT_HELLO, volunteer_port)
                _assert_same_hello(volunteer_hello, reference_client_hello)
    finally:
        for stack in stacks.values():
            await stack.close()
    print("\n" + "\n".join(report))
    assert browser_throughout[("default", "widget")], report
    assert browser_throughout[("default", "default")], report
    # the check can fail: aiortc's DTLS 1.2 on either end is told apart
    assert not browser_throughout[("default", "python")], report
    assert not browser_throughout[("python", "default")], report
