"""WebRTC data channels (aiortc) as :class:`~ferry.transport.datagram.DatagramChannel`.

The client offers, the volunteer answers (docs/protocol.md §3)::

    client                                   volunteer
    peer = OfferingPeer(config)
    offer = await peer.create_offer()  ──►   peer = AnsweringPeer(config)
                                      ◄──   answer = await peer.accept_offer(offer)
    channel = await peer.accept_answer(answer)
                                             channel = await peer.wait_channel()

One data channel per peer connection: label ``ferry``, protocol ``ferry-quic/1``, unordered
and reliable (``WebRtcConfig.max_retransmits``); each binary message is one QUIC datagram.
Closing the channel closes its peer connection.

Where this module needs more than aiortc's and aioice's public API, it goes through
:mod:`ferry.transport.library_patches`: one table (``PATCHES``) of every patch and private
read, each with its library, checked versions and reason, applied by
``library_patches.install()`` when the first peer is created (never at import) and left off,
with one warning, outside the versions it was checked against. The adjustments this module
relies on, all measured on loopback:

* **Host candidates** (``host-addresses``): aioice leaves ``127.0.0.1`` out of its host
  candidates, so two peers on a machine with no other usable address (a test box,
  ``ferry demo``) never connect. While *this module* gathers, a context variable makes
  aioice append ``127.0.0.1`` (``WebRtcConfig.include_loopback_candidates``) or use exactly
  ``WebRtcConfig.host_candidate_addresses``; other users of aioice see no change.
* **UDP socket buffers** (``ice-socket-buffers``): aioice sets ``SO_RCVBUF`` to 256 KiB; with
  that aiortc's data channel lost up to 14 % of datagrams at speed, with 4 MiB none. After
  gathering both buffers are raised to ``WebRtcConfig.socket_buffer_bytes`` on every ICE
  socket of the connection (the kernel caps them at ``net.core.rmem_max`` / ``wmem_max``).
* **SCTP** (``sctp-delayed-acknowledgements``, ``sctp-max-user-data``): one SACK per two
  packets (RFC 4960 §6.2, ``WebRtcConfig.sctp_packets_per_acknowledgement``,
  :mod:`ferry.transport.sctp_acknowledgement`) and a 1,232-byte DATA chunk, one value for
  the process (``library_patches.SCTP_MAX_USER_DATA`` says why it cannot be per connection).
* **Looking like Chromium** (``peer-connection-certificate``, ``dtls-context``,
  ``srtp-profile-order``, ``stun-request-order``): a certificate shaped like Chromium's
  (:func:`browser_like_certificate`), Chromium's DTLS cipher suites, groups, signature
  algorithms and SRTP profile order, and Chromium's STUN binding-request attributes
  (``docs/censorship-resistance.md`` lists what stays different). The SDP is rewritten by
  :func:`browser_like_sdp`, which touches no library.

aiortc's ``bufferedAmount`` gives no backpressure (``send()`` never blocks), so
:meth:`DataChannelDatagramChannel.send` drops datagrams above the high-water mark itself.

What this peer announces is narrowed by :func:`announced_candidates` (``docs/architecture.md``,
"What a peer announces"): no loopback candidate unless asked for, and, once a
server-reflexive or relay candidate exists, no host candidate on an internal address (nor,
in the client's offer, on IPv6). aioice still answers connectivity checks on every socket it
bound; the point is what the broker and the other peer are told.

Remote peers that offer only mDNS (``.local``) candidates, as Chromium does by default,
still connect: their checks arrive from a peer-reflexive address, which aioice accepts.
Remote ``.local`` candidates are removed from the peer's SDP before aiortc sees it: an mDNS
name resolves only on the peer's own network, never across the internet between a client and
a volunteer, and resolving it would make aioice send multicast queries (224.0.0.251) onto
this machine's network, telling it that a WebRTC peer is being contacted. Measured with
Chromium 156 answering on loopback: ICE then succeeds through the peer-reflexive candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import aiortc.rtcdtlstransport as aiortc_dtls
import aiortc.sdp
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, InvalidStateError
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from prometheus_client import CollectorRegistry, Counter

from ferry.core.addresses import is_loopback_host
from ferry.core.ice_servers import IceServer
from ferry.core.volunteer_egress import internal_address_class
from ferry.errors import ChannelClosedError, ConfigError, FerryError, LocalError, ProtocolError
from ferry.logs import get_logger
from ferry.transport import library_patches
from ferry.transport.datagram import (
    CloseHandler,
    DatagramChannel,
    DatagramHandler,
    DatagramInbox,
)
from ferry.transport.ice_probe import IceProbeConfig, IceServerProbe
from ferry.transport.sctp_acknowledgement import (
    DelayedAcknowledgementSctpTransport,
    SctpAcknowledgementPolicy,
)

__all__ = [
    "DATA_CHANNEL_LABEL",
    "DATA_CHANNEL_PROTOCOL",
    "PYTHON_STACK_WARNING",
    "AnsweringEndpoint",
    "AnsweringPeer",
    "DataChannelDatagramChannel",
    "DataChannelMetrics",
    "IceServer",
    "OfferingEndpoint",
    "OfferingPeer",
    "PeerFactory",
    "PythonPeers",
    "WebRtcConfig",
    "WebRtcStackStatus",
    "announced_candidates",
    "browser_like_certificate",
    "browser_like_sdp",
    "browser_like_x509_certificate",
    "check_data_channel_sdp",
    "fail_channel_opening",
    "wait_for_channel_open",
    "without_mdns_candidates",
]

logger = get_logger(__name__)

DATA_CHANNEL_LABEL = "ferry"
"""The label of ferry's data channel (docs/protocol.md §3)."""

