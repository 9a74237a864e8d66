"""Every reach into aiortc's, aioice's, aioquic's and pyOpenSSL's internals, in one place.

ferry patches nothing in these libraries at import. :func:`install` (called by the code that
creates WebRTC or QUIC connections; idempotent) applies the patches of :data:`PATCHES`, the
one table of what ferry touches: for each entry the library, the versions it was read against
and tested with, the symbol, and why. Reads of private attributes that patch nothing go through
the accessors below (:func:`quic_peer_certificate`, :func:`quic_send_buffer_size`, ...) under
the same table.

**Version gate.** An entry is applied (or its accessor reads the private attribute) only when
the installed version of its library is inside the entry's range (:func:`version_in_range`,
:func:`enabled`). Outside it the patch stays off, the accessor returns its safe fallback, and
one warning per entry is logged, once per process, naming the version and what is lost.
``constraints.txt`` pins the versions the table was checked against; CI installs with it and
``tests/unit/test_library_patches.py`` fails when an installed version leaves a range.

**No per-connection setting in a module global.** Where a library reads a module constant at
use time, ferry either sets it once for the process to one value chosen here (aiortc's
``USERDATA_MAX_LENGTH``: see :data:`SCTP_MAX_USER_DATA`) or swaps it in and out around one
synchronous call of one connection (aioquic's loss thresholds:
:func:`use_loss_thresholds`), so two connections with different settings never see each
other's values.

Why each patch exists, measured, is in the ``why`` of its entry and in the docstrings of
:mod:`ferry.transport.webrtc`, :mod:`ferry.transport.quic` and
:mod:`ferry.transport.sctp_acknowledgement`. What the DTLS alignments achieve, and what stays
different from Chromium, is in ``docs/censorship-resistance.md``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aioice.stun
import aiortc.rtcdtlstransport as aiortc_dtls
import aiortc.rtcpeerconnection as aiortc_peer_connection
import aiortc.rtcsctptransport as aiortc_sctp
from aioquic import tls as aioquic_tls
from aioquic.quic import recovery as aioquic_recovery
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet_builder import QuicDeliveryState
from aioquic.quic.stream import QuicStream
from cryptography import x509
from OpenSSL import SSL

from ferry.logs import get_logger
from ferry.transport.sctp_acknowledgement import (
    OVERRIDDEN_METHODS,
    DelayedAcknowledgementSctpTransport,
)

__all__ = [
    "CHROMIUM_CIPHER_SUITES",
    "CHROMIUM_GROUPS",
    "CHROMIUM_SIGNATURE_ALGORITHMS",
    "CHROMIUM_SRTP_PROFILE_ORDER",
    "CHROMIUM_STUN_REQUEST_ORDER",
    "GOOG_NETWORK_INFO_TYPE",
    "GOOG_NETWORK_INFO_VALUE",
    "PATCHES",
    "SCTP_MAX_USER_DATA",
    "LibraryPatch",
    "align_dtls_context",
    "enabled",
    "host_address_policy",
    "install",
    "installed_version",
    "keep_lost_probes_lost",
    "quic_accepted_packet_marker",
    "quic_acknowledge_now",
    "quic_acknowledgement_state",
    "quic_kept_stream_ids",
    "quic_peer_certificate",
    "quic_send_buffer_size",
    "raise_ice_socket_buffers",
    "use_ack_delay",
    "use_certificate",
    "use_loss_thresholds",
    "version_in_range",
    "withdraw_unsent_ping",
]

logger = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LibraryPatch:
    """One reach into a library's internals."""

    name: str
    """Short identifier, used by :func:`enabled` and in the warning."""
    library: str
    """The distribution whose version gates it (``importlib.metadata`` name)."""
    minimum: str
    """Lowest version it was checked against (inclusive)."""
    below: str
    """First version it was *not* checked against (exclusive)."""
    symbol: str
    """What it patches or reads."""
    why: str
    """What it is for, and what is lost when it is off."""


_AIORTC = ("aiortc", "1.16.0", "1.17")
_AIOICE = ("aioice", "0.13.0", "0.14")
_AIOQUIC = ("aioquic", "1.7.0", "1.8")
_PYOPENSSL = ("pyopenssl", "26.0.0", "27")

