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
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from aiohttp import web
from aioquic._buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionIdIssued, ConnectionIdRetired, QuicEvent
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from prometheus_client import CollectorRegistry, Counter, Gauge

from ferry.core.bridge_line import BridgeLine
from ferry.core.codes import DEFAULT_MESSAGE, ReplyCode
from ferry.core.relay_shares import RelayShares, RelaySharesConfig
from ferry.core.self_check_target import SELF_CHECK_ANSWER, SELF_CHECK_TARGET
from ferry.core.stream_header import StreamRequestDecoder, encode_reply
from ferry.egress.identity import BRIDGE_LINE_FILE, EgressIdentity, load_or_create_identity
from ferry.egress.policy import DestinationPolicy
from ferry.egress.upstream import (
    Resolver,
    SystemResolver,
    UpstreamConfig,
    UpstreamMetrics,
    connect_upstream,
)
from ferry.errors import ConfigError, ProtocolError, RemoteError, StreamRefusedError
from ferry.logs import get_logger
from ferry.tasks import TaskOwner
from ferry.transport.datagram import DatagramChannel
from ferry.transport.quic import QuicByteStream, QuicSession, QuicSettings
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
    """QUIC session tunables."""
    relay_shares: RelaySharesConfig = field(default_factory=RelaySharesConfig)
    """How a session's replies are spread over the relays that carry it."""
    max_sessions: int = 10000
    """Sessions at once; new Initial packets beyond it are dropped and counted."""
    request_timeout: float = 15.0
    """Seconds a new stream has to deliver its complete request header."""
    copy_chunk_bytes: int = 65536
    """Largest read from a destination socket."""


class EgressMetrics:
    """Prometheus metrics of one egress, on their own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.sessions = Gauge("ferry_egress_sessions", "QUIC sessions open", registry=registry)
        self.sessions_total = Counter(
            "ferry_egress_sessions_created", "QUIC sessions created", registry=registry
        )
        self.sessions_lost = Counter(
            "ferry_egress_sessions_lost",
            "QUIC sessions ended, by reason",
            ["reason"],
            registry=registry,
        )
        self.relays = Gauge("ferry_egress_relays", "Volunteer WebSockets open", registry=registry)
        self.streams = Counter(
            "ferry_egress_streams", "Streams opened by clients", registry=registry
        )
        self.refused = Counter(
            "ferry_egress_streams_refused",
            "Stream requests refused, by reply code",
            ["code"],
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
            "Bytes carried for clients, by direction",
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


class RoutedSession:
    """A QUIC session at the egress and the relays that carry it."""

    def __init__(self, router: SessionRouter, connection: QuicConnection) -> None:
        self.router = router
        self._loop = asyncio.get_running_loop()
        self.relays: dict[int, DatagramChannel] = {}
        self.shares = RelayShares(router.config.relay_shares)
        self.connection_ids: set[bytes] = set()
        self.quic = QuicSession(
            connection,
            settings=router.config.quic,
            send=self._send,
            on_stream=router.on_stream,
            on_event=self._on_event,
        )

    def heard_from(self, relay_id: int, relay: DatagramChannel) -> None:
        """Note that ``relay`` just delivered an authenticated packet of this session."""
        self.relays[relay_id] = relay
        self.shares.heard(relay_id, self._loop.time())

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
        if isinstance(event, ConnectionIdIssued):
            self.connection_ids.add(event.connection_id)
            self.router.sessions[event.connection_id] = self
        elif isinstance(event, ConnectionIdRetired):
            self.connection_ids.discard(event.connection_id)
            self.router.sessions.pop(event.connection_id, None)


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
        self._quic_configuration = config.quic.configuration(is_client=False)
        self._quic_configuration.certificate = identity.certificate
        self._quic_configuration.private_key = identity.private_key
        self._next_relay_id = 0

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
            session = self._maybe_create(header.packet_type, header.version, datagram, header)
            if session is None:
                return
        known_relay = relay_id in session.relays
        accepted = session.quic.receive_datagram(datagram)
        if accepted:
            if not known_relay and session.relays:
                self.metrics.path_changes.labels("validated").inc()
            session.heard_from(relay_id, relay)
        elif not known_relay:
            # A packet naming this session came on a new relay and did not authenticate:
            # an injection or corruption. The relay does not become a path of the session.
            self.metrics.path_changes.labels("failed").inc()

    def _maybe_create(
        self, packet_type: QuicPacketType, version: int | None, datagram: bytes, header: object
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
        if len(self.live) >= self.config.max_sessions:
            self.metrics.dropped.labels("too_many_sessions").inc()
            return None
        original_cid: bytes = header.destination_cid  # type: ignore[attr-defined]
        connection = self.config.quic.new_connection(
            self._quic_configuration, original_destination_connection_id=original_cid
        )
        session = RoutedSession(self, connection)
        # aioquic announces later connection IDs through events, but not these two.
        for connection_id in (original_cid, connection.host_cid):
            session.connection_ids.add(connection_id)
            self.sessions[connection_id] = session
        self.live.add(session)
        self.metrics.sessions.inc()
        self.metrics.sessions_total.inc()
        self.tasks.spawn(self._watch(session), name="session")
        return session

    async def _watch(self, session: RoutedSession) -> None:
        try:
            await session.quic.closed.wait()
        finally:
            self.metrics.sessions_lost.labels(session_end_reason(session.quic)).inc()
            for connection_id in session.connection_ids:
                if self.sessions.get(connection_id) is session:
                    del self.sessions[connection_id]
            self.live.discard(session)
            self.metrics.sessions.dec()

    def on_stream(self, stream: QuicByteStream) -> None:
        """Called by a session for each stream a client opens."""
        self.metrics.streams.inc()
        self.tasks.spawn(self._serve_stream(stream), name="stream")

    async def _serve_stream(self, stream: QuicByteStream) -> None:
        try:
            await self._serve_stream_or_fail(stream)
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

    async def _serve_stream_or_fail(self, stream: QuicByteStream) -> None:
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
            async with asyncio.TaskGroup() as group:
                group.create_task(self._client_to_destination(stream, writer))
                group.create_task(self._destination_to_client(reader, stream))
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()

    async def _refuse(self, stream: QuicByteStream, code: ReplyCode, message: str) -> None:
        await stream.send_all(encode_reply(code, message or DEFAULT_MESSAGE[code]))
        await stream.send_eof()

    async def _client_to_destination(
        self, stream: QuicByteStream, writer: asyncio.StreamWriter
    ) -> None:
        upstream_bytes = self.metrics.bytes.labels("upstream")
        while data := await stream.receive_some(self.config.copy_chunk_bytes):
            writer.write(data)
            upstream_bytes.inc(len(data))
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def _destination_to_client(
        self, reader: asyncio.StreamReader, stream: QuicByteStream
    ) -> None:
        downstream_bytes = self.metrics.bytes.labels("downstream")
        while data := await reader.read(self.config.copy_chunk_bytes):
            await stream.send_all(data)
            downstream_bytes.inc(len(data))
        await stream.send_eof()

    def close(self) -> None:
        """Close every session."""
        for session in list(self.live):
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
        self._relays: set[WebSocketDatagramChannel] = set()
        self.url = ""
        self.bridge_line: BridgeLine | None = None

    async def start(self) -> BridgeLine:
        """Listen for volunteers; returns the bridge line (also written to the state folder)."""
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
        return self.bridge_line

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
        return web.json_response({"ok": True, "sessions": len(self.router.live)})

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
