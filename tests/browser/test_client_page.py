"""The client's local page in real Chromium (docs/client.md): connected with a live speed,
a damaged bridge line refused, Persian right to left, foreign Host and Origin refused, and a
browser configured by the client's PAC file loading a page through ferry.

The screenshots in docs/images/ (client-page-en/zh_CN/fa.png) are written by these tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from ferry.client.app import ClientApp
from ferry.client.messages import catalogue

from ..integration.chain import socks5_connect
from ..integration.client_network import ORIGIN_NAME, ClientNetwork
from .support import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

IMAGES = Path(__file__).parents[2] / "docs" / "images"
REBIND_NAME = "rebind.test"
"""A name this test's Chromium resolves to 127.0.0.1, as a DNS-rebinding attacker's would."""


@asynccontextmanager
async def chromium(*extra: str) -> AsyncIterator[Browser]:
    """Debian's Chromium with the suite's flags; ``REBIND_NAME`` maps to 127.0.0.1."""
    args = [
        argument for argument in CHROMIUM_ARGS if not argument.startswith("--host-resolver-rules=")
    ]
    args.append(
        f"--host-resolver-rules=MAP {REBIND_NAME} 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=[*args, *extra])
        try:
            yield browser
        finally:
            await browser.close()


def refused(client: ClientApp, reason: str) -> float:
    value = client.registry.get_sample_value("ferry_client_page_refused_total", {"reason": reason})
    return value or 0.0


async def download(client: ClientApp, net: ClientNetwork, size: int) -> int:
    """One download through the client's SOCKS port; returns the bytes received."""
    code, reader, writer = await socks5_connect(client.proxy_address, ORIGIN_NAME, net.origin.port)
    assert code == 0
    try:
        writer.write(f"GET /bytes/{size} HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n".encode())
        return len(await asyncio.wait_for(reader.read(), 60))
    finally:
        writer.close()


