"""The egress's limits, fair sharing and admin address, through the whole chain in one process.

Each test runs a real broker, egress, Python volunteers and clients (``LoopbackNetwork`` plus,
where a second session is needed, a second :class:`ClientApp`), real WebRTC and QUIC, and
TCP servers on 127.0.0.1. Nothing asserts a duration: every wait is bounded, and each test
asserts counts, bytes and metrics.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ferry.client.app import ClientApp, ClientConfig
from ferry.client.local_proxy import LocalProxyConfig
from ferry.client.session import TunnelConfig
from ferry.demo import LOOPBACK_WEBRTC, LoopbackNetwork, LoopbackNetworkConfig
from ferry.egress.server import EgressConfig
from ferry.errors import SessionError
from ferry.transport.quic import QuicSession, QuicSettings
from ferry.transport.websocket import connect_websocket_channel
from tests.waiting import wait_until

from .chain import echo_server, socks5_connect

pytestmark = pytest.mark.timeout(180)

WAIT = 30.0
"""Upper bound of any single wait in these tests, in seconds."""


@asynccontextmanager
async def network(tmp_path: Path, **limits: object) -> AsyncIterator[LoopbackNetwork]:
    """A loopback network whose egress has the given ``EgressConfig`` fields."""
    egress = EgressConfig(state_dir=tmp_path, **limits)  # type: ignore[arg-type]
    net = LoopbackNetwork(LoopbackNetworkConfig(allow_private_destinations=True, egress=egress))
    try:
        await net.start()
        await asyncio.wait_for(net.wait_ready(), WAIT)
        yield net
    finally:
        await net.close()


@asynccontextmanager
async def second_client(
    net: LoopbackNetwork,
) -> AsyncIterator[tuple[ClientApp, tuple[str, int]]]:
    """Another client (its own QUIC session) using the same broker and egress, and its
    proxy address."""
    assert net.egress is not None and net.egress.bridge_line is not None
    client = ClientApp(
        ClientConfig(
            broker_url=net.broker_url,
            tunnel=TunnelConfig(
                bridge=net.egress.bridge_line, volunteers=1, webrtc=LOOPBACK_WEBRTC
            ),
            proxy=LocalProxyConfig(host="127.0.0.1", port=0),
        )
    )
    try:
        proxy = await client.start()
        yield client, proxy
    finally:
        await client.close()


def sample(net: LoopbackNetwork, name: str, **labels: str) -> float:
    """The current value of one egress metric sample (0 when it was never set)."""
    assert net.egress is not None
    value = net.egress.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


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
async def sink_then_source(reply_size: int) -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server that reads until EOF, then sends ``reply_size`` bytes and closes;
    yields (port, bytes received per connection)."""
    received: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while data := await reader.read(65536):
            total += len(data)
        received.append(total)
        writer.write(b"r" * reply_size)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()
        await server.wait_closed()


async def test_a_session_over_the_cap_is_refused_as_egress_full(tmp_path: Path) -> None:
    async with network(tmp_path, max_sessions=1) as net, second_client(net) as (other, _):
        assert other.tunnel is not None
        try:
            session = await asyncio.wait_for(other.tunnel.ensure_session(), WAIT)
        except SessionError as exc:
            assert "egress full" in str(exc)
        else:
            await asyncio.wait_for(session.closed.wait(), WAIT)
            assert session.close_reason == "egress full"
        assert sample(net, "ferry_egress_sessions_refused_total", reason="egress_full") >= 1
        assert sample(net, "ferry_egress_limits_hit_total", kind="sessions") >= 1
        assert sample(net, "ferry_egress_sessions") == 1
        # The session that was there first still works.
        async with echo_server() as port:
            code, reader, writer = await socks5_connect(net.proxy, "127.0.0.1", port)
            assert code == 0
            writer.write(b"still served")
            assert await asyncio.wait_for(reader.readexactly(12), WAIT) == b"still served"
            writer.close()


