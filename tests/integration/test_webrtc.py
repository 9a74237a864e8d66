"""Two real aiortc peers in one process, on loopback only (docs/protocol.md §3)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry

from ferry.errors import ChannelClosedError, ProtocolError
from ferry.transport.webrtc import (
    AnsweringPeer,
    DataChannelDatagramChannel,
    DataChannelMetrics,
    OfferingPeer,
    WebRtcConfig,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

WAIT_SECONDS = 10.0
# Tests must never send a packet beyond loopback: gather host candidates on 127.0.0.1 only.
LOOPBACK = WebRtcConfig(host_candidate_addresses=("127.0.0.1",), open_timeout=10.0)


@dataclass
class Recorder:
    """Collects what a channel delivers, with bounded waits."""

    datagrams: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_calls: int = 0

    def on_datagram(self, datagram: bytes) -> None:
        self.datagrams.append(datagram)

    def on_close(self) -> None:
        self.close_calls += 1
        self.closed.set()

    async def wait_closed(self) -> None:
        await asyncio.wait_for(self.closed.wait(), WAIT_SECONDS)


@dataclass
class ConnectedPair:
    offering: OfferingPeer
    answering: AnsweringPeer
    client: DataChannelDatagramChannel
    volunteer: DataChannelDatagramChannel
    answer_sdp: str


async def connect(config: WebRtcConfig = LOOPBACK) -> ConnectedPair:
    offering, answering = OfferingPeer(config), AnsweringPeer(config)
    offer = await offering.create_offer()
    answer = await answering.accept_offer(offer)
    client, volunteer = await asyncio.gather(
        offering.accept_answer(answer), answering.wait_channel()
    )
    return ConnectedPair(offering, answering, client, volunteer, answer)


@pytest.fixture
async def pair() -> AsyncIterator[ConnectedPair]:
    connected = await connect()
    yield connected
    await connected.offering.close()
    await connected.answering.close()


def datagram_for(direction: int, index: int, size: int = 1100) -> bytes:
    """1,100 bytes determined by (direction, index): any corruption changes them."""
    seed = hashlib.sha256(f"{direction}:{index}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


async def send_paced(channel: DataChannelDatagramChannel, datagrams: list[bytes]) -> int:
    """Send all, waiting (bounded) for aiortc's buffer to drain between bursts like QUIC's
    congestion control would; returns how many ``send()`` accepted."""
    accepted = 0
    for start in range(0, len(datagrams), 50):
        for datagram in datagrams[start : start + 50]:
            accepted += channel.send(datagram)
        for _ in range(2000):
            if channel.buffered_bytes < 128 * 1024:
                break
            await asyncio.sleep(0.002)
    return accepted


async def test_two_thousand_datagrams_each_way(pair: ConnectedPair) -> None:
    client_recorder, volunteer_recorder = Recorder(), Recorder()
    pair.client.start(client_recorder.on_datagram, client_recorder.on_close)
    pair.volunteer.start(volunteer_recorder.on_datagram, volunteer_recorder.on_close)
    upstream = [datagram_for(0, i) for i in range(2000)]
    downstream = [datagram_for(1, i) for i in range(2000)]

    accepted_up, accepted_down = await asyncio.gather(
        send_paced(pair.client, upstream), send_paced(pair.volunteer, downstream)
    )
    minimum = len(upstream) * 99 // 100
    assert accepted_up >= minimum and accepted_down >= minimum
    await wait_until(
        lambda: (
            len(volunteer_recorder.datagrams) >= accepted_up
            and len(client_recorder.datagrams) >= accepted_down
        ),
        what="the datagrams to arrive",
    )
    assert len(volunteer_recorder.datagrams) >= minimum
    assert len(client_recorder.datagrams) >= minimum
    # exact content of each one that arrived (order is not guaranteed: unordered channel)
    assert set(volunteer_recorder.datagrams) <= set(upstream)
    assert set(client_recorder.datagrams) <= set(downstream)
    assert len(set(volunteer_recorder.datagrams)) == len(volunteer_recorder.datagrams)
    assert pair.client.sent_datagrams == accepted_up
    assert pair.volunteer.received_datagrams == len(volunteer_recorder.datagrams)
    assert pair.volunteer.received_bytes == 1100 * len(volunteer_recorder.datagrams)
    assert client_recorder.close_calls == 0


async def test_answer_sdp_carries_a_loopback_candidate(pair: ConnectedPair) -> None:
    candidates = [line for line in pair.answer_sdp.splitlines() if line.startswith("a=candidate")]
    assert candidates
    assert all(" 127.0.0.1 " in line for line in candidates)


@pytest.mark.parametrize("include_loopback", [True, False])
async def test_include_loopback_candidates_controls_the_offer(include_loopback: bool) -> None:
    # gathering only binds sockets; with no answer applied, no packet is sent anywhere
    peer = OfferingPeer(WebRtcConfig(include_loopback_candidates=include_loopback))
    try:
        offer = await peer.create_offer()
    finally:
        await peer.close()
    loopback_lines = [
        line
        for line in offer.splitlines()
        if line.startswith("a=candidate") and " 127.0.0.1 " in line
    ]
    assert bool(loopback_lines) is include_loopback


async def test_the_default_offer_announces_no_loopback_candidate() -> None:
    """Issue 15, item 7: loopback is announced only where a test or the demo asks for it."""
    peer = OfferingPeer(WebRtcConfig())
    try:
        offer = await peer.create_offer()
    finally:
        await peer.close()
    candidates = [line for line in offer.splitlines() if line.startswith("a=candidate")]
    assert not [line for line in candidates if " 127.0.0.1 " in line or " ::1 " in line]
    assert "c=IN IP4 127.0.0.1" not in offer


async def test_close_on_one_side_fires_on_close_on_the_other(pair: ConnectedPair) -> None:
    client_recorder, volunteer_recorder = Recorder(), Recorder()
    pair.client.start(client_recorder.on_datagram, client_recorder.on_close)
    pair.volunteer.start(volunteer_recorder.on_datagram, volunteer_recorder.on_close)
    await pair.client.close()
    await client_recorder.wait_closed()
    await volunteer_recorder.wait_closed()
    await pair.client.close()  # idempotent
    assert client_recorder.close_calls == 1
    assert volunteer_recorder.close_calls == 1
    assert not pair.volunteer.is_open
    assert not pair.volunteer.send(b"late")
    assert not pair.client.send(b"late")


async def test_close_before_start_is_reported_at_start(pair: ConnectedPair) -> None:
    await pair.answering.close()
    recorder = Recorder()
    pair.volunteer.start(recorder.on_datagram, recorder.on_close)
    assert recorder.close_calls == 1


async def test_datagrams_before_start_are_held() -> None:
    connected = await connect()
    try:
        assert connected.client.send(b"early bird")
        recorder = Recorder()
        await wait_until(lambda: connected.volunteer.received_datagrams == 1, "the early datagram")
        connected.volunteer.start(recorder.on_datagram, recorder.on_close)
        assert recorder.datagrams == [b"early bird"]
    finally:
        await connected.offering.close()
        await connected.answering.close()


async def test_send_above_high_water_drops() -> None:
    registry = CollectorRegistry()
    metrics = DataChannelMetrics(registry)
    config = WebRtcConfig(host_candidate_addresses=("127.0.0.1",), high_water_bytes=0)
    offering, answering = OfferingPeer(config, metrics), AnsweringPeer(config)
    try:
        answer = await answering.accept_offer(await offering.create_offer())
        client, _ = await asyncio.gather(offering.accept_answer(answer), answering.wait_channel())
        # aiortc only flushes its buffer in a later task, so the first send leaves
        # bufferedAmount at 1,100 > 0 and the second, in the same step, must be dropped
        assert client.send(b"x" * 1100)
        assert not client.send(b"y" * 1100)
        assert client.sent_datagrams == 1
        assert client.dropped_datagrams == 1
        assert client.dropped_bytes == 1100
        assert (
            registry.get_sample_value("ferry_datachannel_datagrams_total", {"event": "dropped"})
            == 1
        )
    finally:
        await offering.close()
        await answering.close()


@pytest.mark.parametrize(
    ("sdp", "complaint"),
    [
        ("hello", "does not begin with 'v=0'"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "no 'm=application' line"),
        ("v=0\r\nm=application nonsense\r\n", "could not be parsed"),
    ],
)
async def test_malformed_offer_is_a_protocol_error(sdp: str, complaint: str) -> None:
    peer = AnsweringPeer(LOOPBACK)
    try:
        with pytest.raises(ProtocolError, match=complaint):
            await peer.accept_offer(sdp)
    finally:
        await peer.close()


async def test_malformed_answer_is_a_protocol_error() -> None:
    peer = OfferingPeer(LOOPBACK)
    try:
        await peer.create_offer()
        with pytest.raises(ProtocolError, match="no 'm=application' line"):
            await peer.accept_answer("v=0\r\ns=-\r\n")
    finally:
        await peer.close()


async def test_channel_that_never_opens_times_out() -> None:
    config = WebRtcConfig(host_candidate_addresses=("127.0.0.1",), open_timeout=0.5)
    offering, answering = OfferingPeer(config), AnsweringPeer(config)
    try:
        await answering.accept_offer(await offering.create_offer())
        # the client never applies the answer, so DTLS never completes
        with pytest.raises(ChannelClosedError, match=r"did not open within 0\.5 s"):
            await answering.wait_channel()
    finally:
        await offering.close()
        await answering.close()


async def test_failing_datagram_handler_closes_only_that_channel(pair: ConnectedPair) -> None:
    client_recorder, volunteer_recorder = Recorder(), Recorder()

    def broken_handler(datagram: bytes) -> None:
        raise ValueError(f"handler bug on {len(datagram)} bytes")

    pair.client.start(client_recorder.on_datagram, client_recorder.on_close)
    pair.volunteer.start(broken_handler, volunteer_recorder.on_close)
    assert pair.client.send(b"trigger")
    await volunteer_recorder.wait_closed()
    await client_recorder.wait_closed()
    assert not pair.volunteer.is_open
