"""A relay WebSocket hands at most ``datagrams_per_turn`` datagrams over per event-loop turn.

The egress serves every session in one event loop; aiohttp returns queued WebSocket messages
without suspending, so a burst on one relay could otherwise run its whole session's work in
one turn while other sessions wait. A ticker task counts loop turns; the test sends a burst
of datagrams that arrives in one TCP read and checks how many were delivered in one turn,
with the bound and (to show the burst is real) without it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from ferry.errors import ConfigError
from ferry.transport.websocket import WebSocketChannelConfig, WebSocketDatagramChannel

BURST = 200
WAIT = 10.0


@asynccontextmanager
async def relay_server(
    per_turn: int, turns: list[int]
) -> AsyncIterator[tuple[str, list[int], asyncio.Event]]:
    """A server whose channel records, for each datagram, the loop turn it arrived in."""
    delivered: list[int] = []
    complete = asyncio.Event()

    def on_datagram(datagram: bytes) -> None:
        delivered.append(turns[0])
        if len(delivered) == BURST:
            complete.set()

    async def relay(request: web.Request) -> web.StreamResponse:
        ws: web.WebSocketResponse[bool] = web.WebSocketResponse()
        await ws.prepare(request)
        channel = WebSocketDatagramChannel(ws, datagrams_per_turn=per_turn)
        channel.start(on_datagram, lambda: None)
        await channel.wait_closed()
        return ws

    app = web.Application()
    app.router.add_get("/v1/relay", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}/v1/relay", delivered, complete
    finally:
        await runner.cleanup()


async def most_in_one_turn(per_turn: int) -> int:
    """Send a burst through a channel with ``per_turn``; the most datagrams in one turn."""
    turns = [0]
    stop = asyncio.Event()

    async def tick() -> None:
        while not stop.is_set():
            await asyncio.sleep(0)
            turns[0] += 1

    ticker = asyncio.create_task(tick())
    try:
        async with (
            relay_server(per_turn, turns) as (url, delivered, complete),
            aiohttp.ClientSession() as http,
            http.ws_connect(url) as ws,
        ):
            for index in range(BURST):
                await ws.send_bytes(index.to_bytes(4, "big") * 25)
            await asyncio.wait_for(complete.wait(), WAIT)
            await ws.close()
        return max(Counter(delivered).values())
    finally:
        stop.set()
        await ticker


async def test_a_burst_is_handed_over_sixteen_datagrams_per_turn() -> None:
    assert await most_in_one_turn(16) <= 16


async def test_without_the_bound_the_burst_arrives_in_one_turn() -> None:
    # Shows that the burst above really reached the reader at once.
    assert await most_in_one_turn(10_000) > 16


def test_datagrams_per_turn_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="datagrams_per_turn"):
        WebSocketChannelConfig(datagrams_per_turn=0)