DATA_CHANNEL_PROTOCOL = "ferry-quic/1"
"""The sub-protocol of ferry's data channel (docs/protocol.md §3)."""


async def wait_for_channel_open(
    opened: asyncio.Future[None], timeout: float, close: Callable[[], Awaitable[None]]
) -> None:
    """Wait up to ``timeout`` seconds for ``opened``; on time-out ``close`` the channel and
    raise :class:`ChannelClosedError` (aiortc's channels and the browser engine's alike)."""
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(opened)
    except TimeoutError:
        await close()
        raise ChannelClosedError(
            f"the WebRTC data channel did not open within {timeout:g} s: ICE or DTLS could "
            "not connect to the peer (check that it is reachable and still waiting)"
        ) from None


def fail_channel_opening(opened: asyncio.Future[None], message: str) -> None:
    """The channel closed before it opened: whoever waits in :func:`wait_for_channel_open`
    gets :class:`ChannelClosedError` with ``message`` (nobody waiting is fine too)."""
    if not opened.done():
        opened.set_exception(ChannelClosedError(message))
        opened.exception()  # retrieved by wait_for_channel_open() if anyone waits; seen anyway


MAX_SDP_CHARACTERS = 32 * 1024
"""The longest SDP accepted from a peer (the broker's limit, docs/protocol.md §2)."""

_LOOPBACK_IPV4 = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class WebRtcConfig:
    """Settings of one WebRTC peer connection (client or volunteer side)."""

    ice_servers: tuple[IceServer, ...] = ()
    """The user's own STUN/TURN servers (``--ice-server``), used beside those the broker hands
    out for each connection. Empty by default: no packet leaves for a third party unless the
    broker names one (aiortc would otherwise default to a public STUN server)."""

    ice_probe: IceProbeConfig = field(default_factory=IceProbeConfig)
    """How long the Python stack gives STUN and TURN servers to answer before it gathers
    without the silent ones (:mod:`ferry.transport.ice_probe`)."""

    sctp_packets_per_acknowledgement: int = 2
    """Send one SCTP SACK per this many received packets carrying DATA (RFC 4960 §6.2),
    or ``sctp_acknowledgement_delay`` after the first one, and at once on gaps or duplicates
    (:mod:`ferry.transport.sctp_acknowledgement`). aiortc sends one per packet, which is
    ``1``. Measured in BENCHMARKS.md (issue 8, delayed SACKs)."""

    sctp_acknowledgement_delay: float = 0.05
    """Seconds a SACK may wait for a second packet (RFC 4960: at most 0.5 s)."""

    socket_buffer_bytes: int = 4 * 1024 * 1024
    """``SO_RCVBUF`` and ``SO_SNDBUF`` set on every ICE socket. 4 MiB removed the up-to-14 %
    loss measured with aioice's 256 KiB at full speed on loopback."""

    high_water_bytes: int = 1024 * 1024
    """``send()`` drops a datagram while the data channel's ``bufferedAmount`` is above this.
    1 MiB holds a full QUIC congestion window at roughly 80 Mbit/s × 100 ms, so a burst is
    not cut, while bounding the queueing delay a slow path adds to about that round trip."""

    open_timeout: float = 15.0
    """Seconds to wait, after the answer is applied or the offer answered, for ICE and DTLS
    to connect and the data channel to open."""

    include_loopback_candidates: bool = False
    """Offer ``127.0.0.1`` as a host candidate too (aioice leaves it out), so peers on one
    machine connect with no other usable interface. Off by default: loopback is of use only
    to a peer on the same machine, and announcing it tells the other side (the broker, a
    volunteer or client that may be the censor) that this is a ferry peer on loopback.
    ``ferry demo`` and the tests name their addresses with ``host_candidate_addresses``."""

    host_candidate_addresses: tuple[str, ...] | None = None
    """If set, gather host candidates on exactly these local addresses instead of every
    interface (e.g. ``("127.0.0.1",)`` for tests and ``ferry demo``, which must stay on
    loopback), and announce them all (``--ice-address``). ``None``: every address aioice
    finds, plus loopback as configured above, announced as ``offer_local_candidates``
    says."""

    offer_local_candidates: bool = False
    """Announce every host candidate gathered (``--offer-local-candidates``: LAN-only
    networks). Off: once the SDP holds a server-reflexive or relay candidate, host candidates
    on loopback, private, link-local and other internal addresses are left out of it, and so
    are the client's IPv6 host candidates (see :func:`announced_candidates`)."""

    max_retransmits: int | None = None
    """``maxRetransmits`` of the data channel the client creates (the volunteer takes what
    the client offers). ``None``: reliable (unordered). A 16 KiB QUIC datagram crosses SCTP
    as about 14 chunks; with ``0`` the loss of any one chunk loses the whole datagram, so a
    1 % chunk loss became ~13 % datagram loss for QUIC. Reliable, SCTP resends just the lost
    chunk within a round trip, and unordered, no other datagram waits for it. Measured equal
    on loopback and in ``benchmarks/churn.py`` (BENCHMARKS.md, issue 8)."""

    max_held_datagrams: int = 1024
    """Datagrams kept for a channel that has not been started yet; older ones are dropped."""

    remote_candidate_addresses: tuple[str, ...] | None = None
    """If set, the peer's candidates on any other address are left out of its SDP, so ICE
    checks go to these addresses only (tests with a browser peer that offers its LAN
    addresses: ``("127.0.0.1",)``). ``None``: every candidate the peer offers."""

    browser_like_certificate: bool = True
    """Give aiortc a DTLS certificate shaped like Chromium's (subject and issuer ``CN=WebRTC``,
    a 64-bit serial) instead of its own (a random 32-hex-digit CN and a 159-bit serial),
    which DTLS 1.2 sends in clear (see :func:`browser_like_certificate`)."""

    browser_like_sdp: bool = True
    """Send our SDP shaped like Chromium's (see :func:`browser_like_sdp`)."""

    def __post_init__(self) -> None:
        if self.socket_buffer_bytes < 0:
            raise ConfigError(f"socket_buffer_bytes must be ≥ 0, got {self.socket_buffer_bytes}")
        if self.high_water_bytes < 0:
            raise ConfigError(f"high_water_bytes must be ≥ 0, got {self.high_water_bytes}")
        if not self.open_timeout > 0:
            raise ConfigError(f"open_timeout must be > 0 seconds, got {self.open_timeout}")
        if self.max_retransmits is not None and self.max_retransmits < 0:
            raise ConfigError(f"max_retransmits must be ≥ 0 or None, got {self.max_retransmits}")
        if self.max_held_datagrams < 1:
            raise ConfigError(f"max_held_datagrams must be ≥ 1, got {self.max_held_datagrams}")
        if self.host_candidate_addresses is not None and not self.host_candidate_addresses:
            raise ConfigError("host_candidate_addresses must name at least one address or be None")
        self.sctp_acknowledgement_policy()  # raises ConfigError for bad SACK settings

    def sctp_acknowledgement_policy(self) -> SctpAcknowledgementPolicy:
        """The SACK policy these settings describe."""
        return SctpAcknowledgementPolicy(
            packets_per_acknowledgement=self.sctp_packets_per_acknowledgement,
            maximum_delay=self.sctp_acknowledgement_delay,
        )


