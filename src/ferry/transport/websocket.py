"""WebSockets (aiohttp) as :class:`~ferry.transport.datagram.DatagramChannel`.

The volunteer relays each client's data channel to the egress over one WebSocket
(docs/protocol.md §4): every **binary** message is exactly one QUIC datagram of
1..``max_message_bytes`` (65,527) bytes. A text message closes the WebSocket with 1003
("ferry relay carries binary messages only"), a larger message with 1009; an empty binary
message is dropped and counted, and the WebSocket stays open.

Either end of an aiohttp WebSocket can be adapted: a :class:`aiohttp.ClientWebSocketResponse`
(the volunteer, via :func:`connect_websocket_channel`) or an
:class:`aiohttp.web.WebSocketResponse` (the egress, via :func:`accept_websocket_channel`).

``send()`` must not block, yet aiohttp's ``send_bytes`` is a coroutine: datagrams go into a
queue bounded by ``high_water_bytes`` that a writer task drains; a datagram that does not fit
is dropped (tail drop, QUIC recovers). A reader task delivers incoming datagrams. Both tasks
are owned by the channel: started by :meth:`WebSocketDatagramChannel.start`, cancelled by
:meth:`WebSocketDatagramChannel.close`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from ferry.errors import ChannelClosedError, ConfigError, LocalError
from ferry.logs import get_logger
from ferry.transport.datagram import CloseHandler, DatagramHandler

__all__ = [
    "MAX_DATAGRAM_BYTES",
    "TEXT_MESSAGE_CLOSE_REASON",
    "WebSocketChannelConfig",
    "WebSocketChannelMetrics",
    "WebSocketDatagramChannel",
    "accept_websocket_channel",
    "connect_websocket_channel",
]

logger = get_logger(__name__)

MAX_DATAGRAM_BYTES = 65527
"""The largest datagram a relay WebSocket message may carry (docs/protocol.md §4)."""

DEFAULT_HIGH_WATER_BYTES = 1024 * 1024
"""Default bound of a channel's outgoing queue; see :class:`WebSocketChannelConfig`."""

DEFAULT_DATAGRAMS_PER_TURN = 16
"""Default datagrams handled per event-loop turn; see :class:`WebSocketChannelConfig`."""

TEXT_MESSAGE_CLOSE_REASON = "ferry relay carries binary messages only"
"""The close reason sent with code 1003 when the peer sends a text message."""

OVERSIZE_CLOSE_REASON = "ferry relay datagrams are at most 65527 bytes"
"""The close reason sent with code 1009 when the peer sends a larger message."""

CLOSE_CODE_NORMAL = 1000
CLOSE_CODE_UNSUPPORTED_DATA = 1003
CLOSE_CODE_MESSAGE_TOO_BIG = 1009
CLOSE_CODE_INTERNAL_ERROR = 1011

AnyWebSocket = aiohttp.ClientWebSocketResponse[bool] | web.WebSocketResponse[bool]
"""Either end of an aiohttp WebSocket."""


