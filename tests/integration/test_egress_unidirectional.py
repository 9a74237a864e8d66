"""Unidirectional streams from a client are refused cleanly (issue 15).

A real egress on 127.0.0.1:0 and a real client session over a relay WebSocket; the client
opens a unidirectional stream carrying a valid stream request for a TCP server on 127.0.0.1.
The egress must not connect, must answer STOP_SENDING 0x104, count it, and log no error.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest
from aioquic.quic.events import QuicEvent, StopSendingReceived
from prometheus_client import CollectorRegistry

from ferry.core.addresses import Target
from ferry.core.stream_header import encode_request
from ferry.egress.policy import DestinationPolicy
from ferry.egress.server import Egress, EgressConfig
from ferry.transport.quic import STREAM_ERROR_UNIDIRECTIONAL, QuicSession, QuicSettings
from ferry.transport.websocket import connect_websocket_channel
from tests.waiting import wait_until

from .hostile_peers import WAIT

pytestmark = pytest.mark.timeout(120)


async def test_a_unidirectional_stream_is_refused_without_a_connection_or_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connections = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    egress = Egress(
        EgressConfig(state_dir=tmp_path, port=0, policy=DestinationPolicy(allow_private=True)),
        registry=CollectorRegistry(),
    )
    await egress.start()
    stop_sending: list[StopSendingReceived] = []

    def on_event(event: QuicEvent) -> None:
        if isinstance(event, StopSendingReceived):
            stop_sending.append(event)

    try:
        async with aiohttp.ClientSession() as http:
            channel = await connect_websocket_channel(egress.url, http)
            settings = QuicSettings()
            session = QuicSession(
                settings.new_connection(settings.configuration(is_client=True)),
                settings=settings,
                send=channel.send,
                on_event=on_event,
            )
            try:
                channel.start(session.receive_datagram, lambda: None)
                session.connect()
                await session.wait_handshake(WAIT)
                connection = session.connection
                stream_id = connection.get_next_available_stream_id(is_unidirectional=True)
                request = encode_request(Target("127.0.0.1", port))
                connection.send_stream_data(stream_id, request, end_stream=False)
                await session.ping(WAIT)  # carries the stream's first frame, then acknowledged
                await wait_until(lambda: bool(stop_sending), "the peer told to stop sending")
                assert stop_sending[0].stream_id == stream_id
                assert stop_sending[0].error_code == STREAM_ERROR_UNIDIRECTIONAL
                # The session still serves: a ping crosses it after the refusal.
                await session.ping(WAIT)
            finally:
                session.close("test over")
                await channel.close()
        refused = egress.metrics.registry.get_sample_value(
            "ferry_egress_streams_refused_total", {"code": "unidirectional"}
        )
        assert refused == 1
        assert egress.metrics.registry.get_sample_value("ferry_egress_streams_total") == 0
        assert connections == [], "the egress connected for a unidirectional stream"
        errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
        assert errors == []
    finally:
        await egress.close()
        server.close()
        await server.wait_closed()