class DataChannelMetrics:
    """Prometheus counters shared by every data channel of one component.

    Create one per :class:`CollectorRegistry` and pass it to each peer.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        datagrams = Counter(
            "ferry_datachannel_datagrams",
            "Datagrams on WebRTC data channels, by what happened to them.",
            ["event"],
            registry=registry,
        )
        byte_counter = Counter(
            "ferry_datachannel_bytes",
            "Bytes of datagrams on WebRTC data channels, by what happened to them.",
            ["event"],
            registry=registry,
        )
        self.rejected_messages = Counter(
            "ferry_datachannel_rejected_messages",
            "Messages from a data-channel peer that broke docs/protocol.md §3, by reason.",
            ["reason"],
            registry=registry,
        )
        """Protocol violations by the peer (text messages, wrong channel label)."""
        self.sent_datagrams = datagrams.labels("sent")
        self.received_datagrams = datagrams.labels("received")
        self.dropped_datagrams = datagrams.labels("dropped")
        self.sent_bytes = byte_counter.labels("sent")
        self.received_bytes = byte_counter.labels("received")
        self.dropped_bytes = byte_counter.labels("dropped")


@contextlib.contextmanager
def _candidate_policy(config: WebRtcConfig, servers: tuple[IceServer, ...]) -> Iterator[None]:
    """Apply ``config``'s host-candidate choice to the gathering done inside the block.

    No ``127.0.0.1`` candidate when every STUN/TURN server is off loopback: aioice asks each
    server from each host candidate, and a request from 127.0.0.1 never leaves the machine,
    so gathering waited for aioice's whole STUN timeout (5 s measured, on each peer, in
    the internet lab of tests/support_internet.py) before the offer or answer could go."""
    servers_off_loopback = bool(servers) and not any(_on_loopback(server) for server in servers)
    with library_patches.host_address_policy(
        include_loopback=config.include_loopback_candidates and not servers_off_loopback,
        only=config.host_candidate_addresses,
    ):
        yield


def _on_loopback(server: IceServer) -> bool:
    return is_loopback_host(server.parsed.host)


# --- cheap alignments with Chromium (docs/censorship-resistance.md) ---------------------------


def browser_like_x509_certificate(
    key: ec.EllipticCurvePrivateKey, now: datetime.datetime | None = None
) -> x509.Certificate:
    """A self-signed certificate for ``key`` shaped like Chromium's WebRTC certificate:
    subject and issuer ``CN=WebRTC``, a random 64-bit serial, valid from a day ago for 30
    days, signed with ECDSA-SHA256 (WebRTC's ``rtc::SSLIdentity`` defaults)."""
    now = now or datetime.datetime.now(tz=datetime.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "WebRTC")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(64) | (1 << 63))
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


class BrowserLikeCertificate(aiortc_dtls.RTCCertificate):
    """aiortc's certificate object whose DTLS context is aligned with Chromium's ClientHello
    (:func:`ferry.transport.library_patches.align_dtls_context`: cipher suites, groups,
    signature algorithms, no ``encrypt_then_mac``). aiortc builds each connection's OpenSSL
    context in the certificate's private ``_create_ssl_context`` (the ``dtls-context`` entry
    of :data:`ferry.transport.library_patches.PATCHES`); if a future aiortc stops calling it,
    nothing breaks and these alignments are simply lost (the alignment test says so)."""

    def _create_ssl_context(
        self, srtp_profiles: list[aiortc_dtls.SRTPProtectionProfile]
    ) -> SSL.Context:
        context = super()._create_ssl_context(srtp_profiles)
        library_patches.align_dtls_context(context)
        return context


