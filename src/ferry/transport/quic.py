"""QUIC over any datagram path: a thin asyncio driver around aioquic's sans-IO connection.

aioquic's :class:`~aioquic.quic.connection.QuicConnection` never touches a socket: it takes
datagrams and ``now`` in and gives datagrams, events and a timer deadline out. This module is
the one place that turns that into asyncio:

* :class:`QuicSession` owns one connection, one timer handle, and the streams of that
  connection. Incoming datagrams are fed with :meth:`QuicSession.receive_datagram`; outgoing
  ones go to a ``send`` callback that the caller (client path pool, egress router) routes
  onto a volunteer path. Work is coalesced: many datagrams arriving in one loop iteration
  cause one ``datagrams_to_send`` pass.
* :class:`QuicByteStream` adapts one bidirectional QUIC stream to
  :class:`ferry.transport.stream.ByteStream`, with backpressure on the send side.

Both ends give aioquic one constant, synthetic network address per session
(:data:`SESSION_ADDRESS`): which volunteer carries a packet is the router's business, not
QUIC's, so aioquic never starts path validation when a session moves between volunteers (the
"Turbo Tunnel" design; the egress routes by connection ID).

Where this module needs aioquic's internals, it goes through
:mod:`ferry.transport.library_patches` (its ``quic-*`` entries: one table, version-gated,
each with a safe fallback outside the versions it was checked against):

* ``quic-loss-thresholds``: aioquic's loss-detection thresholds are module constants read in
  one synchronous method; a ferry session striped over volunteers needs a larger reordering
  tolerance than RFC 9002's single-path defaults, so each session's connection swaps its
  own values (:class:`QuicSettings`) in around that call only
  (``library_patches.use_loss_thresholds``): no setting is written for the process.
* ``quic-flow-control``: :class:`FlowControlledConnection` overrides two private methods to
  grant credit as the application reads.
* ``quic-send-buffer``: :func:`send_backlog` reads the size of a stream's send buffer
  (unsent plus unacknowledged bytes), which aioquic does not expose; it is the only way to
  apply backpressure to a writer. :meth:`QuicSession._forget_peer_stream` reads which streams
  aioquic still keeps, so that streams may open in any order while late data on a stream the
  session let go of is not taken for a new one (``docs/architecture.md``).
* ``quic-peer-certificate`` and ``quic-accepted-packets``: :func:`peer_certificate_fingerprint`
  and :func:`accepted_packet_marker`.

``tests/unit/test_library_patches.py`` pins them, so an aioquic upgrade that changes them fails
loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnection, stream_is_unidirectional
from aioquic.quic.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    HandshakeCompleted,
    PingAcknowledged,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream

from ferry.errors import ConfigError, RemoteError, SessionError
from ferry.transport import library_patches

ALPN = "ferry/1"
"""The ALPN protocol id of a ferry session (``docs/protocol.md`` §5)."""

SERVER_NAME = "ferry-egress"
"""The TLS server name every client sends; it identifies nothing."""

LARGEST_DATAGRAM_SIZE = 16384
"""The largest ``max_datagram_size`` ferry allows. aioquic 1.7 writes the length of a STREAM
or CRYPTO frame, and of a long-header packet, as a two-byte variable-length integer (at most
16,383): a datagram much above 16 KiB would carry frames whose lengths wrap, and the peer
closes the session ("Unknown frame type", seen at 32 KiB). 16,384 leaves every frame and
packet below that, since headers and the AEAD tag take more than one byte."""
MAX_ACK_DELAY = 0.025
"""The longest ``QuicSettings.ack_delay``: the max_ack_delay aioquic announces to the peer
(25 ms), within which the peer's loss detection expects an ACK."""


SESSION_ADDRESS = ("ferry-session", 0)
"""The synthetic network address both ends give aioquic for every datagram of a session."""

STREAM_ERROR_ABORTED = 0x100
"""Application error code used when a stream is reset because its TCP side failed."""

STREAM_ERROR_UNIDIRECTIONAL = 0x104
"""Application error code of the STOP_SENDING with which the egress refuses a unidirectional
stream: a ferry session carries each TCP connection on one bidirectional stream, and has no
use for unidirectional ones."""

SESSION_ERROR_IDENTITY = 0x101
"""Application error code used when the client closes a session over a wrong certificate."""

SESSION_ERROR_EGRESS_FULL = 0x102
"""Application error code of an egress that refuses a new session: it has as many as its
limit allows (reason phrase ``"egress full"``)."""