async def test_a_stream_over_the_cap_waits_until_one_closes(tmp_path: Path) -> None:
    async with network(tmp_path, max_streams_per_session=2) as net, echo_server() as port:
        first = await socks5_connect(net.proxy, "127.0.0.1", port)
        second = await socks5_connect(net.proxy, "127.0.0.1", port)
        assert first[0] == second[0] == 0
        third = asyncio.create_task(socks5_connect(net.proxy, "127.0.0.1", port))
        # An echo on the second stream crosses the session after the third asked to open.
        for _ in range(3):
            second[2].write(b"ping")
            assert await asyncio.wait_for(second[1].readexactly(4), WAIT) == b"ping"
        assert not third.done(), "a third stream must not be opened while two are open"
        assert sample(net, "ferry_egress_streams_total") == 2
        assert sample(net, "ferry_egress_limits_hit_total", kind="streams_per_session") >= 1

        first[2].close()
        code, reader, writer = await asyncio.wait_for(third, WAIT)
        assert code == 0
        writer.write(b"third")
        assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"third"
        assert sample(net, "ferry_egress_streams_total") == 3
        writer.close()
        second[2].close()


async def test_an_idle_stream_is_reset_and_counted(tmp_path: Path) -> None:
    async with network(tmp_path, stream_idle_timeout=1.0) as net, echo_server() as port:
        code, reader, writer = await socks5_connect(net.proxy, "127.0.0.1", port)
        silent = await socks5_connect(net.proxy, "127.0.0.1", port)
        assert code == silent[0] == 0
        writer.write(b"once")
        assert await asyncio.wait_for(reader.readexactly(4), WAIT) == b"once"
        # Then nothing either way (the second stream never carried a byte): the egress
        # ends both streams, and the application sees them end.
        for stream_reader in (reader, silent[1]):
            try:
                rest = await asyncio.wait_for(stream_reader.read(), WAIT)
            except ConnectionError:
                rest = b""
            assert rest == b""
        assert sample(net, "ferry_egress_limits_hit_total", kind="stream_idle") == 2
        assert sample(net, "ferry_egress_streams_open") == 0
        writer.close()
        silent[2].close()


async def test_the_session_send_buffer_stops_reading_destinations(tmp_path: Path) -> None:
    cap = 65536
    chunk = EgressConfig(state_dir=tmp_path).copy_chunk_bytes
    streams = 4
    async with (
        network(tmp_path, session_buffer_bytes=cap) as net,
        endless_source() as port,
    ):
        assert net.egress is not None
        connections = [await socks5_connect(net.proxy, "127.0.0.1", port) for _ in range(streams)]
        assert all(code == 0 for code, _, _ in connections)
        # The application reads nothing: the data stops somewhere; wait until it does.
        counter = "ferry_egress_stream_bytes_total"
        last, steady = -1.0, 0
        for _ in range(300):
            now = sample(net, counter, direction="destination_to_client")
            steady = steady + 1 if now == last else 0
            last = now
            if steady >= 10:
                break
            await asyncio.sleep(0.1)
        assert steady >= 10, "the egress kept reading from the destinations"
        assert sample(net, "ferry_egress_limits_hit_total", kind="session_send_buffer") >= 1
        (session,) = net.egress.router.live
        # Every stream may have read one chunk past the cap before it waited.
        assert 0 < session.quic.send_backlog() <= cap + streams * chunk
        for _, _, writer in connections:
            writer.close()


async def test_fair_sharing_small_exchanges_complete_while_a_bulk_download_runs(
    tmp_path: Path,
) -> None:
    exchanges = 20
    async with (
        network(tmp_path) as net,
        endless_source() as bulk_port,
        echo_server() as echo_port,
        second_client(net) as (other, other_proxy),
    ):
        code, bulk_reader, bulk_writer = await socks5_connect(net.proxy, "127.0.0.1", bulk_port)
        assert code == 0
        downloaded = [0]

        async def download() -> None:
            while data := await bulk_reader.read(65536):
                downloaded[0] += len(data)

        bulk = asyncio.create_task(download())
        try:
            await wait_until(lambda: downloaded[0] > 1024 * 1024, "the first MiB downloaded")
            assert other.tunnel is not None
            await asyncio.wait_for(other.tunnel.ensure_session(), WAIT)
            code, reader, writer = await socks5_connect(other_proxy, "127.0.0.1", echo_port)
            assert code == 0
            before = downloaded[0]
            for index in range(exchanges):
                message = f"exchange {index:04d}".encode()
                writer.write(message)
                assert await asyncio.wait_for(reader.readexactly(len(message)), WAIT) == message
            during = downloaded[0] - before
            writer.close()
            assert not bulk.done(), "the bulk download must still be running"
            assert during > 0, "the bulk download made progress during the exchanges"
            assert len(net.egress.router.live) == 2  # type: ignore[union-attr]
        finally:
            bulk_writer.close()
            bulk.cancel()
            await asyncio.gather(bulk, return_exceptions=True)