@dataclass(frozen=True, slots=True)
class WebSocketChannelConfig:
    """Settings of a relay WebSocket, on the volunteer or the egress side."""

    max_message_bytes: int = MAX_DATAGRAM_BYTES
    """The largest datagram accepted or sent; a larger incoming message closes with 1009."""

    high_water_bytes: int = DEFAULT_HIGH_WATER_BYTES
    """Bytes of datagrams queued for sending above which ``send()`` drops. 1 MiB holds a
    QUIC congestion window at roughly 80 Mbit/s × 100 ms while bounding the delay a slow
    WebSocket adds to about that round trip."""

    connect_timeout: float = 10.0
    """Seconds to wait for the TCP connection and the WebSocket handshake to the egress."""

    close_timeout: float = 5.0
    """Seconds to wait for the peer to answer our close frame before dropping the TCP."""

    heartbeat_interval: float | None = 20.0
    """Seconds between WebSocket pings; a missing pong closes the channel. ``None``: off."""

    datagrams_per_turn: int = DEFAULT_DATAGRAMS_PER_TURN
    """Datagrams the reader (and the writer) handles before it yields to the event loop.
    aiohttp hands over queued messages without suspending, so without this bound one busy
    WebSocket could feed hundreds of datagrams to its session in one loop turn while every
    other session waits (the egress's fair sharing, docs/architecture.md)."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_message_bytes <= MAX_DATAGRAM_BYTES:
            raise ConfigError(
                f"max_message_bytes must be 1..{MAX_DATAGRAM_BYTES}, got {self.max_message_bytes}"
            )
        if self.high_water_bytes < self.max_message_bytes:
            raise ConfigError(
                f"high_water_bytes ({self.high_water_bytes}) must be at least max_message_bytes"
                f" ({self.max_message_bytes}), or the largest datagram could never be sent"
            )
        for name in ("connect_timeout", "close_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.datagrams_per_turn < 1:
            raise ConfigError(f"datagrams_per_turn must be >= 1, got {self.datagrams_per_turn}")
        if self.heartbeat_interval is not None and not self.heartbeat_interval > 0:
            raise ConfigError(
                f"heartbeat_interval must be > 0 seconds or None, got {self.heartbeat_interval}"
            )


class WebSocketChannelMetrics:
    """Prometheus counters shared by every relay WebSocket of one component.

    Create one per :class:`CollectorRegistry` and pass it to each channel.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        datagrams = Counter(
            "ferry_websocket_datagrams",
            "Datagrams on relay WebSockets, by what happened to them.",
            ["event"],
            registry=registry,
        )
        byte_counter = Counter(
            "ferry_websocket_bytes",
            "Bytes of datagrams on relay WebSockets, by what happened to them.",
            ["event"],
            registry=registry,
        )
        self.rejected_messages = Counter(
            "ferry_websocket_rejected_messages",
            "Messages from a relay WebSocket peer that broke docs/protocol.md §4, by reason.",
            ["reason"],
            registry=registry,
        )
        """Protocol violations by the peer: ``text``, ``oversize``, ``empty``."""
        self.sent_datagrams = datagrams.labels("sent")
        self.received_datagrams = datagrams.labels("received")
        self.dropped_datagrams = datagrams.labels("dropped")
        self.sent_bytes = byte_counter.labels("sent")
        self.received_bytes = byte_counter.labels("received")
        self.dropped_bytes = byte_counter.labels("dropped")