PATCHES: tuple[LibraryPatch, ...] = (
    LibraryPatch(
        "sctp-delayed-acknowledgements",
        *_AIORTC,
        "aiortc.rtcpeerconnection.RTCSctpTransport (replaced by a subclass overriding "
        "_handle_data, _send_sack, _receive_forward_tsn_chunk, _set_state; reading "
        "_sack_needed, _sack_misordered, _sack_duplicates, _association_state)",
        "one SACK per two packets (RFC 4960 §6.2) instead of one per packet; off: aiortc's "
        "SACK per packet (ferry.transport.sctp_acknowledgement)",
    ),
    LibraryPatch(
        "sctp-max-user-data",
        *_AIORTC,
        "aiortc.rtcsctptransport.USERDATA_MAX_LENGTH (set once, process-wide)",
        "carry a 1,200-byte QUIC datagram in one SCTP DATA chunk instead of two; off: "
        "aiortc's 1,160",
    ),
    LibraryPatch(
        "srtp-profile-order",
        *_AIORTC,
        "aiortc.rtcdtlstransport.SRTP_PROFILES (reordered in place)",
        "use_srtp profiles in Chromium's order in the ClientHello; off: aiortc's order",
    ),
    LibraryPatch(
        "dtls-context",
        *_AIORTC,
        "aiortc.rtcdtlstransport.RTCCertificate._create_ssl_context (overridden by "
        "webrtc.BrowserLikeCertificate)",
        "align the DTLS ClientHello with Chromium's (align_dtls_context); off: aiortc's",
    ),
    LibraryPatch(
        "dtls-context-openssl",
        *_PYOPENSSL,
        "OpenSSL._util.lib.SSL_CTX_set1_curves_list, SSL_CTX_set1_sigalgs_list, "
        "SSL.Context._context",
        "Chromium's supported groups and signature algorithms (pyOpenSSL has no API); "
        "off: OpenSSL's defaults",
    ),
    LibraryPatch(
        "peer-connection-certificate",
        *_AIORTC,
        "aiortc.RTCPeerConnection._RTCPeerConnection__certificates (written)",
        "a DTLS certificate shaped like Chromium's (aiortc has no public way); off: aiortc's "
        "own certificate (random CN, sent in clear)",
    ),
    LibraryPatch(
        "ice-socket-buffers",
        *_AIORTC,
        "aiortc.RTCIceGatherer._connection (read)",
        "reach aioice's sockets to raise SO_RCVBUF/SO_SNDBUF (up to 14 % loss at 256 KiB); "
        "off: aioice's buffers",
    ),
    LibraryPatch(
        "ice-socket-buffers-aioice",
        *_AIOICE,
        "aioice.ice.Connection._protocols (read)",
        "the ICE sockets whose buffers are raised; off: aioice's buffers",
    ),
    LibraryPatch(
        "host-addresses",
        *_AIOICE,
        "aioice.ice.get_host_addresses (wrapped; consults a context variable)",
        "loopback or chosen host candidates (--ice-address, ferry demo, tests); off: "
        "aioice's addresses only, so peers on one machine without another usable address "
        "cannot connect",
    ),
    LibraryPatch(
        "stun-request-order",
        *_AIOICE,
        "aioice.ice.Connection.build_request (wrapped), aioice.stun.ATTRIBUTES_BY_NAME/"
        "_BY_TYPE (GOOG-NETWORK-INFO added), aioice.stun.pack_bytes/unpack_bytes",
        "ICE binding requests with Chromium's attributes in Chromium's order; off: aioice's",
    ),
    LibraryPatch(
        "quic-flow-control",
        *_AIOQUIC,
        "aioquic QuicConnection._write_connection_limits, _write_stream_limits (overridden); "
        "_local_max_data, _local_max_streams_bidi, _streams (read and written)",
        "stream and session credit granted as the application reads (bounded memory for a "
        "slow reader); off: aioquic's credit on arrival and its stream limit",
    ),
    LibraryPatch(
        "quic-send-buffer",
        *_AIOQUIC,
        "aioquic QuicConnection._streams, QuicStream.sender._buffer (read)",
        "a writer's backpressure (bytes unsent or unacknowledged); off: 0, no backpressure",
    ),
    LibraryPatch(
        "quic-peer-certificate",
        *_AIOQUIC,
        "aioquic QuicConnection.tls._peer_certificate (read)",
        "pin the egress's certificate by fingerprint; off: None, so pinning fails and the "
        "session is refused",
    ),
    LibraryPatch(
        "quic-accepted-packets",
        *_AIOQUIC,
        "aioquic QuicConnection._spaces (read: largest_received_packet, ack_queue)",
        "tell which volunteer paths carry authenticated packets; off: every datagram is "
        "taken as accepted, so a volunteer injecting packets could attract a session's "
        "replies (sessions still work)",
    ),
    LibraryPatch(
        "quic-ack-thinning",
        *_AIOQUIC,
        "aioquic QuicConnection._ack_delay (written) and _spaces[ONE_RTT] (read: ack_at, "
        "largest_received_packet; ack_at written)",
        "one ACK per few full-size datagrams instead of about one per millisecond, which "
        "every hop of the chain pays for per message; off: aioquic's ACK 1 ms after any "
        "packet (more CPU per MB, same correctness)",
    ),
    LibraryPatch(
        "quic-probe-loss",
        *_AIOQUIC,
        "aioquic QuicConnection._on_ping_delivery (wrapped per connection), _ping_pending "
        "(read; an unsent probe's uid removed)",
        "a path probe is acknowledged only if it went out on its path: one that is lost, or "
        "that pacing held back, is not sent later on whichever path carries the next packet "
        "(whose acknowledgement would vouch for the path that lost it); off: a volunteer that "
        "swallows traffic can be kept alive by re-sent probes",
    ),
    LibraryPatch(
        "quic-loss-thresholds",
        *_AIOQUIC,
        "aioquic.quic.recovery.K_PACKET_THRESHOLD, K_TIME_THRESHOLD (swapped around one "
        "connection's QuicPacketRecovery._detect_loss, via QuicConnection._loss)",
        "a reordering tolerance for sessions striped over volunteers; off: RFC 9002's "
        "single-path thresholds",
    ),
)
"""The one table of ferry's reaches into library internals (module docstring)."""

