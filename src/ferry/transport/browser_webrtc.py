"""WebRTC in a real browser engine: Chromium owns the peer connections, Python the rest.

A censor tells aiortc from a browser by its DTLS handshake (docs/censorship-resistance.md).
:class:`BrowserEngine` starts the installed Chromium or Chrome headless, with a fresh
temporary profile, on a page it serves on ``127.0.0.1``; the page (``web/webrtc-engine.js``)
creates the ``RTCPeerConnection`` s and their data channels, and the session's datagrams
cross a loopback WebSocket between page and Python (docs/protocol.md §8). What leaves the
machine is then the browser's own ICE, DTLS and SCTP; QUIC, SOCKS and path policy stay in
Python, behind the same :class:`~ferry.transport.webrtc.PeerFactory` interface the aiortc
stack implements.

Nobody else can use the engine's socket:

* the engine page is a file in a folder only this user can read (mode 0700, the file 0600),
  holding a random per-run secret; the browser is started on its ``file://`` URL, so the
  secret is never on a command line (``/proc/PID/cmdline`` is readable by every local user)
  nor on the loopback port, and the file is deleted once the page has connected;
* the WebSocket's first message must repeat the secret, compared in constant time;
* the WebSocket upgrade is refused unless its ``Origin`` is ``null`` (a ``file://`` page;
  every web page has its own origin) and its ``Host`` is the engine's own address (no DNS
  rebinding);
* once the page is in, any second socket is refused.

Chromium's sandbox is on, except as root, where Chromium refuses to start with it
(:func:`sandbox_arguments`; the engine logs that it runs without).

Every refusal is counted in ``ferry_browser_engine_refused{reason}`` and logged.

The browser is its own process group, killed by its id when the engine closes (or the
engine notices it exited: the death is logged, every channel on it closes, and
:class:`WebRtcStack` starts a new browser or, in ``auto`` mode, falls back to aiortc). The
temporary profile is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import shutil
import signal
import struct
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path

from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry, Counter

from ferry.core.ice_servers import IceServer, IceServerError, parse_url
from ferry.errors import ChannelClosedError, ConfigError, LocalError, ProtocolError
from ferry.logs import PUBLIC_ADDRESSES, get_logger
from ferry.tasks import TaskOwner
from ferry.transport.datagram import (
    CloseHandler,
    DatagramChannel,
    DatagramHandler,
    DatagramInbox,
)
from ferry.transport.webrtc import (
    PYTHON_STACK_WARNING,
    AnsweringEndpoint,
    OfferingEndpoint,
    PythonPeers,
    WebRtcConfig,
    WebRtcStackStatus,
    announced_candidates,
    check_data_channel_sdp,
    fail_channel_opening,
    wait_for_channel_open,
    without_mdns_candidates,
)

__all__ = [
    "BROWSER_PATHS",
    "NO_NAME_LOOKUPS",
    "QUIET_HEADLESS_CHROMIUM",
    "BrowserDataChannel",
    "BrowserEngine",
    "BrowserEngineConfig",
    "WebRtcMode",
    "WebRtcStack",
    "browser_arguments",
    "find_browser",
]

log = get_logger(__name__)

BROWSER_PATHS = (
    "/usr/bin/chromium-headless-shell",
    "/usr/bin/chrome-headless-shell",
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
)
"""Where :func:`find_browser` looks, in this order, before searching ``PATH``.