async def page_condition(page: Page, expression: str, timeout: float = 10.0) -> bool:
    """Whether ``expression`` (JavaScript) becomes true within ``timeout`` seconds.

    Polled with ``page.evaluate`` (DevTools, which the page's Content-Security-Policy does not
    restrict) rather than ``wait_for_function``, which needs ``eval`` inside the page.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await page.evaluate(expression):
            return True
        await asyncio.sleep(0.1)
    return False


async def show_some_traffic(page: Page, client: ClientApp, net: ClientNetwork) -> None:
    """A download, then wait until the chart has drawn it (for the screenshots)."""
    assert await download(client, net, 2_000_000) > 2_000_000
    assert await page_condition(
        page, "Number(document.getElementById('chart').dataset.peakDown) > 0"
    )


async def screenshot(page: Page, name: str) -> None:
    await page.set_viewport_size({"width": 900, "height": 1500})
    await page.screenshot(path=str(IMAGES / name), full_page=True)


async def test_page_shows_connected_and_live_speed_during_downloads() -> None:
    async with ClientNetwork().running() as net, chromium() as browser:
        client = await net.start_client()
        page = await browser.new_page()
        await page.goto(client.page_url)
        await page.wait_for_selector("#state[data-connected='true']", timeout=30_000)
        english = catalogue("en")
        assert await page.text_content("#headline") == english.text("page.connected")
        assert await page.text_content("#reason") == english.text("state.connected")
        assert await page.text_content("#volunteers") == "1"
        assert net.bridge is not None
        assert await page.text_content("#bridge") == str(net.bridge)

        # Download while the page polls, until it shows a download speed (bounded).
        live = False
        for _ in range(20):
            assert await download(client, net, 2_000_000) > 2_000_000
            live = await page_condition(
                page, "document.getElementById('down').textContent !== '0 B/s'", timeout=1.5
            )
            if live:
                break
        assert live, "the page never showed a download speed"
        speed = await page.text_content("#down")
        assert speed is not None and speed.endswith("B/s") and speed[0].isdigit()
        peak = await page.get_attribute("#chart", "data-peak-down")
        assert peak is not None and float(peak) > 0
        # The chart draws a line once the page holds two samples (one per poll).
        assert await page_condition(
            page,
            "(document.getElementById('line-down').getAttribute('points') || '')"
            ".trim().split(/\\s+/).length >= 2",
        ), "the chart never drew a line"
        points = await page.get_attribute("#line-down", "points")
        assert points and len(points.split()) >= 2
        used = await page.text_content("#used")
        assert used is not None and " MB down" in used
        await screenshot(page, "client-page-en.png")

        # The Reconnect button starts a new tunnel, which connects by itself.
        first_tunnel = client.tunnel
        await page.click("#reconnect")
        assert await page_condition(page, "!document.getElementById('reconnect').disabled")
        assert client.tunnel is not first_tunnel
        await page.wait_for_selector("#state[data-connected='true']", timeout=30_000)


async def test_a_damaged_bridge_line_shows_the_checksum_error() -> None:
    async with ClientNetwork().running() as net, chromium() as browser:
        client = await net.start_client()
        page = await browser.new_page()
        await page.goto(client.page_url)
        line = str(net.bridge)
        damaged = line.replace("ws://127.0.0.1:", "ws://127.0.0.1:1", 1)
        await page.fill("#new-bridge", damaged)
        await page.click("#apply-bridge")
        await page.wait_for_selector("#bridge-result.error", timeout=10_000)
        assert await page.text_content("#bridge-result") == catalogue("en").text("bridge.damaged")
        assert await page.get_attribute("#bridge-result", "data-error") == "bridge.damaged"
        assert client.bridge == net.bridge  # nothing changed

        # The same in Chinese, and a truncated line.
        await page.goto(client.page_url + "?lang=zh_CN")
        await page.fill("#new-bridge", line[:-2])
        await page.click("#apply-bridge")
        await page.wait_for_selector("#bridge-result.error", timeout=10_000)
        assert (
            await page.text_content("#bridge-result")
            == "此网桥行已损坏：校验和不匹配。请重新复制。"
        )
        refused_lines = client.registry.get_sample_value(
            "ferry_client_page_bridge_lines_refused_total", {"reason": "damaged"}
        )
        assert refused_lines == 2
        await page.wait_for_selector("#state[data-connected='true']", timeout=30_000)
        await show_some_traffic(page, client, net)
        await screenshot(page, "client-page-zh_CN.png")


async def test_persian_page_is_right_to_left() -> None:
    async with ClientNetwork().running() as net, chromium() as browser:
        client = await net.start_client(net.client_config(language="fa"))
        page = await browser.new_page()
        await page.goto(client.page_url)
        assert await page.get_attribute("html", "dir") == "rtl"
        assert await page.get_attribute("html", "lang") == "fa"
        direction = await page.evaluate("getComputedStyle(document.body).direction")
        assert direction == "rtl"
        await page.wait_for_selector("#state[data-connected='true']", timeout=30_000)
        assert await page.text_content("#headline") == "وصل است"
        # Right to left: the headline's text starts at the right edge of its card.
        box = await page.evaluate(
            "(() => { const r = document.getElementById('headline').getBoundingClientRect();"
            " const c = document.getElementById('state').getBoundingClientRect();"
            " return [c.right - r.right, r.left - c.left]; })()"
        )
        assert box[0] < box[1]
        # The bridge line itself stays left to right.
        assert await page.get_attribute("#bridge", "dir") == "ltr"
        # Running the self-check from the page, in Persian.
        await page.click("#run-check")
        await page.wait_for_selector("#check-summary.ok", timeout=60_000)
        assert await page.text_content("#check-summary") == "همهٔ مراحل درست بود: ferry کار می‌کند."
        assert await page.locator("#check-results li").count() == 7
        await show_some_traffic(page, client, net)
        await screenshot(page, "client-page-fa.png")


async def test_foreign_host_and_origin_are_refused() -> None:
    async with ClientNetwork().running() as net, chromium() as browser:
        client = await net.start_client(connect=False)
        port = int(client.page_url.rstrip("/").rsplit(":", 1)[1])

        # DNS rebinding: a name the attacker controls now points at 127.0.0.1.
        page = await browser.new_page()
        response = await page.goto(f"http://{REBIND_NAME}:{port}/")
        assert response is not None and response.status == 403
        assert refused(client, "host") >= 1  # the page (and Chromium's favicon request)

        # A web page on another origin tries to drive the client.
        async def attacker(request: web.Request) -> web.Response:
            return web.Response(
                text="<!doctype html><title>a web page</title>", content_type="text/html"
            )

        app = web.Application()
        app.router.add_get("/", attacker)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            await page.goto(f"http://{REBIND_NAME}:{runner.addresses[0][1]}/")
            outcome = await page.evaluate(
                f"""async () => {{
                    const results = [];
                    const tries = [["POST", "v1/reconnect"], ["GET", "v1/status"]];
                    for (const [method, path] of tries) {{
                        try {{
                            const r = await fetch("{client.page_url}" + path, {{
                                method, mode: "no-cors",
                                body: method === "POST" ? "{{}}" : undefined }});
                            results.push(r.type);
                        }} catch (error) {{ results.push("error"); }}
                    }}
                    return results;
                }}"""
            )
        finally:
            await runner.cleanup()
        assert outcome == ["opaque", "opaque"]  # the browser sent them; the client refused
        assert refused(client, "origin") == 1  # the POST carried the foreign Origin
        assert refused(client, "cross_site") == 1  # the GET was marked cross-site


async def test_chromium_with_the_pac_file_loads_a_page_through_ferry() -> None:
    async with ClientNetwork().running() as net:
        client = await net.start_client()
        pac_url = client.page_url + "proxy.pac"
        async with chromium(f"--proxy-pac-url={pac_url}") as browser:
            page = await browser.new_page()
            # origin.test resolves nowhere for this Chromium: only the egress knows the name.
            response = await page.goto(f"http://{ORIGIN_NAME}:{net.origin.port}/through-ferry")
            assert response is not None and response.status == 200
            assert await page.text_content("body") == "hello through ferry\n"
        assert ORIGIN_NAME in net.resolver.asked
        opened = client.registry.get_sample_value("ferry_client_proxy_connections_total")
        assert opened is not None and opened >= 1