class WebSocketDatagramChannel:
    """One aiohttp WebSocket, either end, as a datagram channel (docs/protocol.md §4).

    ``ws`` must already be connected (client) or prepared (server). The channel counts, as
    plain attributes, what it sent, received and dropped (datagrams and bytes) and the
    peer's protocol violations (``rejected_messages``); ``metrics`` adds the same to
    Prometheus.
    """

    def __init__(
        self,
        ws: AnyWebSocket,
        *,
        max_message_bytes: int = MAX_DATAGRAM_BYTES,
        high_water_bytes: int = DEFAULT_HIGH_WATER_BYTES,
        metrics: WebSocketChannelMetrics | None = None,
        datagrams_per_turn: int = DEFAULT_DATAGRAMS_PER_TURN,
    ) -> None:
        if not 1 <= max_message_bytes <= MAX_DATAGRAM_BYTES:
            raise ConfigError(
                f"max_message_bytes must be 1..{MAX_DATAGRAM_BYTES}, got {max_message_bytes}"
            )
        self._ws = ws
        self._max_message_bytes = max_message_bytes
        self._high_water_bytes = high_water_bytes
        self._metrics = metrics
        self._datagrams_per_turn = max(1, datagrams_per_turn)
        self._outgoing: deque[bytes] = deque()
        self._queued_bytes = 0
        self._outgoing_ready = asyncio.Event()
        self._on_datagram: DatagramHandler | None = None
        self._on_close: CloseHandler | None = None
        self._open = not ws.closed
        self._close_reported = False
        self._closed = asyncio.Event()
        if not self._open:
            self._closed.set()
        self._shutdown_started = False
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.sent_datagrams = 0
        self.sent_bytes = 0
        self.received_datagrams = 0
        self.received_bytes = 0
        self.dropped_datagrams = 0
        self.dropped_bytes = 0
        self.rejected_messages = 0

    @property
    def is_open(self) -> bool:
        """True until the channel has closed."""
        return self._open

    @property
    def queued_bytes(self) -> int:
        """Bytes of datagrams waiting for the writer task."""
        return self._queued_bytes

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code once closed (ours or the peer's), else ``None``."""
        return self._ws.close_code

    def start(self, on_datagram: DatagramHandler, on_close: CloseHandler) -> None:
        """Start the reader and writer tasks; ``on_close`` runs once at close."""
        if self._on_datagram is not None:
            raise LocalError("start() was already called on this channel")
        self._on_datagram, self._on_close = on_datagram, on_close
        if not self._open:
            self._report_close()
            return
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read(), name="ferry websocket reader")
        self._writer = loop.create_task(self._write(), name="ferry websocket writer")

    def send(self, datagram: bytes) -> bool:
        """Queue one datagram; ``False`` if it was dropped.

        Dropped when the channel is closed, when the datagram is empty or longer than
        ``max_message_bytes`` (the peer would close the WebSocket for it), or when the queue
        would grow above ``high_water_bytes``.
        """
        size = len(datagram)
        if (
            not self._open
            or not 1 <= size <= self._max_message_bytes
            or self._queued_bytes + size > self._high_water_bytes
        ):
            self._count_drop(size)
            return False
        self._outgoing.append(bytes(datagram))
        self._queued_bytes += size
        self._outgoing_ready.set()
        return True

    async def close(self) -> None:
        """Close the WebSocket with 1000 and stop both tasks (idempotent)."""
        await self._shutdown(CLOSE_CODE_NORMAL, b"")

    async def wait_closed(self) -> None:
        """Wait until the channel has closed, for whatever reason."""
        await self._closed.wait()

    async def _read(self) -> None:
        code, reason = CLOSE_CODE_NORMAL, b""
        handled = 0
        try:
            while True:
                handled += 1
                if handled % self._datagrams_per_turn == 0:
                    await asyncio.sleep(0)  # let other channels and sessions take a turn
                message = await self._ws.receive()
                if message.type is aiohttp.WSMsgType.BINARY:
                    data: bytes = message.data
                    if len(data) > self._max_message_bytes:
                        self._count_rejected("oversize")
                        code, reason = CLOSE_CODE_MESSAGE_TOO_BIG, OVERSIZE_CLOSE_REASON.encode()
                        break
                    if not data:
                        self._count_rejected("empty")
                        continue
                    self._deliver(data)
                elif message.type is aiohttp.WSMsgType.TEXT:
                    self._count_rejected("text")
                    code = CLOSE_CODE_UNSUPPORTED_DATA
                    reason = TEXT_MESSAGE_CLOSE_REASON.encode()
                    break
                elif message.type is aiohttp.WSMsgType.ERROR:
                    error = message.data
                    if isinstance(error, aiohttp.WebSocketError) and (
                        error.code == CLOSE_CODE_MESSAGE_TOO_BIG
                    ):
                        # aiohttp refused it (max_msg_size) and already closed with 1009
                        self._count_rejected("oversize")
                    break
                elif message.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    break
                # PING and PONG are answered by aiohttp itself
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as error:
            logger.debug("relay WebSocket read failed: %s", error)
        except Exception:
            logger.exception("a relay datagram handler failed; closing its WebSocket")
            code, reason = CLOSE_CODE_INTERNAL_ERROR, b""
        await self._shutdown(code, reason)

    async def _write(self) -> None:
        handled = 0
        try:
            while True:
                handled += 1
                if handled % self._datagrams_per_turn == 0:
                    await asyncio.sleep(0)  # let other channels and sessions take a turn
                while not self._outgoing:
                    self._outgoing_ready.clear()
                    await self._outgoing_ready.wait()
                datagram = self._outgoing.popleft()
                self._queued_bytes -= len(datagram)
                await self._ws.send_bytes(datagram)
                self.sent_datagrams += 1
                self.sent_bytes += len(datagram)
                if self._metrics is not None:
                    self._metrics.sent_datagrams.inc()
                    self._metrics.sent_bytes.inc(len(datagram))
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as error:
            logger.debug("relay WebSocket write failed: %s", error)
        await self._shutdown(CLOSE_CODE_NORMAL, b"")

    def _deliver(self, datagram: bytes) -> None:
        self.received_datagrams += 1
        self.received_bytes += len(datagram)
        if self._metrics is not None:
            self._metrics.received_datagrams.inc()
            self._metrics.received_bytes.inc(len(datagram))
        if self._open and self._on_datagram is not None:
            self._on_datagram(datagram)

    async def _shutdown(self, code: int, reason: bytes) -> None:
        """Close once: stop the other task(s), close the WebSocket, report the close."""
        if self._shutdown_started:
            await self._closed.wait()
            return
        self._shutdown_started = True
        self._open = False
        dropped = len(self._outgoing)
        if dropped:
            self.dropped_datagrams += dropped
            self.dropped_bytes += self._queued_bytes
            if self._metrics is not None:
                self._metrics.dropped_datagrams.inc(dropped)
                self._metrics.dropped_bytes.inc(self._queued_bytes)
        self._outgoing.clear()
        self._queued_bytes = 0
        current = asyncio.current_task()
        others = [
            task
            for task in (self._reader, self._writer)
            if task is not None and task is not current and not task.done()
        ]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others)
        try:
            await self._ws.close(code=code, message=reason)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as error:
            logger.debug("closing the relay WebSocket failed: %s", error)
        finally:
            self._closed.set()
            self._report_close()

    def _report_close(self) -> None:
        if not self._close_reported and self._on_close is not None:
            self._close_reported = True
            self._on_close()

    def _count_drop(self, size: int) -> None:
        self.dropped_datagrams += 1
        self.dropped_bytes += size
        if self._metrics is not None:
            self._metrics.dropped_datagrams.inc()
            self._metrics.dropped_bytes.inc(size)

    def _count_rejected(self, reason: str) -> None:
        self.rejected_messages += 1
        if self._metrics is not None:
            self._metrics.rejected_messages.labels(reason).inc()
        logger.info("relay WebSocket peer broke the relay format: %s message", reason)


