"""The destination policy through the whole chain: app → client → volunteer → egress.

Only loopback-class destinations are tried here (127.0.0.0/8, ``::1``, ``0.0.0.0``, ``::``,
names and odd spellings that stand for them), so that even a broken policy could only ever
reach this machine. A listener on 127.0.0.1 and ``::1`` records every connection it
accepts: the test asserts the application saw the policy refusal (SOCKS 0x02, HTTP 403) and
that nothing reached the listener. Private, link-local, multicast and public destinations are
tested on the policy functions alone (``tests/unit/test_egress_policy.py``,
``tests/integration/test_upstream.py``), never by a connection attempt.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from ferry.demo import LoopbackNetwork, LoopbackNetworkConfig
from ferry.egress.policy import DestinationPolicy, DestinationRule
from ferry.egress.upstream import SystemResolver

from .chain import echo_server, http_connect, socks5_connect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAMES = {
    "loopback.test": ["127.0.0.1"],
    "loopback-2.test": ["127.0.0.2"],
    "v6-loopback.test": ["::1"],
    "both-loopbacks.test": ["127.0.0.1", "::1"],
    "unspecified.test": ["0.0.0.0"],
    "v6-unspecified.test": ["::"],
    "mapped-loopback.test": ["::ffff:127.0.0.1"],
}

SPELLINGS_OF_LOOPBACK = [
    "2130706433",
    "0x7f000001",
    "017700000001",
    "127.1",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "127.000.000.001",
    "127.0.0.1.",
    "0",
    "0x0",
]
"""Names that stand for 127.0.0.1 (or 0.0.0.0, which reaches it) once a resolver sees them."""

LITERALS = [
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "::1",
    "0.0.0.0",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:0.0.0.0",
]


class LoopbackOnlyResolver:
    """The system's resolver, but only where it can never send a DNS query.

    Table names answer from the table; ``localhost`` and names that the C library parses as
    numbers go to the real ``getaddrinfo`` (``/etc/hosts`` and ``inet_aton``); anything else
    fails as an unknown name would.
    """

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = {
            name: [ipaddress.ip_address(a) for a in addresses] for name, addresses in table.items()
        }
        self.system = SystemResolver()
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host in self.table:
            return list(self.table[host])
        if host == "localhost" or _numeric_to_the_c_library(host):
            return await self.system.resolve(host, port)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def _numeric_to_the_c_library(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


class RecordingListener:
    """Listens on one port of both 127.0.0.1 and ``::1`` and records every accept."""

    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.port = 0
        self._servers: list[asyncio.Server] = []

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(str(writer.get_extra_info("sockname")))
        writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RecordingListener]:
        for _attempt in range(20):
            ipv4 = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            port = ipv4.sockets[0].getsockname()[1]
            try:
                ipv6 = await asyncio.start_server(self._accept, "::1", port)
            except OSError as exc:
                ipv4.close()
                await ipv4.wait_closed()
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            self._servers, self.port = [ipv4, ipv6], port
            break
        else:
            raise AssertionError("found no port free on both 127.0.0.1 and ::1")
        try:
            yield self
        finally:
            for server in self._servers:
                server.close()
                await server.wait_closed()


async def socks5_connect_domain(proxy: tuple[str, int], name: str, port: int) -> int:
    """A SOCKS5 CONNECT with ``name`` sent as a domain (ATYP 3) whatever it spells; the REP."""
    reader, writer = await asyncio.open_connection(*proxy)
    try:
        writer.write(b"\x05\x01\x00")
        assert await reader.readexactly(2) == b"\x05\x00"
        encoded = name.encode("ascii")
        writer.write(
            b"\x05\x01\x00\x03" + bytes([len(encoded)]) + encoded + struct.pack("!H", port)
        )
        async with asyncio.timeout(30):
            reply = await reader.readexactly(10)
        assert reply[0] == 5
        return reply[1]
    finally:
        writer.close()


async def test_loopback_class_destinations_are_refused_through_the_chain() -> None:
    resolver = LoopbackOnlyResolver(NAMES)
    async with RecordingListener().running() as listener, echo_server() as echo_port:
        # The operator opens exactly one loopback service; everything else keeps the defaults.
        policy = DestinationPolicy(
            allowed_destinations=(DestinationRule.parse(f"127.0.0.1:{echo_port}"),)
        )
        network = LoopbackNetwork(LoopbackNetworkConfig(policy=policy, resolver=resolver))
        try:
            await network.start()
            await asyncio.wait_for(network.wait_ready(), 30)
            proxy = network.proxy
            port = listener.port

            refused: dict[str, int] = {}
            for host in LITERALS:
                rep, _reader, writer = await socks5_connect(proxy, host, port)
                writer.close()
                refused[f"socks literal {host}"] = rep
            for name in [*NAMES, "localhost", *SPELLINGS_OF_LOOPBACK, "127.0.0.1", "::1"]:
                refused[f"socks domain {name}"] = await socks5_connect_domain(proxy, name, port)
            assert refused == dict.fromkeys(refused, 0x02)

            for host in ["127.0.0.1", "[::1]", "0.0.0.0", "localhost", "0x7f000001", "127.1"]:
                status, response = await http_connect(proxy, f"{host}:{port}")
                assert status == 403, host
                assert b"destination" in response.lower(), host

            # The one allowed service works, so the refusals above came from the policy.
            rep, reader, writer = await socks5_connect(proxy, "127.0.0.1", echo_port)
            try:
                assert rep == 0x00
                writer.write(b"allowed by the operator")
                await writer.drain()
                async with asyncio.timeout(30):
                    assert await reader.readexactly(23) == b"allowed by the operator"
            finally:
                writer.close()
            rep, _reader, writer = await socks5_connect(proxy, "127.0.0.2", echo_port)
            writer.close()
            assert rep == 0x02

            assert network.egress is not None
            registry = network.egress.metrics.registry
            numeric = registry.get_sample_value(
                "ferry_egress_policy_refusals_total", {"reason": "numeric_name"}
            )
            assert numeric == len(SPELLINGS_OF_LOOPBACK) + 2  # two more over HTTP CONNECT
        finally:
            await network.close()
        assert listener.accepted == []
    # The odd spellings never reached a resolver; only real names were looked up.
    assert set(resolver.asked) <= {*NAMES, "localhost"}
    assert "localhost" in resolver.asked
