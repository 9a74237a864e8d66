"""The client's side of the tunnel: volunteer paths, one QUIC session over them, streams.

:class:`PathPool` keeps up to ``volunteers`` WebRTC data channels open, each obtained by a
rendezvous through the broker, and replaces one as soon as it closes. :class:`TunnelClient`
runs one QUIC session to the egress over the pool (sending on the oldest healthy path,
receiving on all), checks the egress's certificate against the bridge line, and opens one
QUIC stream per proxied connection: it is the :class:`~ferry.transport.stream.StreamOpener`
behind the local proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ferry.client.rendezvous import Rendezvous
from ferry.core.addresses import Target
from ferry.core.bridge_line import BridgeLine
from ferry.core.codes import DEFAULT_MESSAGE, ReplyCode
from ferry.core.path_policy import PathPolicy, PathPolicyConfig, PathStatus
from ferry.core.retry_after import retry_delay
from ferry.core.route_key import new_route_key, with_route_key
from ferry.core.stream_header import StreamReply, StreamReplyDecoder, encode_request
from ferry.errors import (
    BrokerError,
    ChannelClosedError,
    EgressIdentityError,
    FerryError,
    NoVolunteerError,
    SessionError,
    StreamRefusedError,
)
from ferry.logs import get_logger
from ferry.tasks import TaskOwner
from ferry.transport.datagram import DatagramChannel
from ferry.transport.quic import (
    SESSION_ERROR_IDENTITY,
    QuicByteStream,
    QuicSession,
    QuicSettings,
    peer_certificate_fingerprint,
)
from ferry.transport.webrtc import (
    OfferingEndpoint,
    PeerFactory,
    PythonPeers,
    WebRtcConfig,
    WebRtcStackStatus,
)

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TunnelConfig:
    """Settings of the client's tunnel (everything but the local proxy port)."""

    bridge: BridgeLine
    """Which egress to use and the fingerprint of its certificate."""
    volunteers: int = 2
    """Volunteer paths that carry the session at once."""
    spare_volunteers: int = 1
    """Extra volunteer paths kept connected and ready to take over."""
    volunteer_wait: float = 20.0
    """Seconds a new connection waits for a first volunteer before it is refused (503)."""
    rendezvous_backoff_initial: float = 0.5
    """Seconds before retrying a failed rendezvous; doubles on each failure."""
    rendezvous_backoff_max: float = 10.0
    """Cap on the rendezvous retry delay."""
    retry_after_max: float = 300.0
    """Longest wait, in seconds, taken from a broker's ``Retry-After`` (429 or 503): no
    rendezvous goes to the broker before what it asked for has passed, up to this."""
    stream_reply_timeout: float = 30.0
    """Seconds to wait for the egress's answer to a stream request."""
    monitor_interval: float = 0.05
    """Seconds between checks of path health and session liveness."""
    silence_timeout: float = 0.5
    """Seconds a path may stay silent (while another path hears the egress) before it is
    dropped and replaced."""
    egress_silence_timeout: float = 4.0
    """Seconds without any packet from the egress, while volunteer paths are open and
    probed, after which the session counts as lost (the egress restarted or dropped it)."""
    quic: QuicSettings = field(default_factory=QuicSettings)
    """QUIC session tunables."""
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    """WebRTC tunables."""

    def path_policy(self) -> PathPolicyConfig:
        """The sans-IO path policy's share of this configuration."""
        return PathPolicyConfig(
            active_paths=self.volunteers,
            spare_paths=self.spare_volunteers,
            silence_timeout=self.silence_timeout,
            min_silence_timeout=min(0.25, self.silence_timeout),
            # When every path is silent the egress is the likelier culprit: the session's
            # liveness check (egress_silence_timeout) acts first, paths only much later.
            lone_silence_timeout=max(self.silence_timeout, 2 * self.egress_silence_timeout),
        )


class VolunteerPath:
    """One open data channel to a volunteer."""

    def __init__(
        self, number: int, channel: DatagramChannel, peer: OfferingEndpoint, route_key: str
    ) -> None:
        self.number = number
        self.channel = channel
        self.peer = peer
        self.route_key = route_key
        """The routing key its offer carried (:mod:`ferry.core.route_key`)."""


