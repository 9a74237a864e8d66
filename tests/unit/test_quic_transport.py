"""The QUIC driver over an in-memory datagram pair: handshake, pinning, streams, backpressure.

Also pins the two aioquic internals :mod:`ferry.transport.quic` relies on (the stream send
buffer and the peer certificate), so an aioquic upgrade that changes them fails here first.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from aioquic.quic.connection import QuicConnection
from cryptography.hazmat.primitives.serialization import Encoding

from ferry.egress.identity import create_identity
from ferry.transport.quic import (
    QuicByteStream,
    QuicSession,
    QuicSettings,
    peer_certificate_fingerprint,
    send_backlog,
)
from tests.waiting import wait_until


class Pair:
    """A client and a server session joined by direct calls (synchronous delivery)."""

    def __init__(self, settings: QuicSettings) -> None:
        identity = create_identity()
        self.identity = identity
        server_configuration = settings.configuration(is_client=False)
        server_configuration.certificate = identity.certificate
        server_configuration.private_key = identity.private_key
        self.accepted: asyncio.Queue[QuicByteStream] = asyncio.Queue()
        self.lost_to_server = 0
        self.drop_to_server = False
        self.held_to_server: list[bytes] | None = None
        """When a list, datagrams to the server are kept in it instead of delivered."""
        client_connection = QuicConnection(configuration=settings.configuration(is_client=True))
        self.client = QuicSession(client_connection, settings=settings, send=self._to_server)
        self.server: QuicSession | None = None
        self._server_configuration = server_configuration
        self._settings = settings

    async def handshake(self, timeout: float = 5.0) -> QuicSession:
        """Connect the client, wait for the handshake, and return the server's session."""
        self.client.connect()
        await self.client.wait_handshake(timeout)
        assert self.server is not None
        return self.server

    def _to_server(self, datagram: bytes) -> None:
        if self.drop_to_server:
            self.lost_to_server += 1
            return
        if self.held_to_server is not None:
            self.held_to_server.append(datagram)
            return
        if self.server is None:
            from aioquic.buffer import Buffer
            from aioquic.quic.packet import pull_quic_header

            header = pull_quic_header(Buffer(data=datagram), host_cid_length=8)
            connection = QuicConnection(
                configuration=self._server_configuration,
                original_destination_connection_id=header.destination_cid,
            )
            self.server = QuicSession(
                connection,
                settings=self._settings,
                send=self.client.receive_datagram,
                on_stream=self.accepted.put_nowait,
            )
        self.server.receive_datagram(datagram)


async def test_handshake_and_certificate_fingerprint() -> None:
    pair = Pair(QuicSettings())
    pair.client.connect()
    await pair.client.wait_handshake(5.0)
    expected = hashlib.sha256(pair.identity.certificate.public_bytes(Encoding.DER)).digest()
    assert peer_certificate_fingerprint(pair.client.connection) == expected
    assert pair.identity.fingerprint == expected
    pair.client.close("done")
    assert pair.client.closed.is_set()


async def test_stream_round_trip_with_half_close() -> None:
    pair = Pair(QuicSettings())
    pair.client.connect()
    await pair.client.wait_handshake(5.0)
    stream = pair.client.open_stream()
    payload = os.urandom(300_000)
    await stream.send_all(payload)
    await stream.send_eof()
    server_stream = await asyncio.wait_for(pair.accepted.get(), 5)
    received = bytearray()
    async with asyncio.timeout(10):
        while chunk := await server_stream.receive_some():
            received += chunk
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    await server_stream.send_all(b"reply")
    await server_stream.send_eof()
    assert await stream.receive_some() == b"reply"
    assert await stream.receive_some() == b""


async def test_streams_whose_first_packets_arrive_in_reverse_order_are_all_served() -> None:
    pair = Pair(QuicSettings())
    pair.client.connect()
    await pair.client.wait_handshake(5.0)
    held: list[bytes] = []
    pair.held_to_server = held
    streams = []
    for message in (b"stream zero", b"stream four"):
        stream = pair.client.open_stream()
        await stream.send_all(message)
        streams.append(stream)
        before = len(held)
        for _ in range(100):  # the session sends on its next loop turn
            if len(held) > before:
                break
            await asyncio.sleep(0.01)
        assert len(held) > before
    assert [stream.stream_id for stream in streams] == [0, 4]
    pair.held_to_server = None
    for datagram in reversed(held):  # stream 4's first packet, then stream 0's
        pair._to_server(datagram)
    served = {}
    for _ in range(2):
        server_stream = await asyncio.wait_for(pair.accepted.get(), 5)
        served[server_stream.stream_id] = await asyncio.wait_for(server_stream.receive_some(), 5)
    assert served == {0: b"stream zero", 4: b"stream four"}


