"""Helpers for the hostile-peer tests of the egress: bogus QUIC Initials and a raw relay.

A bogus Initial is the first datagram of a real aioquic client (a valid ClientHello padded to
1,200 bytes, each with its own connection IDs) whose handshake is then never continued: what
a censor sends to fill an egress with half-open sessions.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aioquic.quic.connection import QuicConnection

from ferry.transport.datagram import DatagramChannel
from ferry.transport.quic import SESSION_ADDRESS, QuicSession, QuicSettings
from ferry.transport.websocket import connect_websocket_channel

WAIT = 30.0
"""Upper bound of any single wait in these tests, in seconds."""


def bogus_initials(count: int) -> list[bytes]:
    """``count`` first datagrams of new QUIC sessions, each with new connection IDs."""
    datagrams = []
    for _ in range(count):
        connection = QuicConnection(configuration=QuicSettings().configuration(is_client=True))
        connection.connect(SESSION_ADDRESS, now=0.0)
        first, _ = connection.datagrams_to_send(now=0.0)[0]
        assert len(first) >= 1200
        datagrams.append(first)
    return datagrams


@asynccontextmanager
async def relay(url: str) -> AsyncIterator[DatagramChannel]:
    """A relay WebSocket to the egress at ``url`` that reads and discards what comes back."""
    async with aiohttp.ClientSession() as http:
        channel = await connect_websocket_channel(url, http)
        channel.start(lambda datagram: None, lambda: None)
        try:
            yield channel
        finally:
            await channel.close()


@asynccontextmanager
async def real_session(url: str) -> AsyncIterator[QuicSession]:
    """A real client session over its own relay WebSocket, handshake completed."""
    async with aiohttp.ClientSession() as http:
        channel = await connect_websocket_channel(url, http)
        settings = QuicSettings(idle_timeout=600.0)
        session = QuicSession(
            settings.new_connection(settings.configuration(is_client=True)),
            settings=settings,
            send=channel.send,
        )
        try:
            channel.start(session.receive_datagram, lambda: None)
            session.connect()
            await session.wait_handshake(WAIT)
            yield session
        finally:
            session.close("test over")
            await channel.close()


class InitialFlood:
    """In a thread of its own: ``per_round`` bogus Initials over one relay WebSocket to
    ``url`` every ``interval`` seconds, until the ``with`` block ends (a censor's steady
    flood; the egress's answers are read and discarded)."""

    def __init__(self, url: str, *, per_round: int, interval: float) -> None:
        self.url = url
        self.per_round = per_round
        self.interval = interval
        self.sent = 0
        self.first_round_sent = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with relay(self.url) as channel:
            while not self._stop.is_set():
                for datagram in bogus_initials(self.per_round):
                    channel.send(datagram)
                self.sent += self.per_round
                self.first_round_sent.set()
                await asyncio.sleep(self.interval)

    def __enter__(self) -> InitialFlood:
        self._thread.start()
        assert self.first_round_sent.wait(WAIT), "the flood did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(WAIT)