class PathPool:
    """Keeps volunteer paths open and spreads the session's datagrams over them.

    The decisions (which path, which are dead, how many to open) are made by the sans-IO
    :class:`~ferry.core.path_policy.PathPolicy`; this class does the I/O: rendezvous, data
    channels, probes. When the broker asks for a wait (``Retry-After``), no path's rendezvous
    goes before it has passed (up to ``retry_after_max``).

    ``on_datagram`` gets every datagram a path delivers and answers whether QUIC
    authenticated it: only those count as the path being alive (and towards its speed), so a
    volunteer that drops the session's traffic and sends junk back is dropped like a silent
    one.
    """

    def __init__(
        self,
        config: TunnelConfig,
        rendezvous: Rendezvous,
        on_datagram: Callable[[bytes], bool],
        peers: PeerFactory | None = None,
    ) -> None:
        self._config = config
        self._rendezvous = rendezvous
        self.peers: PeerFactory = peers or PythonPeers(config.webrtc)
        """Makes the WebRTC peers: aiortc's, or a browser engine's."""
        self._on_datagram = on_datagram
        self._loop = asyncio.get_running_loop()
        self._tasks = TaskOwner("client-paths")
        self.policy = PathPolicy(config.path_policy())
        self.paths: dict[int, VolunteerPath] = {}
        self._changed = asyncio.Event()
        self._next_number = 0
        self._closing = False
        self.last_error: str = ""
        self.last_failure: FerryError | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.datagrams_refused = 0
        """Datagrams from volunteers that QUIC did not accept (junk, duplicates)."""
        self.paths_opened = 0
        self.paths_lost = 0
        self.datagrams_dropped = 0
        self.on_path_added: Callable[[int], None] | None = None
        self.newest_path_opened_at: float | None = None
        self._broker_quiet_until = 0.0
        """Loop time before which no rendezvous goes to the broker (its Retry-After)."""
        self.route_key = new_route_key()
        """The routing key every new path's offer carries: all paths of one session reach
        the same egress process behind a balancer (:mod:`ferry.core.route_key`)."""

    def start(self) -> None:
        """Begin opening paths in the background."""
        self._open_more(self.policy.wanted())

    def _open_more(self, count: int) -> None:
        for _ in range(count):
            self.policy.opening(1)
            self._tasks.spawn(self._open_path(), name="open-path")

    async def _open_path(self) -> None:
        delay = self._config.rendezvous_backoff_initial
        try:
            while True:
                await self._wait_for_broker()
                peer: OfferingEndpoint | None = None
                try:
                    ice_servers = await self._rendezvous.ice_servers()
                    peer = self.peers.offering_peer(ice_servers)
                    offer = await peer.create_offer()
                    route_key = self.route_key
                    answer = await self._rendezvous.exchange(
                        with_route_key(offer, route_key), self._config.bridge.url
                    )
                    try:
                        channel = await peer.accept_answer(answer)
                    except ChannelClosedError:
                        self._rendezvous.forget_ice_servers()
                        raise
                except FerryError as exc:
                    if peer is not None:
                        await peer.close()
                    self.last_error = str(exc)
                    self.last_failure = exc
                    wait = self._retry_wait(delay, exc)
                    log.info("could not reach a volunteer (%s); retrying in %.1f s", exc, wait)
                    await asyncio.sleep(wait)
                    delay = min(delay * 2, self._config.rendezvous_backoff_max)
                    continue
                except BaseException:
                    if peer is not None:
                        await peer.close()
                    raise
                if route_key != self.route_key:  # a new session began meanwhile: start over
                    await channel.close()
                    await peer.close()
                    continue
                self._add(channel, peer, route_key)
                return
        finally:
            self.policy.opening(-1)

    def _retry_wait(self, backoff: float, failure: FerryError) -> float:
        """The wait before this path's next rendezvous; holds every path back as long as the
        broker asked (capped), if it did."""
        asked = failure.retry_after if isinstance(failure, BrokerError) else None
        if asked is None:
            return backoff
        held = retry_delay(0.0, asked, self._config.retry_after_max)
        self._broker_quiet_until = max(self._broker_quiet_until, self._loop.time() + held)
        return retry_delay(backoff, asked, self._config.retry_after_max)

    async def _wait_for_broker(self) -> None:
        """Wait out the broker's last Retry-After (another path may have been told)."""
        for _ in range(100):  # each round is a new Retry-After another path was told
            remaining = self._broker_quiet_until - self._loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)

    def _add(self, channel: DatagramChannel, peer: OfferingEndpoint, route_key: str) -> None:
        self._next_number += 1
        number = self._next_number
        path = VolunteerPath(number, channel, peer, route_key)
        self.paths[number] = path
        self.newest_path_opened_at = self._loop.time()
        self.policy.add(number, self.newest_path_opened_at)
        self.paths_opened += 1
        log.info("volunteer path %d open (%d in use)", number, len(self.paths))

        def on_datagram(datagram: bytes) -> None:
            if self._on_datagram(datagram):
                self.bytes_received += len(datagram)
                self.policy.on_received(number, len(datagram), self._loop.time())
            else:
                self.datagrams_refused += 1

        def on_close() -> None:
            self._forget(number, "closed")

        channel.start(on_datagram, on_close)
        self._changed.set()
        if self.on_path_added is not None:
            self.on_path_added(number)

    def _forget(self, number: int, why: str) -> None:
        path = self.paths.pop(number, None)
        self.policy.remove(number)
        if path is None:
            return
        self.paths_lost += 1
        log.info("volunteer path %d %s (%d left)", number, why, len(self.paths))
        self._changed.set()
        if not self._closing:
            self._tasks.spawn(self._close_path(path), name="close-path")
            self._open_more(self.policy.wanted())

    def new_route_key(self) -> None:
        """Draw a new routing key for the next session and drop the paths of the old one.

        Called when the session is lost: its paths may lead to an egress process that no
        longer holds it, and a new session must not be split between that process and the one
        the balancer picks for the new key. Replacements open at once.
        """
        self.route_key = new_route_key()
        for number in [n for n, path in self.paths.items() if path.route_key != self.route_key]:
            self._forget(number, "belonged to the lost session")

    async def _close_path(self, path: VolunteerPath) -> None:
        await path.channel.close()
        await path.peer.close()

    def tick(self, probe: Callable[[int], None]) -> None:
        """Drop silent paths, probe the ones due, open replacements (and a scout)."""
        scouts = self.policy.scouts_opened
        decision = self.policy.tick(self._loop.time())
        if self.policy.scouts_opened != scouts:
            log.info(
                "every volunteer path went silent: asking for one more volunteer, to tell "
                "volunteers that died together from a silent egress"
            )
        for number in decision.drop:
            self._forget(number, "went silent and was dropped")
        for number in decision.probe:
            if number in self.paths:
                probe(number)
        self._open_more(self.policy.wanted())  # after the drops above opened replacements

    def send(self, datagram: bytes) -> None:
        """Send one datagram of the session on the path the policy picks."""
        number = self.policy.choose()
        if number is None:
            self.datagrams_dropped += 1
            return
        self.send_on(number, datagram)

    def send_on(self, number: int, datagram: bytes, *, data: bool = True) -> None:
        """Send one datagram on a given path (probes)."""
        path = self.paths.get(number)
        if path is None or not path.channel.send(datagram):
            self.datagrams_dropped += 1
            return
        self.bytes_sent += len(datagram)
        self.policy.on_sent(number, len(datagram), self._loop.time(), data=data)

    @property
    def open_paths(self) -> int:
        """Paths open now."""
        return len(self.paths)

    async def wait_for_path(self, timeout: float, count: int = 1) -> None:
        """Wait until ``count`` paths are open, or raise :class:`NoVolunteerError`."""
        deadline = self._loop.time() + timeout
        while len(self.paths) < count:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                detail = f" (last error: {self.last_error})" if self.last_error else ""
                raise NoVolunteerError(f"no volunteer was reachable within {timeout:g} s{detail}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def close(self) -> None:
        """Close every path and stop opening new ones."""
        self._closing = True
        await self._tasks.close()
        for path in list(self.paths.values()):
            await self._close_path(path)
        self.paths.clear()


async def read_stream_reply(stream: QuicByteStream) -> tuple[StreamReply, bytes]:
    """Read the egress's reply to a stream request (docs/protocol.md §5): the reply and the
    bytes that arrived after it. :class:`ProtocolError` if the reply is malformed or the
    stream ends first."""
    decoder = StreamReplyDecoder()
    while True:
        data = await stream.receive_some()
        if not data:
            decoder.feed_eof()
        reply = decoder.feed(data)
        if reply is not None:
            return reply, decoder.leftover


class PrefixedStream:
    """A stream whose first bytes were already read (data that followed the stream reply)."""

    def __init__(self, stream: QuicByteStream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        if self._prefix:
            chunk, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return chunk
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    def abort(self) -> None:
        self._stream.abort()


@dataclass(frozen=True, slots=True)
class TunnelStatus:
    """What the tunnel is doing, for status lines and pages."""

    connected: bool
    """A session to the egress is up."""
    session_age: float
    """Seconds since the current session was established (0 when not connected)."""
    paths: tuple[PathStatus, ...]
    """Every open volunteer path, oldest first."""
    sessions_started: int
    """Sessions established since start (more than 1 means the egress was lost)."""
    paths_opened: int
    """Volunteer paths opened since start."""
    paths_lost: int
    """Volunteer paths lost since start."""
    last_error: str
    """The last rendezvous error, if any."""
    bytes_sent: int = 0
    """Bytes of session datagrams sent to volunteers since start (probes included)."""
    bytes_received: int = 0
    """Bytes of session datagrams received from volunteers since start."""
    webrtc: WebRtcStackStatus = field(default_factory=lambda: WebRtcStackStatus("python"))
    """Which WebRTC stack carries the paths (browser engine or aiortc), with any warning."""


LEAVE_PROCESS = frozenset({"egress shutting down", "egress draining"})
"""Reasons an egress gives for ending or refusing a session after which the client's next
session takes a new routing key (and new paths): the process is draining or stopping, and
behind a balancer another process can serve it."""


class TunnelClient:
    """One QUIC session to the egress over a pool of volunteer paths; a ``StreamOpener``."""

    def __init__(
        self, config: TunnelConfig, rendezvous: Rendezvous, peers: PeerFactory | None = None
    ) -> None:
        self.config = config
        self._loop = asyncio.get_running_loop()
        self.pool = PathPool(config, rendezvous, self._on_datagram, peers)
        self.pool.on_path_added = self._on_path_added
        self._session: QuicSession | None = None
        self._receiving: QuicSession | None = None  # the newest session, established or not
        self._session_lock = asyncio.Lock()
        self._tasks = TaskOwner("client-session")
        self._session_started_at = 0.0
        self.sessions_started = 0
        self.sessions_lost = 0

    def start(self) -> None:
        """Start looking for volunteers and watching paths and the session."""
        self.pool.start()
        self._tasks.spawn(self._monitor(), name="monitor")

    @property
    def session(self) -> QuicSession | None:
        """The live QUIC session, if any."""
        session = self._session
        return session if session is not None and not session.closed.is_set() else None

    def _on_datagram(self, datagram: bytes) -> bool:
        session = self._receiving
        return session is not None and session.receive_datagram(datagram)

    def _on_path_added(self, number: int) -> None:
        # A new path gets a probe at once: it measures the path, and after an outage it
        # makes the egress answer (and QUIC retransmit) without waiting for a backed-off timer.
        if self.session is not None:
            self._probe(number)

    def _probe(self, number: int) -> None:
        session = self.session
        if session is None:
            return
        sent_at = self._loop.time()

        def acknowledged() -> None:
            now = self._loop.time()
            self.pool.policy.on_probe_acknowledged(number, now - sent_at, now)

        session.probe(
            lambda datagram: self.pool.send_on(number, datagram, data=False), acknowledged
        )

    async def _monitor(self) -> None:
        """Every ``monitor_interval``: path health, probes, and egress liveness.

        Silence on every path is ambiguous: the volunteers may have died without a word, or
        the egress may have lost the session. So the egress is judged only through a path
        opened *after* it was last heard (a fresh volunteer, probed the moment it opened):
        if the egress stays silent through such a path for ``egress_silence_timeout``, the
        session is lost. Dead volunteers, by contrast, are dropped by the path policy and
        replaced, and the session carries on.
        """
        while True:
            await asyncio.sleep(self.config.monitor_interval)
            self.pool.tick(self._probe)
            session = self.session
            if session is None:
                continue
            now = self._loop.time()
            fresh = self.pool.newest_path_opened_at
            if (
                fresh is not None
                and fresh > session.last_received_at
                and now - fresh > self.config.egress_silence_timeout
            ):
                self.sessions_lost += 1
                log.warning(
                    "the egress stopped answering (for %.0f s, even through a new volunteer); "
                    "it may have restarted: starting a new session",
                    now - session.last_received_at,
                )
                session.close("the egress stopped answering; it may have restarted")
                self.pool.new_route_key()
                self._tasks.spawn(self._reconnect(), name="reconnect")

    async def _reconnect(self) -> None:
        with contextlib.suppress(FerryError):
            await self.ensure_session()

    def status(self) -> TunnelStatus:
        """A snapshot of the tunnel."""
        now = self._loop.time()
        connected = self.session is not None
        return TunnelStatus(
            connected=connected,
            session_age=now - self._session_started_at if connected else 0.0,
            paths=tuple(self.pool.policy.status(now)),
            sessions_started=self.sessions_started,
            paths_opened=self.pool.paths_opened,
            paths_lost=self.pool.paths_lost,
            last_error=self.pool.last_error,
            bytes_sent=self.pool.bytes_sent,
            bytes_received=self.pool.bytes_received,
            webrtc=self.pool.peers.stack_status(),
        )

    async def ensure_session(self) -> QuicSession:
        """The live session, set up first if needed (bounded waits, ferry errors)."""
        async with self._session_lock:
            if self.session is not None:
                return self.session
            if self._session is not None and self._session.close_reason in LEAVE_PROCESS:
                # That egress process is going away: the next session goes where the
                # balancer sends a new routing key (docs/operating.md, several processes).
                self.pool.new_route_key()
            await self.pool.wait_for_path(self.config.volunteer_wait)
            connection = self.config.quic.new_connection(
                self.config.quic.configuration(is_client=True)
            )
            session = QuicSession(connection, settings=self.config.quic, send=self.pool.send)
            self._receiving = session
            session.connect()
            try:
                await session.wait_handshake(self.config.quic.handshake_timeout)
            except SessionError:
                session.close("handshake failed")
                raise
            fingerprint = peer_certificate_fingerprint(connection)
            if fingerprint != self.config.bridge.fingerprint:
                session.close("egress identity mismatch", error_code=SESSION_ERROR_IDENTITY)
                raise EgressIdentityError(
                    "the egress's certificate does not match the bridge line: the bridge line "
                    "may be outdated, or someone is impersonating the egress; get a fresh "
                    "bridge line from a source you trust"
                )
            if session.closed.is_set():
                # An egress refuses a session right after the handshake when it is full or
                # shutting down (docs/protocol.md §5); the reason phrase says which.
                self._session = session  # so that the next attempt sees why
                raise SessionError(f"the egress refused the session: {session.close_reason}")
            self._session = session
            self._session_started_at = self._loop.time()
            self.sessions_started += 1
            log.info("session to the egress established")
            return session

    async def open_stream(self, target: Target) -> PrefixedStream:
        """Open a stream to ``target`` through the egress (see ``StreamOpener``)."""
        session = await self.ensure_session()
        stream = session.open_stream()
        try:
            await stream.send_all(encode_request(target))
            async with asyncio.timeout(self.config.stream_reply_timeout):
                reply, prefix = await read_stream_reply(stream)
        except TimeoutError:
            stream.abort()
            raise StreamRefusedError(
                "the egress did not answer the stream request in time", code=ReplyCode.TIMED_OUT
            ) from None
        except BaseException:
            stream.abort()
            raise
        if reply.code != ReplyCode.SUCCEEDED:
            session.forget_stream(stream)
            raise StreamRefusedError(reply.message or DEFAULT_MESSAGE[reply.code], code=reply.code)
        return PrefixedStream(stream, prefix)

    async def close(self) -> None:
        """Close the session and every path."""
        if self._session is not None:
            self._session.close("client shutting down")
        await self._tasks.close()
        await self.pool.close()
