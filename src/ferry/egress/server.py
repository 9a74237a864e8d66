"""The egress: terminates clients' QUIC sessions and opens the TCP connections they ask for.

Volunteers connect to ``/v1/relay`` with a WebSocket and relay one client's datagrams each
(``docs/protocol.md`` §4). The egress never trusts the WebSocket a datagram came on to say
whose it is: :class:`SessionRouter` reads the QUIC destination connection ID and hands the
datagram to that session, whichever volunteer carried it. A session's replies are spread over
its relays in proportion to the authenticated packets each recently delivered
(:mod:`ferry.core.relay_shares`): the egress mirrors the client's own spread, and a client
that moves to a new volunteer is followed at once.

Each client-initiated QUIC stream carries one TCP connection: a stream request header, the
policy check and the upstream connect (:mod:`ferry.egress.upstream`), a stream reply, then
bytes both ways.

Limits (all in :class:`EgressConfig`): sessions in total, counted once their handshake
completes (a session over the cap completes its handshake and is closed at once with
``SESSION_ERROR_EGRESS_FULL``, so the client can say why), sessions in their handshake (their
own cap, a timeout and a rate per relay WebSocket, so half-open sessions cannot fill the
egress), streams open per session (QUIC's MAX_STREAMS: the client cannot open more), bytes
buffered per session each way (QUIC credit withheld for data not yet written to destinations;
destination sockets not read while too much waits to reach the client), and idle timeouts
for sessions (no packet) and streams (no byte either way). Fair sharing: each copy loop reads
at most ``copy_chunk_bytes`` and then yields to the event loop, so every stream of every
session with data to send gets one turn per loop iteration (``docs/architecture.md``).

Drain (:meth:`Egress.drain`): new sessions are refused with ``SESSION_ERROR_DRAINING`` and
new streams with a reply, open streams run to their end or the grace period, then everything
closes. The admin listener (``admin_host``/``admin_port``) serves ``/healthz`` and
``/metrics``; it is never the relay listener.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from aiohttp import web

# aioquic.buffer is the public module (it re-exports the compiled _buffer without __all__)
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    HandshakeCompleted,
    QuicEvent,
)
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from ferry.core.bridge_line import BridgeLine
from ferry.core.codes import DEFAULT_MESSAGE, ReplyCode
from ferry.core.rate_limit import RateLimit, TokenBuckets
from ferry.core.relay_shares import RelayShares, RelaySharesConfig
from ferry.core.self_check_target import SELF_CHECK_ANSWER, SELF_CHECK_TARGET
from ferry.core.stream_header import StreamRequestDecoder, encode_reply
from ferry.egress.buffer_budget import BufferBudget
from ferry.egress.identity import BRIDGE_LINE_FILE, EgressIdentity, load_or_create_identity
from ferry.egress.policy import DestinationPolicy
from ferry.egress.upstream import (
    Resolver,
    SystemResolver,
    UpstreamConfig,
    UpstreamMetrics,
    connect_upstream,
)
from ferry.errors import (
    ConfigError,
    ProtocolError,
    RemoteError,
    SessionError,
    StreamRefusedError,
)
from ferry.logs import get_logger, scrub_library_loggers
from ferry.tasks import TaskOwner
from ferry.transport.datagram import DatagramChannel
from ferry.transport.quic import (
    SESSION_ERROR_DRAINING,
    SESSION_ERROR_EGRESS_FULL,
    QuicByteStream,
    QuicSession,
    QuicSettings,
)
from ferry.transport.websocket import (
    WebSocketChannelMetrics,
    WebSocketDatagramChannel,
    accept_websocket_channel,
)

log = get_logger(__name__)

RELAY_PATH = "/v1/relay"
MAX_DATAGRAM_BYTES = 65527


@dataclass(frozen=True, slots=True)
class EgressConfig:
    """Settings of one egress."""

    state_dir: Path
    """Folder holding the egress's key, certificate and bridge line (created if missing)."""
    host: str = "127.0.0.1"
    """Address the WebSocket listener binds."""
    port: int = 8443
    """Port the WebSocket listener binds (0 = any free port)."""
    public_url: str | None = None
    """The WebSocket URL volunteers use to reach this egress, as written in the bridge line
    (default: ``ws://HOST:PORT/v1/relay`` from the bound address)."""
    policy: DestinationPolicy = field(default_factory=DestinationPolicy)
    """Which destinations clients may reach."""
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    """Timeouts for resolving and connecting to destinations."""
    quic: QuicSettings = field(default_factory=QuicSettings)
    """QUIC session tunables. The egress replaces its ``idle_timeout``,
    ``max_peer_streams``, ``session_receive_window`` and ``session_send_buffer`` with the
    limits below (:meth:`session_quic_settings`)."""
    relay_shares: RelaySharesConfig = field(default_factory=RelaySharesConfig)
    """How a session's replies are spread over the relays that carry it."""
    max_sessions: int = 10000
    """Sessions at once whose handshake completed (sessions still in their handshake are
    bounded by ``max_handshakes``). A new session beyond it is refused: its handshake
    completes and the egress closes it with application error ``0x102`` ("egress full"),
    counted."""
    max_refusing_sessions: int = 64
    """Refused sessions whose handshakes run at once (to tell their clients why); Initial
    packets of further new sessions are dropped and counted (``too_many_sessions``)."""
    max_handshakes: int = 256
    """Sessions whose handshake is in progress at once (they do not count toward
    ``max_sessions`` until it completes). An Initial of a new session beyond it is dropped and
    counted (``limits_hit{kind="handshakes"}``); the client's QUIC retransmits it, so it gets
    in once a slot frees. 256: a handshake takes a few round trips (well under a second even
    over a slow volunteer), so an egress admitting ten new sessions a second has a handful in
    progress; 256 half-open aioquic connections hold a few MiB."""
    handshake_timeout: float = 10.0
    """Seconds a new session has to complete its handshake; after it the half-open session is
    dropped and counted (``limits_hit{kind="handshake_timeout"}``). A client gives up after its
    own ``quic.handshake_timeout`` (15 s by default) anyway; 10 s is several times the
    slowest round trips seen through volunteers."""
    handshakes_per_relay_burst: int = 4
    """New sessions (Initials with a connection ID the egress does not know) one relay
    WebSocket may start at once; beyond it they are dropped and counted
    (``limits_hit{kind="handshake_rate"}``). A volunteer relays one client over its
    WebSocket, and a client opens one session at a time (one more after an egress restart
    or a refusal), so a small burst suffices."""
    handshakes_per_relay_per_second: float = 0.5
    """New sessions one relay WebSocket may start per second once its burst is spent: one
    every two seconds, faster than a client retries a failed session."""
    max_streams_per_session: int = 256
    """Streams one session may have open at once. QUIC's MAX_STREAMS keeps the client from
    opening more (its next stream waits until one closes); reaching it is counted."""
    session_buffer_bytes: int = 8 * 1024 * 1024
    """Bytes one session may hold in the egress in each direction: received from the client
    and not yet written to destinations (the session's QUIC credit, granted as they are
    written), and read from destinations and not yet acknowledged by the client (destination
    sockets are not read while it is reached). Each stream is also bounded on its own by
    ``quic.max_stream_data`` and ``quic.stream_send_buffer``. Reaching it is counted per
    direction: ``session_receive_window`` (client to destinations) and
    ``session_send_buffer`` (destinations to client)."""
    buffer_budget_bytes: int = 512 * 1024 * 1024
    """Bytes all sessions together may hold read from destinations and not yet acknowledged
    by their clients (``session_buffer_bytes`` bounds each one). Past half of it, sessions
    holding more than an equal share of it stop reading their destinations; at it, all do
    (except below ``buffer_budget_floor_bytes``), until their clients acknowledge
    (backpressure: nothing is dropped). Counted as ``limits_hit{kind="buffer_budget"}`` each
    time a stream waits (:mod:`ferry.egress.buffer_budget`). 512 MiB: 64 sessions with full
    buffers, or about twenty times what a 1 Gbit/s egress has in flight at a 200 ms round
    trip through volunteers; it fits a 2 GiB machine."""
    buffer_budget_floor_bytes: int = 65536
    """Bytes every session may hold whatever the buffer budget says, so that sessions whose
    clients stopped acknowledging can slow the others but never stop them. The egress holds
    at most ``buffer_budget_bytes`` plus this per session (plus one ``copy_chunk_bytes`` per
    stream that was reading)."""
    session_idle_timeout: float = 30.0
    """Seconds without any packet from the client after which a session ends (QUIC idle
    timeout; the smaller of the client's and this one applies)."""
    stream_idle_timeout: float = 300.0
    """Seconds a stream may carry no byte in either direction before the egress resets it
    and closes its destination connection."""
    request_timeout: float = 15.0
    """Seconds a new stream has to deliver its complete request header."""
    copy_chunk_bytes: int = 16384
    """Largest read from a destination socket or a client stream in one turn; each copy loop
    yields to the event loop after every chunk, so one bulk stream cannot hold it."""
    drain_seconds: float = 30.0
    """Seconds :meth:`Egress.drain` (SIGTERM) lets open streams run before closing them."""
    admin_host: str = "127.0.0.1"
    """Address of the admin listener (``/healthz``, ``/metrics``)."""
    admin_port: int | None = None
    """Port of the admin listener (0 = any free port); ``None``: no admin listener."""
    admin_optional: bool = False
    """When the admin port cannot be bound, log a warning and run without the admin
    listener instead of failing (the command line's default address uses this)."""

    def __post_init__(self) -> None:
        for name in (
            "max_sessions",
            "max_streams_per_session",
            "copy_chunk_bytes",
            "max_handshakes",
            "handshakes_per_relay_burst",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_refusing_sessions < 0:
            raise ConfigError("max_refusing_sessions must be 0 or more")
        if self.buffer_budget_floor_bytes < 0:
            raise ConfigError("buffer_budget_floor_bytes must be 0 or more")
        if self.buffer_budget_bytes < 65536:
            raise ConfigError(
                f"buffer_budget_bytes must be at least 65536, got {self.buffer_budget_bytes}"
            )
        if self.session_buffer_bytes < 65536:
            raise ConfigError(
                f"session_buffer_bytes must be at least 65536, got {self.session_buffer_bytes}"
            )
        for name in (
            "session_idle_timeout",
            "stream_idle_timeout",
            "request_timeout",
            "handshake_timeout",
            "handshakes_per_relay_per_second",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.drain_seconds < 0:
            raise ConfigError("drain_seconds must be 0 or more")

    def session_quic_settings(self) -> QuicSettings:
        """The QUIC settings of the egress's sessions, with the limits above applied."""
        return replace(
            self.quic,
            idle_timeout=self.session_idle_timeout,
            max_peer_streams=self.max_streams_per_session,
            session_receive_window=self.session_buffer_bytes,
            session_send_buffer=self.session_buffer_bytes,
        )


class EgressMetrics:
    """Prometheus metrics of one egress, on their own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.sessions = Gauge(
            "ferry_egress_sessions",
            "QUIC sessions open (handshake completed)",
            registry=registry,
        )
        self.handshakes = Gauge(
            "ferry_egress_handshakes",
            "New QUIC sessions whose handshake is in progress",
            registry=registry,
        )
        self.sessions_total = Counter(
            "ferry_egress_sessions_created", "QUIC sessions created", registry=registry
        )
        self.sessions_lost = Counter(
            "ferry_egress_sessions_lost",
            "QUIC sessions ended, by reason",
            ["reason"],
            registry=registry,
        )
        self.sessions_refused = Counter(
            "ferry_egress_sessions_refused",
            "New sessions refused, by reason (egress_full: max_sessions reached; draining: "
            "the egress is shutting down)",
            ["reason"],
            registry=registry,
        )
        self.relays = Gauge("ferry_egress_relays", "Volunteer WebSockets open", registry=registry)
        self.streams = Counter(
            "ferry_egress_streams", "Streams opened by clients", registry=registry
        )
        self.streams_open = Gauge(
            "ferry_egress_streams_open", "Streams being served", registry=registry
        )
        self.refused = Counter(
            "ferry_egress_streams_refused",
            "Stream requests refused, by reply code (or draining: the egress is shutting "
            "down; unidirectional: a unidirectional stream, refused with STOP_SENDING 0x104)",
            ["code"],
            registry=registry,
        )
        self.limits_hit = Counter(
            "ferry_egress_limits_hit",
            "Times a limit stopped or slowed a client, by kind (sessions, handshakes, "
            "handshake_rate, handshake_timeout, streams_per_session, session_send_buffer, "
            "session_receive_window, buffer_budget, session_idle, stream_idle)",
            ["kind"],
            registry=registry,
        )
        self.path_changes = Counter(
            "ferry_egress_path_changes",
            "Sessions seen on a new volunteer relay, by outcome (validated: the packet "
            "authenticated and the relay now carries the session; failed: it did not)",
            ["outcome"],
            registry=registry,
        )
        self.bad_requests = Counter(
            "ferry_egress_bad_stream_requests",
            "Stream request headers refused as malformed, by reason",
            ["reason"],
            registry=registry,
        )
        self.dropped = Counter(
            "ferry_egress_datagrams_dropped",
            "Datagrams dropped, by reason",
            ["reason"],
            registry=registry,
        )
        self.bytes = Counter(
            "ferry_egress_stream_bytes",
            "Payload bytes carried for clients, by direction (client_to_destination: written "
            "to destinations; destination_to_client: read from destinations); stream request "
            "and reply headers are not counted",
            ["direction"],
            registry=registry,
        )


def session_end_reason(session: QuicSession) -> str:
    """A metrics label for why a session ended."""
    if session.closed_locally:
        return "egress_shutdown"
    if "idle" in session.close_reason.lower():
        return "idle_timeout"
    return "closed_by_client"


@dataclass(frozen=True, slots=True)
class SessionRefusal:
    """Why the egress refuses a new session, as the client will be told."""

    error_code: int
    """The QUIC application error code of the CONNECTION_CLOSE."""
    reason: str
    """The reason phrase of the CONNECTION_CLOSE."""
    label: str
    """The ``reason`` label of ``ferry_egress_sessions_refused_total``."""


EGRESS_FULL = SessionRefusal(SESSION_ERROR_EGRESS_FULL, "egress full", "egress_full")
"""The refusal of a session over ``max_sessions``."""

EGRESS_DRAINING = SessionRefusal(SESSION_ERROR_DRAINING, "egress draining", "draining")
"""The refusal of a session that arrives while the egress drains."""


class RoutedSession:
    """A QUIC session at the egress and the relays that carry it.

    A session created with a ``refusal`` is closed with it as soon as its handshake
    completes (the client then knows why), and never serves a stream.
    """

    def __init__(
        self,
        router: SessionRouter,
        connection: QuicConnection,
        refusal: SessionRefusal | None = None,
    ) -> None:
        self.router = router
        self.refusal = refusal
        self._loop = asyncio.get_running_loop()
        self.relays: dict[int, DatagramChannel] = {}
        self.shares = RelayShares(router.config.relay_shares)
        self.connection_ids: set[bytes] = set()
        self.established = False
        """Whether the handshake completed and the session counts toward ``max_sessions``."""
        self.receive_window_full = False
        """Whether the client's data waiting in the egress had reached ``session_buffer_bytes``
        after the last packet (so reaching it is counted once, not once per packet)."""
        self.quic = QuicSession(
            connection,
            settings=router.quic_settings,
            send=self._send,
            on_stream=self._on_stream,
            on_event=self._on_event,
            on_send_backlog=self._on_send_backlog,
            on_refused_stream=self._on_refused_stream,
        )

    def _on_refused_stream(self, stream_id: int) -> None:
        self.router.metrics.refused.labels("unidirectional").inc()

    def _on_send_backlog(self, backlog: int) -> None:
        self.router.send_backlog_changed(self, backlog)

    def _on_stream(self, stream: QuicByteStream) -> None:
        if self.refusal is not None or self.quic.closed.is_set():
            stream.abort()
            return
        self.router.on_stream(self, stream)

    def heard_from(self, relay_id: int, relay: DatagramChannel) -> None:
        """Note that ``relay`` just delivered an authenticated packet of this session."""
        self.relays[relay_id] = relay
        self.shares.heard(relay_id, self._loop.time())

    def receive_window_newly_full(self) -> bool:
        """After a packet of this session: whether it made the client's data waiting in the
        egress reach the session's receive bound (the client gets no more credit until the
        egress writes some of it to destinations); True once per time it is reached."""
        full = self.quic.receive_window_full
        newly = full and not self.receive_window_full
        self.receive_window_full = full
        return newly

    def _send(self, datagram: bytes) -> None:
        now = self._loop.time()
        while (relay_id := self.shares.choose(now)) is not None:
            relay = self.relays.get(relay_id)
            if relay is not None and relay.is_open:
                if not relay.send(datagram):
                    self.router.metrics.dropped.labels("relay_queue_full").inc()
                return
            self.relays.pop(relay_id, None)
            self.shares.remove(relay_id)
        self.router.metrics.dropped.labels("no_relay").inc()

    def _on_event(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            if self.refusal is not None:
                self.quic.close(self.refusal.reason, error_code=self.refusal.error_code)
            else:
                self.router.handshake_completed(self)
        elif isinstance(event, ConnectionIdIssued):
            self.connection_ids.add(event.connection_id)
            self.router.sessions[event.connection_id] = self
        elif isinstance(event, ConnectionIdRetired):
            self.connection_ids.discard(event.connection_id)
            self.router.sessions.pop(event.connection_id, None)


async def wait_for_any(events: list[asyncio.Event]) -> None:
    """Return as soon as one of ``events`` is set."""
    finished = asyncio.Event()

    async def watch(event: asyncio.Event) -> None:
        await event.wait()
        finished.set()

    async with asyncio.TaskGroup() as group:
        watchers = [group.create_task(watch(event)) for event in events]
        await finished.wait()
        for watcher in watchers:
            watcher.cancel()


class SessionRouter:
    """Routes datagrams from any relay to QUIC sessions by destination connection ID."""

    def __init__(
        self,
        config: EgressConfig,
        identity: EgressIdentity,
        metrics: EgressMetrics,
        tasks: TaskOwner,
        resolver: Resolver,
        upstream_metrics: UpstreamMetrics,
    ) -> None:
        self.config = config
        self.upstream_metrics = upstream_metrics
        self.metrics = metrics
        self.tasks = tasks
        self.resolver = resolver
        self.sessions: dict[bytes, RoutedSession] = {}
        self.live: set[RoutedSession] = set()
        """Sessions whose handshake completed (they count toward ``max_sessions``)."""
        self.handshaking: set[RoutedSession] = set()
        """New sessions whose handshake is in progress (bounded by ``max_handshakes``)."""
        self.refusing: set[RoutedSession] = set()
        self.draining = False
        self.open_streams = 0
        self.no_open_streams = asyncio.Event()
        self.no_open_streams.set()
        self.quic_settings = config.session_quic_settings()
        self._quic_configuration = self.quic_settings.configuration(is_client=False)
        self._quic_configuration.certificate = identity.certificate
        self._quic_configuration.private_key = identity.private_key
        self._next_relay_id = 0
        self.buffer_budget = BufferBudget(
            config.buffer_budget_bytes, config.buffer_budget_floor_bytes
        )
        self._budget_freed = asyncio.Event()
        """Set (and replaced) when a session's backlog shrinks while streams wait for the
        buffer budget."""
        self._budget_waiters = 0
        self._new_sessions_per_relay = TokenBuckets(
            RateLimit(
                rate=config.handshakes_per_relay_per_second,
                burst=config.handshakes_per_relay_burst,
            )
        )

    def new_relay_id(self) -> int:
        """A number that tells relays apart within this egress."""
        self._next_relay_id += 1
        return self._next_relay_id

    def receive(self, datagram: bytes, relay_id: int, relay: DatagramChannel) -> None:
        """Route one datagram from a volunteer's WebSocket."""
        try:
            header = pull_quic_header(
                Buffer(data=datagram),
                host_cid_length=self._quic_configuration.connection_id_length,
            )
        except ValueError:
            self.metrics.dropped.labels("not_quic").inc()
            return
        session = self.sessions.get(header.destination_cid)
        if session is None:
            session = self._maybe_create(
                header.packet_type, header.version, datagram, header, relay_id
            )
            if session is None:
                return
        known_relay = relay_id in session.relays
        accepted = session.quic.receive_datagram(datagram)
        if accepted:
            if not known_relay and session.relays:
                self.metrics.path_changes.labels("validated").inc()
            session.heard_from(relay_id, relay)
            if session.receive_window_newly_full():
                self.metrics.limits_hit.labels("session_receive_window").inc()
        elif not known_relay:
            # A packet naming this session came on a new relay and did not authenticate:
            # an injection or corruption. The relay does not become a path of the session.
            self.metrics.path_changes.labels("failed").inc()

    def _maybe_create(
        self,
        packet_type: QuicPacketType,
        version: int | None,
        datagram: bytes,
        header: object,
        relay_id: int,
    ) -> RoutedSession | None:
        if packet_type != QuicPacketType.INITIAL or version is None:
            self.metrics.dropped.labels("unknown_connection").inc()
            return None
        if version not in self._quic_configuration.supported_versions:
            self.metrics.dropped.labels("unsupported_version").inc()
            return None
        if len(datagram) < SMALLEST_MAX_DATAGRAM_SIZE:
            self.metrics.dropped.labels("short_initial").inc()
            return None
        refusal: SessionRefusal | None = None
        if self.draining:
            refusal = EGRESS_DRAINING
        elif len(self.live) >= self.config.max_sessions:
            refusal = EGRESS_FULL
            self.metrics.limits_hit.labels("sessions").inc()
        if refusal is not None and len(self.refusing) >= self.config.max_refusing_sessions:
            self.metrics.dropped.labels("too_many_sessions").inc()
            return None
        if refusal is None and len(self.handshaking) >= self.config.max_handshakes:
            self.metrics.limits_hit.labels("handshakes").inc()
            return None
        now = asyncio.get_running_loop().time()
        if not self._new_sessions_per_relay.take(str(relay_id), now).allowed:
            self.metrics.limits_hit.labels("handshake_rate").inc()
            return None
        original_cid: bytes = header.destination_cid  # type: ignore[attr-defined]
        connection = self.quic_settings.new_connection(
            self._quic_configuration, original_destination_connection_id=original_cid
        )
        session = RoutedSession(self, connection, refusal)
        # aioquic announces later connection IDs through events, but not these two.
        for connection_id in (original_cid, connection.host_cid):
            session.connection_ids.add(connection_id)
            self.sessions[connection_id] = session
        if refusal is not None:
            self.refusing.add(session)
            self.metrics.sessions_refused.labels(refusal.label).inc()
            log.debug("refusing a new session: %s", refusal.reason)
        else:
            self.handshaking.add(session)
            self.metrics.handshakes.inc()
        self.tasks.spawn(self._watch(session), name="session")
        return session

    def send_backlog_changed(self, session: RoutedSession, backlog: int) -> None:
        """Called by a session after each flush with the bytes it holds for its client."""
        if self.buffer_budget.update(session, backlog) and self._budget_waiters:
            self._budget_freed.set()
            self._budget_freed = asyncio.Event()

    async def _wait_for_buffer_budget(self, session: RoutedSession) -> None:
        """Wait until the global buffer budget lets a stream of ``session`` read again."""
        self.metrics.limits_hit.labels("buffer_budget").inc()
        self._budget_waiters += 1
        try:
            while not self.buffer_budget.may_read(session) and not session.quic.closed.is_set():
                await self._budget_freed.wait()
        finally:
            self._budget_waiters -= 1

    def handshake_completed(self, session: RoutedSession) -> None:
        """Called by a session (not a refused one) when its handshake completes: it now counts
        toward ``max_sessions``, or is refused if the egress is full or draining."""
        if session not in self.handshaking:
            return
        self.handshaking.discard(session)
        self.metrics.handshakes.dec()
        refusal: SessionRefusal | None = None
        if self.draining:
            refusal = EGRESS_DRAINING
        elif len(self.live) >= self.config.max_sessions:
            refusal = EGRESS_FULL
            self.metrics.limits_hit.labels("sessions").inc()
        if refusal is not None:
            session.refusal = refusal
            self.refusing.add(session)
            self.metrics.sessions_refused.labels(refusal.label).inc()
            session.quic.close(refusal.reason, error_code=refusal.error_code)
            return
        session.established = True
        self.live.add(session)
        self.metrics.sessions.inc()
        self.metrics.sessions_total.inc()

    async def _watch(self, session: RoutedSession) -> None:
        try:
            with contextlib.suppress(SessionError):
                # SessionError: the handshake failed or did not complete in time.
                await session.quic.wait_handshake(self.config.handshake_timeout)
            if not session.quic.closed.is_set() and not session.established:
                if session.refusal is None:
                    self.metrics.limits_hit.labels("handshake_timeout").inc()
                session.quic.close("handshake timeout")
            await session.quic.closed.wait()
        finally:
            for connection_id in session.connection_ids:
                if self.sessions.get(connection_id) is session:
                    del self.sessions[connection_id]
            self.send_backlog_changed(session, 0)
            if session in self.handshaking:
                self.handshaking.discard(session)
                self.metrics.handshakes.dec()
            if not session.established:
                self.refusing.discard(session)
            else:
                reason = session_end_reason(session.quic)
                self.metrics.sessions_lost.labels(reason).inc()
                if reason == "idle_timeout":
                    self.metrics.limits_hit.labels("session_idle").inc()
                self.live.discard(session)
                self.metrics.sessions.dec()

    def on_stream(self, session: RoutedSession, stream: QuicByteStream) -> None:
        """Called by a session for each stream a client opens."""
        self.metrics.streams.inc()
        if session.quic.open_streams >= self.config.max_streams_per_session:
            self.metrics.limits_hit.labels("streams_per_session").inc()
        self.open_streams += 1
        self.no_open_streams.clear()
        self.metrics.streams_open.inc()
        self.tasks.spawn(self._serve_stream(session, stream), name="stream")

    async def _serve_stream(self, session: RoutedSession, stream: QuicByteStream) -> None:
        try:
            await self._serve_stream_or_fail(session, stream)
        except BaseException as exc:
            # Whatever went wrong, the client hears of it at once (a reset stream) rather
            # than waiting for its reply timeout; a bug is logged, never spread.
            stream.abort()
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, RemoteError | OSError | ExceptionGroup):
                log.exception("serving a stream failed unexpectedly")
        finally:
            stream.forget()
            self.open_streams -= 1
            self.metrics.streams_open.dec()
            if self.open_streams == 0:
                self.no_open_streams.set()

    async def _serve_stream_or_fail(self, session: RoutedSession, stream: QuicByteStream) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            decoder = StreamRequestDecoder()
            try:
                async with asyncio.timeout(self.config.request_timeout):
                    request = None
                    while request is None:
                        data = await stream.receive_some()
                        if not data:
                            decoder.feed_eof()
                        request = decoder.feed(data)
            except (ProtocolError, TimeoutError) as exc:
                reason = exc.reason if isinstance(exc, ProtocolError) else "timeout"
                self.metrics.bad_requests.labels(reason).inc()
                code = (
                    ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED
                    if reason == "address_type"
                    else ReplyCode.GENERAL_FAILURE
                )
                await self._refuse(stream, code, f"malformed stream request: {exc}")
                return
            if self.draining:
                self.metrics.refused.labels("draining").inc()
                await self._refuse(
                    stream, ReplyCode.GENERAL_FAILURE, "the egress is shutting down; try again"
                )
                return
            if request.target == SELF_CHECK_TARGET:  # answered here; see self_check_target
                await stream.send_all(encode_reply(ReplyCode.SUCCEEDED, "") + SELF_CHECK_ANSWER)
                await stream.send_eof()
                return
            try:
                reader, writer = await connect_upstream(
                    request.target,
                    self.config.policy,
                    self.config.upstream,
                    self.resolver,
                    metrics=self.upstream_metrics,
                )
            except StreamRefusedError as exc:
                self.metrics.refused.labels(ReplyCode(exc.code).name.lower()).inc()
                await self._refuse(stream, ReplyCode(exc.code), str(exc))
                return
            await stream.send_all(encode_reply(ReplyCode.SUCCEEDED, ""))
            if decoder.leftover:
                writer.write(decoder.leftover)
                self.metrics.bytes.labels("client_to_destination").inc(len(decoder.leftover))
            await self._copy_both_ways(session, stream, reader, writer)
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()

    async def _refuse(self, stream: QuicByteStream, code: ReplyCode, message: str) -> None:
        await stream.send_all(encode_reply(code, message or DEFAULT_MESSAGE[code]))
        await stream.send_eof()

    async def _copy_both_ways(
        self,
        session: RoutedSession,
        stream: QuicByteStream,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Copy until both directions end; reset the stream after ``stream_idle_timeout``
        without a byte either way (raises :class:`TimeoutError` then)."""
        loop = asyncio.get_running_loop()
        idle = self.config.stream_idle_timeout
        try:
            async with asyncio.timeout_at(loop.time() + idle) as deadline:

                def active() -> None:
                    deadline.reschedule(loop.time() + idle)

                async with asyncio.TaskGroup() as group:
                    group.create_task(self._client_to_destination(stream, writer, active))
                    group.create_task(self._destination_to_client(session, reader, stream, active))
        except TimeoutError:
            self.metrics.limits_hit.labels("stream_idle").inc()
            raise

    async def _client_to_destination(
        self, stream: QuicByteStream, writer: asyncio.StreamWriter, active: Callable[[], None]
    ) -> None:
        counted = self.metrics.bytes.labels("client_to_destination")
        while data := await stream.receive_some(self.config.copy_chunk_bytes):
            active()
            writer.write(data)
            counted.inc(len(data))
            await writer.drain()
            await asyncio.sleep(0)  # one chunk per turn: other streams go next
        if writer.can_write_eof():
            writer.write_eof()

    async def _destination_to_client(
        self,
        session: RoutedSession,
        reader: asyncio.StreamReader,
        stream: QuicByteStream,
        active: Callable[[], None],
    ) -> None:
        counted = self.metrics.bytes.labels("destination_to_client")
        send_buffer_hits = self.metrics.limits_hit.labels("session_send_buffer")
        while True:
            if not self.buffer_budget.may_read(session):
                await self._wait_for_buffer_budget(session)
            data = await reader.read(self.config.copy_chunk_bytes)
            if not data:
                break
            active()
            if session.quic.send_buffer_full:
                send_buffer_hits.inc()
            await stream.send_all(data)
            counted.inc(len(data))
            await asyncio.sleep(0)  # one chunk per turn: other streams go next
        await stream.send_eof()

    def close(self) -> None:
        """Close every session."""
        for session in list(self.live) + list(self.handshaking) + list(self.refusing):
            session.quic.close("egress shutting down")


class Egress:
    """A running egress: WebSocket listener, session router, identity."""

    def __init__(
        self,
        config: EgressConfig,
        *,
        registry: CollectorRegistry | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.config = config
        self.metrics = EgressMetrics(registry or CollectorRegistry())
        self._channel_metrics = WebSocketChannelMetrics(self.metrics.registry)
        self._upstream_metrics = UpstreamMetrics(self.metrics.registry)
        self.identity, self.created_identity = load_or_create_identity(config.state_dir)
        self._tasks = TaskOwner("egress")
        self.router = SessionRouter(
            config,
            self.identity,
            self.metrics,
            self._tasks,
            resolver or SystemResolver(),
            self._upstream_metrics,
        )
        self._runner: web.AppRunner | None = None
        self._admin_runner: web.AppRunner | None = None
        self._relays: set[WebSocketDatagramChannel] = set()
        self.url = ""
        self.admin_url: str | None = None
        """``http://HOST:PORT`` of the admin listener once started (None: none)."""
        self.bridge_line: BridgeLine | None = None

    async def start(self) -> BridgeLine:
        """Listen for volunteers; returns the bridge line (also written to the state folder)."""
        scrub_library_loggers()
        app = web.Application(client_max_size=1024)
        app.router.add_get(RELAY_PATH, self._relay)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await self.close()
            raise ConfigError(
                f"the egress cannot listen on port {self.config.port} ({exc.strerror}); "
                "choose another port"
            ) from exc
        host, port = self.config.host, int(self._runner.addresses[0][1])
        if ":" in host:
            host = f"[{host}]"
        self.url = self.config.public_url or f"ws://{host}:{port}{RELAY_PATH}"
        self.bridge_line = BridgeLine(url=self.url, fingerprint=self.identity.fingerprint)
        (self.config.state_dir / BRIDGE_LINE_FILE).write_text(f"{self.bridge_line}\n")
        log.info("egress listening for volunteers at %s", self.url)
        if self.config.admin_port is not None:
            await self._start_admin(self.config.admin_host, self.config.admin_port)
        return self.bridge_line

    async def _start_admin(self, host: str, port: int) -> None:
        admin = web.Application(client_max_size=1024)
        admin.router.add_get("/healthz", self._admin_healthz)
        admin.router.add_get("/metrics", self._admin_metrics)
        self._admin_runner = web.AppRunner(admin, access_log=None, handle_signals=False)
        await self._admin_runner.setup()
        try:
            await web.TCPSite(self._admin_runner, host, port).start()
        except OSError as exc:
            if self.config.admin_optional:
                log.warning(
                    "the admin address (port %d) is not available (%s): /healthz and /metrics "
                    "are not served; set --admin-listen to another port",
                    port,
                    exc.strerror,
                )
                await self._admin_runner.cleanup()
                self._admin_runner = None
                return
            await self.close()
            raise ConfigError(
                f"the egress's admin listener cannot listen on port {port} ({exc.strerror}); "
                "choose another --admin-listen port, or 0 to turn it off"
            ) from exc
        bound = int(self._admin_runner.addresses[0][1])
        shown = f"[{host}]" if ":" in host else host
        self.admin_url = f"http://{shown}:{bound}"
        log.info("egress admin address (/healthz, /metrics) at %s", self.admin_url)

    async def _admin_healthz(self, request: web.Request) -> web.Response:
        draining = self.router.draining
        return web.json_response(
            {
                "ok": not draining,
                "draining": draining,
                "sessions": len(self.router.live),
                "streams": self.router.open_streams,
            },
            status=503 if draining else 200,
        )

    async def _admin_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def drain(
        self, grace: float | None = None, *, stop_now: asyncio.Event | None = None
    ) -> None:
        """Refuse new sessions and streams, wait up to ``grace`` seconds (default
        ``drain_seconds``) for open streams to finish, or until ``stop_now`` is set, then
        close everything. Logs one line per stage, with counts only."""
        grace = self.config.drain_seconds if grace is None else grace
        router = self.router
        router.draining = True
        log.info(
            "draining: refusing new sessions; %d open streams in %d sessions have up to %g s",
            router.open_streams,
            len(router.live),
            grace,
        )
        events = [router.no_open_streams] + ([stop_now] if stop_now is not None else [])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await wait_for_any(events)
        if router.open_streams == 0:
            log.info("drained: every stream finished; closing the sessions")
        elif stop_now is not None and stop_now.is_set():
            log.info("drain cut short: closing %d open streams now", router.open_streams)
        else:
            log.info("drain grace period over: closing %d open streams", router.open_streams)
        await self.close()
        log.info("egress stopped")

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        ws, channel = await accept_websocket_channel(request, metrics=self._channel_metrics)
        relay_id = self.router.new_relay_id()
        self._relays.add(channel)
        self.metrics.relays.inc()

        def on_datagram(datagram: bytes) -> None:
            try:
                self.router.receive(datagram, relay_id, channel)
            except Exception:  # a bug in one session must not end the relay's other sessions
                log.exception("dropping a datagram that broke the router")
                self.metrics.dropped.labels("internal_error").inc()

        channel.start(on_datagram, lambda: None)
        try:
            await channel.wait_closed()
        finally:
            self._relays.discard(channel)
            self.metrics.relays.dec()
            await channel.close()
        return ws

    async def _healthz(self, request: web.Request) -> web.Response:
        # The relay listener is public: it says only that the egress is up. Counts (how busy
        # the egress is, whether a flood works) are on the admin listener.
        return web.json_response({"ok": True})

    def replace_policy(self, policy: DestinationPolicy) -> None:
        """Judge streams opened from now on by ``policy``; streams already open keep going."""
        self.config = replace(self.config, policy=policy)
        self.router.config = self.config

    async def close(self) -> None:
        """Close every session and relay, then stop listening."""
        self.router.close()
        for channel in list(self._relays):
            await channel.close()
        await self._tasks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
