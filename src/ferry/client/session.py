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

from aioquic.quic.connection import QuicConnection

from ferry.client.rendezvous import Rendezvous
from ferry.core.addresses import Target
from ferry.core.bridge_line import BridgeLine
from ferry.core.codes import DEFAULT_MESSAGE, ReplyCode
from ferry.core.stream_header import StreamReplyDecoder, encode_request
from ferry.errors import (
    EgressIdentityError,
    FerryError,
    NoVolunteerError,
    RemoteError,
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
from ferry.transport.webrtc import OfferingPeer, WebRtcConfig

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TunnelConfig:
    """Settings of the client's tunnel (everything but the local proxy port)."""

    bridge: BridgeLine
    """Which egress to use and the fingerprint of its certificate."""
    volunteers: int = 2
    """Volunteer paths to keep open at once (one carries traffic, the others stand by)."""
    volunteer_wait: float = 20.0
    """Seconds a new connection waits for a first volunteer before it is refused (503)."""
    rendezvous_backoff_initial: float = 0.5
    """Seconds before retrying a failed rendezvous; doubles on each failure."""
    rendezvous_backoff_max: float = 10.0
    """Cap on the rendezvous retry delay."""
    stream_reply_timeout: float = 30.0
    """Seconds to wait for the egress's answer to a stream request."""
    quic: QuicSettings = field(default_factory=QuicSettings)
    """QUIC session tunables."""
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    """WebRTC tunables."""


class VolunteerPath:
    """One open data channel to a volunteer."""

    def __init__(self, number: int, channel: DatagramChannel, peer: OfferingPeer) -> None:
        self.number = number
        self.channel = channel
        self.peer = peer
        self.opened_at = asyncio.get_running_loop().time()


class PathPool:
    """Keeps up to ``config.volunteers`` volunteer paths open, replacing lost ones."""

    def __init__(
        self,
        config: TunnelConfig,
        rendezvous: Rendezvous,
        on_datagram: Callable[[bytes], None],
    ) -> None:
        self._config = config
        self._rendezvous = rendezvous
        self._on_datagram = on_datagram
        self._tasks = TaskOwner("client-paths")
        self.paths: list[VolunteerPath] = []
        self._pending = 0
        self._changed = asyncio.Event()
        self._next_number = 0
        self.last_error: str = ""
        self.paths_opened = 0
        self.paths_lost = 0
        self.datagrams_dropped = 0
        self._closing = False

    def start(self) -> None:
        """Begin opening paths in the background."""
        self._tasks.spawn(self._maintain(), name="maintain")

    async def _maintain(self) -> None:
        while True:
            while len(self.paths) + self._pending < self._config.volunteers:
                self._pending += 1
                self._tasks.spawn(self._open_path(), name="open-path")
            self._changed.clear()
            await self._changed.wait()

    async def _open_path(self) -> None:
        delay = self._config.rendezvous_backoff_initial
        try:
            while True:
                peer = OfferingPeer(self._config.webrtc)
                try:
                    offer = await peer.create_offer()
                    answer = await self._rendezvous.exchange(offer, self._config.bridge.url)
                    channel = await peer.accept_answer(answer)
                except FerryError as exc:
                    await peer.close()
                    self.last_error = str(exc)
                    log.info("could not reach a volunteer (%s); retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._config.rendezvous_backoff_max)
                    continue
                except BaseException:
                    await peer.close()
                    raise
                self._add(channel, peer)
                return
        finally:
            self._pending -= 1
            self._changed.set()

    def _add(self, channel: DatagramChannel, peer: OfferingPeer) -> None:
        self._next_number += 1
        path = VolunteerPath(self._next_number, channel, peer)
        self.paths.append(path)
        self.paths_opened += 1
        log.info("volunteer path %d open (%d in use)", path.number, len(self.paths))

        def on_close() -> None:
            if path in self.paths:
                self.paths.remove(path)
                self.paths_lost += 1
                log.info("volunteer path %d closed (%d left)", path.number, len(self.paths))
            if not self._closing:
                self._tasks.spawn(peer.close(), name="close-peer")
            self._changed.set()

        channel.start(self._on_datagram, on_close)
        self._changed.set()

    def send(self, datagram: bytes) -> None:
        """Send on the oldest open path; drop (QUIC retransmits) if there is none."""
        for path in self.paths:
            if path.channel.is_open:
                if not path.channel.send(datagram):
                    self.datagrams_dropped += 1
                return
        self.datagrams_dropped += 1

    async def wait_for_path(self, timeout: float, count: int = 1) -> None:
        """Wait until ``count`` paths are open, or raise :class:`NoVolunteerError`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while sum(path.channel.is_open for path in self.paths) < count:
            remaining = deadline - loop.time()
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
        for path in list(self.paths):
            await path.channel.close()
            await path.peer.close()
        self.paths.clear()


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


class TunnelClient:
    """One QUIC session to the egress over a pool of volunteer paths; a ``StreamOpener``."""

    def __init__(self, config: TunnelConfig, rendezvous: Rendezvous) -> None:
        self.config = config
        self.pool = PathPool(config, rendezvous, self._on_datagram)
        self._session: QuicSession | None = None
        self._receiving: QuicSession | None = None  # the newest session, established or not
        self._session_lock = asyncio.Lock()
        self._tasks = TaskOwner("client-session")
        self.sessions_started = 0

    def start(self) -> None:
        """Start looking for volunteers."""
        self.pool.start()

    @property
    def session(self) -> QuicSession | None:
        """The live QUIC session, if any."""
        session = self._session
        return session if session is not None and not session.closed.is_set() else None

    def _on_datagram(self, datagram: bytes) -> None:
        session = self._receiving
        if session is not None:
            session.receive_datagram(datagram)

    async def ensure_session(self) -> QuicSession:
        """The live session, set up first if needed (bounded waits, ferry errors)."""
        async with self._session_lock:
            if self.session is not None:
                return self.session
            await self.pool.wait_for_path(self.config.volunteer_wait)
            connection = QuicConnection(
                configuration=self.config.quic.configuration(is_client=True)
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
            self._session = session
            self.sessions_started += 1
            self._tasks.spawn(self._keepalive(session), name="keepalive")
            log.info("session to the egress established")
            return session

    async def _keepalive(self, session: QuicSession) -> None:
        interval = self.config.quic.keepalive_interval
        while not session.closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.closed.wait(), interval)
            if session.closed.is_set():
                log.info("session to the egress ended: %s", session.close_reason)
                return
            with contextlib.suppress(RemoteError, TimeoutError):
                await session.ping(interval)

    async def open_stream(self, target: Target) -> PrefixedStream:
        """Open a stream to ``target`` through the egress (see ``StreamOpener``)."""
        session = await self.ensure_session()
        stream = session.open_stream()
        try:
            await stream.send_all(encode_request(target))
            decoder = StreamReplyDecoder()
            async with asyncio.timeout(self.config.stream_reply_timeout):
                reply = None
                while reply is None:
                    data = await stream.receive_some()
                    if not data:
                        decoder.feed_eof()
                    reply = decoder.feed(data)
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
        return PrefixedStream(stream, decoder.leftover)

    async def close(self) -> None:
        """Close the session and every path."""
        if self._session is not None:
            self._session.close("client shutting down")
        await self._tasks.close()
        await self.pool.close()
