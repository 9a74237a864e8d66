"""Helpers for end-to-end tests: origin servers, a SOCKS5 client, a fixed-table resolver."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import socket
import struct
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.core.bridge_line import BridgeLine
from ferry.core.ice_servers import IceServer
from ferry.egress.policy import DestinationPolicy
from ferry.egress.server import Egress, EgressConfig
from ferry.egress.upstream import Resolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TableResolver:
    """Resolves names from a fixed table; any other name fails as the system's would."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = {
            name: [ipaddress.ip_address(a) for a in addrs] for name, addrs in table.items()
        }
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host in self.table:
            return list(self.table[host])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


class Origin:
    """An HTTP origin on 127.0.0.1: ``/bytes/N`` (deterministic), ``/upload`` (SHA-256)."""

    def __init__(self) -> None:
        self.port = 0
        self.uploads: list[str] = []

    @staticmethod
    def payload(size: int) -> bytes:
        """The deterministic body of ``/bytes/SIZE``."""
        blocks = []
        counter = 0
        total = 0
        while total < size:
            block = hashlib.sha256(counter.to_bytes(8, "big")).digest() * 2048  # 64 KiB
            blocks.append(block)
            total += len(block)
            counter += 1
        return b"".join(blocks)[:size]

    async def _bytes(self, request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        return web.Response(body=self.payload(size), content_type="application/octet-stream")

    async def _upload(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        async for chunk in request.content.iter_chunked(65536):
            digest.update(chunk)
        self.uploads.append(digest.hexdigest())
        return web.Response(text=digest.hexdigest())

    async def _hello(self, request: web.Request) -> web.Response:
        return web.Response(text="hello through ferry\n")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Origin]:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/bytes/{size:\\d+}", self._bytes)
        app.router.add_post("/upload", self._upload)
        app.router.add_get("/{tail:.*}", self._hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        try:
            yield self
        finally:
            await runner.cleanup()


@asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """A TCP echo server on 127.0.0.1; yields its port."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def socks5_connect(
    proxy: tuple[str, int], host: str, port: int
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a SOCKS5 CONNECT; returns (REP, reader, writer). The caller closes the writer."""
    reader, writer = await asyncio.open_connection(*proxy)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        encoded = host.encode("ascii")
        request = b"\x05\x01\x00\x03" + bytes([len(encoded)]) + encoded
    else:
        kind = b"\x01" if address.version == 4 else b"\x04"
        request = b"\x05\x01\x00" + kind + address.packed
    writer.write(request + struct.pack("!H", port))
    reply = await reader.readexactly(10)
    assert reply[0] == 5, reply
    return reply[1], reader, writer


async def http_connect(proxy: tuple[str, int], authority: str) -> tuple[int, bytes]:
    """Send ``CONNECT authority``; returns (status, whole response head and body)."""
    reader, writer = await asyncio.open_connection(*proxy)
    try:
        writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        body = b""
        if status != 200:
            async with asyncio.timeout(10):
                body = await reader.read()
        return status, head + body
    finally:
        writer.close()


async def run_curl(*args: str, timeout: float = 120.0) -> tuple[int, bytes, bytes]:
    """Run Debian's curl; returns (exit code, stdout, stderr). It ignores ``~/.curlrc`` and
    the environment's proxy variables, so only the proxy a test names is used. curl is killed
    and reaped if this times out or is cancelled (a test that stops a download midway)."""
    environment = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    process = await asyncio.create_subprocess_exec(
        "/usr/bin/curl",
        "-q",  # ignore any ~/.curlrc (must come first)
        "--silent",
        "--show-error",
        "--max-time",
        str(int(timeout)),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    try:
        async with asyncio.timeout(timeout + 10):
            out, err = await process.communicate()
    except BaseException:
        if process.returncode is None:
            process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out, err


@asynccontextmanager
async def egress_and_broker(
    *,
    resolver: Resolver | None = None,
    broker_client_timeout: float = 10.0,
    ice_servers: tuple[IceServer, ...] = (),
    turn_secret: bytes | None = None,
) -> AsyncIterator[tuple[Egress, BridgeLine, Broker]]:
    """An egress on 127.0.0.1 that may reach private addresses (the tests' origins are on
    loopback), its bridge line, and a broker for it (handing out ``ice_servers``); both
    closed afterwards, broker first."""
    with tempfile.TemporaryDirectory(prefix="ferry-egress-") as state:
        egress = Egress(
            EgressConfig(
                state_dir=Path(state),
                host="127.0.0.1",
                port=0,
                policy=DestinationPolicy(allow_private=True),
            ),
            registry=CollectorRegistry(),
            resolver=resolver,
        )
        bridge = await egress.start()
        try:
            broker = Broker(
                BrokerConfig(
                    host="127.0.0.1",
                    port=0,
                    allowed_egresses=(bridge.url,),
                    client_timeout=broker_client_timeout,
                    ice_servers=ice_servers,
                    turn_secret=turn_secret,
                ),
                registry=CollectorRegistry(),
            )
            await broker.start()
            try:
                yield egress, bridge, broker
            finally:
                await broker.close()
        finally:
            await egress.close()
