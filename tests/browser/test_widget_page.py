"""The widget's switch, consent, persistence, accessibility, languages, vectors and pairing,
in real Chromium (docs/widget.md)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest
from playwright.async_api import Page

from ferry.core.broker_messages import DECODERS, MAX_BODY_BYTES, ClientOffer, encode
from ferry.errors import ProtocolError

from ..integration.chain import Origin, run_curl
from .support import WidgetNetwork, chromium, wait_for_widget, widget_status

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

ROOT = Path(__file__).parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "broker_messages.json").read_text("utf-8"))
IMAGES = ROOT / "docs" / "images"
CODE = "pair_0123456789ABCDEF"


async def _aria_checked(page: Page) -> str | None:
    return await page.get_by_role("switch").get_attribute("aria-checked")


async def test_switch_works_by_keyboard_and_survives_a_reload() -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await page.goto(net.page_url())
        await wait_for_widget(page, "s.state === 'off'")
        assert await _aria_checked(page) == "false"
        await page.keyboard.press("Tab")
        focused = await page.evaluate(
            "document.querySelector('ferry-widget').shadowRoot.activeElement?.getAttribute('role')"
        )
        assert focused == "switch"
        outline = await page.evaluate(
            "getComputedStyle(document.querySelector('ferry-widget').shadowRoot"
            ".querySelector('.switch')).outlineStyle"
        )
        assert outline == "solid"  # a visible focus ring under keyboard focus
        await page.keyboard.press("Space")
        assert await _aria_checked(page) == "true"
        await wait_for_widget(page, "s.state === 'looking'")
        await page.reload()
        await wait_for_widget(page, "s.state === 'looking'")
        assert await _aria_checked(page) == "true"
        await page.keyboard.press("Tab")
        await page.keyboard.press("Enter")
        assert await _aria_checked(page) == "false"
        await page.reload()
        await wait_for_widget(page, "s.state === 'off'")
        assert await _aria_checked(page) == "false"


async def test_with_the_switch_off_the_page_never_contacts_the_broker() -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await page.add_init_script(
            "window.peerConnections = 0; const Original = window.RTCPeerConnection;"
            "window.RTCPeerConnection = function (...a) { window.peerConnections += 1;"
            " return new Original(...a); };"
        )
        broker_requests: list[str] = []
        sockets: list[str] = []
        page.on(
            "request",
            lambda request: (
                broker_requests.append(request.url)
                if request.url.startswith(net.broker_url)
                else None
            ),
        )
        page.on("websocket", lambda socket: sockets.append(socket.url))
        await page.goto(net.page_url(self_hosted=True))
        await wait_for_widget(page, "s.state === 'off'")
        await page.reload()
        await wait_for_widget(page, "s.state === 'off'")
        await page.wait_for_timeout(1500)  # a poll would have left by now; none must
        assert broker_requests == []
        assert sockets == []
        assert await page.evaluate("window.peerConnections") == 0
        # the same page, switched on, does reach the broker (the check above can fail)
        async with page.expect_request(lambda r: r.url.endswith("/v1/volunteer/poll")):
            await page.get_by_role("switch").click()
        assert broker_requests


async def test_metered_connection_does_not_start_on_its_own() -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await page.add_init_script(
            "Object.defineProperty(navigator, 'connection',"
            " { value: { saveData: true, type: 'cellular' } });"
            "localStorage.setItem('ferry-widget.enabled', 'on');"
        )
        await page.goto(net.page_url())
        await wait_for_widget(page, "s.meteredHold === true && s.state === 'off'")
        text = await page.locator("ferry-widget .metered").inner_text()
        assert "metered" in text
        await page.get_by_role("switch").click()
        await wait_for_widget(page, "s.state === 'looking' && s.meteredHold === false")


async def test_the_widget_decodes_the_shared_vectors_like_python() -> None:
    vectors = list(VECTORS["vectors"])
    offer = encode(ClientOffer(offer="v=0\r\nm=application 9 x\r\n", egress="ws://a/"))
    vectors.append(
        {
            "name": "over 64 KiB",
            "message": "client_offer",
            "body_hex": (offer[:-1] + b" " * MAX_BODY_BYTES + b"}").hex(),
        }
    )
    expected = []
    for vector in vectors:
        body = (
            bytes.fromhex(vector["body_hex"])
            if "body_hex" in vector
            else vector["body"].encode("utf-8")
        )
        try:
            decoded = DECODERS[vector["message"]](body)
        except ProtocolError as exc:
            expected.append({"field": getattr(exc, "field", None), "reason": exc.reason})
        else:
            expected.append({"decoded": json.loads(json.dumps(dataclasses.asdict(decoded)))})
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await page.goto(net.page_url())
        await wait_for_widget(page, "s.state === 'off'")
        results = await page.evaluate(
            """(vectors) => {
              const { decode, MessageError } = customElements.get('ferry-widget').protocol;
              const bytesOf = (v) => 'body_hex' in v
                ? Uint8Array.from(v.body_hex.match(/../g) || [], (h) => parseInt(h, 16))
                : new TextEncoder().encode(v.body);
              return vectors.map((v) => {
                try { return { decoded: decode(v.message, bytesOf(v)) }; }
                catch (e) {
                  if (!(e instanceof MessageError)) return { crashed: String(e) };
                  return { field: e.field, reason: e.reason };
                }
              });
            }""",
            vectors,
        )
    mismatches = [
        (vector["name"], want, got)
        for vector, want, got in zip(vectors, expected, results, strict=True)
        if want != got
    ]
    assert mismatches == []
    assert len(results) == len(VECTORS["vectors"]) + 1


async def test_a_paired_widget_serves_only_its_paired_client(tmp_path: Path) -> None:
    size = 2 * 1024 * 1024
    async with WidgetNetwork().running() as net, chromium() as browser:
        public_volunteer = net.start_python_volunteer()
        page = await browser.new_page()
        await page.goto(net.page_url(pairing=CODE))
        await page.get_by_role("switch").click()
        await wait_for_widget(page, "s.state === 'looking' && s.pairing !== null")
        client = await net.start_client(volunteers=1, pairing=CODE)
        target = tmp_path / "download.bin"
        proxy = f"{client.proxy_address[0]}:{client.proxy_address[1]}"
        url = f"http://127.0.0.1:{net.origin.port}/bytes/{size}"
        code, _, err = await run_curl("--socks5-hostname", proxy, "-o", str(target), url)
        assert code == 0, err
        expected = hashlib.sha256(Origin.payload(size)).hexdigest()
        assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
        status = await widget_status(page)
        bytes_relayed = status["bytesRelayed"]
        assert isinstance(bytes_relayed, int) and bytes_relayed > size
        assert public_volunteer.clients_served == 0
        assert public_volunteer.bytes_relayed == 0


async def test_pairing_button_creates_a_code_and_a_link() -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await page.goto(net.page_url())
        await page.get_by_role("button", name="Create a private link").click()
        await wait_for_widget(page, "s.pairing !== null")
        status = await widget_status(page)
        code = status["pairing"]
        assert isinstance(code, str) and len(code) >= 16
        link = page.locator("ferry-widget .pairing-link")
        assert await link.get_attribute("href") == f"{net.broker_url}/#pairing={code}"
        await page.goto(f"{net.broker_url}/#pairing={code}")
        command = await page.locator("#pairing-command").inner_text()
        assert f"--pairing {code}" in command


@pytest.mark.parametrize(
    ("lang", "direction", "fragment"),
    [
        ("en", "ltr", "Share my connection"),
        ("zh-CN", "ltr", "分享我的网络连接"),
        ("zh-TW", "ltr", "分享我的網路連線"),
        ("fa", "rtl", "اشتراک‌گذاری اتصال من"),
        ("ru", "ltr", "Делиться моим подключением"),
        ("es", "ltr", "Compartir mi conexión"),
    ],
)
async def test_languages_from_the_catalogue(lang: str, direction: str, fragment: str) -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page(locale="en-US")
        await page.goto(net.page_url(lang=lang))
        await wait_for_widget(page, "s.state === 'off'")
        assert await page.get_by_role("switch", name=fragment).count() == 1
        box_direction = await page.evaluate(
            "document.querySelector('ferry-widget').shadowRoot.querySelector('.box').dir"
        )
        assert box_direction == direction


async def test_browser_language_is_used_without_data_lang() -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page(locale="ru-RU")
        await page.goto(net.page_url())
        await wait_for_widget(page, "s.state === 'off'")
        assert await page.get_by_role("switch", name="Делиться моим подключением").count() == 1


def _luminance(color: str) -> float:
    channels = [int(part) / 255 for part in color[color.index("(") + 1 : -1].split(",")[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(first: str, second: str) -> float:
    high, low = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("theme", ["light", "dark"])
async def test_contrast_passes_wcag_aa(theme: str) -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await page.goto(net.page_url(theme=theme))
        await wait_for_widget(page, "s.state === 'off'")
        for on in (False, True):
            colors = await page.evaluate(
                """() => {
                  const root = document.querySelector('ferry-widget').shadowRoot;
                  const style = (selector) => getComputedStyle(root.querySelector(selector));
                  return {
                    background: style('.box').backgroundColor,
                    text: [style('.title').color, style('.status').color, style('.note').color,
                           style('.totals').color, style('.pair').color],
                    track: style('.switch').backgroundColor,
                  };
                }"""
            )
            for text in colors["text"]:
                assert _contrast(text, colors["background"]) >= 4.5, (theme, text)
            assert _contrast(colors["track"], colors["background"]) >= 3.0, (theme, on)
            await page.get_by_role("switch").click()


SCREENSHOTS = [
    ("light", "panel", "en"),
    ("dark", "panel", "en"),
    ("light", "banner", "en"),
    ("dark", "banner", "en"),
    ("light", "panel", "fa"),
]


async def test_screenshots(tmp_path: Path) -> None:
    """Screenshots of the widget; ``FERRY_UPDATE_SCREENSHOTS=1`` writes them to docs/images."""
    folder = IMAGES if os.environ.get("FERRY_UPDATE_SCREENSHOTS") == "1" else tmp_path
    async with WidgetNetwork().running() as net, chromium() as browser:
        for theme, layout, lang in SCREENSHOTS:
            page = await browser.new_page(viewport={"width": 760, "height": 420})
            await page.goto(net.page_url(theme=theme, layout=layout, lang=lang))
            await wait_for_widget(page, "s.state === 'off'")
            path = folder / f"widget-{layout}-{theme}-{lang}.png"
            await page.locator("ferry-widget").screenshot(path=str(path))
            assert path.read_bytes().startswith(b"\x89PNG")
            await page.close()
    documented = (ROOT / "docs" / "widget.md").read_text("utf-8")
    for theme, layout, lang in SCREENSHOTS:
        name = f"images/widget-{layout}-{theme}-{lang}.png"
        assert (ROOT / "docs" / name).is_file()
        assert name in documented