async def test_metrics_on_the_admin_address_count_the_bytes_carried(tmp_path: Path) -> None:
    upload, reply = 3 * 1024 * 1024 + 17, 1024 * 1024 + 5
    async with (
        network(tmp_path, admin_port=0) as net,
        sink_then_source(reply) as (port, received),
    ):
        assert net.egress is not None and net.egress.admin_url is not None
        code, reader, writer = await socks5_connect(net.proxy, "127.0.0.1", port)
        assert code == 0
        writer.write(os.urandom(upload))
        await writer.drain()
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
        assert received == [upload] and len(answer) == reply

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{net.egress.admin_url}/metrics") as response:
                assert response.status == 200
                text = await response.text()
            async with http.get(f"{net.egress.admin_url}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["ok"] is True
            relay = net.egress_url.replace("ws://", "http://").removesuffix("/v1/relay")
            async with http.get(f"{relay}/metrics") as response:
                assert response.status == 404, "metrics must not be served on the relay address"
        families = list(text_string_to_metric_families(text))
        values = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in families
            for s in family.samples
        }
        bytes_name = "ferry_egress_stream_bytes_total"
        assert values[(bytes_name, (("direction", "client_to_destination"),))] == upload
        assert values[(bytes_name, (("direction", "destination_to_client"),))] == reply
        assert values[("ferry_egress_sessions", ())] == 1
        assert values[("ferry_egress_sessions_created_total", ())] == 1
        assert values[("ferry_egress_streams_total", ())] == 1
        assert values[("ferry_egress_streams_open", ())] == 0
        assert {family.name for family in families} >= {
            "ferry_egress_sessions_refused",
            "ferry_egress_sessions_lost",
            "ferry_egress_limits_hit",
            "ferry_egress_policy_refusals",
            "ferry_egress_path_changes",
            "ferry_egress_streams_refused",
        }


async def test_uploads_complete_through_the_smallest_session_buffer(tmp_path: Path) -> None:
    upload = 4 * 1024 * 1024 + 3
    async with (
        network(tmp_path, session_buffer_bytes=65536) as net,
        sink_then_source(10) as (port, received),
    ):
        assert net.egress is not None
        uploads = [await socks5_connect(net.proxy, "127.0.0.1", port) for _ in range(2)]
        for _, _, writer in uploads:
            writer.write(b"u" * upload)
        for _, _, writer in uploads:
            await writer.drain()
            writer.write_eof()
        for _, reader, writer in uploads:
            assert await asyncio.wait_for(reader.read(), WAIT) == b"r" * 10
            writer.close()
        assert received == [upload, upload]
        (session,) = net.egress.router.live
        assert session.quic.connection.unread_bytes() == 0  # type: ignore[attr-defined]


async def test_a_silent_session_ends_at_the_idle_timeout(tmp_path: Path) -> None:
    async with network(tmp_path, session_idle_timeout=1.0) as net, aiohttp.ClientSession() as http:
        # A second session straight over a relay WebSocket, as a volunteer would carry it;
        # after its handshake it sends nothing (the network's own client keeps probing).
        channel = await connect_websocket_channel(net.egress_url, http)
        settings = QuicSettings(idle_timeout=600.0)
        session = QuicSession(
            settings.new_connection(settings.configuration(is_client=True)),
            settings=settings,
            send=channel.send,
        )
        try:
            channel.start(session.receive_datagram, lambda: None)
            session.connect()
            await session.wait_handshake(WAIT)
            await wait_until(lambda: sample(net, "ferry_egress_sessions") == 2, "two sessions")
            await wait_until(
                lambda: sample(net, "ferry_egress_sessions_lost_total", reason="idle_timeout") == 1,
                "one session lost to the idle timeout",
            )
            assert sample(net, "ferry_egress_limits_hit_total", kind="session_idle") == 1
            assert sample(net, "ferry_egress_sessions") == 1
        finally:
            session.close("test over")
            await channel.close()
