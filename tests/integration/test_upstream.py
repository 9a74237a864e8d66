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
from ferry.egress.policy import DestinationPolicy, DestinationRule
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


# --- Tricks: addresses spelled as names, answers that change, one bad address among many ----


class RecordingResolver:
    """Fails every lookup like an unknown name, and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPv4Address | IPv6Address]:
        self.asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


class ChangingResolver:
    """Answers the n-th lookup with the n-th answer (the last one repeats): DNS rebinding."""

    def __init__(self, *answers: str) -> None:
        self.answers = [ip_address(answer) for answer in answers]
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPv4Address | IPv6Address]:
        self.asked.append(host)
        return [self.answers[min(len(self.asked), len(self.answers)) - 1]]


SPELLED_AS_NAMES = [
    "2130706433",
    "0x7f000001",
    "0X7F000001",
    "017700000001",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "127.1",
    "127.0.1",
    "0x7f.1",
    "127.000.000.001",
    "127.0.0.1.",
    "127.0.0.08",
    "0",
    "0x0",
    "3232235777",
    "0xa9fea9fe",
    "0251.0376.0251.0376",
    "10.1",
    "4294967295",
    "4294967296",
    "[::1]",
    "::ffff:127.1",
]


@pytest.mark.parametrize("name", SPELLED_AS_NAMES)
async def test_name_spelling_an_address_is_refused_before_resolution(
    name: str, dialled: list[str]
) -> None:
    resolver = RecordingResolver()
    registry = CollectorRegistry()
    metrics = UpstreamMetrics(registry)
    for policy in (DEFAULT_POLICY, TESTING_POLICY):
        error = await _expect_refusal(
            connect_upstream(Target(name, 80), policy, CONFIG, resolver, metrics=metrics),
            ReplyCode.NOT_ALLOWED,
        )
        assert name not in str(error)
    assert resolver.asked == []
    assert dialled == []
    refusals = registry.get_sample_value(
        "ferry_egress_policy_refusals_total", {"reason": "numeric_name"}
    )
    assert refusals == 2


# Spellings glibc's getaddrinfo parses as numbers itself: resolving them never sends a query.
NUMERIC_TO_GLIBC = {
    "2130706433": "127.0.0.1",
    "0x7f000001": "127.0.0.1",
    "017700000001": "127.0.0.1",
    "0177.0.0.1": "127.0.0.1",
    "127.1": "127.0.0.1",
    "0x7f.1": "127.0.0.1",
    "127.000.000.001": "127.0.0.1",
    "0": "0.0.0.0",
    "3232235777": "192.168.1.1",
    "0xa9fea9fe": "169.254.169.254",
}


@pytest.mark.parametrize(("name", "meaning"), NUMERIC_TO_GLIBC.items())
async def test_system_resolver_would_turn_the_spelling_into_the_address(
    name: str, meaning: str, dialled: list[str]
) -> None:
    # The danger is real: handed to getaddrinfo, the name becomes the address...
    socket.inet_aton(name)  # guard: a numeric spelling, so no DNS query can leave
    assert [str(a) for a in await SystemResolver().resolve(name, 80)] == [meaning]
    # ...so the egress must refuse it before resolving, even with allow_private on.
    for policy in (DEFAULT_POLICY, TESTING_POLICY):
        await _expect_refusal(
            connect_upstream(Target(name, 80), policy, CONFIG, SystemResolver()),
            ReplyCode.NOT_ALLOWED,
        )
    assert dialled == []


async def test_answer_changing_after_the_check_cannot_redirect_the_connection(
    echo_port: int, dialled: list[str]
) -> None:
    # 127.0.0.1 on the echo port is allowed by the operator; 127.0.0.2 (loopback) is not.
    policy = DestinationPolicy(
        allowed_destinations=(DestinationRule.parse(f"127.0.0.1:{echo_port}"),)
    )
    resolver = ChangingResolver("127.0.0.1", "127.0.0.2")
    assert (await resolver.resolve("probe", 0)) != (await resolver.resolve("probe", 0))
    resolver.asked.clear()
    reader, writer = await connect_upstream(
        Target("rebinding.test", echo_port), policy, CONFIG, resolver
    )
    try:
        writer.write(b"checked")
        await writer.drain()
        assert await reader.readexactly(7) == b"checked"
    finally:
        await _close(writer)
    # One lookup, and the connection went to the address that was checked.
    assert resolver.asked == ["rebinding.test"]
    assert dialled == ["127.0.0.1"]


async def test_answer_changing_to_an_allowed_one_after_a_refusal_stays_refused(
    echo_port: int, dialled: list[str]
) -> None:
    policy = DestinationPolicy(
        allowed_destinations=(DestinationRule.parse(f"127.0.0.1:{echo_port}"),)
    )
    resolver = ChangingResolver("127.0.0.2", "127.0.0.1")
    await _expect_refusal(
        connect_upstream(Target("rebinding.test", echo_port), policy, CONFIG, resolver),
        ReplyCode.NOT_ALLOWED,
    )
    assert resolver.asked == ["rebinding.test"]
    assert dialled == []


@pytest.mark.parametrize(
    "addresses",
    [
        ("127.0.0.1", "8.8.8.8"),
        ("8.8.8.8", "10.0.0.1"),
        ("8.8.8.8", "0.0.0.0"),
        ("2001:4860:4860::8888", "::"),
        ("2001:4860:4860::8888", "fe80::1"),
        ("2001:4860:4860::8888", "::ffff:127.0.0.1"),
        ("8.8.8.8", "1.1.1.1", "100.64.0.1"),
    ],
)
async def test_any_refused_address_among_several_refuses_the_name(
    addresses: tuple[str, ...], dialled: list[str]
) -> None:
    await _expect_refusal(
        connect_upstream(
            Target("several.test", 443), DEFAULT_POLICY, CONFIG, FixedResolver(*addresses)
        ),
        ReplyCode.NOT_ALLOWED,
    )
    assert dialled == []


@pytest.mark.parametrize("port", [25, 445])
async def test_denied_port_is_refused_before_connecting(port: int, dialled: list[str]) -> None:
    registry = CollectorRegistry()
    await _expect_refusal(
        connect_upstream(
            Target("mail.test", port),
            DEFAULT_POLICY,
            CONFIG,
            FixedResolver("93.184.216.34"),
            metrics=UpstreamMetrics(registry),
        ),
        ReplyCode.NOT_ALLOWED,
    )
    assert dialled == []
    assert (
        registry.get_sample_value("ferry_egress_policy_refusals_total", {"reason": "denied_port"})
        == 1
    )


async def test_allow_rule_opens_one_loopback_service_and_nothing_else(
    echo_port: int, dialled: list[str]
) -> None:
    policy = DestinationPolicy(
        allowed_destinations=(DestinationRule.parse(f"127.0.0.1:{echo_port}"),)
    )
    reader, writer = await connect_upstream(
        Target("127.0.0.1", echo_port), policy, CONFIG, FixedResolver()
    )
    try:
        writer.write(b"ok")
        await writer.drain()
        assert await reader.readexactly(2) == b"ok"
    finally:
        await _close(writer)
    for host, port in (("127.0.0.1", closed_loopback_port()), ("127.0.0.2", echo_port)):
        await _expect_refusal(
            connect_upstream(Target(host, port), policy, CONFIG, FixedResolver()),
            ReplyCode.NOT_ALLOWED,
        )
    assert dialled == ["127.0.0.1"]


async def test_deny_rule_refuses_a_name_whose_address_is_denied(dialled: list[str]) -> None:
    policy = DestinationPolicy(denied_destinations=(DestinationRule.parse("93.184.216.0/24"),))
    await _expect_refusal(
        connect_upstream(
            Target("denied.test", 443), policy, CONFIG, FixedResolver("::ffff:93.184.216.34")
        ),
        ReplyCode.NOT_ALLOWED,
    )
    assert dialled == []


@pytest.mark.parametrize("host", ["LOCALHOST.", "localhost", "a.LocalHost"])
async def test_localhost_names_are_not_allowed_without_resolving(
    host: str, dialled: list[str]
) -> None:
    # Issue 15: "LOCALHOST." got reply 1 or 4, depending on the system resolver, where every
    # other loopback spelling got 2 (not allowed).
    resolver = FixedResolver()
    await _expect_refusal(
        connect_upstream(Target(host, 80), DEFAULT_POLICY, CONFIG, resolver),
        ReplyCode.NOT_ALLOWED,
    )
    assert resolver.asked == []
    assert dialled == []
