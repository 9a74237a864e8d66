"""The egress's upstream connector against real loopback sockets.

Every connection attempt goes through ``asyncio.open_connection``; the autouse fixture below
wraps it so that any attempt at a non-loopback address fails the test instead of leaving the
machine. Public addresses in these tests are values a fake resolver returns, never dialled.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from prometheus_client import CollectorRegistry

from ferry.core.addresses import Target
from ferry.core.codes import ReplyCode
from ferry.egress.policy import DestinationPolicy
from ferry.egress.upstream import (
    SystemResolver,
    UpstreamConfig,
    UpstreamMetrics,
    connect_upstream,
)
from ferry.errors import ConfigError, StreamRefusedError

pytestmark = pytest.mark.integration

DEFAULT_POLICY = DestinationPolicy()
TESTING_POLICY = DestinationPolicy(allow_private=True)
CONFIG = UpstreamConfig()

OpenConnection = Callable[..., Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class FixedResolver:
    """Answers every name with the same addresses and records the names it was asked."""

    def __init__(self, *addresses: str) -> None:
        self.addresses: list[IPv4Address | IPv6Address] = [ip_address(a) for a in addresses]
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPv4Address | IPv6Address]:
        self.asked.append(host)
        return list(self.addresses)


class FailingResolver:
    """Fails every lookup as getaddrinfo does for an unknown name."""

    async def resolve(self, host: str, port: int) -> list[IPv4Address | IPv6Address]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


class HangingResolver:
    """Never answers."""

    async def resolve(self, host: str, port: int) -> list[IPv4Address | IPv6Address]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture(autouse=True)
def dialled(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every host ``asyncio.open_connection`` is asked for; non-loopback ones fail the test."""
    real_open_connection: OpenConnection = asyncio.open_connection
    hosts: list[str] = []

    async def loopback_only(
        host: str, port: int, **kwargs: object
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        hosts.append(host)
        if not ip_address(host).is_loopback:
            raise AssertionError("a test tried to connect to a non-loopback address")
        return await real_open_connection(host, port, **kwargs)

    monkeypatch.setattr(asyncio, "open_connection", loopback_only)
    yield hosts


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A real TCP echo server on 127.0.0.1."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def closed_loopback_port() -> int:
    """A port on 127.0.0.1 that was just free: nothing listens on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _expect_refusal(awaitable: Awaitable[object], code: ReplyCode) -> StreamRefusedError:
    with pytest.raises(StreamRefusedError) as caught:
        await awaitable
    assert caught.value.code == code
    return caught.value


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


async def test_name_resolving_to_loopback_is_not_allowed(dialled: list[str]) -> None:
    resolver = FixedResolver("127.0.0.1")
    error = await _expect_refusal(
        connect_upstream(Target("rebind.test", 80), DEFAULT_POLICY, CONFIG, resolver),
        ReplyCode.NOT_ALLOWED,
    )
    assert resolver.asked == ["rebind.test"]
    assert dialled == []
    assert "127.0.0.1" not in str(error)
    assert "rebind.test" not in str(error)
    assert "loopback" in str(error)


async def test_system_resolver_localhost_is_not_allowed(dialled: list[str]) -> None:
    resolver = SystemResolver()
    addresses = await resolver.resolve("localhost", 80)
    assert addresses
    assert all(address.is_loopback for address in addresses)
    await _expect_refusal(
        connect_upstream(Target("localhost", 80), DEFAULT_POLICY, CONFIG, resolver),
        ReplyCode.NOT_ALLOWED,
    )
    assert dialled == []


@pytest.mark.parametrize(
    "addresses",
    [("8.8.8.8", "127.0.0.1"), ("2001:4860:4860::8888", "::ffff:169.254.169.254")],
    ids=["public-then-loopback", "public-then-mapped-metadata"],
)
async def test_one_refused_address_refuses_the_whole_name(
    addresses: tuple[str, str], dialled: list[str]
) -> None:
    await _expect_refusal(
        connect_upstream(
            Target("mixed.test", 443), DEFAULT_POLICY, CONFIG, FixedResolver(*addresses)
        ),
        ReplyCode.NOT_ALLOWED,
    )
    assert dialled == []


@pytest.mark.parametrize("host", ["127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254", "::1"])
async def test_refused_literal_is_not_allowed_without_resolving(
    host: str, dialled: list[str]
) -> None:
    resolver = FixedResolver()
    await _expect_refusal(
        connect_upstream(Target(host, 80), DEFAULT_POLICY, CONFIG, resolver),
        ReplyCode.NOT_ALLOWED,
    )
    assert resolver.asked == []
    assert dialled == []


async def test_allow_private_connects_by_name_and_bytes_flow(
    echo_port: int, dialled: list[str]
) -> None:
    resolver = FixedResolver("127.0.0.1")
    reader, writer = await connect_upstream(
        Target("echo.test", echo_port), TESTING_POLICY, CONFIG, resolver
    )
    try:
        writer.write(b"hello through the egress")
        await writer.drain()
        assert await reader.readexactly(24) == b"hello through the egress"
    finally:
        await _close(writer)
    assert resolver.asked == ["echo.test"]
    # The checked address itself was dialled, never the name.
    assert dialled == ["127.0.0.1"]


async def test_allow_private_connects_to_literal_without_resolving(
    echo_port: int, dialled: list[str]
) -> None:
    resolver = FixedResolver()
    reader, writer = await connect_upstream(
        Target("127.0.0.1", echo_port), TESTING_POLICY, CONFIG, resolver
    )
    try:
        writer.write(b"x")
        await writer.drain()
        assert await reader.readexactly(1) == b"x"
    finally:
        await _close(writer)
    assert resolver.asked == []
    assert dialled == ["127.0.0.1"]


async def test_next_address_is_tried_after_a_refused_one(
    echo_port: int, dialled: list[str]
) -> None:
    # Nothing listens on 127.0.0.2 (the echo server is bound to 127.0.0.1 only).
    resolver = FixedResolver("127.0.0.2", "127.0.0.1")
    reader, writer = await connect_upstream(
        Target("two.test", echo_port), TESTING_POLICY, CONFIG, resolver
    )
    try:
        writer.write(b"second")
        await writer.drain()
        assert await reader.readexactly(6) == b"second"
    finally:
        await _close(writer)
    assert dialled == ["127.0.0.2", "127.0.0.1"]


async def test_duplicate_addresses_are_tried_once(dialled: list[str]) -> None:
    resolver = FixedResolver("127.0.0.1", "127.0.0.1")
    await _expect_refusal(
        connect_upstream(
            Target("dup.test", closed_loopback_port()), TESTING_POLICY, CONFIG, resolver
        ),
        ReplyCode.CONNECTION_REFUSED,
    )
    assert dialled == ["127.0.0.1"]


async def test_closed_loopback_port_is_connection_refused() -> None:
    error = await _expect_refusal(
        connect_upstream(
            Target("127.0.0.1", closed_loopback_port()), TESTING_POLICY, CONFIG, FixedResolver()
        ),
        ReplyCode.CONNECTION_REFUSED,
    )
    assert "127.0.0.1" not in str(error)


async def test_resolver_failure_is_name_not_resolved(dialled: list[str]) -> None:
    await _expect_refusal(
        connect_upstream(Target("nowhere.test", 80), DEFAULT_POLICY, CONFIG, FailingResolver()),
        ReplyCode.NAME_NOT_RESOLVED,
    )
    assert dialled == []


async def test_name_without_addresses_is_name_not_resolved() -> None:
    await _expect_refusal(
        connect_upstream(Target("empty.test", 80), DEFAULT_POLICY, CONFIG, FixedResolver()),
        ReplyCode.NAME_NOT_RESOLVED,
    )


async def test_slow_resolver_is_name_not_resolved() -> None:
    config = UpstreamConfig(resolve_timeout=0.05)
    error = await _expect_refusal(
        connect_upstream(Target("slow.test", 80), DEFAULT_POLICY, config, HangingResolver()),
        ReplyCode.NAME_NOT_RESOLVED,
    )
    assert "in time" in str(error)


async def test_connection_that_never_completes_is_timed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never_connects(
        host: str, port: int, **kwargs: object
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert ip_address(host).is_loopback
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(asyncio, "open_connection", never_connects)
    config = UpstreamConfig(connect_timeout=0.1, attempt_timeout=0.05)
    await _expect_refusal(
        connect_upstream(
            Target("blackhole.test", 80), TESTING_POLICY, config, FixedResolver("127.0.0.1")
        ),
        ReplyCode.TIMED_OUT,
    )


@pytest.mark.parametrize(
    ("error_number", "code"),
    [
        (errno.ECONNREFUSED, ReplyCode.CONNECTION_REFUSED),
        (errno.EHOSTUNREACH, ReplyCode.HOST_UNREACHABLE),
        (errno.ENETUNREACH, ReplyCode.NETWORK_UNREACHABLE),
        (errno.ETIMEDOUT, ReplyCode.TIMED_OUT),
        (errno.EACCES, ReplyCode.GENERAL_FAILURE),
    ],
)
async def test_socket_errors_map_to_reply_codes(
    monkeypatch: pytest.MonkeyPatch, error_number: int, code: ReplyCode
) -> None:
    async def failing_connect(
        host: str, port: int, **kwargs: object
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert ip_address(host).is_loopback
        raise OSError(error_number, "simulated")

    monkeypatch.setattr(asyncio, "open_connection", failing_connect)
    error = await _expect_refusal(
        connect_upstream(Target("127.0.0.1", 80), TESTING_POLICY, CONFIG, FixedResolver()),
        code,
    )
    assert "simulated" not in str(error)


async def test_refusals_and_failures_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = UpstreamMetrics(registry)
    for _ in range(2):
        with pytest.raises(StreamRefusedError):
            await connect_upstream(
                Target("rebind.test", 80),
                DEFAULT_POLICY,
                CONFIG,
                FixedResolver("10.0.0.1"),
                metrics=metrics,
            )
    with pytest.raises(StreamRefusedError):
        await connect_upstream(
            Target("nowhere.test", 80), DEFAULT_POLICY, CONFIG, FailingResolver(), metrics=metrics
        )
    assert (
        registry.get_sample_value("ferry_egress_policy_refusals_total", {"reason": "private"}) == 2
    )
    assert (
        registry.get_sample_value("ferry_egress_upstream_failures_total", {"code": "not_allowed"})
        == 2
    )
    assert (
        registry.get_sample_value(
            "ferry_egress_upstream_failures_total", {"code": "name_not_resolved"}
        )
        == 1
    )


def test_config_refuses_non_positive_timeouts() -> None:
    with pytest.raises(ConfigError, match="connect_timeout"):
        UpstreamConfig(connect_timeout=0)
