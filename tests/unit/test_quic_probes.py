"""A path probe (``QuicSession.probe``) speaks for the one path it went out on.

aioquic re-sends the uid of a PING it declares lost in its next packet, and leaves one its
pacer or congestion window held back for a later flush; either way the PING would travel on
whichever path the client's scheduler picks next, and its acknowledgement would vouch for the
path that lost it. These tests drive a real client and server session joined in memory
(:class:`tests.unit.test_quic_transport.Pair`) and check that a probe is acknowledged only if
its own send delivered it, while the session's own liveness PINGs are still re-sent.
"""

from __future__ import annotations

import asyncio

from ferry.transport.quic import QuicSession, QuicSettings
from tests.unit.test_quic_transport import Pair
from tests.waiting import wait_until


async def _handshaken() -> tuple[Pair, QuicSession]:
    """A handshaken pair and its client, the side that probes."""
    pair = Pair(QuicSettings())
    await pair.handshake()
    return pair, pair.client


async def test_a_lost_probe_is_not_sent_again_and_never_counts_as_acknowledged() -> None:
    _, client = await _handshaken()
    acknowledged: list[str] = []
    swallowed: list[bytes] = []
    assert client.probe(swallowed.append, lambda: acknowledged.append("lost path"))
    assert swallowed  # the PING went out on the probed path, which lost it
    for _ in range(50):  # the session's own traffic goes on; aioquic finds the probe lost
        await client.ping(5.0)
        if not client._probe_callbacks:
            break
        await asyncio.sleep(0.01)
    assert not client._probe_callbacks  # declared lost and forgotten
    await client.ping(5.0)  # and the next packets carry no trace of it
    assert acknowledged == []
    # a probe on a path that delivers is acknowledged as before
    assert client.probe(client._send, lambda: acknowledged.append("live path"))
    await wait_until(lambda: acknowledged == ["live path"], "the live path's probe acknowledged")
    client.close("done")


async def test_a_lost_session_ping_is_still_sent_again() -> None:
    pair, client = await _handshaken()
    pair.drop_to_server = True
    waiting = asyncio.create_task(client.ping(10.0))
    await wait_until(lambda: pair.lost_to_server >= 1, "the PING lost")
    pair.drop_to_server = False
    await waiting  # acknowledged: aioquic re-sent it
    client.close("done")


async def test_a_probe_the_congestion_window_holds_back_is_withdrawn() -> None:
    pair, client = await _handshaken()
    held: list[bytes] = []
    pair.held_to_server = held  # nothing is acknowledged: the window fills
    upload = asyncio.create_task(client.open_stream().send_all(b"\x5a" * 2_000_000))
    acknowledged: list[int] = []
    withdrawn = None
    for number in range(200):  # 10 ms apart: bounded
        probed: list[bytes] = []
        if not client.probe(probed.append, lambda n=number: acknowledged.append(n)):
            assert probed == []  # nothing went out in the probe's name
            withdrawn = number
            break
        await asyncio.sleep(0.01)
    assert withdrawn is not None, "the congestion window never filled"
    assert len(held) >= 10
    pair.held_to_server = None
    assert pair.server is not None
    for datagram in held:  # the window opens: the upload and every pending PING arrive
        pair.server.receive_datagram(datagram)
    await client.ping(5.0)
    await client.ping(5.0)
    assert withdrawn not in acknowledged
    upload.cancel()
    client.close("done")