Chromium's headless shell first (Debian's ``chromium-headless-shell``, Google's
``chrome-headless-shell``): the same Chromium build's network, WebRTC and BoringSSL code as
the full browser, so the same handshake on the wire
(``tests/browser/test_dtls_fingerprint.py`` compares it with two pages of the full
browser), without the full browser's user interface layers. Measured against the full
Chromium 156 as the engine (BENCHMARKS.md, issue 16): an idle engine 191 MiB PSS instead of
364, and browser engines on both ends 134–150 CPU ms/MB instead of 145–168."""

_BROWSER_NAMES = tuple(path.rsplit("/", 1)[1] for path in BROWSER_PATHS)
"""The same executables, looked up by name on ``PATH`` in the same order."""
_FRAME_HEADER = struct.Struct("!IH")
_MAX_FRAME_DATAGRAM = 0xFFFF


def find_browser() -> str | None:
    """The first Chromium or Chrome found (:data:`BROWSER_PATHS`, then ``PATH``), or None."""
    for path in BROWSER_PATHS:
        if os.access(path, os.X_OK):
            return path
    for name in _BROWSER_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


class WebRtcMode(Enum):
    """``--webrtc``: which stack runs the WebRTC connections."""

    BROWSER = "browser"
    """Always a browser engine; fail to start if none is found."""
    PYTHON = "python"
    """Always aiortc."""
    AUTO = "auto"
    """A browser engine when one is found and starts, aiortc otherwise (with a warning)."""


@dataclass(frozen=True, slots=True)
class BrowserEngineConfig:
    """Settings of the browser engine."""

    executable: str | None = None
    """The browser to run; ``None``: :func:`find_browser`."""

    start_timeout: float = 30.0
    """Seconds for the browser to start and its page to connect back and authenticate."""

    hello_timeout: float = 5.0
    """Seconds a new engine socket has to send the secret before it is closed."""

    gather_timeout: float = 5.0
    """Seconds the page waits for ICE gathering before sending the SDP as it is."""

    high_water_bytes: int = 1024 * 1024
    """Bytes of datagrams queued towards the page above which ``send()`` drops (and, in the
    page, bytes queued on the socket or a data channel above which it drops)."""

    batch_bytes: int = 64 * 1024
    """Most bytes of datagrams put into one WebSocket message towards the page."""

    stop_timeout: float = 5.0
    """Seconds to wait for the killed browser to be reaped."""

    def __post_init__(self) -> None:
        for name in ("start_timeout", "hello_timeout", "gather_timeout", "stop_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.high_water_bytes < 1 or self.batch_bytes < 1:
            raise ConfigError("high_water_bytes and batch_bytes must be ≥ 1")


QUIET_HEADLESS_CHROMIUM = (
    "--headless",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Headless Chromium that starts no background traffic of its own (measured in
tests/browser/support.py, whose browsers use the same flags)."""

NO_NAME_LOOKUPS = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
"""Every host name resolves to "not found" inside the browser (pages use IP literals)."""


ENGINE_PAGE_ORIGIN = "null"
"""The ``Origin`` a ``file://`` page sends (measured with Chromium 156): the only one the
engine's socket accepts."""


def sandbox_arguments(euid: int) -> list[str]:
    """Chromium's sandbox flags for a process running as ``euid``: none (the sandbox on),
    except as root (0), where Chromium does not start sandboxed: ``--no-sandbox``."""
    return ["--no-sandbox"] if euid == 0 else []


def engine_page(socket_url: str, secret: str) -> str:
    """The engine page's HTML: the socket's URL and the secret, then the engine script."""
    settings = json.dumps({"socket": socket_url, "secret": secret}).replace("</", "<\\/")
    script = resources.files("ferry").joinpath("web/webrtc-engine.js").read_text("utf-8")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>ferry</title></head><body>"
        f"<script>const FERRY_ENGINE = {settings};</script><script>{script}</script>"
        "</body></html>"
    )


def browser_arguments(webrtc: WebRtcConfig) -> list[str]:
    """Chromium's command-line flags for the engine (without profile folder and URL).

    Always headless, no first-run, background networking, component updates or sync (the
    flags tests/browser/support.py measured). Without STUN/TURN servers every host name
    resolves to "not found" inside the browser, so it looks nothing up (measured: Chromium
    still queries update and account servers otherwise); the engine page uses an IP literal.
    Host candidates are named by their addresses, not by mDNS names (``.local``): ferry
    removes every remote ``.local`` candidate (an mDNS name resolves only on the peer's own
    network, and resolving one sends multicast), so two engines that both announced only
    mDNS names had no candidate at all and never connected on one machine. What the page
    announces then goes through the same policy as aiortc's candidates
    (:func:`~ferry.transport.webrtc.announced_candidates`). With ``host_candidate_addresses``
    set (``--ice-address``: tests and demos on loopback) the browser also gathers loopback
    candidates.
    """
    arguments = [
        *QUIET_HEADLESS_CHROMIUM,
        *sandbox_arguments(os.geteuid()),
        "--disable-default-apps",
        "--disable-extensions",
        "--mute-audio",
    ]
    if not webrtc.ice_servers:
        arguments.append(NO_NAME_LOOKUPS)
    arguments.append("--disable-features=WebRtcHideLocalIpsWithMdns")
    if webrtc.host_candidate_addresses is not None:
        arguments.append("--allow-loopback-in-peer-connection")
    return arguments