_BY_NAME = {patch.name: patch for patch in PATCHES}


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"1.16.0"`` → ``(1, 16, 0)``; digits after the first non-numeric part are ignored."""
    parts: list[int] = []
    for part in version.split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(part):
            break
    return tuple(parts)


def version_in_range(patch: LibraryPatch, version: str | None) -> bool:
    """Whether ``version`` (``None``: not installed) is inside ``patch``'s checked range."""
    if not version:
        return False
    parsed = _version_tuple(version)
    return bool(parsed) and _version_tuple(patch.minimum) <= parsed < _version_tuple(patch.below)


def installed_version(library: str) -> str | None:
    """The installed version of ``library``, or ``None``."""
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return None


_decisions: dict[str, bool] = {}


def enabled(name: str, version: str | None = None) -> bool:
    """Whether the patch ``name`` may be applied (or its private attribute read).

    Decided once per process from the installed version (``version`` overrides it, for
    tests: the decision is then not remembered). Outside the range one warning is logged.
    """
    if version is None and name in _decisions:
        return _decisions[name]
    patch = _BY_NAME[name]
    found = installed_version(patch.library) if version is None else version
    decision = version_in_range(patch, found)
    if not decision:
        logger.warning(
            "%s %s is not a version ferry's %r patch was checked against (%s to below %s): "
            "it stays off. Lost: %s. Install with constraints.txt to get it back.",
            patch.library,
            found or "(not installed)",
            patch.name,
            patch.minimum,
            patch.below,
            patch.why,
        )
    if version is None:
        _decisions[name] = decision
    return decision


# --- install ----------------------------------------------------------------------------------

_installed: dict[str, bool] = {}


def install(versions: Mapping[str, str] | None = None) -> dict[str, bool]:
    """Apply every process-wide patch of :data:`PATCHES` whose version gate allows it
    (idempotent); return, per patch name, whether it is in effect.

    ``versions`` (library name to version) replaces the installed versions in the gate, for
    tests that show what happens with another version; such a call is not remembered."""
    if versions is None and _installed:
        return dict(_installed)

    def allowed(name: str) -> bool:
        if versions is None:
            return enabled(name)
        return enabled(name, versions.get(_BY_NAME[name].library, ""))

    result = {
        "sctp-delayed-acknowledgements": allowed("sctp-delayed-acknowledgements")
        and _install_sctp_acknowledgements(),
        "sctp-max-user-data": allowed("sctp-max-user-data") and _install_sctp_max_user_data(),
        "srtp-profile-order": allowed("srtp-profile-order") and _install_srtp_profile_order(),
        "host-addresses": allowed("host-addresses") and _install_host_address_wrapper(),
        "stun-request-order": allowed("stun-request-order") and _install_stun_request_order(),
    }
    if versions is None:
        _installed.update(result)
    return dict(result)