SESSION_ERROR_DRAINING = 0x103
"""Application error code of an egress that refuses a new session because it is shutting
down (reason phrase ``"egress draining"``)."""


@dataclass(frozen=True, slots=True)
class QuicSettings:
    """Tunables of a ferry QUIC session, shared by client and egress."""

    max_datagram_size: int = 16384
    """Largest QUIC datagram we send, in bytes (1,200 ..
    :data:`LARGEST_DATAGRAM_SIZE`). A ferry datagram never meets an IP MTU: it is one data
    channel message (SCTP fragments it into MTU-sized chunks) and one WebSocket message,
    both far larger. aioquic's cost is mostly per packet, so 16 KiB instead of QUIC's
    minimum 1,200 cut the CPU per MB by more than half and doubled throughput
    (BENCHMARKS.md, issue 8). Each end chooses its own; both accept any size."""
    idle_timeout: float = 30.0
    """Seconds without any packet from the peer after which the session is dropped."""
    handshake_timeout: float = 15.0
    """Seconds the client waits for the TLS handshake with the egress."""
    stream_send_buffer: int = 1024 * 1024
    """Bytes a stream may hold unsent or unacknowledged before ``send_all`` waits."""
    stream_receive_buffer: int = 8 * 1024 * 1024
    """Bytes a stream may hold unread; beyond it the stream is reset (memory bound)."""
    max_data: int = 4 * 1024 * 1024
    """Initial connection-level flow-control window granted to the peer."""
    max_stream_data: int = 2 * 1024 * 1024
    """Initial per-stream flow-control window granted to the peer."""
    max_peer_streams: int | None = None
    """Bidirectional streams the peer may have open at once; one more is allowed as each
    closes (QUIC's MAX_STREAMS). ``None``: aioquic's own 128."""
    session_receive_window: int | None = None
    """When set, the connection-level flow-control window (MAX_DATA) is granted by what the
    application *read* rather than by what arrived: bytes received on all streams but not yet
    read stay below about this many (plus the per-stream windows of streams opened before the
    application reads). It then replaces ``max_data`` as the initial window. ``None``:
    aioquic's own doubling on arrival."""
    session_send_buffer: int | None = None
    """When set, bytes all streams of the session may hold unsent or unacknowledged before
    every ``send_all`` of the session waits (on top of ``stream_send_buffer`` per stream).
    ``None``: no session-wide bound."""
    reorder_packet_threshold: int = 1000
    """Packets that may overtake a packet before it counts as lost (RFC 9002 says 3, for one
    path). A session striped over volunteers with different delays reorders a lot: with 3,
    every reordering looks like a loss, halves the congestion window and retransmits for
    nothing (striping over two capped volunteers fell to 0.18 of their sum)."""
    reorder_time_threshold: float = 3.0
    """How much later than the round trip a packet may be acknowledged before it counts as
    lost, in round trips (RFC 9002 says 9/8). With a large packet threshold this is what
    detects loss. 3.0: on loopback a round trip is ~3 ms and scheduling jitter between
    processes exceeds two of them; striping over four capped volunteers went from 0.45 of
    their sum at 2.0 to 0.82-0.97 at 3.0 (BENCHMARKS.md)."""

    ack_every: int = 4
    """Full-size datagrams received in order before the ACK for them is sent at once; until
    then it waits at most ``ack_delay``. A datagram smaller than QUIC's minimum (1,200 bytes:
    a probe, a control frame, a small request), one out of order or after a gap is
    acknowledged at once (RFC 9000 §13.2.1). aioquic acknowledges about 1 ms after any packet,
    which during a download is one ACK per 2 to 3 datagrams; each ACK is a message through
    every hop of the chain (data channel, SCTP, both browsers, the relay WebSocket), and at 4
    the browser engines on both ends spent 12 % less CPU per MB and carried 10 % more
    (BENCHMARKS.md, issue 16). 1: aioquic's own behaviour."""
    ack_delay: float = 0.010
    """Seconds an ACK may wait for more full-size datagrams (0 < value ≤ 0.025: aioquic
    announces a max_ack_delay of 25 ms, which the peer's loss timers allow for)."""

    def __post_init__(self) -> None:
        if self.ack_every < 1:
            raise ConfigError(f"ack_every must be at least 1, got {self.ack_every}")
        if not 0 < self.ack_delay <= MAX_ACK_DELAY:
            raise ConfigError(
                f"ack_delay must be above 0 and at most {MAX_ACK_DELAY} s, got {self.ack_delay}"
            )
        if not SMALLEST_MAX_DATAGRAM_SIZE <= self.max_datagram_size <= LARGEST_DATAGRAM_SIZE:
            raise ConfigError(
                f"max_datagram_size must be {SMALLEST_MAX_DATAGRAM_SIZE}..{LARGEST_DATAGRAM_SIZE}"
                f" bytes, got {self.max_datagram_size}"
            )

    def new_connection(
        self,
        configuration: QuicConfiguration,
        *,
        original_destination_connection_id: bytes | None = None,
    ) -> FlowControlledConnection:
        """A connection for one end of a ferry session, with consumption-based credit."""
        return FlowControlledConnection(
            configuration=configuration,
            stream_window=self.max_stream_data,
            session_window=self.session_receive_window,
            max_peer_streams=self.max_peer_streams,
            original_destination_connection_id=original_destination_connection_id,
        )

    def apply_loss_detection(self, connection: QuicConnection) -> bool:
        """Make ``connection`` detect loss with these settings' reordering thresholds (that
        connection only; ``False`` if aioquic's internals are not the known ones)."""
        return library_patches.use_loss_thresholds(
            connection, self.reorder_packet_threshold, self.reorder_time_threshold
        )

    def configuration(self, *, is_client: bool) -> QuicConfiguration:
        """An aioquic configuration for one end of a ferry session.

        The client does no CA verification (``CERT_NONE``): it pins the egress's certificate
        by fingerprint after the handshake instead (:func:`peer_certificate_fingerprint`),
        before it opens any stream.
        """
        return QuicConfiguration(
            is_client=is_client,
            verify_mode=ssl.CERT_NONE,
            alpn_protocols=[ALPN],
            server_name=SERVER_NAME if is_client else None,
            idle_timeout=self.idle_timeout,
            max_datagram_size=self.max_datagram_size,
            max_data=self.session_receive_window or self.max_data,
            max_stream_data=self.max_stream_data,
        )


