"""The client's local proxy port: SOCKS5 and HTTP CONNECT for applications.

A thin asyncio shell around :class:`ferry.core.proxy_handshake.ProxyHandshake`. For each
application connection it runs the handshake (bounded by ``handshake_timeout``), asks the
:class:`~ferry.transport.stream.StreamOpener` for a stream to the target, replies, forwards
any pipelined bytes, then copies bytes both ways with half-close until both directions are
finished or either fails. Every connection runs in a task the proxy owns and cancels on
:meth:`LocalProxy.close`; one connection's failure never reaches another or the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from ferry.core.codes import ReplyCode
from ferry.core.proxy_handshake import (
    NEED_DATA,
    ConnectRequest,
    Credentials,
    HandshakeFailed,
    ProxyHandshake,
    SendBytes,
)
from ferry.errors import (
    ConfigError,
    LocalError,
    NoVolunteerError,
    RemoteError,
    StreamRefusedError,
)
from ferry.logs import get_logger, redact
from ferry.transport.stream import ByteStream, StreamOpener

__all__ = ["LocalProxy", "LocalProxyConfig"]

logger = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LocalProxyConfig:
    """Settings of the local SOCKS5/HTTP CONNECT port."""

    host: str = "127.0.0.1"
    """Address to listen on. Keep it on loopback unless the whole network may use the proxy."""
    port: int = 1080
    """TCP port to listen on; 0 picks any free port (see :meth:`LocalProxy.start`)."""
    credentials: Credentials | None = None
    """When set, applications must present these (RFC 1929 or HTTP Basic)."""
    handshake_timeout: float = 10.0
    """Seconds an application has to finish its SOCKS5 or HTTP CONNECT request."""
    max_connections: int = 1024
    """Application connections served at once; more are closed at once and counted."""
    read_chunk_bytes: int = 65536
    """Largest read from the application or the stream at a time."""
    max_request_bytes: int = 8192
    """Cap on an HTTP CONNECT request head (request line, headers, empty line)."""
    failure_linger: float = 2.0
    """After a failure reply, seconds to keep reading (and discarding) what the application
    still sends before closing, so the reply is not lost to a TCP reset."""
    close_timeout: float = 5.0
    """Seconds to wait for buffered bytes to reach the application when closing; then abort."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"proxy port {self.port} is outside 0..65535")
        for name in ("handshake_timeout", "failure_linger", "close_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.max_connections < 1:
            raise ConfigError("max_connections must be at least 1")
        if self.read_chunk_bytes < 1:
            raise ConfigError("read_chunk_bytes must be at least 1")
        if self.max_request_bytes < 64:
            raise ConfigError("max_request_bytes must be at least 64")


class LocalProxy:
    """Serves SOCKS5 and HTTP CONNECT on one port, tunnelling through ``opener``.

    Metrics, on ``registry``: ``ferry_client_proxy_connections_total`` (accepted),
    ``ferry_client_proxy_rejected_total{reason}`` (refused handshakes and connections over
    the limit), ``ferry_client_proxy_open_failures_total{reason}`` (tunnels that could not
    be opened) and ``ferry_client_proxy_open_connections`` (now).
    """

    def __init__(
        self, opener: StreamOpener, config: LocalProxyConfig, registry: CollectorRegistry
    ) -> None:
        self._opener = opener
        self._config = config
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._connections_total = Counter(
            "ferry_client_proxy_connections",
            "Application connections accepted by the local proxy port.",
            registry=registry,
        )
        self._rejected_total = Counter(
            "ferry_client_proxy_rejected",
            "Application connections refused before a tunnel was asked for, by reason.",
            ["reason"],
            registry=registry,
        )
        self._open_failures_total = Counter(
            "ferry_client_proxy_open_failures",
            "Tunnels the local proxy could not open, by reason.",
            ["reason"],
            registry=registry,
        )
        self._open_connections = Gauge(
            "ferry_client_proxy_open_connections",
            "Application connections the local proxy is serving now.",
            registry=registry,
        )

    async def start(self) -> tuple[str, int]:
        """Start listening; returns the bound ``(host, port)``."""
        if self._server is not None or self._closing:
            raise LocalError("LocalProxy.start() may be called once, before close()")
        try:
            self._server = await asyncio.start_server(
                self._accept, self._config.host, self._config.port
            )
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {self._config.host}:{self._config.port}: {error.strerror}; "
                "choose another --proxy-port"
            ) from error
        sockname = self._server.sockets[0].getsockname()
        host, port = str(sockname[0]), int(sockname[1])
        logger.info("local proxy listening on port %d (SOCKS5 and HTTP CONNECT)", port)
        return host, port

    async def close(self) -> None:
        """Stop accepting, abort every connection and wait for their tasks to end."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- per connection ----------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain function, so asyncio creates no task of its own: we own the one below.
        self._connections_total.inc()
        if self._closing or len(self._tasks) >= self._config.max_connections:
            self._rejected_total.labels(reason="too_many_connections").inc()
            writer.transport.abort()
            return
        task = asyncio.create_task(self._serve_connection(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._open_connections.inc()
        graceful = False
        try:
            graceful = await self._handle(reader, writer)
        except (OSError, RemoteError) as error:
            logger.debug("application connection ended: %s", type(error).__name__)
        except Exception:
            logger.exception("unexpected error serving an application connection")
        finally:
            self._open_connections.dec()
            if graceful:
                await self._close_writer(writer)
            else:
                writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one connection; returns whether it may be closed gracefully."""
        handshake = ProxyHandshake(self._config.credentials, self._config.max_request_bytes)
        try:
            async with asyncio.timeout(self._config.handshake_timeout):
                request = await self._run_handshake(handshake, reader, writer)
        except TimeoutError:
            self._rejected_total.labels(reason="handshake_timeout").inc()
            logger.debug("application did not finish its proxy request in time")
            return False
        if request is None:
            return True
        stream = await self._open_stream(handshake, request, reader, writer)
        if stream is None:
            return True
        failed = False
        try:
            try:
                if handshake.leftover:
                    await stream.send_all(handshake.leftover)
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._copy_application_to_stream(reader, stream))
                    group.create_task(self._copy_stream_to_application(stream, writer))
            except* (OSError, RemoteError) as errors:
                failed = True
                names = sorted({type(error).__name__ for error in errors.exceptions})
                logger.debug("tunnel ended by an error: %s", ", ".join(names))
        except BaseException:
            stream.abort()
            raise
        if failed:
            stream.abort()
        return not failed

    async def _run_handshake(
        self,
        handshake: ProxyHandshake,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> ConnectRequest | None:
        while True:
            event = handshake.next_event()
            if event is NEED_DATA:
                handshake.receive_data(await reader.read(self._config.read_chunk_bytes))
            elif isinstance(event, SendBytes):
                writer.write(event.data)
                await writer.drain()
            elif isinstance(event, HandshakeFailed):
                self._rejected_total.labels(reason=event.reason).inc()
                logger.debug("refused a proxy request: %s", event.message)
                await self._reply_and_linger(event.reply, reader, writer)
                return None
            else:
                return event

    async def _open_stream(
        self,
        handshake: ProxyHandshake,
        request: ConnectRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> ByteStream | None:
        """Open the tunnel and reply; ``None`` if it failed (the reply is sent then)."""
        try:
            stream = await self._opener.open_stream(request.target)
        except StreamRefusedError as error:
            self._open_failures_total.labels(reason="refused").inc()
            try:
                code = ReplyCode(error.code)
            except ValueError:
                code = ReplyCode.GENERAL_FAILURE
            if code is ReplyCode.SUCCEEDED:
                code = ReplyCode.GENERAL_FAILURE
            logger.debug("egress refused a tunnel to %s: code %d", redact(request.target), code)
            reply = handshake.reply_bytes(code, str(error))
        except NoVolunteerError as error:
            self._open_failures_total.labels(reason="no_volunteer").inc()
            logger.warning(
                "no volunteer was reachable, so a %s tunnel to %s could not be opened",
                request.protocol,
                redact(request.target),
            )
            reply = handshake.unavailable_reply_bytes(str(error))
        except RemoteError as error:
            self._open_failures_total.labels(reason="session_error").inc()
            logger.info("could not open a tunnel: %s", type(error).__name__)
            reply = handshake.reply_bytes(ReplyCode.GENERAL_FAILURE, str(error))
        else:
            try:
                writer.write(handshake.reply_bytes(ReplyCode.SUCCEEDED, "connected"))
                await writer.drain()
            except BaseException:
                stream.abort()
                raise
            return stream
        await self._reply_and_linger(reply, reader, writer)
        return None

    async def _reply_and_linger(
        self, reply: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Send a failure reply, finish our side, and drain the application's for a while.

        Closing a socket with unread bytes makes the kernel send a reset, which can destroy
        the reply before the application reads it; reading to EOF first avoids that.
        """
        if reply:
            writer.write(reply)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._config.failure_linger):
                while await reader.read(self._config.read_chunk_bytes):
                    pass

    async def _copy_application_to_stream(
        self, reader: asyncio.StreamReader, stream: ByteStream
    ) -> None:
        while data := await reader.read(self._config.read_chunk_bytes):
            await stream.send_all(data)
        await stream.send_eof()

    async def _copy_stream_to_application(
        self, stream: ByteStream, writer: asyncio.StreamWriter
    ) -> None:
        while data := await stream.receive_some(self._config.read_chunk_bytes):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def _close_writer(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            async with asyncio.timeout(self._config.close_timeout):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            writer.transport.abort()
        except BaseException:
            writer.transport.abort()
            raise
