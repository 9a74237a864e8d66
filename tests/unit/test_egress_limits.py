"""The QUIC limits an egress session applies, driven in memory without sockets or a loop.

A client :class:`QuicConnection` talks to the egress's :class:`FlowControlledConnection`
through direct calls with a fixed ``now``: the stream cap (MAX_STREAMS) and the session-wide
receive window (MAX_DATA granted by what the application read) are pinned here, and so is the
validation of the egress's limit settings.
"""

from __future__ import annotations

import pytest
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived

from ferry.egress.identity import create_identity
from ferry.egress.server import EgressConfig
from ferry.errors import ConfigError
from ferry.transport.quic import FlowControlledConnection, QuicSettings

ADDRESS = ("ferry-session", 0)
START = 1000.0
STEP = 0.002
"""Simulated seconds per delivery round (lets the pacer and timers move)."""
MAX_ROUNDS = 2000


class Clock:
    """A simulated clock: each delivery round moves it by ``STEP``."""

    now = START


def connected_pair(settings: QuicSettings) -> tuple[QuicConnection, FlowControlledConnection]:
    """A client connection and an egress connection with ``settings``, handshake done."""
    identity = create_identity()
    client = QuicConnection(configuration=QuicSettings().configuration(is_client=True))
    server_configuration = settings.configuration(is_client=False)
    server_configuration.certificate = identity.certificate
    server_configuration.private_key = identity.private_key
    client.connect(ADDRESS, now=Clock.now)
    first = client.datagrams_to_send(now=Clock.now)
    from aioquic.buffer import Buffer
    from aioquic.quic.packet import pull_quic_header

    header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
    server = settings.new_connection(
        server_configuration, original_destination_connection_id=header.destination_cid
    )
    for data, _ in first:
        server.receive_datagram(data, ADDRESS, now=Clock.now)
    exchange(client, server)
    return client, server


def exchange(client: QuicConnection, server: QuicConnection) -> None:
    """Deliver datagrams both ways until neither side has anything to send."""
    quiet = 0
    for _ in range(MAX_ROUNDS):
        Clock.now += STEP
        moved = 0
        for source, destination in ((client, server), (server, client)):
            timer = source.get_timer()
            if timer is not None and timer <= Clock.now:
                source.handle_timer(now=Clock.now)
            for data, _ in source.datagrams_to_send(now=Clock.now):
                destination.receive_datagram(data, ADDRESS, now=Clock.now)
                moved += 1
        quiet = 0 if moved else quiet + 1
        if quiet >= 30:  # nothing moved for 60 ms of simulated time, pacing included
            return
    raise AssertionError(f"still sending after {MAX_ROUNDS} rounds")


def received(connection: QuicConnection) -> dict[int, int]:
    """Bytes per stream in the events waiting on ``connection`` (consumes them)."""
    sizes: dict[int, int] = {}
    while (event := connection.next_event()) is not None:
        if isinstance(event, StreamDataReceived):
            sizes[event.stream_id] = sizes.get(event.stream_id, 0) + len(event.data)
    return sizes


def test_the_client_cannot_open_more_streams_than_the_cap() -> None:
    client, server = connected_pair(QuicSettings(max_peer_streams=2))
    received(server)
    stream_ids = [client.get_next_available_stream_id() for _ in range(1)]
    client.send_stream_data(stream_ids[0], b"first")
    second = client.get_next_available_stream_id()
    client.send_stream_data(second, b"second")
    third = client.get_next_available_stream_id()
    client.send_stream_data(third, b"third")
    exchange(client, server)
    assert set(received(server)) == {stream_ids[0], second}, "the third stream must wait"

    # Both directions of the first stream end: the egress lets one more stream open.
    client.send_stream_data(stream_ids[0], b"", end_stream=True)
    server.send_stream_data(stream_ids[0], b"bye", end_stream=True)
    exchange(client, server)
    exchange(client, server)
    assert third in received(server), "the third stream opens once one closed"


def test_a_client_without_a_cap_opens_many_streams() -> None:
    client, server = connected_pair(QuicSettings())
    received(server)
    stream_ids = []
    for _ in range(5):
        stream_id = client.get_next_available_stream_id()
        client.send_stream_data(stream_id, b"x")
        stream_ids.append(stream_id)
    exchange(client, server)
    assert set(received(server)) == set(stream_ids)


def unread_total_after_flood(server: FlowControlledConnection, client: QuicConnection) -> int:
    """Open four streams, write 4 MiB on each, deliver, and return what arrived."""
    stream_ids = []
    for _ in range(4):
        stream_id = client.get_next_available_stream_id()
        server_side = stream_id
        stream_ids.append(stream_id)
        client.send_stream_data(stream_id, b"u" * (4 * 1024 * 1024))
        server.track_stream(server_side)
    exchange(client, server)
    return sum(received(server).values())


def test_the_session_window_bounds_unread_bytes_over_all_streams() -> None:
    window = 256 * 1024
    settings = QuicSettings(max_stream_data=128 * 1024, session_receive_window=window)
    client, server = connected_pair(settings)
    received(server)
    arrived = unread_total_after_flood(server, client)
    # Four streams could take 4 x 128 KiB on their own windows; the session allows 256 KiB.
    assert arrived <= window
    assert arrived > window // 2
    assert server.unread_bytes() == arrived

    # Reading half of what arrived on one stream grants more credit to the session.
    stream_id = next(iter(server._consumed))
    assert server.consumed(stream_id, 64 * 1024)
    exchange(client, server)
    more = sum(received(server).values())
    assert 0 < more <= 64 * 1024


def test_without_a_session_window_each_stream_has_its_own() -> None:
    settings = QuicSettings(max_stream_data=128 * 1024, max_data=64 * 1024 * 1024)
    client, server = connected_pair(settings)
    received(server)
    arrived = unread_total_after_flood(server, client)
    assert arrived == 4 * 128 * 1024


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_sessions", 0),
        ("max_streams_per_session", 0),
        ("session_buffer_bytes", 1024),
        ("session_idle_timeout", 0.0),
        ("stream_idle_timeout", -1.0),
        ("drain_seconds", -1.0),
        ("max_refusing_sessions", -1),
    ],
)
def test_bad_limits_are_refused_with_their_name(field: str, value: float, tmp_path: object) -> None:
    with pytest.raises(ConfigError, match=field):
        EgressConfig(state_dir=tmp_path, **{field: value})  # type: ignore[arg-type]


def test_the_egress_applies_its_limits_to_its_quic_settings(tmp_path: object) -> None:
    config = EgressConfig(
        state_dir=tmp_path,  # type: ignore[arg-type]
        max_streams_per_session=7,
        session_buffer_bytes=1 << 20,
        session_idle_timeout=12.0,
    )
    settings = config.session_quic_settings()
    assert settings.max_peer_streams == 7
    assert settings.session_receive_window == settings.session_send_buffer == 1 << 20
    assert settings.idle_timeout == 12.0
    assert settings.configuration(is_client=False).max_data == 1 << 20