class BrowserEngineMetrics:
    """Prometheus counters of one browser engine."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "ferry_browser_engine_refused",
            "Connections to the browser engine's loopback socket that were refused, by reason.",
            ["reason"],
            registry=registry,
        )
        """Refused engine connections (wrong origin, host or secret; a second socket)."""
        self.deaths = Counter(
            "ferry_browser_engine_deaths",
            "Times the browser engine exited or its page disconnected unasked.",
            registry=registry,
        )
        """Browser deaths noticed."""


# --- the channel ------------------------------------------------------------------------------


class BrowserDataChannel:
    """One data channel in the browser, as a :class:`~ferry.transport.datagram.DatagramChannel`."""

    def __init__(self, engine: BrowserEngine, peer_id: int, max_held: int) -> None:
        self._engine = engine
        self.peer_id = peer_id
        self._inbox = DatagramInbox(max_held)
        self._open = True
        self.close_reason = ""
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent_datagrams = 0
        self.received_datagrams = 0
        self.dropped_datagrams = 0

    @property
    def is_open(self) -> bool:
        """True until the channel has closed."""
        return self._open

    def start(self, on_datagram: DatagramHandler, on_close: CloseHandler) -> None:
        """Begin delivering datagrams to ``on_datagram``; ``on_close`` runs once at close."""
        self._inbox.start(on_datagram, on_close, closed=not self._open)

    def send(self, datagram: bytes) -> bool:
        """Queue one datagram towards the browser; ``False`` if it was dropped."""
        if not self._open or not self._opened.done():
            self.dropped_datagrams += 1
            return False
        if not self._engine.queue_datagram(self.peer_id, datagram):
            self.dropped_datagrams += 1
            return False
        self.sent_datagrams += 1
        return True

    async def close(self) -> None:
        """Close the data channel and its peer connection in the browser (idempotent)."""
        if self._open:
            self._engine.forget_peer(self.peer_id, tell_page=True)
            self.mark_closed("closed by ferry")

    async def wait_open(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the browser to report the channel open."""
        await wait_for_channel_open(self._opened, timeout, self.close)

    def mark_open(self) -> None:
        """The page reported the channel open (engine use only)."""
        if not self._opened.done():
            self._opened.set_result(None)

    def deliver(self, datagram: bytes) -> None:
        """A datagram from the page (engine use only)."""
        if not self._open:
            return
        self.received_datagrams += 1
        try:
            self._inbox.deliver(datagram)
        except Exception:
            log.exception("a data-channel datagram handler failed; closing the channel")
            self._engine.forget_peer(self.peer_id, tell_page=True)
            self.mark_closed("the datagram handler failed")

    def mark_closed(self, reason: str) -> None:
        """The channel is gone (engine use only); ``on_close`` runs once."""
        if not self._open:
            return
        self._open = False
        self.close_reason = reason
        self._inbox.drop_held()
        fail_channel_opening(
            self._opened, f"the WebRTC connection closed before its data channel opened ({reason})"
        )
        self._inbox.report_close()


# --- the two peers ----------------------------------------------------------------------------


class BrowserOfferingPeer:
    """The offering side of one connection, run by the browser engine (the client)."""

    def __init__(self, engine: BrowserEngine, ice_servers: tuple[IceServer, ...] = ()) -> None:
        self._engine = engine
        self._ice_servers = ice_servers
        self._channel: BrowserDataChannel | None = None

    async def create_offer(self) -> str:
        """Have the page create the connection and data channel; return its offer SDP."""
        if self._channel is not None:
            raise LocalError("create_offer() was already called on this peer")
        self._channel, sdp = await self._engine.request_sdp("offer", None, self._ice_servers)
        return sdp

    async def accept_answer(self, answer_sdp: str) -> BrowserDataChannel:
        """Apply the volunteer's answer and wait (``open_timeout``) for the channel."""
        channel = self._channel
        if channel is None:
            raise LocalError("call create_offer() before accept_answer()")
        if not channel.is_open:
            raise ChannelClosedError("the WebRTC connection was closed before the answer came")
        try:
            check_data_channel_sdp(answer_sdp, "answer")
        except ProtocolError:
            await channel.close()
            raise
        self._engine.send_control(
            {"op": "answer", "peer": channel.peer_id, "sdp": self._engine.filtered(answer_sdp)}
        )
        await channel.wait_open(self._engine.webrtc.open_timeout)
        return channel

    async def close(self) -> None:
        """Close the connection and its channel (idempotent)."""
        if self._channel is not None:
            await self._channel.close()