def _install_sctp_acknowledgements() -> bool:
    missing = [
        name for name in OVERRIDDEN_METHODS if not hasattr(aiortc_sctp.RTCSctpTransport, name)
    ]
    current = getattr(aiortc_peer_connection, "RTCSctpTransport", None)
    if missing or current is None:
        logger.warning(
            "aiortc's SCTP transport has no %s: SACKs stay one per packet",
            ", ".join(missing) or "RTCSctpTransport in rtcpeerconnection",
        )
        return False
    if current not in (aiortc_sctp.RTCSctpTransport, DelayedAcknowledgementSctpTransport):
        logger.warning("aiortc's RTCSctpTransport is already replaced: SACKs left as they are")
        return False
    aiortc_peer_connection.RTCSctpTransport = (  # type: ignore[attr-defined]
        DelayedAcknowledgementSctpTransport
    )
    return True


SCTP_MAX_USER_DATA = 1232
"""Most bytes of one message aiortc's SCTP puts in one DATA chunk, for every association in
the process. aiortc's own limit is 1,160, so every 1,200-byte QUIC datagram went out as two
SCTP packets (two DTLS records, two UDP sends, a reassembly); 1,232 carries one whole in a
1,260-byte SCTP packet (1,289 bytes of UDP payload with DTLS). Measured in BENCHMARKS.md.

A constant, not a per-connection setting: aiortc reads its module global
``USERDATA_MAX_LENGTH`` at use time in ``__init__``, ``_send``, ``_receive_sack_chunk``,
``_t3_expired`` and ``_transmit`` (aiortc 1.16), several of them coroutines that await between
reads, so no per-association value can be swapped in around them; overriding all five would
copy a large part of aiortc's SCTP. One value chosen here, set once by :func:`install`, means
no configuration can change what another association in the process uses."""


def _install_sctp_max_user_data() -> bool:
    if not isinstance(getattr(aiortc_sctp, "USERDATA_MAX_LENGTH", None), int):
        logger.warning("aiortc has no USERDATA_MAX_LENGTH: its SCTP chunk size is left as is")
        return False
    aiortc_sctp.USERDATA_MAX_LENGTH = SCTP_MAX_USER_DATA
    return True


CHROMIUM_SRTP_PROFILE_ORDER = (
    b"SRTP_AES128_CM_SHA1_80",
    b"SRTP_AEAD_AES_256_GCM",
    b"SRTP_AEAD_AES_128_GCM",
)
"""The order of ``use_srtp`` profiles in Chromium 156's ClientHello (0x0001, 0x0008, 0x0007;
captured by tests/browser/test_dtls_fingerprint.py). aiortc offers 0x0008, 0x0007, 0x0001."""


def _install_srtp_profile_order() -> bool:
    """Reorder aiortc's SRTP profiles, in place, to Chromium's order (aiortc reads the list
    for every DTLS transport; the same for all)."""
    profiles = getattr(aiortc_dtls, "SRTP_PROFILES", None)
    if not isinstance(profiles, list):
        logger.warning("aiortc has no SRTP_PROFILES list: SRTP profile order left as it is")
        return False
    rank = {name: index for index, name in enumerate(CHROMIUM_SRTP_PROFILE_ORDER)}
    profiles.sort(key=lambda profile: rank.get(profile.openssl_profile, len(rank)))
    return True


# --- aioice: host addresses -------------------------------------------------------------------

_LOOPBACK_IPV4 = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class _HostAddressPolicy:
    include_loopback: bool
    only: tuple[str, ...] | None


_host_address_policy: ContextVar[_HostAddressPolicy | None] = ContextVar(
    "ferry_host_address_policy", default=None
)


