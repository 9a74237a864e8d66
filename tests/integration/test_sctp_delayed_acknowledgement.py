"""Two real aiortc peers on loopback: fewer SACKs with the delayed acknowledgement, nothing
lost, and loss still recovered (SACKs for gaps go out at once)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from ferry.transport.quic import LARGEST_DATAGRAM_SIZE
from ferry.transport.sctp_acknowledgement import DelayedAcknowledgementSctpTransport
from ferry.transport.webrtc import DataChannelDatagramChannel, WebRtcConfig

from .webrtc_pair import connected_pair, send_intact

pytestmark = pytest.mark.integration

DATAGRAMS = 48
"""16 KiB datagrams sent per transfer: 768 KiB, under the 1 MiB high-water mark, about 660
SCTP packets."""


def loopback(packets_per_acknowledgement: int) -> WebRtcConfig:
    return WebRtcConfig(
        host_candidate_addresses=("127.0.0.1",),
        open_timeout=10.0,
        sctp_packets_per_acknowledgement=packets_per_acknowledgement,
    )


def receiving_association(
    channel: DataChannelDatagramChannel,
) -> DelayedAcknowledgementSctpTransport:
    sctp = channel._data_channel.transport
    assert isinstance(sctp, DelayedAcknowledgementSctpTransport)
    return sctp


async def transfer(
    config: WebRtcConfig,
    before_sending: Callable[[DelayedAcknowledgementSctpTransport], None] | None = None,
) -> DelayedAcknowledgementSctpTransport:
    """Send DATAGRAMS 16 KiB datagrams client → volunteer; check every one arrived intact;
    return the volunteer's (receiving) association."""
    async with connected_pair(config) as (client, volunteer):
        receiver = receiving_association(volunteer)
        if before_sending is not None:
            before_sending(receiver)
        await send_intact(client, volunteer, DATAGRAMS, timeout=30)
        return receiver


async def test_every_second_packet_is_acknowledged() -> None:
    receiver = await transfer(loopback(2))
    assert receiver.delaying
    data_packets = receiver.acknowledgements_sent + receiver.acknowledgements_held
    assert data_packets >= DATAGRAMS * (LARGEST_DATAGRAM_SIZE // 1232)
    # one SACK per two packets (a few more: the timer, and packets that were not DATA)
    assert receiver.acknowledgements_sent < 0.6 * data_packets
    assert receiver.acknowledgements_held > 0.4 * data_packets


async def test_one_packet_per_acknowledgement_is_aiortc_behaviour() -> None:
    receiver = await transfer(loopback(1))
    assert not receiver.delaying
    assert receiver.acknowledgements_held == 0
    assert receiver.acknowledgements_sent >= DATAGRAMS * (LARGEST_DATAGRAM_SIZE // 1232)


async def test_lost_packets_are_recovered_with_delayed_acknowledgements() -> None:
    dropped = 0

    def drop_every_25th_packet(receiver: DelayedAcknowledgementSctpTransport) -> None:
        # a test double for loss between DTLS and SCTP: aiortc's DTLS transport hands each
        # decrypted packet to its receiver's _handle_data; drop one in 25 before it gets there
        handle_data: Callable[[bytes], Awaitable[None]] = receiver._handle_data
        seen = 0

        async def lossy_handle_data(data: bytes) -> None:
            nonlocal seen, dropped
            seen += 1
            if seen % 25 == 0:
                dropped += 1
                return
            await handle_data(data)

        receiver._handle_data = lossy_handle_data  # type: ignore[method-assign]

    receiver = await transfer(loopback(2), drop_every_25th_packet)
    assert dropped > 10
    assert receiver.delaying
    assert receiver.acknowledgements_held > 0