class BrowserAnsweringPeer:
    """The answering side of one connection, run by the browser engine (a volunteer)."""

    def __init__(self, engine: BrowserEngine, ice_servers: tuple[IceServer, ...] = ()) -> None:
        self._engine = engine
        self._ice_servers = ice_servers
        self._channel: BrowserDataChannel | None = None

    async def accept_offer(self, offer_sdp: str) -> str:
        """Have the page answer the client's offer; return the answer SDP."""
        if self._channel is not None:
            raise LocalError("accept_offer() was already called on this peer")
        check_data_channel_sdp(offer_sdp, "offer")
        self._channel, sdp = await self._engine.request_sdp(
            "accept", self._engine.filtered(offer_sdp), self._ice_servers
        )
        return sdp

    async def wait_channel(self) -> BrowserDataChannel:
        """Wait (``open_timeout``) for the client's data channel to open and return it."""
        if self._channel is None:
            raise LocalError("call accept_offer() before wait_channel()")
        await self._channel.wait_open(self._engine.webrtc.open_timeout)
        return self._channel

    async def close(self) -> None:
        """Close the connection and its channel (idempotent)."""
        if self._channel is not None:
            await self._channel.close()


# --- the engine -------------------------------------------------------------------------------


class BrowserEngine:
    """One headless browser whose page runs WebRTC connections for this process."""

    def __init__(
        self,
        config: BrowserEngineConfig,
        webrtc: WebRtcConfig,
        *,
        metrics: BrowserEngineMetrics | None = None,
    ) -> None:
        self.config = config
        self.webrtc = webrtc
        self.metrics = metrics or BrowserEngineMetrics(CollectorRegistry())
        self.executable = config.executable or find_browser() or ""
        self._secret = secrets.token_urlsafe(32)
        self._tasks = TaskOwner("browser-engine")
        self._runner: web.AppRunner | None = None
        self._origin = ""
        self._host = ""
        self._process: asyncio.subprocess.Process | None = None
        self._profile: str | None = None
        self._page_folder: str | None = None
        self._socket: web.WebSocketResponse | None = None
        self._connected: asyncio.Future[None] | None = None
        self._channels: dict[int, BrowserDataChannel] = {}
        self._pending_sdp: dict[int, asyncio.Future[str]] = {}
        self._next_peer_id = 0
        self._ice_errors_logged: set[tuple[str, int]] = set()
        self._batches: deque[bytearray] = deque()
        self._queued_bytes = 0
        self._batch_ready = asyncio.Event()
        self._alive = False
        self._closing = False
        self.failure = ""
        """Why the engine stopped, once it has."""
        self.on_death: Callable[[str], None] | None = None
        """Called once, with the reason, when the browser dies unasked."""

    @property
    def alive(self) -> bool:
        """True from a successful :meth:`start` until the browser dies or is closed."""
        return self._alive

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` of the engine's page and socket, once serving."""
        return self._host

    @property
    def origin(self) -> str:
        """The engine page's origin (``null``: a ``file://`` page), the only ``Origin`` its
        socket accepts."""
        return ENGINE_PAGE_ORIGIN

    @property
    def profile(self) -> str | None:
        """The browser's temporary profile folder, until the engine is closed."""
        return self._profile

    @property
    def pid(self) -> int | None:
        """The browser's process id (also its process group's), once started."""
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Serve the page, start the browser, wait for its page to authenticate.

        Raises :class:`LocalError` if no browser is found, it cannot be started, or its page
        does not connect within ``start_timeout`` (the browser is then stopped again).
        """
        if not self.executable:
            raise LocalError(
                "no Chromium or Chrome found (looked in "
                + ", ".join(BROWSER_PATHS)
                + " and PATH); install one or give --browser PATH"
            )
        app = web.Application()
        app.router.add_get("/engine/socket", self._serve_socket)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self._host = f"127.0.0.1:{port}"
        self._origin = f"http://{self._host}"
        self._connected = asyncio.get_running_loop().create_future()
        self._profile = tempfile.mkdtemp(prefix="ferry-browser-")
        page = self._write_page()
        if os.geteuid() == 0:
            log.info("running as root: the browser engine's Chromium runs without its sandbox")
        try:
            self._process = await asyncio.create_subprocess_exec(
                self.executable,
                *browser_arguments(self.webrtc),
                f"--user-data-dir={self._profile}",
                page.as_uri(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            await self.close()
            raise LocalError(f"could not start the browser {self.executable}: {error}") from None
        watcher = self._tasks.spawn(self._watch_process(self._process), name="watch-browser")
        await asyncio.wait(
            {self._connected, watcher},
            timeout=self.config.start_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not self._connected.done() or self._connected.cancelled():
            await self.close()
            raise LocalError(
                f"the browser {self.executable} did not open ferry's engine page within "
                f"{self.config.start_timeout:g} s" + (f" ({self.failure})" if self.failure else "")
            )
        self._alive = True
        self._tasks.spawn(self._write_batches(), name="write-batches")
        log.info(
            "browser engine %s running (pid %d, profile %s)",
            self.executable,
            self._process.pid,
            self._profile,
        )

    def _write_page(self) -> Path:
        """Write the engine page into a folder only this user can read; its path."""
        self._page_folder = tempfile.mkdtemp(prefix="ferry-engine-")  # mode 0700
        path = Path(self._page_folder) / "engine.html"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(engine_page(f"ws://{self._host}/engine/socket", self._secret))
        return path

    def _remove_page(self) -> None:
        if self._page_folder is not None:
            shutil.rmtree(self._page_folder, ignore_errors=True)
            self._page_folder = None

    # HTTP side

    def _refuse(self, reason: str, what: str) -> None:
        self.metrics.refused.labels(reason).inc()
        log.warning("refused a connection to the browser engine: %s", what)

    async def _serve_socket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Origin") != ENGINE_PAGE_ORIGIN:
            self._refuse("origin", "it came from another web page or program (wrong Origin)")
            return web.Response(status=403, text="forbidden")
        if request.host != self._host:
            self._refuse("host", "wrong Host header (DNS rebinding?)")
            return web.Response(status=403, text="forbidden")
        if self._socket is not None or self._connected is None or self._connected.done():
            self._refuse("second_socket", "the engine page is already connected")
            return web.Response(status=409, text="already connected")
        # No permessage-deflate: the datagrams are encrypted QUIC packets, which do not
        # compress, and Chromium asks for it by default; with it on, both ends ran zlib over
        # every batch (BENCHMARKS.md, "Levers tried on the browser engine").
        socket = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024, compress=False)
        await socket.prepare(request)
        try:
            async with asyncio.timeout(self.config.hello_timeout):
                hello = await socket.receive()
        except TimeoutError:
            self._refuse("no_secret", "no secret within the time allowed")
            await socket.close()
            return socket
        if not self._is_hello(hello.data if hello.type == WSMsgType.TEXT else None):
            self._refuse("secret", "wrong secret")
            await socket.close()
            return socket
        if self._socket is not None or self._connected.done():
            self._refuse("second_socket", "the engine page is already connected")
            await socket.close()
            return socket
        self._socket = socket
        self._connected.set_result(None)
        self._remove_page()  # loaded and connected: the secret is no longer needed on disk
        try:
            async for message in socket:
                if message.type == WSMsgType.BINARY:
                    self._receive_batch(message.data)
                elif message.type == WSMsgType.TEXT:
                    self._receive_control(message.data)
        finally:
            self._socket = None
            self._died("the browser's engine page disconnected")
        return socket

    def _is_hello(self, text: object) -> bool:
        if not isinstance(text, str) or len(text) > 1024:
            return False
        try:
            message = json.loads(text)
        except ValueError:
            return False
        secret = message.get("secret") if isinstance(message, dict) else None
        return (
            isinstance(message, dict)
            and message.get("op") == "hello"
            and isinstance(secret, str)
            and hmac.compare_digest(secret.encode(), self._secret.encode())
        )

    def _receive_batch(self, data: bytes) -> None:
        view = memoryview(data)
        offset = 0
        while offset + _FRAME_HEADER.size <= len(view):
            peer_id, length = _FRAME_HEADER.unpack_from(view, offset)
            start = offset + _FRAME_HEADER.size
            offset = start + length
            if offset > len(view):
                self.metrics.refused.labels("malformed_frame").inc()
                log.warning("the engine page sent a truncated datagram frame; dropped")
                return
            channel = self._channels.get(peer_id)
            if channel is not None:
                channel.deliver(bytes(view[start:offset]))

    def _receive_control(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("peer"), int):
            self.metrics.refused.labels("malformed_control").inc()
            log.warning("the engine page sent a malformed control message; ignored")
            return
        op, peer_id = message.get("op"), message["peer"]
        sdp, reason = message.get("sdp"), message.get("reason")
        if op in ("offered", "answered") and isinstance(sdp, str):
            waiter = self._pending_sdp.pop(peer_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(sdp)
        elif op == "open":
            channel = self._channels.get(peer_id)
            if channel is not None:
                channel.mark_open()
        elif op in ("closed", "refused"):
            why = reason if isinstance(reason, str) else "the peer opened a channel ferry refuses"
            self.forget_peer(peer_id, tell_page=False, reason=why)
        elif op == "ice-error":
            self._report_ice_error(message)
        else:
            self.metrics.refused.labels("malformed_control").inc()
            log.warning("the engine page sent an unknown control message; ignored")

    def _report_ice_error(self, message: dict[str, object]) -> None:
        """Log a STUN or TURN server that failed for the page (its ``icecandidateerror``):
        by the server's URL and the error, never the local address the event also names.
        Each server and code is logged once per engine."""
        url, code, text = message.get("url"), message.get("code"), message.get("text")
        if not isinstance(url, str) or type(code) is not int or not isinstance(text, str):
            self.metrics.refused.labels("malformed_control").inc()
            return
        try:
            server = parse_url(url)
        except IceServerError:
            self.metrics.refused.labels("malformed_control").inc()
            return
        key = (url, code)
        if key in self._ice_errors_logged or len(self._ice_errors_logged) > 64:
            return
        self._ice_errors_logged.add(key)
        kind = "TURN" if server.is_turn else "STUN"
        if code == 701:
            why = "it did not answer (is it blocked, or down?); the other servers are used"
        elif code == 401:
            why = (
                "it refused the credentials (401): the broker's --turn-secret-file does not "
                "hold the TURN server's static-auth-secret, or they expired"
            )
        else:
            why = f"it failed with code {code} ({text[:100]})"
        log.warning(
            "the %s server %s: %s",
            kind,
            url,
            why,
            extra={PUBLIC_ADDRESSES: (server.host,)},
        )

    # peers and datagrams

    def offering_peer(self, ice_servers: tuple[IceServer, ...] = ()) -> BrowserOfferingPeer:
        """A new offering peer in the browser."""
        return BrowserOfferingPeer(self, ice_servers)

    def answering_peer(self, ice_servers: tuple[IceServer, ...] = ()) -> BrowserAnsweringPeer:
        """A new answering peer in the browser."""
        return BrowserAnsweringPeer(self, ice_servers)

    def filtered(self, sdp: str) -> str:
        """A peer's SDP without mDNS candidates, and only on ``remote_candidate_addresses``."""
        return without_mdns_candidates(sdp, only=self.webrtc.remote_candidate_addresses)

    def _page_config(self, ice_servers: tuple[IceServer, ...]) -> dict[str, object]:
        servers: list[dict[str, str]] = []
        for server in self.webrtc.ice_servers + ice_servers:
            entry = {"urls": server.url}
            if server.username is not None:
                entry["username"] = server.username
            if server.credential is not None:
                entry["credential"] = server.credential
            servers.append(entry)
        hosts = self.webrtc.host_candidate_addresses
        remotes = self.webrtc.remote_candidate_addresses
        return {
            "iceServers": servers,
            "hostAddresses": list(hosts) if hosts is not None else None,
            "remoteAddresses": list(remotes) if remotes is not None else None,
            "highWaterBytes": self.config.high_water_bytes,
            "gatherTimeoutMs": int(self.config.gather_timeout * 1000),
        }

    async def request_sdp(
        self, op: str, sdp: str | None, ice_servers: tuple[IceServer, ...] = ()
    ) -> tuple[BrowserDataChannel, str]:
        """Ask the page for a new connection's offer (``op="offer"``) or answer to ``sdp``
        (``op="accept"``); return its channel and SDP. Raises :class:`ChannelClosedError` if
        the engine is down or the page gives no SDP in time."""
        if not self._alive:
            raise ChannelClosedError(
                f"the browser engine is not running ({self.failure or 'not started'})"
            )
        self._next_peer_id += 1
        peer_id = self._next_peer_id
        channel = BrowserDataChannel(self, peer_id, self.webrtc.max_held_datagrams)
        self._channels[peer_id] = channel
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending_sdp[peer_id] = waiter
        message: dict[str, object] = {
            "op": op,
            "peer": peer_id,
            "config": self._page_config(ice_servers),
        }
        if sdp is not None:
            message["sdp"] = sdp
        self.send_control(message)
        try:
            async with asyncio.timeout(self.config.gather_timeout + self.webrtc.open_timeout):
                local_sdp = await waiter
        except TimeoutError:
            self.forget_peer(peer_id, tell_page=True, reason="no SDP from the browser in time")
            raise ChannelClosedError("the browser engine gave no SDP in time") from None
        except BaseException:
            self.forget_peer(peer_id, tell_page=True, reason="abandoned")
            raise
        if not self.webrtc.offer_local_candidates and self.webrtc.host_candidate_addresses is None:
            local_sdp = announced_candidates(local_sdp, keep_public_ipv6_hosts=op == "accept")
        return channel, local_sdp

    def send_control(self, message: dict[str, object]) -> None:
        """Send one control message to the page (dropped if the engine is down)."""
        socket = self._socket
        if socket is None or socket.closed or self._closing:
            return
        self._tasks.spawn(socket.send_str(json.dumps(message)), name="control")

    def forget_peer(self, peer_id: int, *, tell_page: bool, reason: str = "closed") -> None:
        """Drop a peer: close its channel, fail its SDP wait, and optionally tell the page."""
        channel = self._channels.pop(peer_id, None)
        waiter = self._pending_sdp.pop(peer_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(ChannelClosedError(f"the browser closed the connection: {reason}"))
            waiter.exception()
        if channel is not None:
            channel.mark_closed(reason)
        if tell_page:
            self.send_control({"op": "close", "peer": peer_id})

    def queue_datagram(self, peer_id: int, datagram: bytes) -> bool:
        """Queue one datagram for the page; ``False`` (dropped) above the high-water mark."""
        if not self._alive or len(datagram) > _MAX_FRAME_DATAGRAM:
            return False
        if self._queued_bytes > self.config.high_water_bytes:
            return False
        if not self._batches or len(self._batches[-1]) >= self.config.batch_bytes:
            self._batches.append(bytearray())
        batch = self._batches[-1]
        batch += _FRAME_HEADER.pack(peer_id, len(datagram))
        batch += datagram
        self._queued_bytes += _FRAME_HEADER.size + len(datagram)
        self._batch_ready.set()
        return True

    async def _write_batches(self) -> None:
        while True:
            await self._batch_ready.wait()
            self._batch_ready.clear()
            while self._batches:
                batch = self._batches.popleft()
                self._queued_bytes -= len(batch)
                socket = self._socket
                if socket is None or socket.closed:
                    continue
                try:
                    await socket.send_bytes(bytes(batch))
                except (ConnectionError, RuntimeError) as error:
                    log.debug("could not write to the engine page: %s", error)

    # death and closing

    async def _watch_process(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self._died(f"the browser exited with code {code}")

    def _died(self, reason: str) -> None:
        if self._closing or self.failure:
            return
        self.failure = reason
        was_alive, self._alive = self._alive, False
        if self._connected is not None and not self._connected.done():
            self._connected.cancel()
        for peer_id in list(self._channels):
            self.forget_peer(peer_id, tell_page=False, reason=reason)
        if was_alive:
            self.metrics.deaths.inc()
            log.warning("the browser engine stopped: %s", reason)
            if self.on_death is not None:
                self.on_death(reason)

    async def close(self) -> None:
        """Kill the browser (its process group, by id), stop serving, remove the profile."""
        self._closing = True
        self._alive = False
        for peer_id in list(self._channels):
            self.forget_peer(peer_id, tell_page=False, reason="the engine was closed")
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.stop_timeout):
                    await process.wait()
        if self._socket is not None:
            await self._socket.close()
        await self._tasks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None
        self._remove_page()


# --- the choice between the two stacks --------------------------------------------------------


class WebRtcStack:
    """The :class:`~ferry.transport.webrtc.PeerFactory` behind ``--webrtc``: it picks the
    browser engine or aiortc, restarts a browser that died (``browser``) or falls back to
    aiortc for good (``auto``), and reports which is in use."""

    def __init__(
        self,
        mode: WebRtcMode,
        webrtc: WebRtcConfig,
        engine_config: BrowserEngineConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.mode = mode
        self.webrtc = webrtc
        self.engine_config = engine_config or BrowserEngineConfig()
        self.metrics = BrowserEngineMetrics(registry or CollectorRegistry())
        """The engine's counters, kept across browser restarts."""
        self.python = PythonPeers(webrtc)
        """The aiortc peers, used whenever no browser engine is."""
        self._engine: BrowserEngine | None = None
        self._restart_lock = asyncio.Lock()
        self._status = WebRtcStackStatus("python", "aiortc", PYTHON_STACK_WARNING)

    @property
    def engine(self) -> BrowserEngine | None:
        """The browser engine in use (or starting), if any."""
        return self._engine

    async def start(self) -> WebRtcStackStatus:
        """Choose and start the stack; returns its status (also logged).

        Raises :class:`LocalError` with ``browser`` if no browser is found or starts.
        """
        if self.mode is WebRtcMode.PYTHON:
            self._status = WebRtcStackStatus(
                "python", "aiortc, as asked (--webrtc python)", PYTHON_STACK_WARNING
            )
        else:
            executable = self.engine_config.executable or find_browser()
            if executable is None and self.mode is WebRtcMode.AUTO:
                self._status = WebRtcStackStatus(
                    "python", "aiortc: no Chromium or Chrome found", PYTHON_STACK_WARNING
                )
            else:
                try:
                    await self._start_engine()
                except LocalError as error:
                    if self.mode is WebRtcMode.BROWSER:
                        raise
                    self._status = WebRtcStackStatus(
                        "python",
                        f"aiortc: the browser did not start ({error})",
                        PYTHON_STACK_WARNING,
                    )
        if self._status.warning:
            log.warning("WebRTC: %s (%s)", self._status.warning, self._status.detail)
        else:
            log.info("WebRTC runs in the browser engine %s", self._status.detail)
        return self._status

    async def _start_engine(self) -> None:
        engine = BrowserEngine(self.engine_config, self.webrtc, metrics=self.metrics)
        self._engine = engine
        try:
            await engine.start()
        except BaseException:
            self._engine = None
            raise
        engine.on_death = self._engine_died
        self._status = WebRtcStackStatus("browser", engine.executable)

    def _engine_died(self, reason: str) -> None:
        if self.mode is WebRtcMode.AUTO:
            self._status = WebRtcStackStatus(
                "python", f"aiortc: the browser engine died ({reason})", PYTHON_STACK_WARNING
            )
            log.warning(
                "the browser engine died (%s): falling back to the Python WebRTC stack; %s",
                reason,
                PYTHON_STACK_WARNING,
            )
        else:
            self._status = WebRtcStackStatus(
                "browser", f"restarting: the browser engine died ({reason})", ""
            )
            log.warning("the browser engine died (%s): starting a new one", reason)

    async def _live_engine(self) -> BrowserEngine | None:
        """The engine to use for a new peer: ``None`` for aiortc (restarted if it died)."""
        engine = self._engine
        if engine is not None and engine.alive:
            return engine
        if self.mode is not WebRtcMode.BROWSER:
            if engine is not None:  # auto after a death: stop what is left of that browser
                self._engine = None
                await engine.close()
            return None
        async with self._restart_lock:
            engine = self._engine
            if engine is not None and engine.alive:
                return engine
            if engine is not None:
                await engine.close()
                self._engine = None
            try:
                await self._start_engine()
            except LocalError as error:
                self._status = WebRtcStackStatus("browser", f"not running: {error}", "")
                raise ChannelClosedError(f"the browser engine could not restart: {error}") from None
            return self._engine

    def offering_peer(self, ice_servers: tuple[IceServer, ...] = ()) -> OfferingEndpoint:
        """An offering peer on the stack in use when its offer is made."""
        return _DeferredOfferingPeer(self, ice_servers)

    def answering_peer(self, ice_servers: tuple[IceServer, ...] = ()) -> AnsweringEndpoint:
        """An answering peer on the stack in use when the offer arrives."""
        return _DeferredAnsweringPeer(self, ice_servers)

    def stack_status(self) -> WebRtcStackStatus:
        """Which stack is in use now."""
        return self._status

    async def close(self) -> None:
        """Stop the browser engine, if any, and the Python stack's probes."""
        if self._engine is not None:
            await self._engine.close()
            self._engine = None
        await self.python.close()


class _DeferredOfferingPeer:
    def __init__(self, stack: WebRtcStack, ice_servers: tuple[IceServer, ...]) -> None:
        self._stack = stack
        self._ice_servers = ice_servers
        self._peer: OfferingEndpoint | None = None

    async def create_offer(self) -> str:
        engine = await self._stack._live_engine()
        self._peer = (
            engine.offering_peer(self._ice_servers)
            if engine
            else self._stack.python.offering_peer(self._ice_servers)
        )
        return await self._peer.create_offer()

    async def accept_answer(self, answer_sdp: str) -> DatagramChannel:
        if self._peer is None:
            raise LocalError("call create_offer() before accept_answer()")
        return await self._peer.accept_answer(answer_sdp)

    async def close(self) -> None:
        if self._peer is not None:
            await self._peer.close()


class _DeferredAnsweringPeer:
    def __init__(self, stack: WebRtcStack, ice_servers: tuple[IceServer, ...]) -> None:
        self._stack = stack
        self._ice_servers = ice_servers
        self._peer: AnsweringEndpoint | None = None

    async def accept_offer(self, offer_sdp: str) -> str:
        engine = await self._stack._live_engine()
        self._peer = (
            engine.answering_peer(self._ice_servers)
            if engine
            else self._stack.python.answering_peer(self._ice_servers)
        )
        return await self._peer.accept_offer(offer_sdp)

    async def wait_channel(self) -> DatagramChannel:
        if self._peer is None:
            raise LocalError("call accept_offer() before wait_channel()")
        return await self._peer.wait_channel()

    async def close(self) -> None:
        if self._peer is not None:
            await self._peer.close()
