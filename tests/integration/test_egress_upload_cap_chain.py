"""The egress's cap on a session's client-to-destination data, through the whole chain.

A real broker, egress, Python volunteer and client (``LoopbackNetwork``), real WebRTC and
QUIC, and a TCP destination on 127.0.0.1 that does not read until the test lets it. Nothing
asserts a duration: every wait is bounded, and the test asserts counts, bytes and digests.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ferry.demo import LoopbackNetwork, LoopbackNetworkConfig
from ferry.egress.server import EgressConfig
from tests.waiting import wait_until

from .chain import socks5_connect

pytestmark = pytest.mark.timeout(180)

WAIT = 30.0
"""Upper bound of any single wait in this test, in seconds."""

SMALLEST_SESSION_BUFFER = 65536
"""The smallest ``EgressConfig.session_buffer_bytes`` the egress accepts."""

HITS = "ferry_egress_limits_hit_total"


@dataclass(slots=True)
class HeldSink:
    """A destination that reads nothing until :attr:`release` is set, then reads to EOF and
    answers with the SHA-256 of what it read."""

    port: int
    """The port it listens on (127.0.0.1)."""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to let it read."""
    received: list[int] = field(default_factory=list)
    """Bytes read per connection, once each connection reached EOF."""
    connections: list[asyncio.StreamWriter] = field(default_factory=list)
    """Every accepted connection (closed when the sink ends)."""


@asynccontextmanager
async def held_sink() -> AsyncIterator[HeldSink]:
    """A :class:`HeldSink` whose sockets have a small receive buffer, so the egress cannot
    park much of an upload in the kernel while it does not read."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited on accept
    listener.bind(("127.0.0.1", 0))
    sink = HeldSink(port=listener.getsockname()[1])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sink.connections.append(writer)
        await sink.release.wait()
        digest = hashlib.sha256()
        total = 0
        while data := await reader.read(65536):
            digest.update(data)
            total += len(data)
        sink.received.append(total)
        writer.write(digest.digest())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, sock=listener)
    try:
        yield sink
    finally:
        server.close()
        for writer in sink.connections:
            writer.close()
        sink.release.set()
        await server.wait_closed()


def sample(net: LoopbackNetwork, name: str, **labels: str) -> float:
    """The current value of one egress metric sample (0 when it was never set)."""
    assert net.egress is not None
    value = net.egress.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def wait_until_steady(value: Callable[[], float], *, quiet_polls: int = 10) -> None:
    """Poll ``value()`` every 0.1 s (30 s at most) until it stayed the same ``quiet_polls``
    times in a row; fail otherwise."""
    last, unchanged = value(), 0
    for _ in range(300):
        await asyncio.sleep(0.1)
        now = value()
        unchanged = unchanged + 1 if now == last else 0
        last = now
        if unchanged >= quiet_polls:
            return
    raise AssertionError("the value kept changing")


async def test_an_upload_into_a_slow_destination_hits_the_counted_receive_cap(
    tmp_path: Path,
) -> None:
    # More than the egress's socket can hold unsent (tcp_wmem's maximum is 4 MiB by default)
    # plus the destination's small receive buffer: the egress must stop writing.
    upload = os.urandom(12 * 1024 * 1024 + 5)
    egress = EgressConfig(state_dir=tmp_path, session_buffer_bytes=SMALLEST_SESSION_BUFFER)
    net = LoopbackNetwork(LoopbackNetworkConfig(allow_private_destinations=True, egress=egress))
    try:
        await net.start()
        await asyncio.wait_for(net.wait_ready(), WAIT)
        assert net.egress is not None
        async with held_sink() as sink:
            code, reader, writer = await socks5_connect(net.proxy, "127.0.0.1", sink.port)
            assert code == 0
            assert sample(net, HITS, kind="session_receive_window") == 0
            writer.write(upload)
            (session,) = net.egress.router.live
            connection = session.quic.connection

            def stalled() -> bool:
                return session.quic.receive_window_full

            # The destination reads nothing: the client's credit runs out and stays out.
            await wait_until(stalled, "the upload stalls at the receive cap")
            hits = sample(net, HITS, kind="session_receive_window")
            assert hits >= 1
            written = sample(
                net, "ferry_egress_stream_bytes_total", direction="client_to_destination"
            )
            assert written < len(upload)
            unread = connection.unread_bytes()  # type: ignore[attr-defined]
            assert 0 < unread <= SMALLEST_SESSION_BUFFER

            # The client keeps sending packets (probes, acknowledgements) while it waits;
            # reaching the cap is counted once each time it is reached, not once per packet.
            # The kernel may still take a little of the upload for a while (the egress's send
            # buffer grows by itself), and each time it does the window reopens and fills
            # again, which counts once: so first wait until nothing more is written, then
            # count over the next packets.
            def written() -> float:
                return sample(
                    net, "ferry_egress_stream_bytes_total", direction="client_to_destination"
                )

            await wait_until_steady(written)
            hits = sample(net, HITS, kind="session_receive_window")
            before = session.quic.datagrams_received
            packets = 20
            reopenings = 0
            last = written()
            for _ in range(600):  # bounded: 60 s
                if session.quic.datagrams_received >= before + packets:
                    break
                await asyncio.sleep(0.1)
                if written() != last:
                    reopenings, last = reopenings + 1, written()
            assert session.quic.datagrams_received >= before + packets
            more_hits = sample(net, HITS, kind="session_receive_window") - hits
            assert more_hits <= reopenings + 1 < packets

            sink.release.set()
            await asyncio.wait_for(writer.drain(), WAIT)
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), WAIT)
            writer.close()
            assert sink.received == [len(upload)]
            assert answer == hashlib.sha256(upload).digest()
            assert sample(net, HITS, kind="session_receive_window") >= hits
            assert connection.unread_bytes() == 0  # type: ignore[attr-defined]
    finally:
        await net.close()
