"""The widget, in Debian's Chromium, polls no sooner than a 429's Retry-After asks.

A real broker on 127.0.0.1 with a very low poll limit, embedded cross-origin (the host page is
on another port), so the 429 is read through CORS: without ``Access-Control-Expose-Headers:
Retry-After`` the widget could not see the header and would poll again after its own 1 s
backoff, which the assertion (gap ≥ the 2 s Retry-After) catches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker

from ..integration.broker_recorder import (
    assert_waited,
    broker_config,
    record_requests,
    refused_then_next,
)
from ..waiting import wait_until
from .support import chromium, wait_for_widget

pytestmark = pytest.mark.browser


@asynccontextmanager
async def host_page(broker_url: str) -> AsyncIterator[str]:
    """A website on its own port embedding the widget from the broker; yields its URL."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><html><head><meta charset='utf-8'><title>site</title></head>"
            f"<body><ferry-widget data-broker='{broker_url}' data-lang='en'></ferry-widget>"
            f"<script src='{broker_url}/widget.js' async></script></body></html>",
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def test_the_widget_waits_for_retry_after_before_polling_again() -> None:
    # One poll, then a token every 2 s; polls end in 0.1 s: the second poll meets a 429 with
    # Retry-After 2, and the widget's own backoff (1 s) would poll again too soon.
    broker = Broker(
        broker_config(poll_rate=0.5, poll_burst=1, poll_timeout=0.1), CollectorRegistry()
    )
    seen = record_requests(broker)
    async with broker, host_page(broker.base_url) as url, chromium() as browser:
        page = await browser.new_page()
        await page.goto(url)
        await wait_for_widget(page, "s.state === 'off'")
        await page.get_by_role("switch").click()
        await wait_until(
            lambda: len(refused_then_next(seen, "/v1/volunteer/poll", 429)) >= 2,
            "two refused polls, each followed by another",
        )
        await page.close()
    assert_waited(refused_then_next(seen, "/v1/volunteer/poll", 429))
