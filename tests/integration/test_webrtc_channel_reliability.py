"""The data channel the client opens: unordered and reliable by default, 16 KiB datagrams
intact (issue 8); ``WebRtcConfig.max_retransmits`` still gives a partially reliable one."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from ferry.errors import ConfigError
from ferry.transport.quic import LARGEST_DATAGRAM_SIZE
from ferry.transport.webrtc import AnsweringPeer, OfferingPeer, WebRtcConfig

LOOPBACK = WebRtcConfig(host_candidate_addresses=("127.0.0.1",), open_timeout=10.0)
DATAGRAMS = 64
"""16 KiB datagrams sent in the transfer test (1 MiB, under the 1 MiB high-water mark)."""


async def test_default_channel_is_reliable_unordered_and_carries_16_kib_datagrams() -> None:
    offering, answering = OfferingPeer(LOOPBACK), AnsweringPeer(LOOPBACK)
    try:
        answer = await answering.accept_offer(await offering.create_offer())
        client, volunteer = await asyncio.gather(
            offering.accept_answer(answer), answering.wait_channel()
        )
        # what the volunteer sees is what the client asked for
        remote = volunteer._data_channel
        assert remote.ordered is False
        assert remote.maxRetransmits is None
        assert remote.maxPacketLifeTime is None
        received: list[bytes] = []
        done = asyncio.Event()

        def on_datagram(datagram: bytes) -> None:
            received.append(datagram)
            if len(received) == DATAGRAMS:
                done.set()

        volunteer.start(on_datagram, lambda: None)
        client.start(lambda datagram: None, lambda: None)
        sent = [os.urandom(LARGEST_DATAGRAM_SIZE) for _ in range(DATAGRAMS)]
        for datagram in sent:
            assert client.send(datagram)
        await asyncio.wait_for(done.wait(), 20)
        assert sorted(hashlib.sha256(d).digest() for d in received) == sorted(
            hashlib.sha256(d).digest() for d in sent
        )
    finally:
        await offering.close()
        await answering.close()


async def test_max_retransmits_setting_reaches_the_volunteer() -> None:
    config = WebRtcConfig(
        host_candidate_addresses=("127.0.0.1",), open_timeout=10.0, max_retransmits=0
    )
    offering, answering = OfferingPeer(config), AnsweringPeer(config)
    try:
        answer = await answering.accept_offer(await offering.create_offer())
        _, volunteer = await asyncio.gather(
            offering.accept_answer(answer), answering.wait_channel()
        )
        assert volunteer._data_channel.maxRetransmits == 0
        assert volunteer._data_channel.ordered is False
    finally:
        await offering.close()
        await answering.close()


def test_negative_max_retransmits_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_retransmits"):
        WebRtcConfig(max_retransmits=-1)
