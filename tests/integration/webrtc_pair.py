"""Two real aiortc peers on loopback joined by one data channel, and a bulk transfer over it
checked by SHA-256 (shared by the data-channel tests)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ferry.transport.quic import LARGEST_DATAGRAM_SIZE
from ferry.transport.webrtc import (
    AnsweringPeer,
    DataChannelDatagramChannel,
    OfferingPeer,
    WebRtcConfig,
)


@asynccontextmanager
async def connected_pair(
    config: WebRtcConfig,
) -> AsyncIterator[tuple[DataChannelDatagramChannel, DataChannelDatagramChannel]]:
    """(the offering client's channel, the answering volunteer's), both peers closed after."""
    offering, answering = OfferingPeer(config), AnsweringPeer(config)
    try:
        answer = await answering.accept_offer(await offering.create_offer())
        client, volunteer = await asyncio.gather(
            offering.accept_answer(answer), answering.wait_channel()
        )
        yield client, volunteer
    finally:
        await offering.close()
        await answering.close()


async def send_intact(
    client: DataChannelDatagramChannel,
    volunteer: DataChannelDatagramChannel,
    datagrams: int,
    timeout: float,
) -> None:
    """Send ``datagrams`` random 16 KiB datagrams client → volunteer (each accepted by
    ``send``); assert every one arrived intact within ``timeout`` seconds."""
    received: list[bytes] = []
    done = asyncio.Event()

    def on_datagram(datagram: bytes) -> None:
        received.append(datagram)
        if len(received) == datagrams:
            done.set()

    volunteer.start(on_datagram, lambda: None)
    client.start(lambda datagram: None, lambda: None)
    sent = [os.urandom(LARGEST_DATAGRAM_SIZE) for _ in range(datagrams)]
    for datagram in sent:
        assert client.send(datagram)
    await asyncio.wait_for(done.wait(), timeout)
    assert sorted(hashlib.sha256(d).digest() for d in received) == sorted(
        hashlib.sha256(d).digest() for d in sent
    )