async def test_late_data_on_a_stream_the_server_reset_opens_no_new_stream() -> None:
    pair = Pair(QuicSettings())
    pair.client.connect()
    await pair.client.wait_handshake(5.0)
    stream = pair.client.open_stream()
    await stream.send_all(b"first")
    server_stream = await asyncio.wait_for(pair.accepted.get(), 5)
    held: list[bytes] = []
    pair.held_to_server = held
    await stream.send_all(b"late")
    for _ in range(100):
        if held:
            break
        await asyncio.sleep(0.01)
    assert held
    server_stream.abort()
    server_stream.forget()
    pair.held_to_server = None
    for datagram in held:
        pair._to_server(datagram)
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert pair.accepted.empty(), "late data on a reset stream was taken for a new stream"


async def test_send_backlog_reflects_unacknowledged_bytes() -> None:
    settings = QuicSettings(stream_send_buffer=64 * 1024)
    pair = Pair(settings)
    pair.client.connect()
    await pair.client.wait_handshake(5.0)
    stream = pair.client.open_stream()
    pair.drop_to_server = True  # nothing is acknowledged now
    writer = asyncio.create_task(stream.send_all(os.urandom(256 * 1024)))
    await asyncio.sleep(0.05)
    assert not writer.done(), "send_all must wait while the backlog is above the limit"
    assert send_backlog(pair.client.connection, stream.stream_id) >= 64 * 1024
    pair.drop_to_server = False
    await asyncio.wait_for(writer, 20)  # retransmissions get through, acks drain the backlog
    assert send_backlog(pair.client.connection, stream.stream_id) < 64 * 1024


async def test_session_close_fails_streams(tmp_path: Path) -> None:
    pair = Pair(QuicSettings())
    pair.client.connect()
    await pair.client.wait_handshake(5.0)
    stream = pair.client.open_stream()
    await stream.send_all(b"x")
    assert pair.server is not None
    pair.server.close("egress going away")
    await asyncio.wait_for(pair.client.closed.wait(), 5)
    try:
        await stream.receive_some()
    except Exception as exc:
        assert "egress going away" in str(exc)
    else:
        raise AssertionError("a stream of a closed session must fail")


async def test_credit_follows_what_the_reader_consumed() -> None:
    """A reader that does not read holds the sender to one window, not the whole transfer."""
    window = 256 * 1024
    settings = QuicSettings(max_stream_data=window, max_data=64 * window)
    pair = Pair(settings)
    pair.client = QuicSession(
        settings.new_connection(settings.configuration(is_client=True)),
        settings=settings,
        send=pair._to_server,
    )
    pair.client.connect()
    await pair.client.wait_handshake(5.0)
    assert pair.server is not None
    server_stream_task = asyncio.ensure_future(pair.accepted.get())
    stream = pair.client.open_stream()
    await stream.send_all(b"open")
    server_stream = await asyncio.wait_for(server_stream_task, 5)
    payload = os.urandom(4 * 1024 * 1024)
    writer = asyncio.ensure_future(server_stream.send_all(payload))
    # The client reads nothing: wait until the window is full and the sender is held back
    # (its send buffer full), so the bound below is checked once the sender did all it could.
    await wait_until(
        lambda: (
            stream.bytes_received >= window
            and send_backlog(pair.server.connection, server_stream.stream_id)  # type: ignore[union-attr]
            >= settings.stream_send_buffer
        ),
        "the window filled and the sender held back",
    )
    buffered = stream.bytes_received
    assert buffered <= window + 64 * 1024, f"{buffered} bytes arrived unread"
    assert not writer.done()
    received = bytearray()
    async with asyncio.timeout(20):
        while len(received) < len(payload):
            received += await stream.receive_some()
    await writer
    assert bytes(received) == payload
