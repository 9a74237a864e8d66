"""The egress's global buffer budget: sessions whose clients stop reading cannot make it hold
more than ``buffer_budget_bytes``, and a session that reads is still served (issue 15,
item 3).

A real egress on 127.0.0.1:0, a TCP source that never stops sending, and real QUIC client
sessions over their own relay WebSockets. A stalled client asks for the source, then drops
every datagram the egress sends it: it acknowledges nothing, so what the egress read from the
destination stays in the session's send buffer. Nothing asserts a duration: every wait is
bounded, and the test asserts bytes and metrics.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.core.addresses import Target
from ferry.core.stream_header import encode_request
from ferry.egress.policy import DestinationPolicy
from ferry.egress.server import Egress, EgressConfig
from ferry.transport.quic import QuicSession, QuicSettings
from ferry.transport.websocket import connect_websocket_channel

from .hostile_peers import WAIT, real_session

pytestmark = pytest.mark.timeout(120)

SESSION_BUFFER = 1024 * 1024
BUDGET = 2 * 1024 * 1024
STALLED = 4


@asynccontextmanager
async def endless_source() -> AsyncIterator[int]:
    """A TCP server that sends 16 KiB blocks until the peer goes; yields its port."""
    block = os.urandom(16384)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(block)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def stalled_client(url: str, port: int) -> AsyncIterator[QuicSession]:
    """A client session that asks for 127.0.0.1:``port`` and then acknowledges nothing."""
    receiving = [True]
    async with aiohttp.ClientSession() as http:
        channel = await connect_websocket_channel(url, http)
        settings = QuicSettings(idle_timeout=600.0)
        session = QuicSession(
            settings.new_connection(settings.configuration(is_client=True)),
            settings=settings,
            send=channel.send,
        )

        def deliver(datagram: bytes) -> None:
            if receiving[0]:
                session.receive_datagram(datagram)

        try:
            channel.start(deliver, lambda: None)
            session.connect()
            await session.wait_handshake(WAIT)
            stream = session.open_stream()
            await stream.send_all(encode_request(Target("127.0.0.1", port)))
            await asyncio.wait_for(stream.receive_some(), WAIT)  # the reply: connected
            receiving[0] = False
            yield session
        finally:
            session.close("test over")
            await channel.close()


def held_by_sessions(server: Egress) -> int:
    """Bytes every session of ``server`` holds unacknowledged for its client."""
    return sum(session.quic.send_backlog() for session in server.router.live)


async def test_sessions_that_never_acknowledge_stay_within_the_buffer_budget(
    tmp_path: Path,
) -> None:
    server = Egress(
        EgressConfig(
            state_dir=tmp_path,
            port=0,
            policy=DestinationPolicy(allow_private=True),
            session_buffer_bytes=SESSION_BUFFER,
            buffer_budget_bytes=BUDGET,
        ),
        registry=CollectorRegistry(),
    )
    await server.start()
    try:
        async with endless_source() as port, AsyncExitStack() as stack:
            for _ in range(STALLED):
                await stack.enter_async_context(stalled_client(server.url, port))
            # The egress reads until it can read no more; wait until it stops.
            last, steady = -1, 0
            for _ in range(300):
                now = held_by_sessions(server)
                steady = steady + 1 if now == last else 0
                last = now
                if steady >= 10:
                    break
                await asyncio.sleep(0.1)
            assert steady >= 10, "the egress kept reading from the destinations"
            chunk = server.config.copy_chunk_bytes
            floor = server.config.buffer_budget_floor_bytes
            held = held_by_sessions(server)
            print(f"{STALLED} stalled sessions hold {held} bytes (budget {BUDGET})")
            # Each stream may have read one chunk past the budget before it waited, and
            # each session may hold the floor whatever the budget.
            assert held <= BUDGET + STALLED * (chunk + floor)
            assert held < STALLED * SESSION_BUFFER
            assert server.router.buffer_budget.total == held
            limits = server.metrics.registry.get_sample_value(
                "ferry_egress_limits_hit_total", {"kind": "buffer_budget"}
            )
            assert limits is not None and limits >= 1
            # A client that reads is still served while they hold the budget.
            async with real_session(server.url) as session:
                stream = session.open_stream()
                await stream.send_all(encode_request(Target("127.0.0.1", port)))
                received = 0
                async with asyncio.timeout(WAIT):
                    while received < 4 * SESSION_BUFFER:
                        received += len(await stream.receive_some())
                stream.abort()
    finally:
        await server.close()
