"""The kind a volunteer reports in its polls: ``python-browser-engine`` on the browser engine,
``python`` on aiortc, and ``python`` for good once a broker that predates the engine kind
refuses it (so a new volunteer keeps working with an old broker)."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp import web

from ferry.core.broker_messages import PollResponse, encode
from ferry.volunteer.broker_client import BrokerClient

pytestmark = pytest.mark.integration


async def _old_broker(kinds_seen: list[str]) -> web.AppRunner:
    """A broker that, like those before ``python-browser-engine``, knows two kinds only."""

    async def poll(request: web.Request) -> web.Response:
        kind = json.loads(await request.read()).get("kind", "unknown")
        kinds_seen.append(kind)
        if kind not in ("browser", "python"):
            body = {"error": 'kind must be "browser" or "python"', "field": "kind"}
            return web.json_response(body, status=400)
        return web.Response(body=encode(PollResponse(None)), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/volunteer/poll", poll)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def test_an_engine_volunteer_falls_back_to_python_with_an_old_broker() -> None:
    kinds_seen: list[str] = []
    runner = await _old_broker(kinds_seen)
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            broker = BrokerClient(f"http://127.0.0.1:{port}", session)
            for _ in range(2):
                response = await broker.poll_response(
                    "volunteer_0123456789", 1, kind="python-browser-engine"
                )
                assert response.match is None
    finally:
        await runner.cleanup()
    # Refused once, sent again as python, then python from the start.
    assert kinds_seen == ["python-browser-engine", "python", "python"]


async def test_a_broker_refusing_python_is_not_retried() -> None:
    kinds_seen: list[str] = []
    runner = await _old_broker(kinds_seen)
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            broker = BrokerClient(f"http://127.0.0.1:{port}", session)
            response = await broker.poll_response("volunteer_0123456789", 1, kind="python")
            assert response.match is None
    finally:
        await runner.cleanup()
    assert kinds_seen == ["python"]