@contextlib.contextmanager
def host_address_policy(*, include_loopback: bool, only: tuple[str, ...] | None) -> Iterator[bool]:
    """Within the block (this task and what it awaits), aioice gathers host candidates on
    ``only`` if given, else on its own addresses plus ``127.0.0.1`` if ``include_loopback``.
    Yields whether the wrapper is installed (``False``: aioice's own addresses are used)."""
    token = _host_address_policy.set(_HostAddressPolicy(include_loopback, only))
    try:
        yield _installed.get("host-addresses", False)
    finally:
        _host_address_policy.reset(token)


def _install_host_address_wrapper() -> bool:
    """Wrap ``aioice.ice.get_host_addresses``; other users of aioice in the process see the
    original behaviour (the wrapper only acts under :func:`host_address_policy`)."""
    original: Callable[[bool, bool], list[str]] | None = getattr(
        aioice.ice, "get_host_addresses", None
    )
    if original is None:
        logger.warning(
            "aioice.ice.get_host_addresses not found: loopback ICE candidates are unavailable"
        )
        return False
    if getattr(original, "_ferry_wrapper", False):
        return True

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        policy = _host_address_policy.get()
        if policy is None:
            return original(use_ipv4, use_ipv6)
        if policy.only is not None:
            return [
                address for address in policy.only if (use_ipv6 if ":" in address else use_ipv4)
            ]
        addresses = original(use_ipv4, use_ipv6)
        if policy.include_loopback and use_ipv4 and _LOOPBACK_IPV4 not in addresses:
            addresses.append(_LOOPBACK_IPV4)
        return addresses

    get_host_addresses._ferry_wrapper = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses
    return True


# --- aioice: STUN binding requests in Chromium's shape ----------------------------------------

CHROMIUM_STUN_REQUEST_ORDER = (
    "USERNAME",
    "GOOG-NETWORK-INFO",
    "ICE-CONTROLLING",
    "ICE-CONTROLLED",
    "USE-CANDIDATE",
    "PRIORITY",
)
"""The attribute order of Chromium 156's ICE binding requests (captured; MESSAGE-INTEGRITY
and FINGERPRINT follow, as in every STUN message). aioice writes USERNAME, PRIORITY,
ICE-CONTROLLING/-CONTROLLED, USE-CANDIDATE and no GOOG-NETWORK-INFO."""

GOOG_NETWORK_INFO_TYPE = 0xC057
"""The STUN attribute type of Chromium's GOOG-NETWORK-INFO."""

GOOG_NETWORK_INFO_VALUE = bytes.fromhex("000003e7")
"""Network id 0 and network cost 999, what Chromium 156 sent here (and the
``network-cost 999`` of its candidates, which ``browser_like_sdp`` writes too)."""


def _install_stun_request_order() -> bool:
    """Wrap ``aioice.ice.Connection.build_request`` and register GOOG-NETWORK-INFO in aioice's
    attribute tables so that it is written (and parsed when a browser sends it)."""
    connection_class = getattr(aioice.ice, "Connection", None)
    original = getattr(connection_class, "build_request", None)
    by_name = getattr(aioice.stun, "ATTRIBUTES_BY_NAME", None)
    by_type = getattr(aioice.stun, "ATTRIBUTES_BY_TYPE", None)
    pack_bytes = getattr(aioice.stun, "pack_bytes", None)
    unpack_bytes = getattr(aioice.stun, "unpack_bytes", None)
    if (
        connection_class is None
        or original is None
        or not isinstance(by_name, dict)
        or not isinstance(by_type, dict)
        or pack_bytes is None
        or unpack_bytes is None
    ):
        logger.warning("aioice's STUN internals have changed: STUN attribute order left as is")
        return False
    if getattr(original, "_ferry_wrapper", False):
        return True
    entry = (GOOG_NETWORK_INFO_TYPE, "GOOG-NETWORK-INFO", pack_bytes, unpack_bytes)
    by_name.setdefault("GOOG-NETWORK-INFO", entry)
    by_type.setdefault(GOOG_NETWORK_INFO_TYPE, entry)
    rank = {name: index for index, name in enumerate(CHROMIUM_STUN_REQUEST_ORDER)}

    def build_request(
        self: aioice.ice.Connection, pair: aioice.ice.CandidatePair, nominate: bool
    ) -> aioice.stun.Message:
        request: aioice.stun.Message = original(self, pair, nominate)
        attributes = dict(request.attributes)
        attributes["GOOG-NETWORK-INFO"] = GOOG_NETWORK_INFO_VALUE
        request.attributes = dict(
            sorted(attributes.items(), key=lambda item: rank.get(item[0], len(rank)))
        )
        return request

    build_request._ferry_wrapper = True  # type: ignore[attr-defined]
    connection_class.build_request = build_request
    return True


