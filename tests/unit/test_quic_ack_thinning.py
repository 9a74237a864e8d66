"""ACK thinning (``QuicSettings.ack_every``, ``ack_delay``): one ACK per few full-size
datagrams, and at once for what must not wait.

The receiving session is fed real datagrams of a real client session (a bulk upload held on
its way), one by one, synchronously; what is checked is when aioquic's pending ACK is due
(its 1-RTT space's ``ack_at``, read through ``library_patches``) and that the ACK is then
sent, so no test depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio

import pytest
from aioquic import tls

from ferry.errors import ConfigError
from ferry.transport import library_patches
from ferry.transport.quic import MAX_ACK_DELAY, QuicSession, QuicSettings
from tests.unit.test_quic_transport import Pair
from tests.waiting import wait_until


def _ack_at(session: QuicSession) -> float | None:
    return session.connection._spaces[tls.Epoch.ONE_RTT].ack_at


async def _handshaken(settings: QuicSettings) -> tuple[Pair, QuicSession]:
    """A pair past its handshake, and its server, thinning ACKs unless ``ack_every`` is 1."""
    pair = Pair(settings)
    server = await pair.handshake()
    await wait_until(lambda: server._ack_thinning or settings.ack_every == 1, "thinning on")
    return pair, server


async def _held_upload(settings: QuicSettings, size: int) -> tuple[Pair, QuicSession, list[bytes]]:
    """A handshaken pair whose client has sent ``size`` bytes on a stream, every datagram
    of it held (not delivered)."""
    pair, server = await _handshaken(settings)
    held: list[bytes] = []
    pair.held_to_server = held
    stream = pair.client.open_stream()
    await stream.send_all(b"\x5a" * size)
    await wait_until(lambda: sum(len(d) for d in held) >= size, "the upload held")
    return pair, server, held


def _count_sends(server: QuicSession) -> list[bytes]:
    sent: list[bytes] = []
    deliver = server._send

    def send(datagram: bytes) -> None:
        sent.append(datagram)
        deliver(datagram)

    server._send = send
    return sent


async def test_full_size_datagrams_in_order_are_acknowledged_every_fourth() -> None:
    settings = QuicSettings(ack_every=4, ack_delay=MAX_ACK_DELAY)
    pair, server, held = await _held_upload(settings, 100_000)
    full = [d for d in held if len(d) >= 1200]
    assert len(full) >= 5
    sent = _count_sends(server)
    loop = asyncio.get_running_loop()
    first_arrival = loop.time()
    for datagram in full[:3]:
        assert server.receive_datagram(datagram)
        ack_at = _ack_at(server)
        assert ack_at is not None and ack_at >= first_arrival + MAX_ACK_DELAY * 0.9
    server.receive_datagram(full[3])
    ack_at = _ack_at(server)
    assert ack_at is not None and ack_at <= loop.time()  # the fourth: due now
    await wait_until(lambda: _ack_at(server) is None, "the ACK sent")
    assert len(sent) >= 1
    server.receive_datagram(full[4])  # counting starts again after the ACK
    ack_at = _ack_at(server)
    assert ack_at is not None and ack_at > loop.time()
    pair.client.close("done")


async def test_a_gap_and_a_late_datagram_are_acknowledged_at_once() -> None:
    pair, server, held = await _held_upload(QuicSettings(ack_delay=MAX_ACK_DELAY), 100_000)
    full = [d for d in held if len(d) >= 1200]
    loop = asyncio.get_running_loop()
    server.receive_datagram(full[0])
    ack_at = _ack_at(server)
    assert ack_at is not None and ack_at > loop.time()
    server.receive_datagram(full[2])  # full[1] missing: a gap
    ack_at = _ack_at(server)
    assert ack_at is not None and ack_at <= loop.time()
    await wait_until(lambda: _ack_at(server) is None, "the ACK for the gap sent")
    server.receive_datagram(full[1])  # the late one, below the largest received
    ack_at = _ack_at(server)
    assert ack_at is not None and ack_at <= loop.time()
    pair.client.close("done")


async def test_a_small_datagram_such_as_a_probe_is_acknowledged_at_once() -> None:
    pair, server, _ = await _held_upload(QuicSettings(ack_delay=MAX_ACK_DELAY), 1)
    probe: list[bytes] = []
    pair.held_to_server = probe
    pair.client.probe(probe.append, lambda: None)
    assert probe and all(len(d) < 1200 for d in probe)
    loop = asyncio.get_running_loop()
    for datagram in probe:
        server.receive_datagram(datagram)
    ack_at = _ack_at(server)
    assert ack_at is not None and ack_at <= loop.time()
    pair.client.close("done")


async def test_ack_every_one_leaves_aiquics_own_prompt_acknowledgement() -> None:
    pair, server, held = await _held_upload(QuicSettings(ack_every=1), 100_000)
    assert not server._ack_thinning
    loop = asyncio.get_running_loop()
    before = loop.time()
    server.receive_datagram(next(d for d in held if len(d) >= 1200))
    ack_at = _ack_at(server)
    assert ack_at is not None and ack_at <= loop.time() + 0.0011  # aioquic's 1 ms
    assert ack_at >= before
    pair.client.close("done")


async def test_a_thinned_bulk_transfer_arrives_whole_with_fewer_acknowledgements() -> None:
    """A 1 MB upload whose datagrams reach the server one per loop turn, with thinning on:
    the data arrives whole (the sender's loss detection and congestion control live with
    the fewer ACKs), and the server's datagrams stay at most one per two full-size ones.
    (How the ACKs are spaced is pinned by the tests above, which do not depend on timing.)"""
    size = 1_000_000
    pair, server = await _handshaken(QuicSettings(ack_delay=MAX_ACK_DELAY))
    sent = _count_sends(server)
    queued: list[bytes] = []
    pair.held_to_server = queued
    full = 0
    done = asyncio.Event()

    async def pump() -> None:
        nonlocal full
        for _ in range(200_000):  # bounded: about 80 datagrams are needed
            if done.is_set():
                return
            if queued:
                datagram = queued.pop(0)
                full += len(datagram) >= 1200
                server.receive_datagram(datagram)
            await asyncio.sleep(0)

    pumping = asyncio.create_task(pump())
    stream = pair.client.open_stream()
    await stream.send_all(b"\x5a" * size)
    accepted = await asyncio.wait_for(pair.accepted.get(), 10)
    received = 0

    async def read_all() -> None:
        nonlocal received
        while received < size:
            chunk = await accepted.receive_some()
            assert chunk.count(b"\x5a") == len(chunk)
            received += len(chunk)

    await asyncio.wait_for(read_all(), 30)
    done.set()
    await pumping
    assert received == size
    assert full >= 60
    assert len(sent) <= full // 2
    pair.client.close("done")


@pytest.mark.parametrize(
    ("ack_every", "ack_delay"), [(0, 0.01), (4, 0.0), (4, MAX_ACK_DELAY + 0.001)]
)
def test_settings_refuse_acknowledgement_values_outside_their_range(
    ack_every: int, ack_delay: float
) -> None:
    with pytest.raises(ConfigError, match="ack_"):
        QuicSettings(ack_every=ack_every, ack_delay=ack_delay)


async def test_outside_its_aioquic_versions_thinning_stays_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(library_patches, "_decisions", {})
    monkeypatch.setattr(library_patches, "installed_version", lambda library: "99.0")
    pair = Pair(QuicSettings())
    pair.client.connect()
    await pair.client.wait_handshake(5.0)
    assert library_patches.quic_acknowledgement_state(pair.client.connection) is None
    assert not library_patches.use_ack_delay(pair.client.connection, 0.01)
    assert not pair.client._ack_thinning
    pair.client.close("done")
