"""Large QUIC datagrams (issue 8): the allowed range, and a transfer at the largest size.

aioquic 1.7 writes frame and long-header packet lengths as two-byte varints (at most 16,383),
so ferry caps ``max_datagram_size`` at 16 KiB; these tests pin both the cap and that a
session using it really sends datagrams that large and delivers a stream intact.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from aioquic.buffer import Buffer
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header

from ferry.egress.identity import create_identity
from ferry.errors import ConfigError
from ferry.transport.quic import (
    LARGEST_DATAGRAM_SIZE,
    QuicByteStream,
    QuicSession,
    QuicSettings,
)


@pytest.mark.parametrize("size", [1199, LARGEST_DATAGRAM_SIZE + 1, 65527])
def test_datagram_size_outside_the_range_is_refused(size: int) -> None:
    with pytest.raises(ConfigError, match="max_datagram_size"):
        QuicSettings(max_datagram_size=size)


def test_default_datagram_size_is_the_largest_allowed() -> None:
    assert QuicSettings().max_datagram_size == LARGEST_DATAGRAM_SIZE


class SizedPair:
    """Client and server sessions joined by direct calls, recording every datagram's size."""

    def __init__(self, client_settings: QuicSettings, server_settings: QuicSettings) -> None:
        identity = create_identity()
        self._server_configuration = server_settings.configuration(is_client=False)
        self._server_configuration.certificate = identity.certificate
        self._server_configuration.private_key = identity.private_key
        self._server_settings = server_settings
        self.accepted: asyncio.Queue[QuicByteStream] = asyncio.Queue()
        self.sizes_to_server: list[int] = []
        self.sizes_to_client: list[int] = []
        self.client = QuicSession(
            QuicConnection(configuration=client_settings.configuration(is_client=True)),
            settings=client_settings,
            send=self._to_server,
        )
        self.server: QuicSession | None = None

    def _to_client(self, datagram: bytes) -> None:
        self.sizes_to_client.append(len(datagram))
        self.client.receive_datagram(datagram)

    def _to_server(self, datagram: bytes) -> None:
        self.sizes_to_server.append(len(datagram))
        if self.server is None:
            header = pull_quic_header(Buffer(data=datagram), host_cid_length=8)
            self.server = QuicSession(
                QuicConnection(
                    configuration=self._server_configuration,
                    original_destination_connection_id=header.destination_cid,
                ),
                settings=self._server_settings,
                send=self._to_client,
                on_stream=self.accepted.put_nowait,
            )
        self.server.receive_datagram(datagram)


async def transfer(pair: SizedPair, size: int) -> bytes:
    """Send ``size`` random bytes server → client on one stream; return what arrived."""
    pair.client.connect()
    await pair.client.wait_handshake(5.0)
    stream = pair.client.open_stream()
    await stream.send_all(b"go")
    server_stream = await asyncio.wait_for(pair.accepted.get(), 5)
    payload = os.urandom(size)
    received = bytearray()

    async def serve() -> None:
        await server_stream.send_all(payload)
        await server_stream.send_eof()

    async with asyncio.timeout(20), asyncio.TaskGroup() as group:
        group.create_task(serve())
        while chunk := await stream.receive_some():
            received += chunk
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    pair.client.close("done")
    return bytes(received)


async def test_a_stream_crosses_intact_in_16_kib_datagrams() -> None:
    settings = QuicSettings()
    pair = SizedPair(settings, settings)
    await transfer(pair, 2_000_000)
    assert max(pair.sizes_to_client) == LARGEST_DATAGRAM_SIZE
    assert max(pair.sizes_to_server) <= LARGEST_DATAGRAM_SIZE
    # bulk data went in large datagrams: far fewer than 2 MB / 1,200 of them
    assert len(pair.sizes_to_client) < 2_000_000 // 8_000


async def test_each_end_sends_its_own_size_and_accepts_the_others() -> None:
    small = QuicSettings(max_datagram_size=1200)
    pair = SizedPair(client_settings=small, server_settings=QuicSettings())
    await transfer(pair, 300_000)
    assert max(pair.sizes_to_server) == 1200
    assert max(pair.sizes_to_client) == LARGEST_DATAGRAM_SIZE
