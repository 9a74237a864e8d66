"""The relay WebSocket adapter against a real aiohttp server on 127.0.0.1 (protocol.md §4)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from ferry.errors import ChannelClosedError
from ferry.transport.websocket import (
    MAX_DATAGRAM_BYTES,
    TEXT_MESSAGE_CLOSE_REASON,
    WebSocketChannelConfig,
    WebSocketChannelMetrics,
    WebSocketDatagramChannel,
    accept_websocket_channel,
    connect_websocket_channel,
)

pytestmark = pytest.mark.integration

WAIT_SECONDS = 5.0


@dataclass
class Recorder:
    """Collects what a channel delivers, with bounded waits."""

    datagrams: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_calls: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def on_datagram(self, datagram: bytes) -> None:
        self.datagrams.append(datagram)
        self._arrived.set()

    def on_close(self) -> None:
        self.close_calls += 1
        self.closed.set()

    async def wait_for_datagrams(self, count: int) -> None:
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.datagrams) < count:
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_closed(self) -> None:
        await asyncio.wait_for(self.closed.wait(), WAIT_SECONDS)


@dataclass
class RelayServer:
    """A real aiohttp server whose /v1/relay handler hands each channel to the test."""

    url: str
    accepted: asyncio.Queue[WebSocketDatagramChannel]

    async def next_channel(self) -> WebSocketDatagramChannel:
        return await asyncio.wait_for(self.accepted.get(), WAIT_SECONDS)


async def start_relay_server(
    server_side: str, registry: CollectorRegistry | None = None
) -> tuple[RelayServer, web.AppRunner]:
    accepted: asyncio.Queue[WebSocketDatagramChannel] = asyncio.Queue()
    metrics = WebSocketChannelMetrics(registry) if registry is not None else None

    async def relay(request: web.Request) -> web.StreamResponse:
        ws: web.WebSocketResponse[bool]
        if server_side == "helper":
            ws, channel = await accept_websocket_channel(request, metrics=metrics)
        else:
            # a WebSocket prepared with aiohttp's default 4 MiB limit, adapted directly:
            # the adapter's own size check must close it with 1009
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            channel = WebSocketDatagramChannel(ws, max_message_bytes=1000, metrics=metrics)
        await accepted.put(channel)
        await channel.wait_closed()
        return ws

    app = web.Application()
    app.router.add_get("/v1/relay", relay)
    runner = web.AppRunner(app)
    await runner.setup()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    await web.SockSite(runner, listener).start()
    return RelayServer(f"http://127.0.0.1:{port}/v1/relay", accepted), runner


@pytest.fixture
async def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def server(registry: CollectorRegistry) -> AsyncIterator[RelayServer]:
    relay_server, runner = await start_relay_server("helper", registry)
    yield relay_server
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def numbered(index: int, size: int) -> bytes:
    """A datagram whose content depends on its index, so order and content can be checked."""
    header = index.to_bytes(4, "big")
    return (header + bytes([index % 251]) * size)[:size] if size >= 4 else header[:size]


async def test_datagrams_flow_both_ways_in_order(
    server: RelayServer, session: aiohttp.ClientSession
) -> None:
    client = await connect_websocket_channel(server.url, session)
    remote = await server.next_channel()
    client_recorder, server_recorder = Recorder(), Recorder()
    client.start(client_recorder.on_datagram, client_recorder.on_close)
    remote.start(server_recorder.on_datagram, server_recorder.on_close)

    sizes = [4, 1, 1200, MAX_DATAGRAM_BYTES, *range(100, 300)]
    upstream = [numbered(i, size) for i, size in enumerate(sizes)]
    downstream = [numbered(i + 10_000, size) for i, size in enumerate(sizes)]
    for datagram in upstream:
        assert client.send(datagram)
    for datagram in downstream:
        assert remote.send(datagram)

    await server_recorder.wait_for_datagrams(len(upstream))
    await client_recorder.wait_for_datagrams(len(downstream))
    assert server_recorder.datagrams == upstream
    assert client_recorder.datagrams == downstream
    assert remote.received_datagrams == len(upstream)
    assert remote.received_bytes == sum(sizes)
    assert client.sent_datagrams == len(upstream)
    assert client.dropped_datagrams == 0
    await client.close()


async def test_text_message_closes_with_1003(
    server: RelayServer, session: aiohttp.ClientSession, registry: CollectorRegistry
) -> None:
    async with session.ws_connect(server.url) as raw:
        remote = await server.next_channel()
        recorder = Recorder()
        remote.start(recorder.on_datagram, recorder.on_close)
        await raw.send_str("hello")
        reply = await asyncio.wait_for(raw.receive(), WAIT_SECONDS)
        assert reply.type is aiohttp.WSMsgType.CLOSE
        assert reply.data == 1003
        assert reply.extra == TEXT_MESSAGE_CLOSE_REASON
    await recorder.wait_closed()
    assert not remote.is_open
    assert remote.rejected_messages == 1
    assert recorder.datagrams == []
    assert (
        registry.get_sample_value("ferry_websocket_rejected_messages_total", {"reason": "text"})
        == 1
    )


@pytest.mark.parametrize(
    ("server_side", "limit"), [("helper", MAX_DATAGRAM_BYTES), ("adapted", 1000)]
)
async def test_oversized_message_closes_with_1009(
    server_side: str, limit: int, session: aiohttp.ClientSession
) -> None:
    relay_server, runner = await start_relay_server(server_side)
    try:
        async with session.ws_connect(relay_server.url) as raw:
            remote = await relay_server.next_channel()
            recorder = Recorder()
            remote.start(recorder.on_datagram, recorder.on_close)
            await raw.send_bytes(b"\x01" * limit)  # exactly the limit: delivered
            await recorder.wait_for_datagrams(1)
            await raw.send_bytes(b"\x02" * (limit + 1))
            reply = await asyncio.wait_for(raw.receive(), WAIT_SECONDS)
            assert reply.type is aiohttp.WSMsgType.CLOSE
            assert reply.data == 1009
        await recorder.wait_closed()
        assert recorder.datagrams == [b"\x01" * limit]
        assert remote.rejected_messages == 1
        assert not remote.is_open
    finally:
        await runner.cleanup()


async def test_close_fires_on_close_on_both_ends(
    server: RelayServer, session: aiohttp.ClientSession
) -> None:
    client = await connect_websocket_channel(server.url, session)
    remote = await server.next_channel()
    client_recorder, server_recorder = Recorder(), Recorder()
    client.start(client_recorder.on_datagram, client_recorder.on_close)
    remote.start(server_recorder.on_datagram, server_recorder.on_close)

    await client.close()
    await client_recorder.wait_closed()
    await server_recorder.wait_closed()
    await client.close()  # idempotent
    assert client_recorder.close_calls == 1
    assert server_recorder.close_calls == 1
    assert not client.is_open and not remote.is_open
    assert remote.close_code == 1000
    assert not client.send(b"late")
    assert not remote.send(b"late")


async def test_server_close_reaches_the_client(
    server: RelayServer, session: aiohttp.ClientSession
) -> None:
    client = await connect_websocket_channel(server.url, session)
    remote = await server.next_channel()
    client_recorder, server_recorder = Recorder(), Recorder()
    client.start(client_recorder.on_datagram, client_recorder.on_close)
    remote.start(server_recorder.on_datagram, server_recorder.on_close)
    await remote.close()
    await client_recorder.wait_closed()
    assert server_recorder.close_calls == 1
    assert not client.is_open


async def test_send_drops_above_high_water_and_out_of_range(
    server: RelayServer, session: aiohttp.ClientSession
) -> None:
    config = WebSocketChannelConfig(max_message_bytes=1000, high_water_bytes=2500)
    client = await connect_websocket_channel(server.url, session, config)
    remote = await server.next_channel()
    # not started yet: nothing drains the queue, so the bound is deterministic
    assert client.send(b"a" * 1000)
    assert client.send(b"b" * 1000)
    assert not client.send(b"c" * 1000)  # 3000 > 2500
    assert client.send(b"d" * 500)  # exactly 2500
    assert not client.send(b"")  # empty datagrams are not sent
    assert not client.send(b"e" * 1001)  # above max_message_bytes
    assert client.queued_bytes == 2500
    assert client.dropped_datagrams == 3
    assert client.dropped_bytes == 1000 + 0 + 1001

    recorder = Recorder()
    remote.start(recorder.on_datagram, recorder.on_close)
    client.start(Recorder().on_datagram, Recorder().on_close)
    await recorder.wait_for_datagrams(3)
    assert recorder.datagrams == [b"a" * 1000, b"b" * 1000, b"d" * 500]
    await client.close()


async def test_connect_to_closed_port_raises_channel_closed(
    session: aiohttp.ClientSession,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # the port was free a moment ago and nothing listens on it now
    with pytest.raises(ChannelClosedError, match="could not connect to the egress"):
        await connect_websocket_channel(f"ws://127.0.0.1:{port}/v1/relay", session)


async def test_connect_to_non_websocket_endpoint_raises_channel_closed(
    server: RelayServer, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ChannelClosedError, match="HTTP 404"):
        await connect_websocket_channel(server.url.replace("/v1/relay", "/nope"), session)


async def test_failing_datagram_handler_closes_with_1011(
    server: RelayServer, session: aiohttp.ClientSession
) -> None:
    client = await connect_websocket_channel(server.url, session)
    remote = await server.next_channel()
    client_recorder, server_recorder = Recorder(), Recorder()

    def broken_handler(datagram: bytes) -> None:
        raise ValueError(f"handler bug on {len(datagram)} bytes")

    client.start(client_recorder.on_datagram, client_recorder.on_close)
    remote.start(broken_handler, server_recorder.on_close)
    assert client.send(b"trigger")
    await server_recorder.wait_closed()
    await client_recorder.wait_closed()
    assert client.close_code == 1011
