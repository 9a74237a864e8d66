"""The widget tells the broker it is a browser volunteer (``"kind": "browser"``, protocol.md
§2.2), and the broker counts it so."""

from __future__ import annotations

import asyncio
import json

import pytest

from .support import WidgetNetwork, chromium, wait_for_widget

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


async def test_widget_polls_as_a_browser_and_is_counted_as_one() -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await page.goto(net.page_url(self_hosted=True))
        await wait_for_widget(page, "s.state === 'off'")
        async with page.expect_request(
            lambda r: r.url.endswith("/v1/volunteer/poll") and r.method == "POST"
        ) as polled:
            await page.get_by_role("switch").click()
        request = await polled.value
        body = json.loads(request.post_data or "{}")
        assert body["kind"] == "browser"
        assert net.broker is not None
        for _ in range(500):
            available = net.broker.store.available_volunteers()
            if available:
                break
            await asyncio.sleep(0.02)
        assert [(a.kind, a.count) for a in available] == [("browser", 1)]