# --- aiortc: per connection -------------------------------------------------------------------


def use_certificate(
    peer_connection: aiortc_peer_connection.RTCPeerConnection,
    certificate: aiortc_dtls.RTCCertificate,
) -> bool:
    """Make the connection use ``certificate`` (aiortc has no public way: it keeps its own in
    a private attribute); ``False``, with a warning, if that is off or gone."""
    if not enabled("peer-connection-certificate"):
        return False
    attribute = "_RTCPeerConnection__certificates"
    if not isinstance(getattr(peer_connection, attribute, None), list):
        logger.warning("aiortc keeps no certificate list: its own DTLS certificate is used")
        return False
    setattr(peer_connection, attribute, [certificate])
    return True


def raise_ice_socket_buffers(
    peer_connection: aiortc_peer_connection.RTCPeerConnection, size: int
) -> int:
    """Set ``SO_RCVBUF`` and ``SO_SNDBUF`` to ``size`` on the connection's ICE sockets;
    returns how many sockets were changed (0 when the patch is off or finds none)."""
    if size == 0 or peer_connection.sctp is None:
        return 0
    if not (enabled("ice-socket-buffers") and enabled("ice-socket-buffers-aioice")):
        return 0
    gatherer = peer_connection.sctp.transport.transport.iceGatherer
    protocols = getattr(getattr(gatherer, "_connection", None), "_protocols", None)
    if protocols is None:
        logger.warning("aioice has no Connection._protocols: ICE socket buffers left as they are")
        return 0
    changed = 0
    for protocol in protocols:
        transport = getattr(protocol, "transport", None)
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        except OSError as error:
            logger.warning("could not raise an ICE socket's buffers: %s", error)
            continue
        changed += 1
    return changed


# --- aiortc/pyOpenSSL: the DTLS ClientHello ---------------------------------------------------

CHROMIUM_CIPHER_SUITES = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:"
    b"AES128-GCM-SHA256:AES128-SHA:AES256-SHA"
)
"""The DTLS 1.2 cipher suites of Chromium 156's ClientHello, in its order (0xc02b, 0xc02f,
0xcca9, 0xcca8, 0xc009, 0xc013, 0xc00a, 0xc014, 0x009c, 0x002f, 0x0035; captured, after its
three TLS 1.3 suites, which DTLS 1.2 cannot offer). aiortc offers four (0xc02b, 0xcca9,
0xc009, 0xc00a). The suites beyond ECDSA are offered, never chosen: both certificates are
ECDSA, and the server picks."""

_SECURITY_LEVEL = b":@SECLEVEL=0"
"""OpenSSL's security level for aiortc's DTLS: 0, so that OpenSSL offers RSA+SHA1 as the
ninth signature algorithm, as Chromium does (levels 1 and up leave SHA-1 signatures out).
Nothing weak can be negotiated: the cipher suites and groups above are all strong, both
peers' certificates are ECDSA P-256 keys pinned by fingerprint in the SDP (so RSA+SHA1 is
never chosen), and what crosses the data channel is QUIC, encrypted end to end to the egress
whatever the DTLS layer does."""

CHROMIUM_SIGNATURE_ALGORITHMS = (
    b"ECDSA+SHA256:rsa_pss_rsae_sha256:RSA+SHA256:ECDSA+SHA384:rsa_pss_rsae_sha384:"
    b"RSA+SHA384:rsa_pss_rsae_sha512:RSA+SHA512:RSA+SHA1"
)
"""The nine ``signature_algorithms`` of Chromium 156's ClientHello, in its order (0x0403,
0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601, 0x0201; captured). OpenSSL's
default offers 20; OpenSSL leaves out RSA+SHA1 at its default security level."""

CHROMIUM_GROUPS = b"X25519MLKEM768:X25519:P-256:P-384"
"""The ``supported_groups`` of Chromium 156's ClientHello, in its order (0x11ec, 0x001d,
0x0017, 0x0018; captured). OpenSSL leaves the post-quantum group out of a DTLS 1.2
ClientHello (measured), so aiortc offers the other three, in Chromium's order."""