class FlowControlledConnection(QuicConnection):
    """An aioquic connection that grants stream credit as the application *reads*.

    aioquic raises a stream's receive limit (MAX_STREAM_DATA) whenever half of it has
    *arrived*, whatever the application did with the data, so a fast sender and a slow reader
    (a rate-limited download, a slow destination) pile data up in memory without bound. For
    streams registered with :meth:`track_stream`, this subclass instead keeps the limit at
    what the application consumed (:meth:`consumed`) plus ``stream_window`` bytes, announced
    in steps of a quarter window. Other streams keep aioquic's behaviour.

    With ``session_window`` set, the connection-level limit (MAX_DATA) follows the same
    rule for the whole session: it stays at the bytes that arrived minus those still unread
    on tracked streams, plus ``session_window``. Data of untracked or forgotten streams
    counts as read. ``max_peer_streams`` sets how many bidirectional streams the peer may
    have open at once (aioquic lets the peer open one more as each one closes).

    It overrides two private aioquic methods (``_write_stream_limits``,
    ``_write_connection_limits``) and, for the duration of each call, hides the arrival
    counters from aioquic's own doubling rules; ``tests/unit/test_quic_transport.py`` and
    ``tests/unit/test_egress_limits.py`` pin the resulting behaviour. Outside the aioquic
    versions of the ``quic-flow-control`` entry of ``library_patches.PATCHES`` it tracks
    nothing and behaves as aioquic's own connection (:attr:`flow_control` is ``False``).
    """

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        stream_window: int,
        session_window: int | None = None,
        max_peer_streams: int | None = None,
        original_destination_connection_id: bytes | None = None,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
        )
        self.flow_control = library_patches.quic_flow_control_enabled()
        """Whether credit follows reads (``False``: aioquic's own, outside the aioquic
        versions of the ``quic-flow-control`` entry of ``library_patches.PATCHES``)."""
        self.stream_window = stream_window
        self.session_window = session_window if self.flow_control else None
        self._consumed: dict[int, int] = {}
        if max_peer_streams is not None and max_peer_streams < 1:
            raise ValueError("max_peer_streams must be at least 1")
        if max_peer_streams is not None and self.flow_control:
            limit = self._local_max_streams_bidi
            limit.value = limit.sent = max_peer_streams

    def unread_bytes(self) -> int:
        """Bytes that arrived on tracked streams and the application has not read."""
        total = 0
        for stream_id, consumed in self._consumed.items():
            stream = self._streams.get(stream_id)
            if stream is not None:
                total += max(0, stream.receiver.highest_offset - consumed)
        return total

    @property
    def session_credit_used_up(self) -> bool:
        """Whether the peer has sent all the session-wide credit (MAX_DATA) granted so far:
        with ``session_window`` set, that much data waits unread and the peer can send no
        more until the application reads. Always False without ``session_window``."""
        limit = self._local_max_data
        return self.session_window is not None and limit.used >= limit.value

    def _session_credit_update(self) -> int | None:
        """The new MAX_DATA the session window asks for now, if an update is due."""
        window = self.session_window
        if window is None:
            return None
        limit = self._local_max_data
        step = window // 4
        if limit.used + window - limit.value < step:
            return None  # even with nothing unread no update would be due (cheap check)
        wanted = limit.used - self.unread_bytes() + window
        return wanted if wanted - limit.value >= step else None

    def track_stream(self, stream_id: int) -> None:
        """Grant credit to ``stream_id`` by consumption from now on."""
        if self.flow_control:
            self._consumed.setdefault(stream_id, 0)

    def forget_stream(self, stream_id: int) -> None:
        """Stop tracking ``stream_id``."""
        self._consumed.pop(stream_id, None)

    def consumed(self, stream_id: int, size: int) -> bool:
        """The application read ``size`` bytes; True when a credit update is due."""
        if stream_id not in self._consumed:
            return False
        total = self._consumed[stream_id] + size
        self._consumed[stream_id] = total
        stream = self._streams.get(stream_id)
        if stream is None:
            return self._session_credit_update() is not None
        return (
            total + self.stream_window - stream.max_stream_data_local >= self.stream_window // 4
            or self._session_credit_update() is not None
        )

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> None:
        if self.session_window is None:
            super()._write_connection_limits(builder=builder, space=space)
            return
        limit = self._local_max_data
        wanted = self._session_credit_update()
        if wanted is not None:
            limit.value = wanted
        arrived = limit.used
        limit.used = 0  # keep aioquic from doubling on arrival
        try:
            super()._write_connection_limits(builder=builder, space=space)
        finally:
            limit.used = arrived

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        consumed = None if stream.stream_id is None else self._consumed.get(stream.stream_id)
        if consumed is None or not stream.max_stream_data_local:
            super()._write_stream_limits(builder=builder, space=space, stream=stream)
            return
        wanted = consumed + self.stream_window
        if wanted - stream.max_stream_data_local >= self.stream_window // 4:
            stream.max_stream_data_local = wanted
        receiver = stream.receiver
        arrived = receiver.highest_offset
        receiver.highest_offset = 0  # keep aioquic from doubling on arrival
        try:
            super()._write_stream_limits(builder=builder, space=space, stream=stream)
        finally:
            receiver.highest_offset = arrived


