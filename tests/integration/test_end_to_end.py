"""The whole chain on loopback: real curl → client → aiortc → volunteer → WebSocket → egress.

Every test runs a real broker, egress, Python volunteers and client in this process (the
same :class:`~ferry.demo.LoopbackNetwork` as ``ferry demo``), with real WebRTC data channels,
a real QUIC session and real TCP to origin servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from ferry.client.app import ClientApp, ClientConfig
from ferry.client.local_proxy import LocalProxyConfig
from ferry.client.session import TunnelConfig
from ferry.core.bridge_line import BridgeLine
from ferry.demo import LOOPBACK_WEBRTC, LoopbackNetwork, LoopbackNetworkConfig

from .chain import Origin, TableResolver, echo_server, http_connect, run_curl, socks5_connect

pytestmark = pytest.mark.timeout(180)

RESOLVER_TABLE = {
    "origin.test": ["127.0.0.1"],
    "loopback-name.test": ["127.0.0.1"],
    "v6-loopback.test": ["::1"],
}


@asynccontextmanager
async def network(**options: object) -> AsyncIterator[LoopbackNetwork]:
    """A started loopback network whose first session is up (unless it has no volunteers)."""
    options.setdefault("resolver", TableResolver(RESOLVER_TABLE))
    config = LoopbackNetworkConfig(**options)  # type: ignore[arg-type]
    net = LoopbackNetwork(config)
    try:
        await net.start()
        if config.volunteers:
            await asyncio.wait_for(net.wait_ready(), 30)
        yield net
    finally:
        await net.close()


async def test_curl_through_socks5_and_http_connect() -> None:
    async with Origin().running() as origin, network(allow_private_destinations=True) as net:
        proxy = f"{net.proxy[0]}:{net.proxy[1]}"
        code, body, err = await run_curl(
            "--socks5-hostname", proxy, f"http://origin.test:{origin.port}/hello"
        )
        assert code == 0, err
        assert body == b"hello through ferry\n"
        code, body, err = await run_curl(
            "--proxytunnel", "-x", f"http://{proxy}", f"http://127.0.0.1:{origin.port}/hello"
        )
        assert code == 0, err
        assert body == b"hello through ferry\n"


async def test_32_mib_download_and_8_mib_upload_arrive_intact(tmp_path: Path) -> None:
    download_size, upload_size = 32 * 1024 * 1024, 8 * 1024 * 1024
    async with Origin().running() as origin, network(allow_private_destinations=True) as net:
        proxy = f"{net.proxy[0]}:{net.proxy[1]}"
        target = tmp_path / "download.bin"
        code, _, err = await run_curl(
            "--socks5-hostname",
            proxy,
            "-o",
            str(target),
            f"http://origin.test:{origin.port}/bytes/{download_size}",
        )
        assert code == 0, err
        sent = hashlib.sha256(Origin.payload(download_size)).hexdigest()
        assert hashlib.sha256(target.read_bytes()).hexdigest() == sent

        upload = tmp_path / "upload.bin"
        upload.write_bytes(os.urandom(upload_size))
        code, body, err = await run_curl(
            "--socks5-hostname",
            proxy,
            "--data-binary",
            f"@{upload}",
            "-H",
            "Content-Type: application/octet-stream",
            f"http://origin.test:{origin.port}/upload",
        )
        assert code == 0, err
        assert body.decode() == hashlib.sha256(upload.read_bytes()).hexdigest()
        assert origin.uploads == [body.decode()]


async def test_fifty_concurrent_connections_every_byte_accounted_for() -> None:
    async with echo_server() as port, network(allow_private_destinations=True) as net:

        async def one(index: int) -> tuple[int, str, str]:
            payload = os.urandom(32 * 1024 + index)
            rep, reader, writer = await socks5_connect(net.proxy, "127.0.0.1", port)
            try:
                assert rep == 0
                writer.write(payload)
                writer.write_eof()
                received = await reader.read(-1)
            finally:
                writer.close()
            return (
                len(received),
                hashlib.sha256(received).hexdigest(),
                hashlib.sha256(payload).hexdigest(),
            )

        async with asyncio.timeout(120):
            results = await asyncio.gather(*(one(i) for i in range(50)))
        assert len(results) == 50
        for index, (size, got, want) in enumerate(results):
            assert size == 32 * 1024 + index
            assert got == want
        assert net.egress is not None
        streams = net.egress.metrics.streams._value.get()
        assert streams >= 50


async def test_refused_destinations_get_truthful_replies() -> None:
    async with echo_server() as port, network(allow_private_destinations=False) as net:
        for host in ("127.0.0.1", "loopback-name.test", "::1", "v6-loopback.test", "127.3.4.5"):
            rep, _reader, writer = await socks5_connect(net.proxy, host, port)
            writer.close()
            assert rep == 0x02, host
        status, response = await http_connect(net.proxy, f"127.0.0.1:{port}")
        assert status == 403
        assert b"policy" in response
        status, response = await http_connect(net.proxy, f"loopback-name.test:{port}")
        assert status == 403


async def test_unreachable_and_unresolvable_destinations() -> None:
    async with echo_server() as open_port, network(allow_private_destinations=True) as net:
        # A port that was just free: nothing listens there.
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        closed_port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        rep, _reader, writer = await socks5_connect(net.proxy, "127.0.0.1", closed_port)
        writer.close()
        assert rep == 0x05
        status, response = await http_connect(net.proxy, f"127.0.0.1:{closed_port}")
        assert status == 502
        assert b"refused" in response

        rep, _reader, writer = await socks5_connect(net.proxy, "missing.invalid", open_port)
        writer.close()
        assert rep == 0x01
        status, response = await http_connect(net.proxy, f"missing.invalid:{open_port}")
        assert status == 502
        assert b"resolved" in response


async def test_no_volunteer_gives_503_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with network(volunteers=0, tunnel=_tunnel(volunteer_wait=1.0)) as net:
        rep, _reader, writer = await socks5_connect(net.proxy, "origin.test", 80)
        writer.close()
        assert rep == 0x01
        status, response = await http_connect(net.proxy, "origin.test:80")
        assert status == 503
        assert b"volunteer" in response
    assert any("no volunteer" in record.getMessage().lower() for record in caplog.records)


async def test_volunteer_relays_only_ciphertext(tmp_path: Path) -> None:
    marker = b"FERRY-MARKER-" + os.urandom(8).hex().encode()
    relayed: list[bytes] = []

    def tap(direction: str, datagram: bytes) -> None:
        relayed.append(datagram)

    async with (
        echo_server() as port,
        network(
            allow_private_destinations=True,
            volunteer_tap=tap,
            resolver=TableResolver({"marker-destination.test": ["127.0.0.1"]}),
        ) as net,
    ):
        rep, reader, writer = await socks5_connect(net.proxy, "marker-destination.test", port)
        assert rep == 0
        message = marker * 200
        writer.write(message)
        writer.write_eof()
        echoed = await asyncio.wait_for(reader.read(-1), 30)
        writer.close()
    assert echoed == message, "the marker must really have crossed the volunteer"
    stream = b"".join(relayed)
    assert len(stream) > len(message)
    assert marker not in stream
    assert b"marker-destination.test" not in stream
    assert not any(marker in datagram for datagram in relayed)


async def test_garbage_at_the_egress_is_dropped_and_other_sessions_continue() -> None:
    async with echo_server() as port, network(allow_private_destinations=True) as net:
        assert net.egress is not None
        async with aiohttp.ClientSession() as http, http.ws_connect(net.egress_url) as ws:
            # A short-header packet for a connection that does not exist,
            await ws.send_bytes(b"\x40" + os.urandom(8) + os.urandom(1200))
            # a long-header Initial of a QUIC version nobody speaks,
            ids = b"\x08" + os.urandom(8) + b"\x08" + os.urandom(8)
            # (token length 0, then a length field of 1,200 that matches the payload)
            initial = b"\xc0\x0a\x0b\x0c\x0d" + ids + b"\x00" + b"\x44\xb0" + os.urandom(1200)
            await ws.send_bytes(initial)
            # and bytes that are no QUIC packet at all.
            await ws.send_bytes(b"\x00")
            rep, reader, writer = await socks5_connect(net.proxy, "127.0.0.1", port)
            assert rep == 0
            writer.write(b"still working")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(-1), 30) == b"still working"
            writer.close()
            await ws.send_str("not a datagram")
            message = await asyncio.wait_for(ws.receive(), 10)
            assert message.type == aiohttp.WSMsgType.CLOSE
            assert message.data == 1003
        dropped = {
            sample.labels["reason"]: sample.value
            for metric in net.egress.metrics.dropped.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        }
        assert dropped.get("unknown_connection") == 1, dropped
        assert dropped.get("unsupported_version") == 1, dropped
        assert dropped.get("not_quic") == 1, dropped
        # The real session carried on after all of it.
        rep, reader, writer = await socks5_connect(net.proxy, "127.0.0.1", port)
        assert rep == 0
        writer.close()


async def test_wrong_egress_fingerprint_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with echo_server() as port, network(allow_private_destinations=True) as net:
        impostor = BridgeLine(url=net.egress_url, fingerprint=b"\x01" * 32)
        client = ClientApp(
            ClientConfig(
                broker_url=net.broker_url,
                tunnel=TunnelConfig(
                    bridge=impostor, volunteers=1, volunteer_wait=10, webrtc=LOOPBACK_WEBRTC
                ),
                proxy=LocalProxyConfig(host="127.0.0.1", port=0),
            )
        )
        proxy = await client.start()
        try:
            rep, _reader, writer = await socks5_connect(proxy, "127.0.0.1", port)
            writer.close()
            assert rep == 0x01
            status, response = await http_connect(proxy, f"127.0.0.1:{port}")
            assert status == 502
            assert b"bridge line" in response
        finally:
            await client.close()


async def test_no_log_line_names_a_destination(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ferry")
    async with Origin().running() as origin, network(allow_private_destinations=True) as net:
        proxy = f"{net.proxy[0]}:{net.proxy[1]}"
        code, _, err = await run_curl(
            "--socks5-hostname", proxy, f"http://origin.test:{origin.port}/private-path"
        )
        assert code == 0, err
        code, _, _ = await run_curl("--socks5-hostname", proxy, "http://missing.invalid:81/")
        assert code != 0
    ferry_lines = [r.getMessage() for r in caplog.records if r.name.startswith("ferry")]
    assert ferry_lines, "ferry logged nothing at all: the check below would prove nothing"
    for line in ferry_lines:
        assert "origin.test" not in line
        assert "missing.invalid" not in line
        assert str(origin.port) not in line


def _tunnel(**changes: object) -> TunnelConfig:
    base = TunnelConfig(
        bridge=BridgeLine(url="ws://127.0.0.1:1/v1/relay", fingerprint=b"\x00" * 32),
        webrtc=LOOPBACK_WEBRTC,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def test_session_survives_the_loss_of_the_volunteer_carrying_it() -> None:
    async with (
        Origin().running() as origin,
        network(allow_private_destinations=True, volunteers=2, client_paths=2) as net,
    ):
        assert net.client is not None and net.client.tunnel is not None
        pool = net.client.tunnel.pool
        await pool.wait_for_path(30, count=2)
        size = 8 * 1024 * 1024
        rep, reader, writer = await socks5_connect(net.proxy, "origin.test", origin.port)
        assert rep == 0
        writer.write(f"GET /bytes/{size} HTTP/1.1\r\nHost: origin.test\r\n\r\n".encode())
        received = bytearray()
        carrying = next(iter(pool.paths.values()))
        async with asyncio.timeout(60):
            while len(received) < size // 4:
                received += await reader.read(65536)
            await carrying.channel.close()  # the volunteer carrying the session goes away
            head_length = received.index(b"\r\n\r\n") + 4
            while len(received) < head_length + size:
                chunk = await reader.read(65536)
                assert chunk, "the connection ended early"
                received += chunk
        writer.close()
        body = bytes(received[head_length:])
        assert hashlib.sha256(body).digest() == hashlib.sha256(Origin.payload(size)).digest()
        assert carrying not in pool.paths.values()
        assert net.client.tunnel.sessions_started == 1, "the same session must carry on"


async def test_a_malformed_offer_the_broker_passes_does_not_hurt_the_volunteer() -> None:
    """An SDP that passes the broker's checks but is no SDP aiortc can use."""
    bogus = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nthis is not sdp\r\n"
    async with (
        echo_server() as port,
        network(allow_private_destinations=True, volunteers=1, client_paths=1) as net,
    ):
        assert net.client is not None and net.client.tunnel is not None
        volunteer = net.volunteers[0]
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                f"{net.broker_url}/v1/client/offer",
                json={"version": 1, "offer": bogus, "egress": net.egress_url},
            )
            assert response.status == 503  # the volunteer refused it; no answer came
        rejected = sum(
            sample.value
            for metric in volunteer.metrics.rejected.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
        assert rejected == 1
        # The volunteer still serves: drop the client's path and let it find the volunteer again.
        await next(iter(net.client.tunnel.pool.paths.values())).channel.close()
        await net.client.tunnel.pool.wait_for_path(20)
        rep, reader, writer = await socks5_connect(net.proxy, "127.0.0.1", port)
        assert rep == 0
        writer.write(b"ping")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(-1), 30) == b"ping"
        writer.close()