_SSL_OP_NO_ENCRYPT_THEN_MAC = 0x00080000
"""OpenSSL 3's ``SSL_OP_NO_ENCRYPT_THEN_MAC`` (not exported by pyOpenSSL): Chromium's
BoringSSL never sends ``encrypt_then_mac``."""


def align_dtls_context(context: SSL.Context) -> list[str]:
    """Align the OpenSSL context aiortc made for one DTLS transport with Chromium's
    ClientHello: cipher suites, no ``encrypt_then_mac``, groups and signature algorithms.
    Returns what could *not* be aligned (empty when all was)."""
    if not enabled("dtls-context"):
        return ["all (aiortc version)"]
    lost = []
    try:
        context.set_cipher_list(CHROMIUM_CIPHER_SUITES + _SECURITY_LEVEL)
    except SSL.Error:
        lost.append("cipher suites")
    context.set_options(_SSL_OP_NO_ENCRYPT_THEN_MAC)
    if not enabled("dtls-context-openssl"):
        return [*lost, "groups", "signature algorithms"]
    from OpenSSL._util import lib as openssl_lib

    raw: Any = getattr(context, "_context", None)
    set_groups = getattr(openssl_lib, "SSL_CTX_set1_curves_list", None)
    if raw is None or set_groups is None or set_groups(raw, CHROMIUM_GROUPS) != 1:
        lost.append("groups")
    set_sigalgs = getattr(openssl_lib, "SSL_CTX_set1_sigalgs_list", None)
    if raw is None or set_sigalgs is None or set_sigalgs(raw, CHROMIUM_SIGNATURE_ALGORITHMS) != 1:
        lost.append("signature algorithms")
    if lost:
        logger.warning("could not align DTLS %s with Chromium's", ", ".join(lost))
    return lost


# --- aioquic: reads of private attributes -----------------------------------------------------


def quic_kept_stream_ids(connection: QuicConnection) -> set[int] | None:
    """The ids of the streams aioquic still keeps, or ``None`` if that cannot be read."""
    if not enabled("quic-send-buffer"):
        return None
    streams = getattr(connection, "_streams", None)
    return set(streams) if isinstance(streams, dict) else None


def quic_send_buffer_size(connection: QuicConnection, stream_id: int) -> int:
    """Bytes of ``stream_id`` that aioquic holds unsent or unacknowledged (0 if unknown)."""
    if not enabled("quic-send-buffer"):
        return 0
    stream: QuicStream | None = connection._streams.get(stream_id)
    if stream is None:
        return 0
    return len(stream.sender._buffer)


def quic_peer_certificate(connection: QuicConnection) -> x509.Certificate | None:
    """The certificate the peer presented in the handshake, ``None`` if not (yet) known or
    not readable (so that a fingerprint pin fails rather than passes)."""
    if not enabled("quic-peer-certificate"):
        return None
    certificate = getattr(connection.tls, "_peer_certificate", None)
    return certificate if isinstance(certificate, x509.Certificate) else None


QuicPacketMarker = tuple[tuple[int, tuple[tuple[int, int], ...]], ...]
"""What :func:`quic_accepted_packet_marker` returns: compare two for equality only."""

_marker_counter = 0


def quic_accepted_packet_marker(connection: QuicConnection) -> QuicPacketMarker:
    """A value that changes whenever aioquic accepts a packet it had not seen (see
    :func:`ferry.transport.quic.accepted_packet_marker`). Off: a value that changes on every
    call, so every datagram counts as accepted."""
    if not enabled("quic-accepted-packets"):
        global _marker_counter
        _marker_counter += 1
        return ((_marker_counter, ()),)
    return tuple(
        (
            space.largest_received_packet,
            tuple((packets.start, packets.stop) for packets in space.ack_queue),
        )
        for space in connection._spaces.values()
    )


def quic_acknowledgement_state(connection: QuicConnection) -> tuple[bool, int] | None:
    """Of ``connection``'s 1-RTT packet space: whether an ACK is pending, and the largest
    packet number received (-1: none yet). ``None`` when off or before that space exists."""
    if not enabled("quic-ack-thinning"):
        return None
    space = connection._spaces.get(aioquic_tls.Epoch.ONE_RTT)
    if space is None:
        return None
    return space.ack_at is not None, space.largest_received_packet