def send_backlog(connection: QuicConnection, stream_id: int) -> int:
    """Bytes of ``stream_id`` that aioquic holds unsent or unacknowledged (0 if unknown)."""
    return library_patches.quic_send_buffer_size(connection, stream_id)


PacketMarker = library_patches.QuicPacketMarker
"""What :func:`accepted_packet_marker` returns: compare two for equality only."""


def accepted_packet_marker(connection: QuicConnection) -> PacketMarker:
    """A value that changes whenever aioquic accepts (authenticates) a packet it had not seen.

    Reads, for each packet number space, the largest received packet number and the ranges
    of packet numbers still to acknowledge: an accepted packet raises the first or adds to
    the second, even when it arrives out of order (a slower path's packets usually do), and
    the ranges only shrink when an acknowledgement arrives, which only an accepted packet
    carries. A datagram that changes neither was garbage, corrupted, injected or a duplicate,
    which aioquic drops silently. Used to tell the paths that really carry a session.
    """
    return library_patches.quic_accepted_packet_marker(connection)


def peer_certificate_fingerprint(connection: QuicConnection) -> bytes | None:
    """SHA-256 of the DER certificate the peer presented, once the handshake has it.

    aioquic verifies the certificate's signature over the handshake (CertificateVerify)
    whatever the verify mode, so a pinned fingerprint is as strong as CA verification.
    """
    certificate = library_patches.quic_peer_certificate(connection)
    if certificate is None:
        return None
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()


