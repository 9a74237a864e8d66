"""NAT discovery counts the STUN replies it cannot use, logs each reason once, and still ends.

Misbehaving STUN servers on loopback answer every Binding request with garbage (including a
message whose attribute is cut short, which aioice's parser fails on with ``struct.error``),
an error response, a wrong transaction ID, or a success response without XOR-MAPPED-ADDRESS.
A well-behaved RFC 5780 server (tests/support_nat.py) after them gives the result.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
from aioice import stun
from prometheus_client import CollectorRegistry

from ferry.core.nat_behaviour import NatClass, NatDiscoveryConfig, RefusedReply, StunServer
from ferry.transport.stun import NatBehaviourMonitor, RefusedStunReplies, discover_with_servers

from ..support_nat import Rfc5780StunServer

pytestmark = pytest.mark.timeout(60)

QUICK = NatDiscoveryConfig(retransmit_interval=0.1, request_timeout=0.3, rediscovery_interval=0.05)


class Misbehaviour(enum.Enum):
    GARBAGE = "garbage"
    ERROR_RESPONSE = "error response"
    WRONG_TRANSACTION_ID = "wrong transaction ID"
    NO_MAPPED_ADDRESS = "no XOR-MAPPED-ADDRESS"


def _truncated_attribute_reply(transaction_id: bytes) -> bytes:
    """A Binding success response whose PRIORITY attribute has 2 bytes instead of 4."""
    attribute = struct.pack("!HH", 0x0024, 2) + b"\x00\x01\x00\x00"
    header = struct.pack("!HHI12s", 0x0101, len(attribute), stun.COOKIE, transaction_id)
    return header + attribute


def _reply(request: stun.Message, misbehaviour: Misbehaviour, own: tuple[str, int]) -> bytes:
    transaction_id = request.transaction_id
    if misbehaviour is Misbehaviour.WRONG_TRANSACTION_ID:
        transaction_id = bytes(byte ^ 0xFF for byte in transaction_id)
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=(
            stun.Class.ERROR if misbehaviour is Misbehaviour.ERROR_RESPONSE else stun.Class.RESPONSE
        ),
        transaction_id=transaction_id,
    )
    if misbehaviour is Misbehaviour.ERROR_RESPONSE:
        response.attributes["ERROR-CODE"] = (400, "Bad Request")
    else:
        response.attributes["OTHER-ADDRESS"] = own
        if misbehaviour is not Misbehaviour.NO_MAPPED_ADDRESS:
            response.attributes["XOR-MAPPED-ADDRESS"] = own
    return bytes(response)


class _Misbehaving(asyncio.DatagramProtocol):
    def __init__(self, misbehaviour: Misbehaviour) -> None:
        self.misbehaviour = misbehaviour
        self.transport: asyncio.DatagramTransport | None = None
        self.requests_seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # not a subclass, in CPython

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        assert self.transport is not None
        request = stun.parse_message(data)
        self.requests_seen += 1
        if self.misbehaviour is Misbehaviour.GARBAGE:
            self.transport.sendto(b"this is not STUN", addr)
            self.transport.sendto(_truncated_attribute_reply(request.transaction_id), addr)
            return
        own = self.transport.get_extra_info("sockname")
        self.transport.sendto(_reply(request, self.misbehaviour, (own[0], own[1])), addr)


@asynccontextmanager
async def misbehaving_server(misbehaviour: Misbehaviour) -> AsyncIterator[StunServer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _Misbehaving(misbehaviour), local_addr=("127.0.0.1", 0)
    )
    try:
        yield StunServer("127.0.0.1", transport.get_extra_info("sockname")[1])
    finally:
        transport.close()
    assert protocol.requests_seen > 0, f"the {misbehaviour.value} server was never asked"


@asynccontextmanager
async def good_server() -> AsyncIterator[StunServer]:
    server = Rfc5780StunServer(("127.0.0.1", "127.0.0.2"))
    await server.start()
    try:
        yield StunServer("127.0.0.1", server.ports[0])
    finally:
        server.close()


def refused_count(registry: CollectorRegistry, role: str, reason: RefusedReply) -> float:
    value = registry.get_sample_value(
        f"ferry_{role}_stun_replies_refused_total", {"reason": reason.value}
    )
    assert value is not None, f"no sample for {reason.value}"
    return value


async def test_bad_replies_are_counted_by_reason_and_the_good_server_decides() -> None:
    registry = CollectorRegistry()
    refused = RefusedStunReplies(registry, role="client")
    async with (
        misbehaving_server(Misbehaviour.GARBAGE) as garbage,
        misbehaving_server(Misbehaviour.ERROR_RESPONSE) as error_response,
        misbehaving_server(Misbehaviour.WRONG_TRANSACTION_ID) as wrong_id,
        misbehaving_server(Misbehaviour.NO_MAPPED_ADDRESS) as no_mapped,
        good_server() as good,
    ):
        behaviour = await discover_with_servers(
            (garbage, error_response, wrong_id, no_mapped, good), QUICK, refused
        )
    assert behaviour.nat_class is NatClass.UNRESTRICTED
    # two bad datagrams for each of at least the first request on each of the two sockets
    assert refused_count(registry, "client", RefusedReply.UNPARSEABLE) >= 4
    assert refused_count(registry, "client", RefusedReply.NOT_BINDING_SUCCESS) >= 2
    assert refused_count(registry, "client", RefusedReply.WRONG_TRANSACTION_ID) >= 2
    # only the mapping test needs XOR-MAPPED-ADDRESS; its answer ends that test at once
    assert refused_count(registry, "client", RefusedReply.NO_MAPPED_ADDRESS) == 1
    assert refused_count(registry, "client", RefusedReply.NO_OTHER_ADDRESS) == 0


async def test_a_monitor_with_only_a_garbage_server_stays_unknown_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ferry.transport.stun")
    registry = CollectorRegistry()
    async with misbehaving_server(Misbehaviour.GARBAGE) as garbage:
        monitor = NatBehaviourMonitor((garbage,), QUICK, role="volunteer", registry=registry)
        monitor.start()
        try:
            for _ in range(400):
                if monitor.discoveries >= 2:
                    break
                await asyncio.sleep(0.025)
            assert monitor.discoveries >= 2
            assert monitor.nat_class is NatClass.UNKNOWN
        finally:
            await monitor.close()
    assert refused_count(registry, "volunteer", RefusedReply.UNPARSEABLE) >= 8
    lines = [r.getMessage() for r in caplog.records if r.name == "ferry.transport.stun"]
    refusals = [line for line in lines if "refused a STUN reply" in line]
    assert refusals == [
        "volunteer NAT discovery refused a STUN reply (unparseable): the reply is not a STUN "
        "message; further ones are only counted"
    ]
    assert not any("127.0.0.1" in line for line in lines)