def quic_acknowledge_now(connection: QuicConnection, now: float) -> None:
    """Make the pending 1-RTT ACK due at ``now`` (sent by the next ``datagrams_to_send``)."""
    if not enabled("quic-ack-thinning"):
        return
    space = connection._spaces.get(aioquic_tls.Epoch.ONE_RTT)
    if space is not None and space.ack_at is not None and space.ack_at > now:
        space.ack_at = now


def use_ack_delay(connection: QuicConnection, delay: float) -> bool:
    """Make ``connection`` hold an ACK up to ``delay`` seconds after the first unacknowledged
    packet (aioquic's own: 1 ms); ``False`` when off (aioquic's delay is kept)."""
    if not enabled("quic-ack-thinning") or not hasattr(connection, "_ack_delay"):
        return False
    connection._ack_delay = delay
    return True


def keep_lost_probes_lost(connection: QuicConnection, claim: Callable[[int], bool]) -> bool:
    """Make a lost PING whose uid ``claim`` takes (returns ``True`` for) stay lost.

    aioquic puts the uids of a PING it declares lost back in its queue, so the next packet
    carries them again and their acknowledgement is reported as if the first PING had
    arrived. A path probe speaks for the one path it went out on: re-sent, it would travel
    on whichever path the scheduler picks next and vouch for the path that lost it. ``claim``
    is asked for each uid of a lost PING; uids it takes are not queued again (the session's
    own liveness PINGs, which it does not take, are). ``False`` when off."""
    if not enabled("quic-probe-loss"):
        return False
    deliver = getattr(connection, "_on_ping_delivery", None)
    if deliver is None or not hasattr(connection, "_ping_pending"):
        logger.warning("aioquic's PING delivery has changed: a lost path probe is re-sent")
        return False

    def on_ping_delivery(delivery: QuicDeliveryState, uids: Sequence[int]) -> None:
        if delivery != QuicDeliveryState.ACKED:
            uids = tuple(uid for uid in uids if not claim(uid))
        deliver(delivery, uids)

    connection._on_ping_delivery = on_ping_delivery  # type: ignore[method-assign]
    return True


def withdraw_unsent_ping(connection: QuicConnection, uid: int) -> bool:
    """Take the PING ``uid`` back if aioquic still holds it unsent (its pacer or congestion
    window stopped the flush before it); ``True`` if it was withdrawn. When the
    ``quic-probe-loss`` patch is off nothing is read and ``False`` is returned."""
    if not enabled("quic-probe-loss"):
        return False
    pending = getattr(connection, "_ping_pending", None)
    if not isinstance(pending, list) or uid not in pending:
        return False
    pending.remove(uid)
    return True


def quic_flow_control_enabled() -> bool:
    """Whether ``FlowControlledConnection`` may override aioquic's credit methods."""
    return enabled("quic-flow-control")


def use_loss_thresholds(
    connection: QuicConnection, packet_threshold: int, time_threshold: float
) -> bool:
    """Make ``connection`` (only) detect loss with these reordering thresholds.

    aioquic reads ``K_PACKET_THRESHOLD`` and ``K_TIME_THRESHOLD`` as module globals in its
    synchronous ``_detect_loss``; the connection's recovery object gets a ``_detect_loss`` that
    sets them, calls aioquic's, and restores them, so no other connection sees them."""
    if not enabled("quic-loss-thresholds"):
        return False
    recovery = getattr(connection, "_loss", None)
    detect = getattr(recovery, "_detect_loss", None)
    if detect is None or not hasattr(aioquic_recovery, "K_PACKET_THRESHOLD"):
        logger.warning("aioquic's loss detection has changed: RFC 9002's thresholds are used")
        return False

    def detect_loss(*, now: float, space: Any) -> None:
        saved = aioquic_recovery.K_PACKET_THRESHOLD, aioquic_recovery.K_TIME_THRESHOLD
        aioquic_recovery.K_PACKET_THRESHOLD = packet_threshold
        aioquic_recovery.K_TIME_THRESHOLD = time_threshold
        try:
            detect(now=now, space=space)
        finally:
            aioquic_recovery.K_PACKET_THRESHOLD, aioquic_recovery.K_TIME_THRESHOLD = saved

    recovery._detect_loss = detect_loss  # type: ignore[union-attr]
    return True
