"""The real LocalProxy on 127.0.0.1:0, driven by Debian's curl and by raw sockets.

The stream opener here connects straight to the target over loopback TCP (it refuses any
target that is not a loopback address or ``localhost``), so these tests exercise the proxy
port alone, not the session behind it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from ferry.client.local_proxy import LocalProxy, LocalProxyConfig
from ferry.core.addresses import Target
from ferry.core.codes import ReplyCode
from ferry.core.proxy_handshake import Credentials
from ferry.errors import (
    ChannelClosedError,
    ConfigError,
    NoVolunteerError,
    StreamRefusedError,
)
from ferry.transport.stream import ByteStream

from . import chain

pytestmark = pytest.mark.integration

IO_TIMEOUT = 10.0
HELLO_BODY = "hello through the ferry proxy\n"
BIG_BODY = bytes(range(256)) * 4096  # 1 MiB
SOCKS_OK = b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"


# ---- a direct-TCP stream opener ------------------------------------------------------------


class TcpByteStream:
    """A :class:`ByteStream` over one loopback TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._sent_eof = False
        self._received_eof = False

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        try:
            data = await self._reader.read(max_bytes)
        except OSError as error:
            raise ChannelClosedError(f"test stream failed: {error}") from error
        if not data:
            self._received_eof = True
            self._close_when_finished()
        return data

    async def send_all(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as error:
            raise ChannelClosedError(f"test stream failed: {error}") from error

    async def send_eof(self) -> None:
        self._sent_eof = True
        if not self._writer.transport.is_closing():
            self._writer.write_eof()
        self._close_when_finished()

    def abort(self) -> None:
        self._writer.transport.abort()

    def _close_when_finished(self) -> None:
        if self._sent_eof and self._received_eof:
            self._writer.close()


class DirectOpener:
    """Opens loopback TCP connections; refuses chosen ports the way the egress would."""

    def __init__(self) -> None:
        self.targets: list[Target] = []
        self.refused_ports: dict[int, ReplyCode] = {}
        self.no_volunteer_ports: set[int] = set()
        self.crashing_ports: set[int] = set()
        self._streams: list[TcpByteStream] = []

    async def open_stream(self, target: Target) -> ByteStream:
        self.targets.append(target)
        if target.port in self.crashing_ports:
            raise RuntimeError("a bug in the opener")
        if target.port in self.no_volunteer_ports:
            raise NoVolunteerError("no volunteer answered within 10 seconds")
        if target.port in self.refused_ports:
            code = self.refused_ports[target.port]
            raise StreamRefusedError(f"refused with code {code.name}", code=code)
        host = "127.0.0.1" if target.host == "localhost" else target.host
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError(host)
        except ValueError:
            raise StreamRefusedError(
                "the test opener only reaches loopback", code=ReplyCode.NOT_ALLOWED
            ) from None
        try:
            reader, writer = await asyncio.open_connection(host, target.port)
        except ConnectionRefusedError:
            raise StreamRefusedError(
                "the destination refused the connection", code=ReplyCode.CONNECTION_REFUSED
            ) from None
        stream = TcpByteStream(reader, writer)
        self._streams.append(stream)
        return stream

    def abort_all(self) -> None:
        for stream in self._streams:
            stream.abort()


# ---- servers behind the proxy --------------------------------------------------------------


ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LoopbackServer:
    """A TCP server on 127.0.0.1:0 whose per-connection tasks it owns and cancels on close."""

    def __init__(self, handler: ConnectionHandler) -> None:
        self._handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handler(reader, writer)
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo every chunk back as it arrives; return (and close) after the peer's EOF."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=HELLO_BODY)

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG_BODY, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/big", big)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    # The same port on ::1 too, for the IPv6 tests.
    site6 = web.TCPSite(runner, "::1", port)
    await site6.start()
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = LoopbackServer(echo)
    port = await server.start()
    try:
        yield port
    finally:
        await server.close()


@pytest.fixture
def opener() -> DirectOpener:
    return DirectOpener()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


StartProxy = Callable[[LocalProxyConfig], Awaitable[int]]


@pytest.fixture
async def start_proxy(
    opener: DirectOpener, registry: CollectorRegistry
) -> AsyncIterator[StartProxy]:
    """Starts LocalProxies with a given config; closes them all after the test."""
    proxies: list[LocalProxy] = []

    async def start(config: LocalProxyConfig) -> int:
        proxy = LocalProxy(opener, config, registry)
        proxies.append(proxy)
        host, port = await proxy.start()
        assert host == "127.0.0.1"
        return port

    try:
        yield start
    finally:
        for proxy in proxies:
            await proxy.close()
        opener.abort_all()


@pytest.fixture
async def proxy_port(start_proxy: StartProxy) -> int:
    return await start_proxy(LocalProxyConfig(port=0))


# ---- helpers -------------------------------------------------------------------------------


async def run_curl(*arguments: str) -> tuple[int, bytes, bytes]:
    return await chain.run_curl(*arguments, timeout=20)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_exactly(reader: asyncio.StreamReader, count: int) -> bytes:
    async with asyncio.timeout(IO_TIMEOUT):
        return await reader.readexactly(count)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(IO_TIMEOUT):
        return await reader.read()


def socks_domain_request(host: str, port: int) -> bytes:
    name = host.encode()
    return b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# ---- curl end to end -----------------------------------------------------------------------


async def test_curl_socks5_hostname(
    proxy_port: int, http_port: int, opener: DirectOpener, registry: CollectorRegistry
) -> None:
    code, body, stderr = await run_curl(
        "--socks5-hostname", f"127.0.0.1:{proxy_port}", f"http://localhost:{http_port}/hello"
    )
    assert (code, stderr) == (0, b"")
    assert body.decode() == HELLO_BODY
    assert opener.targets == [Target("localhost", http_port)]
    assert sample(registry, "ferry_client_proxy_connections_total") == 1


async def test_curl_socks5_ipv4_and_ipv6(
    proxy_port: int, http_port: int, opener: DirectOpener
) -> None:
    for url in (f"http://127.0.0.1:{http_port}/hello", f"http://[::1]:{http_port}/hello"):
        code, body, stderr = await run_curl("--socks5", f"127.0.0.1:{proxy_port}", url)
        assert (code, stderr) == (0, b"")
        assert body.decode() == HELLO_BODY
    assert opener.targets == [Target("127.0.0.1", http_port), Target("::1", http_port)]


async def test_curl_http_connect(proxy_port: int, http_port: int, opener: DirectOpener) -> None:
    code, body, stderr = await run_curl(
        "--proxytunnel",
        "--proxy",
        f"http://127.0.0.1:{proxy_port}",
        f"http://localhost:{http_port}/hello",
    )
    assert (code, stderr) == (0, b"")
    assert body.decode() == HELLO_BODY
    assert opener.targets == [Target("localhost", http_port)]


async def test_curl_http_connect_ipv6_target(
    proxy_port: int, http_port: int, opener: DirectOpener
) -> None:
    code, body, stderr = await run_curl(
        "--proxytunnel",
        "--proxy",
        f"http://127.0.0.1:{proxy_port}",
        f"http://[::1]:{http_port}/hello",
    )
    assert (code, stderr) == (0, b"")
    assert body.decode() == HELLO_BODY
    assert opener.targets == [Target("::1", http_port)]


async def test_curl_downloads_a_megabyte_both_ways(proxy_port: int, http_port: int) -> None:
    for proxy_arguments in (
        ("--socks5-hostname", f"127.0.0.1:{proxy_port}"),
        ("--proxytunnel", "--proxy", f"http://127.0.0.1:{proxy_port}"),
    ):
        code, body, stderr = await run_curl(*proxy_arguments, f"http://localhost:{http_port}/big")
        assert (code, stderr) == (0, b"")
        assert body == BIG_BODY


async def test_curl_with_credentials(
    start_proxy: StartProxy, http_port: int, registry: CollectorRegistry
) -> None:
    port = await start_proxy(LocalProxyConfig(port=0, credentials=Credentials("alice", "s3cret")))
    url = f"http://localhost:{http_port}/hello"
    for proxy in (f"socks5h://127.0.0.1:{port}", f"http://127.0.0.1:{port}"):
        code, body, stderr = await run_curl(
            "--proxytunnel", "--proxy", proxy, "--proxy-user", "alice:s3cret", url
        )
        assert (code, stderr) == (0, b"")
        assert body.decode() == HELLO_BODY

        code, body, _ = await run_curl(
            "--proxytunnel", "--proxy", proxy, "--proxy-user", "alice:wrong", url
        )
        assert code != 0
        assert body == b""
    assert sample(registry, "ferry_client_proxy_rejected_total", reason="auth_failed") == 2


# ---- exact replies on raw sockets ----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "rep", "status_line"),
    [
        (ReplyCode.NOT_ALLOWED, 0x02, b"HTTP/1.1 403 Forbidden"),
        (ReplyCode.CONNECTION_REFUSED, 0x05, b"HTTP/1.1 502 Bad Gateway"),
        (ReplyCode.TIMED_OUT, 0x06, b"HTTP/1.1 504 Gateway Timeout"),
        (ReplyCode.NAME_NOT_RESOLVED, 0x01, b"HTTP/1.1 502 Bad Gateway"),
    ],
)
async def test_refusals_get_exact_replies(
    proxy_port: int,
    opener: DirectOpener,
    registry: CollectorRegistry,
    code: ReplyCode,
    rep: int,
    status_line: bytes,
) -> None:
    opener.refused_ports[4000] = code

    reader, writer = await connect(proxy_port)
    writer.write(b"\x05\x01\x00" + socks_domain_request("example.test", 4000))
    assert await read_exactly(reader, 2) == b"\x05\x00"
    assert await read_to_eof(reader) == bytes([5, rep, 0, 1, 0, 0, 0, 0, 0, 0])
    writer.close()

    reader, writer = await connect(proxy_port)
    writer.write(b"CONNECT example.test:4000 HTTP/1.1\r\nHost: example.test:4000\r\n\r\n")
    body = f"Refused with code {code.name}.\n".encode()
    assert await read_to_eof(reader) == (
        status_line + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    writer.close()
    assert sample(registry, "ferry_client_proxy_open_failures_total", reason="refused") == 2


async def test_no_volunteer_gives_unavailable_and_a_redacted_warning(
    proxy_port: int,
    opener: DirectOpener,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    opener.no_volunteer_ports.add(4001)
    caplog.set_level(logging.WARNING, logger="ferry")

    reader, writer = await connect(proxy_port)
    writer.write(b"\x05\x01\x00" + socks_domain_request("secret-site.test", 4001))
    assert await read_exactly(reader, 2) == b"\x05\x00"
    assert await read_to_eof(reader) == b"\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00"
    writer.close()

    reader, writer = await connect(proxy_port)
    writer.write(b"CONNECT secret-site.test:4001 HTTP/1.1\r\n\r\n")
    assert await read_to_eof(reader) == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 41\r\nConnection: close\r\n\r\n"
        b"No volunteer answered within 10 seconds.\n"
    )
    writer.close()

    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2
    for record in warnings:
        message = record.getMessage()
        assert "no volunteer was reachable" in message
        assert "secret-site" not in message and "4001" not in message
    assert sample(registry, "ferry_client_proxy_open_failures_total", reason="no_volunteer") == 2


async def test_bind_and_bad_address_type(proxy_port: int, registry: CollectorRegistry) -> None:
    reader, writer = await connect(proxy_port)
    writer.write(b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50")
    assert await read_to_eof(reader) == b"\x05\x00\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"
    writer.close()

    reader, writer = await connect(proxy_port)
    writer.write(b"\x05\x01\x00\x05\x01\x00\x09\x7f\x00\x00\x01\x00\x50")
    assert await read_to_eof(reader) == b"\x05\x00\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00"
    writer.close()

    assert sample(registry, "ferry_client_proxy_rejected_total", reason="unsupported_command") == 1
    assert (
        sample(registry, "ferry_client_proxy_rejected_total", reason="unsupported_address_type")
        == 1
    )


async def test_http_get_is_refused_with_405(proxy_port: int, opener: DirectOpener) -> None:
    reader, writer = await connect(proxy_port)
    writer.write(b"GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    reply = await read_to_eof(reader)
    assert reply.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nAllow: CONNECT\r\n" in reply
    writer.close()
    assert opener.targets == []


async def test_garbage_is_closed_silently(proxy_port: int, registry: CollectorRegistry) -> None:
    reader, writer = await connect(proxy_port)
    writer.write(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
    assert await read_to_eof(reader) == b""
    writer.close()
    assert sample(registry, "ferry_client_proxy_rejected_total", reason="unknown_protocol") == 1


# ---- tunnelling behaviour ------------------------------------------------------------------


async def test_pipelined_bytes_and_half_close(proxy_port: int, echo_port: int) -> None:
    reader, writer = await connect(proxy_port)
    # Greeting, request and payload in one write, as an optimistic SOCKS client sends them.
    writer.write(b"\x05\x01\x00" + socks_domain_request("localhost", echo_port) + b"first;")
    assert await read_exactly(reader, 12) == b"\x05\x00" + SOCKS_OK
    writer.write(b"second")
    writer.write_eof()
    # The echo server sees our EOF only through the proxy's send_eof, and its EOF reaches us
    # only through the proxy's write_eof: reading to EOF proves both half-closes.
    assert await read_to_eof(reader) == b"first;second"
    writer.close()


async def test_http_connect_pipelined_bytes(proxy_port: int, echo_port: int) -> None:
    reader, writer = await connect(proxy_port)
    writer.write(f"CONNECT localhost:{echo_port} HTTP/1.1\r\n\r\nearly bytes".encode())
    reply = b"HTTP/1.1 200 Connection established\r\n\r\n"
    assert await read_exactly(reader, len(reply)) == reply
    assert await read_exactly(reader, len(b"early bytes")) == b"early bytes"
    writer.write_eof()
    assert await read_to_eof(reader) == b""
    writer.close()


async def test_bad_connection_does_not_disturb_a_good_one(
    proxy_port: int, echo_port: int, opener: DirectOpener, registry: CollectorRegistry
) -> None:
    good_reader, good_writer = await connect(proxy_port)
    good_writer.write(b"\x05\x01\x00" + socks_domain_request("localhost", echo_port))
    assert await read_exactly(good_reader, 12) == b"\x05\x00" + SOCKS_OK
    good_writer.write(b"ping 1")
    assert await read_exactly(good_reader, 6) == b"ping 1"

    opener.crashing_ports.add(4002)
    bad_inputs = [
        b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00",  # port 0
        b"\xff" * 100,
        b"CONNECT nowhere HTTP/1.1\r\n\r\n",
        b"\x05\x01\x00" + socks_domain_request("localhost", 4002),  # the opener crashes
        b"\x05\x01\x00\x05\x01",  # cut short, then reset
    ]
    for data in bad_inputs:
        reader, writer = await connect(proxy_port)
        writer.write(data)
        await writer.drain()
        if data.endswith(b"\x05\x01"):
            writer.transport.abort()
            continue
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            # Whatever the reply, the proxy closes the connection.
            async with asyncio.timeout(IO_TIMEOUT):
                await reader.readexactly(1 << 20)
        writer.close()

    good_writer.write(b"ping 2")
    assert await read_exactly(good_reader, 6) == b"ping 2"
    good_writer.write_eof()
    assert await read_to_eof(good_reader) == b""
    good_writer.close()
    assert sample(registry, "ferry_client_proxy_connections_total") == 1 + len(bad_inputs)


async def test_handshake_timeout_closes_and_counts(
    start_proxy: StartProxy, registry: CollectorRegistry
) -> None:
    port = await start_proxy(LocalProxyConfig(port=0, handshake_timeout=0.2))
    reader, writer = await connect(port)
    writer.write(b"\x05\x01")  # an unfinished greeting
    async with asyncio.timeout(IO_TIMEOUT):
        try:
            leftover = await reader.read()
        except ConnectionResetError:
            leftover = b""
    assert leftover == b""
    writer.close()
    assert sample(registry, "ferry_client_proxy_rejected_total", reason="handshake_timeout") == 1


async def test_connections_over_the_limit_are_refused(
    start_proxy: StartProxy, registry: CollectorRegistry, echo_port: int
) -> None:
    port = await start_proxy(LocalProxyConfig(port=0, max_connections=1))
    first_reader, first_writer = await connect(port)
    first_writer.write(b"\x05\x01\x00")
    assert await read_exactly(first_reader, 2) == b"\x05\x00"

    reader, writer = await connect(port)
    async with asyncio.timeout(IO_TIMEOUT):
        try:
            data = await reader.read()
        except ConnectionResetError:
            data = b""
    assert data == b""
    writer.close()
    assert sample(registry, "ferry_client_proxy_rejected_total", reason="too_many_connections") == 1

    # The first connection is still served.
    first_writer.write(socks_domain_request("localhost", echo_port) + b"still here")
    assert await read_exactly(first_reader, 10 + 10) == SOCKS_OK + b"still here"
    first_writer.close()


async def test_close_aborts_open_tunnels(
    opener: DirectOpener, registry: CollectorRegistry, echo_port: int
) -> None:
    proxy = LocalProxy(opener, LocalProxyConfig(port=0), registry)
    _, port = await proxy.start()
    reader, writer = await connect(port)
    writer.write(b"\x05\x01\x00" + socks_domain_request("localhost", echo_port))
    assert await read_exactly(reader, 12) == b"\x05\x00" + SOCKS_OK
    assert sample(registry, "ferry_client_proxy_open_connections") == 1

    await proxy.close()
    opener.abort_all()

    assert sample(registry, "ferry_client_proxy_open_connections") == 0
    async with asyncio.timeout(IO_TIMEOUT):
        try:
            data = await reader.read()
        except ConnectionResetError:
            data = b""
    assert data == b""
    writer.close()
    with pytest.raises(OSError):
        await connect(port)


async def test_start_on_a_busy_port_is_a_config_error(
    opener: DirectOpener, registry: CollectorRegistry, proxy_port: int
) -> None:
    proxy = LocalProxy(opener, LocalProxyConfig(port=proxy_port), CollectorRegistry())
    with pytest.raises(ConfigError, match="cannot listen"):
        await proxy.start()
    await proxy.close()


async def test_destination_half_close_reaches_the_application(proxy_port: int) -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def banner_then_listen(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"banner")
        writer.write_eof()
        received.set_result(await reader.read())

    server = LoopbackServer(banner_then_listen)
    server_port = await server.start()
    try:
        reader, writer = await connect(proxy_port)
        writer.write(b"\x05\x01\x00" + socks_domain_request("localhost", server_port))
        assert await read_exactly(reader, 12) == b"\x05\x00" + SOCKS_OK
        # EOF arrives while our own direction is still open: the proxy half-closed to us.
        assert await read_to_eof(reader) == b"banner"
        writer.write(b"after the banner")
        writer.write_eof()
        async with asyncio.timeout(IO_TIMEOUT):
            assert await received == b"after the banner"
        writer.close()
    finally:
        await server.close()