async def connect_websocket_channel(
    url: str,
    session: aiohttp.ClientSession,
    config: WebSocketChannelConfig | None = None,
    metrics: WebSocketChannelMetrics | None = None,
) -> WebSocketDatagramChannel:
    """Open a relay WebSocket to the egress at ``url`` (the volunteer's side).

    Raises :class:`ChannelClosedError` if the egress cannot be reached or refuses the
    WebSocket, with a message that names neither the egress's address nor the client.
    """
    config = config or WebSocketChannelConfig()
    try:
        async with asyncio.timeout(config.connect_timeout):
            ws = await session.ws_connect(
                url,
                max_msg_size=config.max_message_bytes + 1,  # aiohttp refuses sizes >= limit
                compress=0,  # QUIC packets are encrypted: nothing to compress
                heartbeat=config.heartbeat_interval,
                timeout=aiohttp.ClientWSTimeout(ws_close=config.close_timeout),
                autoclose=True,
                autoping=True,
            )
    except TimeoutError:
        raise ChannelClosedError(
            f"the egress did not accept a WebSocket within {config.connect_timeout:g} s; "
            "it may be down or unreachable from here"
        ) from None
    except aiohttp.WSServerHandshakeError as error:
        raise ChannelClosedError(
            f"the egress refused the relay WebSocket (HTTP {error.status}); check its URL"
        ) from error
    except (aiohttp.ClientError, OSError) as error:
        raise ChannelClosedError(
            f"could not connect to the egress ({type(error).__name__}); "
            "it may be down or unreachable from here"
        ) from error
    return WebSocketDatagramChannel(
        ws,
        max_message_bytes=config.max_message_bytes,
        high_water_bytes=config.high_water_bytes,
        metrics=metrics,
        datagrams_per_turn=config.datagrams_per_turn,
    )


async def accept_websocket_channel(
    request: web.Request,
    config: WebSocketChannelConfig | None = None,
    metrics: WebSocketChannelMetrics | None = None,
) -> tuple[web.WebSocketResponse[bool], WebSocketDatagramChannel]:
    """Upgrade ``request`` to a relay WebSocket (the egress's side).

    Returns the prepared response and its channel. The handler starts the channel, awaits
    :meth:`WebSocketDatagramChannel.wait_closed` and returns the response. aiohttp answers a
    request that is not a WebSocket upgrade with an HTTP error itself.
    """
    config = config or WebSocketChannelConfig()
    ws: web.WebSocketResponse[bool] = web.WebSocketResponse(
        timeout=config.close_timeout,
        heartbeat=config.heartbeat_interval,
        max_msg_size=config.max_message_bytes + 1,  # aiohttp refuses sizes >= limit
        compress=False,
    )
    await ws.prepare(request)
    channel = WebSocketDatagramChannel(
        ws,
        max_message_bytes=config.max_message_bytes,
        high_water_bytes=config.high_water_bytes,
        metrics=metrics,
        datagrams_per_turn=config.datagrams_per_turn,
    )
    return ws, channel