class QuicByteStream:
    """One bidirectional QUIC stream as a :class:`ferry.transport.stream.ByteStream`."""

    def __init__(self, session: QuicSession, stream_id: int) -> None:
        self._session = session
        self.stream_id = stream_id
        self._received: deque[bytes] = deque()
        self._received_bytes = 0
        self._receive_eof = False
        self._send_eof = False
        self._error: RemoteError | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.bytes_received = 0
        self.bytes_sent = 0

    # -- called by the session -------------------------------------------------------------

    def _on_data(self, data: bytes, end_stream: bool) -> None:
        if data:
            self._received.append(data)
            self._received_bytes += len(data)
            self.bytes_received += len(data)
            if self._received_bytes > self._session.settings.stream_receive_buffer:
                self._fail(RemoteError("the stream's reader fell too far behind"))
                self._session._reset_stream(self.stream_id)
                return
        if end_stream:
            self._receive_eof = True
        self._readable.set()

    def _fail(self, error: RemoteError) -> None:
        if self._error is None:
            self._error = error
        self._readable.set()
        self._writable.set()

    def _update_writable(self, session_backlog: int) -> None:
        if self._error is not None or not self._session._send_blocked(
            self.stream_id, session_backlog
        ):
            self._writable.set()

    # -- ByteStream ------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        while not self._received:
            if self._error is not None:
                raise self._error
            if self._receive_eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        # Hand over everything buffered (up to max_bytes) at once: QUIC delivers a packet's
        # worth (~1 KB) per event, and one write per packet to the application's socket cost
        # the client 13 % of its CPU (BENCHMARKS.md).
        chunk = self._received.popleft()
        if len(chunk) < max_bytes and self._received:
            parts = [chunk]
            size = len(chunk)
            while self._received and size + len(self._received[0]) <= max_bytes:
                part = self._received.popleft()
                parts.append(part)
                size += len(part)
            chunk = b"".join(parts)
        if len(chunk) > max_bytes:
            self._received.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self._received_bytes -= len(chunk)
        self._session._consumed(self.stream_id, len(chunk))
        return chunk

    async def send_all(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._send_eof:
            raise RemoteError("send_all() after send_eof()")
        if data:
            self._session._send_stream_data(self.stream_id, data, end_stream=False)
            self.bytes_sent += len(data)
        while self._session._send_blocked(self.stream_id, self._session.send_backlog()):
            if self._error is not None:
                raise self._error
            self._writable.clear()
            await self._writable.wait()
        if self._error is not None:
            raise self._error

    async def send_eof(self) -> None:
        if self._error is not None or self._send_eof:
            return
        self._send_eof = True
        self._session._send_stream_data(self.stream_id, b"", end_stream=True)

    def abort(self) -> None:
        if self._error is None:
            self._fail(RemoteError("the stream was aborted"))
            self._session._reset_stream(self.stream_id)

    def forget(self) -> None:
        """Tell the session we are done with this stream (it stops tracking it)."""
        self._session.forget_stream(self)

    @property
    def is_finished(self) -> bool:
        """Both directions ended (EOF seen and sent) or the stream failed."""
        return self._error is not None or (self._receive_eof and self._send_eof)


StreamHandler = Callable[[QuicByteStream], None]
"""Called by an egress session for each stream the client opens (with the new stream)."""


class QuicSession:
    """One QUIC connection driven over asyncio, with its streams.

    ``send`` receives every datagram to transmit; ``on_stream`` (egress side) is called for
    each new peer-initiated stream; ``on_event`` sees every aioquic event after the session
    handled it (the egress uses it for connection-ID routing); ``on_send_backlog`` is told
    the session's :meth:`send_backlog` after each flush (the egress's global buffer budget);
    ``on_refused_stream`` is told of each unidirectional stream the peer opens, which the
    session refuses itself (STOP_SENDING :data:`STREAM_ERROR_UNIDIRECTIONAL`). Call
    :meth:`close` to end it; :attr:`closed` is set when the connection is terminated for any
    reason.
    """

    def __init__(
        self,
        connection: QuicConnection,
        *,
        settings: QuicSettings,
        send: Callable[[bytes], None],
        on_stream: StreamHandler | None = None,
        on_event: Callable[[QuicEvent], None] | None = None,
        on_send_backlog: Callable[[int], None] | None = None,
        on_refused_stream: Callable[[int], None] | None = None,
    ) -> None:
        self.connection = connection
        self._on_refused_stream = on_refused_stream
        self._on_send_backlog = on_send_backlog
        self.settings = settings
        settings.apply_loss_detection(connection)
        self._send = send
        self._on_stream = on_stream
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False
        self._streams: dict[int, QuicByteStream] = {}
        self._forgotten_peer_streams: set[int] = set()
        """Peer streams this session let go of while aioquic still keeps them (late data on
        them is not a new stream); see :meth:`_is_new_peer_stream`."""
        self._handshake: asyncio.Future[None] = self._loop.create_future()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.closed_locally = False
        self._ping_waiters: dict[int, asyncio.Future[None]] = {}
        self._probe_callbacks: dict[int, Callable[[], None]] = {}
        self._next_ping = 0
        library_patches.keep_lost_probes_lost(connection, self._forget_lost_probe)
        self.datagrams_received = 0
        self.datagrams_sent = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.created_at = self._loop.time()
        self.last_received_at = self.created_at
        self._ack_thinning = False
        """Whether ACKs are thinned (``QuicSettings.ack_every``): set once the handshake
        completes and the ``quic-ack-thinning`` patch is in effect."""
        self._unacknowledged = 0
        """Datagrams received since the last ACK was sent, while thinning."""

    # -- datagrams in and out --------------------------------------------------------------

    def connect(self) -> None:
        """Start the handshake (client side)."""
        self.connection.connect(SESSION_ADDRESS, now=self._loop.time())
        self._flush()

    def receive_datagram(self, datagram: bytes) -> bool:
        """Feed one datagram that arrived on any path of this session.

        Returns whether it carried a packet aioquic authenticated and had not seen before
        (``False`` for garbage, corrupted, injected or duplicated datagrams).
        """
        if self.closed.is_set():
            return False
        self.datagrams_received += 1
        self.bytes_received += len(datagram)
        now = self._loop.time()
        before = accepted_packet_marker(self.connection)
        acknowledgement = (
            library_patches.quic_acknowledgement_state(self.connection)
            if self._ack_thinning
            else None
        )
        self.connection.receive_datagram(datagram, SESSION_ADDRESS, now=now)
        accepted = accepted_packet_marker(self.connection) != before
        if accepted:
            self.last_received_at = now
            if acknowledgement is not None:
                self._thin_acknowledgements(acknowledgement, len(datagram), now)
        self._schedule_flush()
        return accepted

    def _thin_acknowledgements(self, before: tuple[bool, int], size: int, now: float) -> None:
        """Let the ACK aioquic scheduled for this datagram wait (``QuicSettings.ack_every``),
        or make it due now: a small datagram, one out of order or after a gap, or the
        ``ack_every``-th full-size one since the last ACK."""
        after = library_patches.quic_acknowledgement_state(self.connection)
        if after is None or not after[0]:
            return  # nothing to acknowledge (an ACK-only packet)
        was_pending, largest_before = before
        if not was_pending:
            self._unacknowledged = 0
        self._unacknowledged += 1
        if (
            size < SMALLEST_MAX_DATAGRAM_SIZE
            or after[1] != largest_before + 1
            or self._unacknowledged >= self.settings.ack_every
        ):
            library_patches.quic_acknowledge_now(self.connection, now)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Handle pending events, transmit pending datagrams and re-arm the timer."""
        self._flush_scheduled = False
        self._process_events()
        now = self._loop.time()
        for data, _address in self.connection.datagrams_to_send(now=now):
            self.datagrams_sent += 1
            self.bytes_sent += len(data)
            self._send(data)
        finished = []
        session_backlog = self.send_backlog()
        if self._on_send_backlog is not None:
            self._on_send_backlog(session_backlog)
        for stream in self._streams.values():
            stream._update_writable(session_backlog)
            if stream.is_finished and self.stream_backlog(stream.stream_id) == 0:
                finished.append(stream.stream_id)
        for stream_id in finished:
            del self._streams[stream_id]
            self._forget_peer_stream(stream_id)
            if isinstance(self.connection, FlowControlledConnection):
                self.connection.forget_stream(stream_id)
        self._arm_timer()
        self._process_events()

    def _arm_timer(self) -> None:
        deadline = self.connection.get_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.connection.handle_timer(now=self._loop.time())
        self._flush()

    # -- events ----------------------------------------------------------------------------

    def _process_events(self) -> None:
        while (event := self.connection.next_event()) is not None:
            self._handle_event(event)
            if self._on_event is not None:
                self._on_event(event)

    def _handle_event(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is None:
                if (
                    self.connection.configuration.is_client
                    or self._on_stream is None
                    or not self._is_new_peer_stream(event.stream_id)
                ):
                    return  # late data for a stream we already forgot
                if stream_is_unidirectional(event.stream_id):
                    self._refuse_unidirectional(event.stream_id)
                    return
                stream = QuicByteStream(self, event.stream_id)
                self._streams[event.stream_id] = stream
                self._track(event.stream_id)
                self._on_stream(stream)
            stream._on_data(event.data, event.end_stream)
        elif isinstance(event, StreamReset):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._fail(RemoteError("the peer reset the stream"))
        elif isinstance(event, StopSendingReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._fail(RemoteError("the peer stopped reading the stream"))
        elif isinstance(event, HandshakeCompleted):
            if not self._handshake.done():
                self._handshake.set_result(None)
            # Only now: during the handshake aioquic's own prompt ACKs keep it short.
            self._ack_thinning = self.settings.ack_every > 1 and library_patches.use_ack_delay(
                self.connection, self.settings.ack_delay
            )
        elif isinstance(event, PingAcknowledged):
            callback = self._probe_callbacks.pop(event.uid, None)
            if callback is not None:
                callback()
            waiter = self._ping_waiters.pop(event.uid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif isinstance(event, ConnectionTerminated):
            self._terminate(event.reason_phrase or f"error code {event.error_code:#x}")
        elif isinstance(event, ConnectionIdIssued | ConnectionIdRetired):
            pass

    def _refuse_unidirectional(self, stream_id: int) -> None:
        """Ask the peer to stop sending on a unidirectional stream; its data is ignored."""
        with contextlib.suppress(AssertionError, ValueError):
            self.connection.stop_stream(stream_id, STREAM_ERROR_UNIDIRECTIONAL)
        self._forget_peer_stream(stream_id)
        self._schedule_flush()
        if self._on_refused_stream is not None:
            self._on_refused_stream(stream_id)

    def _is_new_peer_stream(self, stream_id: int) -> bool:
        """Whether data on ``stream_id`` (not one of :attr:`_streams`) opens a new stream.

        Streams may be opened in any order: a session striped over volunteers delivers the
        first packet of stream 4 before that of stream 0 as a matter of course, so "higher
        than the highest seen" would drop stream 0. aioquic gives events only for streams it
        keeps; a stream it keeps that is not ours is new unless we forgot it ourselves.
        """
        return stream_id not in self._forgotten_peer_streams

    def _forget_peer_stream(self, stream_id: int) -> None:
        """Remember that we let go of ``stream_id``, for as long as aioquic keeps it (so the
        set stays as small as aioquic's own table of open streams)."""
        if stream_id in self._streams or self.connection.configuration.is_client:
            return
        kept = library_patches.quic_kept_stream_ids(self.connection)
        if kept is None:
            return
        self._forgotten_peer_streams = {
            forgotten for forgotten in self._forgotten_peer_streams if forgotten in kept
        }
        if stream_id in kept:
            self._forgotten_peer_streams.add(stream_id)

    def _terminate(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        error = SessionError(f"the session to the egress ended: {reason}")
        for stream in self._streams.values():
            stream._fail(error)
        if not self._handshake.done():
            self._handshake.set_exception(
                SessionError(f"the handshake with the egress failed: {reason}")
            )
            self._handshake.exception()  # retrieved here so an unawaited failure is not logged
        for waiter in self._ping_waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._ping_waiters.clear()
        self._probe_callbacks.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.closed.set()

    # -- streams ---------------------------------------------------------------------------

    def open_stream(self) -> QuicByteStream:
        """Open a new client-initiated bidirectional stream."""
        if self.closed.is_set():
            raise SessionError(f"the session to the egress ended: {self.close_reason}")
        stream_id = self.connection.get_next_available_stream_id()
        stream = QuicByteStream(self, stream_id)
        self._streams[stream_id] = stream
        self._track(stream_id)
        return stream

    def forget_stream(self, stream: QuicByteStream) -> None:
        """Drop our reference to a finished stream."""
        self._streams.pop(stream.stream_id, None)
        self._forget_peer_stream(stream.stream_id)
        if isinstance(self.connection, FlowControlledConnection):
            self.connection.forget_stream(stream.stream_id)

    def _track(self, stream_id: int) -> None:
        if isinstance(self.connection, FlowControlledConnection):
            self.connection.track_stream(stream_id)

    def _consumed(self, stream_id: int, size: int) -> None:
        connection = self.connection
        if isinstance(connection, FlowControlledConnection) and connection.consumed(
            stream_id, size
        ):
            self._schedule_flush()

    def stream_backlog(self, stream_id: int) -> int:
        """Bytes of the stream not yet acknowledged by the peer."""
        return send_backlog(self.connection, stream_id)

    def send_backlog(self) -> int:
        """Bytes of all streams not yet acknowledged by the peer (0 without a session-wide
        bound, which is the only use of it)."""
        if self.settings.session_send_buffer is None:
            return 0
        return sum(send_backlog(self.connection, stream_id) for stream_id in self._streams)

    @property
    def send_buffer_full(self) -> bool:
        """Whether the session-wide send bound (``session_send_buffer``) is reached."""
        limit = self.settings.session_send_buffer
        return limit is not None and self.send_backlog() >= limit

    @property
    def receive_window_full(self) -> bool:
        """Whether the session-wide receive bound (``session_receive_window``) is reached: the
        peer used all its credit and waits for the application to read."""
        connection = self.connection
        return (
            isinstance(connection, FlowControlledConnection) and connection.session_credit_used_up
        )

    def _send_blocked(self, stream_id: int, session_backlog: int) -> bool:
        settings = self.settings
        if self.stream_backlog(stream_id) >= settings.stream_send_buffer:
            return True
        limit = settings.session_send_buffer
        return limit is not None and session_backlog >= limit

    def _send_stream_data(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        if self.closed.is_set():
            raise SessionError(f"the session to the egress ended: {self.close_reason}")
        self.connection.send_stream_data(stream_id, data, end_stream=end_stream)
        self._schedule_flush()

    def _reset_stream(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        self._forget_peer_stream(stream_id)
        if self.closed.is_set():
            return
        with contextlib.suppress(AssertionError, ValueError):
            self.connection.reset_stream(stream_id, STREAM_ERROR_ABORTED)
            self.connection.stop_stream(stream_id, STREAM_ERROR_ABORTED)
        self._schedule_flush()

    @property
    def open_streams(self) -> int:
        """Streams this session currently tracks."""
        return len(self._streams)

    # -- lifecycle -------------------------------------------------------------------------

    async def wait_handshake(self, timeout: float) -> None:
        """Wait for the TLS handshake; :class:`SessionError` if it fails or times out."""
        try:
            await asyncio.wait_for(asyncio.shield(self._handshake), timeout)
        except TimeoutError:
            raise SessionError(
                f"the egress did not complete the handshake within {timeout:g} s "
                "(the volunteer may be unable to reach it)"
            ) from None

    def probe(self, send: Callable[[bytes], None], on_acknowledged: Callable[[], None]) -> bool:
        """Send a PING now through ``send`` (one chosen path); call back when it is acked.

        Everything aioquic has to send at this moment goes through ``send``, so the probe
        also carries any pending ACKs: a path probe is never wasted. The acknowledgement
        speaks for that one path, so the PING never travels on another: if aioquic's pacer
        or congestion window holds it back, it is withdrawn, what did go out takes the
        session's usual paths, and ``False`` is returned (the caller probes again later);
        if it is lost, it is not re-sent (:meth:`_forget_lost_probe`).
        """
        if self.closed.is_set():
            return False
        self._next_ping += 1
        uid = self._next_ping
        self._probe_callbacks[uid] = on_acknowledged
        self.connection.send_ping(uid)
        now = self._loop.time()
        datagrams = [data for data, _address in self.connection.datagrams_to_send(now=now)]
        sent = not library_patches.withdraw_unsent_ping(self.connection, uid)
        if not sent:
            del self._probe_callbacks[uid]
            send = self._send
        for data in datagrams:
            self.datagrams_sent += 1
            self.bytes_sent += len(data)
            send(data)
        self._arm_timer()
        return sent

    def _forget_lost_probe(self, uid: int) -> bool:
        """aioquic declared the PING ``uid`` lost: a path probe's is forgotten, not re-sent
        (``library_patches.keep_lost_probes_lost``: its acknowledgement would vouch for the
        path that lost it); ``True`` if ``uid`` was a probe's."""
        return self._probe_callbacks.pop(uid, None) is not None

    async def ping(self, timeout: float) -> None:
        """Send a PING and wait for its acknowledgement."""
        self._next_ping += 1
        uid = self._next_ping
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._ping_waiters[uid] = waiter
        self.connection.send_ping(uid)
        self._schedule_flush()
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            self._ping_waiters.pop(uid, None)

    def close(self, reason: str = "closed", *, error_code: int = 0) -> None:
        """Close the connection (sends CONNECTION_CLOSE once) and fail every stream."""
        if self.closed.is_set():
            return
        self.closed_locally = True
        self.connection.close(error_code=error_code, reason_phrase=reason)
        for data, _address in self.connection.datagrams_to_send(now=self._loop.time()):
            self._send(data)
        self._terminate(reason)