def browser_like_certificate() -> aiortc_dtls.RTCCertificate:
    """An aiortc DTLS certificate on a new ECDSA P-256 key, shaped like Chromium's
    (:func:`browser_like_x509_certificate`; :class:`BrowserLikeCertificate`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return BrowserLikeCertificate(key=key, cert=browser_like_x509_certificate(key))


_CHROMIUM_MEDIA_ORDER = (
    "c=",
    "a=candidate:",
    "a=ice-ufrag:",
    "a=ice-pwd:",
    "a=ice-options:",
    "a=fingerprint:",
    "a=setup:",
    "a=mid:",
    "a=sctp-port:",
    "a=max-message-size:",
)


def browser_like_sdp(sdp: str) -> str:
    """An aiortc data-channel SDP rewritten in the shape of Chromium's (same meaning).

    Chromium 156 writes ``o=- <19 digits> 2 IN IP4 127.0.0.1``, ``a=extmap-allow-mixed`` and
    ``a=msid-semantic: WMS`` at session level; in the media section the candidates (with
    a numeric foundation and ``generation 0 network-cost 999``) come first, then ICE
    credentials, ``a=ice-options:trickle``, one SHA-256 fingerprint, setup, mid, SCTP port
    and maximum message size; no ``a=end-of-candidates``. Lines this function does not know
    are kept, after the known ones.
    """
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    session: list[str] = []
    media: list[str] = []
    target = session
    for line in lines:
        if line.startswith("m="):
            target = media
        target.append(line)
    if not media:
        return sdp
    session_id = str(int.from_bytes(hashlib.sha256(sdp.encode()).digest()[:8]) >> 1)
    shaped_session = [
        "v=0",
        f"o=- {session_id} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        *[line for line in session if line.startswith("a=group:")],
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS",
    ]
    known = ("v=", "o=", "s=", "t=", "a=group:", "a=msid-semantic", "a=extmap-allow-mixed")
    shaped_session += [line for line in session if not line.startswith(known)]
    body: list[str] = []
    for line in media[1:]:
        if line == "a=end-of-candidates":
            continue
        if line.startswith("a=fingerprint:") and not line.startswith("a=fingerprint:sha-256 "):
            continue
        if line.startswith("a=candidate:"):
            fields = line.split(" ")
            foundation = int.from_bytes(hashlib.sha256(fields[0].encode()).digest()[:4])
            fields[0] = f"a=candidate:{foundation}"
            line = " ".join(fields) + " generation 0 network-cost 999"
        body.append(line)
    if not any(line.startswith("a=ice-options:") for line in body):
        body.append("a=ice-options:trickle")

    def rank(line: str) -> int:
        for index, prefix in enumerate(_CHROMIUM_MEDIA_ORDER):
            if line.startswith(prefix):
                return index
        return len(_CHROMIUM_MEDIA_ORDER)

    body.sort(key=rank)  # stable: candidates keep their order
    return "\r\n".join([*shaped_session, media[0], *body]) + "\r\n"


# --- the channel ------------------------------------------------------------------------------


class DataChannelDatagramChannel:
    """An open aiortc data channel as a :class:`~ferry.transport.datagram.DatagramChannel`.

    Made by :class:`OfferingPeer` and :class:`AnsweringPeer`, not directly. It owns its peer
    connection: :meth:`close` closes both. The channel counts, as plain attributes, what it
    sent, received and dropped (datagrams and bytes), for benchmarks; ``metrics`` adds the
    same to Prometheus.
    """

    def __init__(
        self,
        peer_connection: RTCPeerConnection,
        data_channel: RTCDataChannel,
        config: WebRtcConfig,
        metrics: DataChannelMetrics | None = None,
    ) -> None:
        self._peer_connection = peer_connection
        self._data_channel = data_channel
        self._high_water_bytes = config.high_water_bytes
        self._metrics = metrics
        self._inbox = DatagramInbox(config.max_held_datagrams)
        self._open = True
        self._peer_connection_close: asyncio.Task[None] | None = None
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent_datagrams = 0
        self.sent_bytes = 0
        self.received_datagrams = 0
        self.received_bytes = 0
        self.dropped_datagrams = 0
        self.dropped_bytes = 0
        self.rejected_messages = 0
        data_channel.on("message", self._handle_message)
        data_channel.on("open", self._handle_open)
        data_channel.on("close", self._handle_channel_closed)
        peer_connection.on("connectionstatechange", self._handle_connection_state)
        if data_channel.readyState == "open":
            self._handle_open()

    @property
    def is_open(self) -> bool:
        """True until the channel has closed."""
        return self._open

    @property
    def buffered_bytes(self) -> int:
        """Bytes queued in aiortc and not yet handed to the network."""
        return int(self._data_channel.bufferedAmount)

    def start(self, on_datagram: DatagramHandler, on_close: CloseHandler) -> None:
        """Begin delivering datagrams to ``on_datagram``; ``on_close`` runs once at close."""
        self._inbox.start(on_datagram, on_close, closed=not self._open)

    def send(self, datagram: bytes) -> bool:
        """Queue one datagram; ``False`` if it was dropped (above high water, or closed)."""
        if (
            not self._open
            or self._data_channel.readyState != "open"
            or self._data_channel.bufferedAmount > self._high_water_bytes
        ):
            self._count_drop(datagram)
            return False
        try:
            self._data_channel.send(bytes(datagram))
        except (InvalidStateError, ValueError):
            # closed under us, or larger than the peer's maximum message size
            self._count_drop(datagram)
            return False
        self.sent_datagrams += 1
        self.sent_bytes += len(datagram)
        if self._metrics is not None:
            self._metrics.sent_datagrams.inc()
            self._metrics.sent_bytes.inc(len(datagram))
        return True

    async def close(self) -> None:
        """Close the data channel and its peer connection (idempotent)."""
        self._mark_closed()
        if self._peer_connection_close is not None:
            await self._peer_connection_close

    async def wait_open(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the data channel to open.

        Raises :class:`ChannelClosedError` if it closes or fails first, or the time runs out.
        """
        await wait_for_channel_open(self._opened, timeout, self.close)

    def _handle_open(self) -> None:
        if not self._opened.done():
            self._opened.set_result(None)

    def _handle_message(self, message: bytes | str) -> None:
        if not self._open:
            return
        if isinstance(message, str):
            self.rejected_messages += 1
            if self._metrics is not None:
                self._metrics.rejected_messages.labels("text_message").inc()
            logger.info("dropped a text message on the data channel: ferry carries binary only")
            return
        self.received_datagrams += 1
        self.received_bytes += len(message)
        if self._metrics is not None:
            self._metrics.received_datagrams.inc()
            self._metrics.received_bytes.inc(len(message))
        try:
            self._inbox.deliver(message)
        except Exception:
            # a bug above us must not break aiortc's receive path: close this channel only
            logger.exception("a data-channel datagram handler failed; closing the channel")
            self._mark_closed()

    def _handle_channel_closed(self) -> None:
        self._mark_closed()

    def _handle_connection_state(self) -> None:
        # aiortc reports "failed" when ICE consent or DTLS fails and "closed" after close();
        # it has no "disconnected" state. Browsers report "disconnected" for a path that may
        # still recover, so it is deliberately not treated as closed.
        if self._peer_connection.connectionState in ("failed", "closed"):
            self._mark_closed()

    def _mark_closed(self) -> None:
        if not self._open:
            return
        self._open = False
        self._inbox.drop_held()
        fail_channel_opening(
            self._opened,
            "the WebRTC connection to the peer failed or closed before the data channel opened",
        )
        self._peer_connection.remove_listener(
            "connectionstatechange", self._handle_connection_state
        )
        self._peer_connection_close = asyncio.get_running_loop().create_task(
            self._close_peer_connection()
        )
        self._inbox.report_close()

    async def _close_peer_connection(self) -> None:
        try:
            await self._peer_connection.close()
        except (OSError, ConnectionError, InvalidStateError) as error:
            logger.debug("closing the peer connection failed: %s", error)

    def _count_drop(self, datagram: bytes) -> None:
        self.dropped_datagrams += 1
        self.dropped_bytes += len(datagram)
        if self._metrics is not None:
            self._metrics.dropped_datagrams.inc()
            self._metrics.dropped_bytes.inc(len(datagram))


# --- the two peers ----------------------------------------------------------------------------


def _new_peer_connection(config: WebRtcConfig, servers: tuple[IceServer, ...]) -> RTCPeerConnection:
    library_patches.install()
    ice_servers = [
        RTCIceServer(urls=server.url, username=server.username, credential=server.credential)
        for server in servers
    ]
    peer_connection = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers))
    if config.browser_like_certificate:
        library_patches.use_certificate(peer_connection, browser_like_certificate())
    return peer_connection


def _delay_sctp_acknowledgements(peer_connection: RTCPeerConnection, config: WebRtcConfig) -> None:
    """Apply ``config``'s SACK policy to the connection's SCTP transport, once it exists
    (after ``createDataChannel`` for the offerer, the offer for the answerer) and before any
    SCTP packet has arrived."""
    sctp = peer_connection.sctp
    if isinstance(sctp, DelayedAcknowledgementSctpTransport):
        sctp.delay_acknowledgements(config.sctp_acknowledgement_policy())


def check_data_channel_sdp(sdp: str, kind: str) -> None:
    """Refuse an SDP that cannot be a ferry offer or answer, naming what is wrong."""
    if not isinstance(sdp, str):
        raise ProtocolError(f"the {kind} SDP is not a string", reason="sdp_type")
    if len(sdp) > MAX_SDP_CHARACTERS:
        raise ProtocolError(
            f"the {kind} SDP is {len(sdp)} characters, more than {MAX_SDP_CHARACTERS}",
            reason="sdp_too_long",
        )
    if not sdp.startswith("v=0"):
        raise ProtocolError(f"the {kind} SDP does not begin with 'v=0'", reason="sdp_malformed")
    if not any(line.startswith("m=application") for line in sdp.splitlines()):
        raise ProtocolError(
            f"the {kind} SDP has no 'm=application' line: it offers no data channel",
            reason="sdp_no_data_channel",
        )
    try:
        # aiortc's parser reports malformed lines with assert statements and assorted errors
        parsed = aiortc.sdp.SessionDescription.parse(sdp)
    except (AssertionError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise ProtocolError(
            f"the {kind} SDP could not be parsed: {error or type(error).__name__}",
            reason="sdp_malformed",
        ) from error
    if not any(media.kind == "application" for media in parsed.media):
        raise ProtocolError(
            f"the {kind} SDP has no usable 'm=application' section: it offers no data channel",
            reason="sdp_no_data_channel",
        )


def without_mdns_candidates(sdp: str, *, only: tuple[str, ...] | None = None) -> str:
    """``sdp`` without its ``a=candidate`` lines whose address is an mDNS ``.local`` name
    (and, if ``only`` is given, without those on any address not in ``only``)."""
    kept = []
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            fields = line.split()
            address = fields[4] if len(fields) > 4 else ""
            if address.lower().rstrip(".").endswith(".local"):
                continue
            if only is not None and address not in only:
                continue
        kept.append(line)
    return "".join(kept)


async def _apply_remote_description(
    peer_connection: RTCPeerConnection, sdp: str, kind: str, config: WebRtcConfig
) -> None:
    """``setRemoteDescription`` with aiortc's parse errors turned into :class:`ProtocolError`.

    Remote mDNS (``.local``) candidates are left out (see the module docstring), and so are
    candidates off ``config.remote_candidate_addresses`` when that is set.
    """
    sdp = without_mdns_candidates(sdp, only=config.remote_candidate_addresses)
    try:
        await peer_connection.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
    except (
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        InvalidAccessError,
        InvalidStateError,
    ) as error:
        raise ProtocolError(
            f"the peer's {kind} SDP could not be used: {error or type(error).__name__}",
            reason="sdp_malformed",
        ) from error


def announced_candidates(sdp: str, *, keep_public_ipv6_hosts: bool) -> str:
    """``sdp`` with only the candidates a remote peer needs (``docs/architecture.md``, "What
    a peer announces").

    When the SDP holds a server-reflexive (``srflx``) or relay candidate, host candidates on
    internal addresses (loopback, private, link-local, carrier-grade NAT, ...: the table of
    :mod:`ferry.core.volunteer_egress`) are removed, and so are IPv6 host candidates unless
    ``keep_public_ipv6_hosts`` (the volunteer's answer keeps them, the client's offer does
    not). Without one, the host candidates are all there is and are kept. The ``raddr``
    and ``rport`` of server-reflexive and relay candidates, which name the local address they
    were gathered from, become ``0.0.0.0 0`` as browsers write them.
    """
    lines = sdp.split("\r\n")
    kinds = {_candidate_field(line, 7) for line in lines if line.startswith("a=candidate:")}
    reflexive = bool(kinds & {"srflx", "relay"})
    kept: list[str] = []
    announced: list[tuple[str, str]] = []  # (address, port) of the candidates kept
    for line in lines:
        if line.startswith("a=candidate:"):
            fields = line.split(" ")
            kind = _candidate_field(line, 7)
            public = _announced_host(fields[4], keep_public_ipv6_hosts)
            if kind == "host" and reflexive and not public:
                continue
            if kind in ("srflx", "relay", "prflx") and "raddr" in fields:
                at = fields.index("raddr")
                if len(fields) > at + 3 and fields[at + 2] == "rport":
                    fields[at + 1], fields[at + 3] = "0.0.0.0", "0"
                line = " ".join(fields)
            announced.append((_candidate_field(line, 4), _candidate_field(line, 5)))
        kept.append(line)
    return "\r\n".join(_default_candidate(kept, announced))


def _default_candidate(lines: list[str], announced: list[tuple[str, str]]) -> list[str]:
    """``lines`` with a default candidate (the ``c=`` address and ``m=`` port) that is
    announced: left alone if it is, else the first candidate kept, or ``0.0.0.0`` port 9
    without any."""
    connection = next((line.split(" ") for line in lines if line.startswith("c=IN ")), None)
    if connection is None or len(connection) != 3:
        return lines
    if connection[2] in {address for address, _ in announced}:
        return lines
    address, port = announced[0] if announced else ("0.0.0.0", "9")
    result: list[str] = []
    for line in lines:
        if line.startswith("c=IN "):
            line = f"c=IN {'IP6' if ':' in address else 'IP4'} {address}"
        elif line.startswith("m=") and " " in line:
            media, _, rest = line.split(" ", 2)
            line = f"{media} {port} {rest}"
        result.append(line)
    return result


def _candidate_field(line: str, index: int) -> str:
    fields = line.split(" ")
    return fields[index] if len(fields) > index else ""


def _announced_host(address: str, keep_public_ipv6: bool) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False  # an mDNS name or garbage: of no use across the internet
    if internal_address_class(parsed) is not None:
        return False
    return keep_public_ipv6 or parsed.version == 4


def _local_sdp(peer_connection: RTCPeerConnection, config: WebRtcConfig, *, offer: bool) -> str:
    description = peer_connection.localDescription
    if description is None:
        raise ChannelClosedError("the WebRTC peer connection closed while gathering candidates")
    sdp = description.sdp
    if not config.offer_local_candidates and config.host_candidate_addresses is None:
        sdp = announced_candidates(sdp, keep_public_ipv6_hosts=not offer)
    return browser_like_sdp(sdp) if config.browser_like_sdp else sdp


async def _usable_ice_servers(
    config: WebRtcConfig, given: tuple[IceServer, ...], probe: IceServerProbe | None
) -> tuple[IceServer, ...]:
    """The servers aiortc gets: the user's own (``config.ice_servers``) and the broker's
    (``given``), narrowed by ``probe`` to one STUN and one TURN server that answer."""
    servers = config.ice_servers + given
    if not servers:
        return ()
    if probe is None:
        return servers
    return await probe.choose(servers)


def _check_relay_candidate(
    sdp: str, servers: tuple[IceServer, ...], probe: IceServerProbe | None
) -> None:
    """If a TURN server was used but ``sdp`` has no relay candidate, have ``probe`` find out
    and log why (in the background)."""
    turn_server = next((server for server in servers if server.is_turn), None)
    if turn_server is None or probe is None or " typ relay" in sdp:
        return
    probe.explain_turn_failure(turn_server)


class OfferingPeer:
    """The client side of one WebRTC connection: makes the offer, applies the answer.

    ``ice_servers`` (from the broker) are used beside ``config.ice_servers`` (the user's);
    with a ``probe`` only the first of each kind that answers is given to aiortc."""

    def __init__(
        self,
        config: WebRtcConfig,
        metrics: DataChannelMetrics | None = None,
        *,
        ice_servers: tuple[IceServer, ...] = (),
        probe: IceServerProbe | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._ice_servers = ice_servers
        self._probe = probe
        self._peer_connection: RTCPeerConnection | None = None
        self._channel: DataChannelDatagramChannel | None = None

    async def create_offer(self) -> str:
        """Create the peer connection and its data channel; return the complete offer SDP.

        The SDP carries every gathered candidate (no trickle ICE). Call once.
        """
        if self._peer_connection is not None:
            raise LocalError("create_offer() was already called on this peer")
        servers = await _usable_ice_servers(self._config, self._ice_servers, self._probe)
        peer_connection = _new_peer_connection(self._config, servers)
        self._peer_connection = peer_connection
        data_channel = peer_connection.createDataChannel(
            DATA_CHANNEL_LABEL,
            ordered=False,
            maxRetransmits=self._config.max_retransmits,
            protocol=DATA_CHANNEL_PROTOCOL,
        )
        _delay_sctp_acknowledgements(peer_connection, self._config)
        self._channel = DataChannelDatagramChannel(
            peer_connection, data_channel, self._config, self._metrics
        )
        offer = await peer_connection.createOffer()
        with _candidate_policy(self._config, servers):
            await peer_connection.setLocalDescription(offer)
        library_patches.raise_ice_socket_buffers(peer_connection, self._config.socket_buffer_bytes)
        sdp = _local_sdp(peer_connection, self._config, offer=True)
        _check_relay_candidate(sdp, servers, self._probe)
        return sdp

    async def accept_answer(self, answer_sdp: str) -> DataChannelDatagramChannel:
        """Apply the volunteer's answer and wait (``open_timeout``) for the channel to open.

        Raises :class:`ProtocolError` for an SDP that is malformed or has no data channel,
        :class:`ChannelClosedError` if ICE/DTLS fails or the channel does not open in time.
        """
        if self._peer_connection is None or self._channel is None:
            raise LocalError("call create_offer() before accept_answer()")
        channel = self._channel
        if not channel.is_open:
            raise ChannelClosedError("the WebRTC connection was closed before the answer came")
        try:
            check_data_channel_sdp(answer_sdp, "answer")
            await _apply_remote_description(
                self._peer_connection, answer_sdp, "answer", self._config
            )
        except ProtocolError:
            await channel.close()
            raise
        await channel.wait_open(self._config.open_timeout)
        return channel

    async def close(self) -> None:
        """Close the peer connection and its channel (idempotent)."""
        if self._channel is not None:
            await self._channel.close()
        elif self._peer_connection is not None:
            await self._peer_connection.close()


class AnsweringPeer:
    """The volunteer side of one WebRTC connection: answers an offer, waits for the channel.

    ``ice_servers`` and ``probe`` as for :class:`OfferingPeer`."""

    def __init__(
        self,
        config: WebRtcConfig,
        metrics: DataChannelMetrics | None = None,
        *,
        ice_servers: tuple[IceServer, ...] = (),
        probe: IceServerProbe | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._ice_servers = ice_servers
        self._probe = probe
        self._peer_connection: RTCPeerConnection | None = None
        self._channel_arrived: asyncio.Future[DataChannelDatagramChannel] | None = None
        self._channel: DataChannelDatagramChannel | None = None
        self._rejected: ProtocolError | None = None

    async def accept_offer(self, offer_sdp: str) -> str:
        """Apply the client's offer; return the complete answer SDP. Call once.

        Raises :class:`ProtocolError` with a clear message if the offer is malformed or has
        no data channel (``m=application``) line.
        """
        if self._peer_connection is not None:
            raise LocalError("accept_offer() was already called on this peer")
        check_data_channel_sdp(offer_sdp, "offer")
        servers = await _usable_ice_servers(self._config, self._ice_servers, self._probe)
        peer_connection = _new_peer_connection(self._config, servers)
        self._peer_connection = peer_connection
        self._channel_arrived = asyncio.get_running_loop().create_future()
        peer_connection.on("datachannel", self._handle_data_channel)
        peer_connection.on("connectionstatechange", self._handle_connection_state)
        try:
            await _apply_remote_description(peer_connection, offer_sdp, "offer", self._config)
            _delay_sctp_acknowledgements(peer_connection, self._config)
            answer = await peer_connection.createAnswer()
            with _candidate_policy(self._config, servers):
                await peer_connection.setLocalDescription(answer)
        except ProtocolError:
            await peer_connection.close()
            raise
        except (ValueError, InvalidAccessError, InvalidStateError) as error:
            await peer_connection.close()
            raise ProtocolError(
                f"could not answer the peer's offer: {error or type(error).__name__}",
                reason="sdp_unanswerable",
            ) from error
        library_patches.raise_ice_socket_buffers(peer_connection, self._config.socket_buffer_bytes)
        sdp = _local_sdp(peer_connection, self._config, offer=False)
        _check_relay_candidate(sdp, servers, self._probe)
        return sdp

    async def wait_channel(self) -> DataChannelDatagramChannel:
        """Wait (``open_timeout``) for the client's data channel to open and return it.

        Raises :class:`ChannelClosedError` if the connection fails or the time runs out,
        :class:`ProtocolError` if the client opened a channel that is not ferry's.
        """
        if self._channel_arrived is None:
            raise LocalError("call accept_offer() before wait_channel()")
        try:
            async with asyncio.timeout(self._config.open_timeout):
                channel = await asyncio.shield(self._channel_arrived)
        except TimeoutError:
            await self.close()
            raise ChannelClosedError(
                f"the client's data channel did not open within {self._config.open_timeout:g} s:"
                " ICE or DTLS could not connect (the client may have given up)"
            ) from None
        except FerryError:
            await self.close()
            raise
        await channel.wait_open(self._config.open_timeout)
        return channel

    async def close(self) -> None:
        """Close the peer connection and its channel (idempotent)."""
        if self._channel is not None:
            await self._channel.close()
        elif self._peer_connection is not None:
            await self._peer_connection.close()
        if self._channel_arrived is not None and not self._channel_arrived.done():
            self._channel_arrived.set_exception(
                ChannelClosedError("the WebRTC peer was closed before its data channel opened")
            )
            self._channel_arrived.exception()

    def _handle_data_channel(self, data_channel: RTCDataChannel) -> None:
        assert self._peer_connection is not None and self._channel_arrived is not None
        if self._channel_arrived.done():
            # one channel per connection: a second one is refused
            self._reject(data_channel, "a second data channel", "second_channel", fail_waiter=False)
            return
        if data_channel.label != DATA_CHANNEL_LABEL or data_channel.protocol != (
            DATA_CHANNEL_PROTOCOL
        ):
            self._reject(
                data_channel,
                f"a data channel labelled {data_channel.label!r} with protocol "
                f"{data_channel.protocol!r} (ferry expects {DATA_CHANNEL_LABEL!r}, "
                f"{DATA_CHANNEL_PROTOCOL!r})",
                "wrong_channel",
                fail_waiter=True,
            )
            return
        self._channel = DataChannelDatagramChannel(
            self._peer_connection, data_channel, self._config, self._metrics
        )
        self._channel_arrived.set_result(self._channel)

    def _reject(
        self, data_channel: RTCDataChannel, what: str, reason: str, *, fail_waiter: bool
    ) -> None:
        assert self._channel_arrived is not None
        if self._metrics is not None:
            self._metrics.rejected_messages.labels(reason).inc()
        logger.info("refused %s from the client", what)
        data_channel.close()
        if fail_waiter and not self._channel_arrived.done():
            self._channel_arrived.set_exception(
                ProtocolError(f"the client opened {what}", reason=reason)
            )
            self._channel_arrived.exception()

    def _handle_connection_state(self) -> None:
        assert self._peer_connection is not None and self._channel_arrived is not None
        if self._peer_connection.connectionState in ("failed", "closed") and not (
            self._channel_arrived.done()
        ):
            self._channel_arrived.set_exception(
                ChannelClosedError(
                    "the WebRTC connection to the client failed before its data channel opened"
                )
            )
            self._channel_arrived.exception()


# --- the interface both WebRTC stacks implement ----------------------------------------------


class OfferingEndpoint(Protocol):
    """The offering side of one WebRTC connection, whichever stack runs it (the client)."""

    async def create_offer(self) -> str:
        """Create the connection and its data channel; return the complete offer SDP."""
        ...

    async def accept_answer(self, answer_sdp: str) -> DatagramChannel:
        """Apply the answer; return the data channel once it is open."""
        ...

    async def close(self) -> None:
        """Close the connection and its channel (idempotent)."""
        ...


class AnsweringEndpoint(Protocol):
    """The answering side of one WebRTC connection, whichever stack runs it (volunteer)."""

    async def accept_offer(self, offer_sdp: str) -> str:
        """Apply the offer; return the complete answer SDP."""
        ...

    async def wait_channel(self) -> DatagramChannel:
        """Wait for the offerer's data channel to open and return it."""
        ...

    async def close(self) -> None:
        """Close the connection and its channel (idempotent)."""
        ...


@dataclass(frozen=True, slots=True)
class WebRtcStackStatus:
    """Which WebRTC stack carries a component's data channels, for status output."""

    stack: str
    """``"browser"`` (a real browser engine runs the connections) or ``"python"`` (aiortc)."""

    detail: str = ""
    """The browser's path, or why the Python stack is in use."""

    warning: str = ""
    """A plain warning for the user (empty when there is nothing to warn about)."""


PYTHON_STACK_WARNING = (
    "the Python WebRTC stack (aiortc) is in use: its DTLS handshake differs from a browser's, "
    "so a censor can spot it more easily than the browser engine (--webrtc browser)"
)
"""What the status says whenever the client runs its WebRTC on aiortc."""


class PeerFactory(Protocol):
    """Makes WebRTC peers on one stack: :class:`PythonPeers` or the browser engine's."""

    def offering_peer(self, ice_servers: tuple[IceServer, ...] = ()) -> OfferingEndpoint:
        """A new, unstarted offering peer that gathers with ``ice_servers`` (the broker's)
        beside the configured ones."""
        ...

    def answering_peer(self, ice_servers: tuple[IceServer, ...] = ()) -> AnsweringEndpoint:
        """A new, unstarted answering peer that gathers with ``ice_servers`` (the broker's)
        beside the configured ones."""
        ...

    def stack_status(self) -> WebRtcStackStatus:
        """Which stack this is, for status output."""
        ...


class PythonPeers:
    """:class:`PeerFactory` of the Python stack: aiortc peers with one configuration."""

    def __init__(
        self,
        config: WebRtcConfig,
        metrics: DataChannelMetrics | None = None,
        *,
        status: WebRtcStackStatus | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._status = status or WebRtcStackStatus("python", "aiortc", PYTHON_STACK_WARNING)
        self.probe = IceServerProbe(config.ice_probe)
        """Which ICE servers answer, shared by every peer of this factory."""

    def offering_peer(self, ice_servers: tuple[IceServer, ...] = ()) -> OfferingPeer:
        """A new :class:`OfferingPeer`."""
        return OfferingPeer(self._config, self._metrics, ice_servers=ice_servers, probe=self.probe)

    def answering_peer(self, ice_servers: tuple[IceServer, ...] = ()) -> AnsweringPeer:
        """A new :class:`AnsweringPeer`."""
        return AnsweringPeer(self._config, self._metrics, ice_servers=ice_servers, probe=self.probe)

    async def close(self) -> None:
        """Stop the ICE server probes still running."""
        await self.probe.close()

    def stack_status(self) -> WebRtcStackStatus:
        """``python``, with the warning given at construction."""
        return self._status
