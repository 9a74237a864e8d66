"""STUN and TURN servers for ICE: their URLs, the broker's choice per peer, and TURN's
short-lived credentials (``docs/protocol.md`` §2.10).

Grammar of the URLs accepted (RFC 7064 for ``stun``/``stuns``, RFC 7065 for
``turn``/``turns``; nothing else, no user information, path or fragment)::

    stun-url  = ("stun:" / "stuns:") host [":" port]
    turn-url  = ("turn:" / "turns:") host [":" port] ["?transport=" ("udp" / "tcp")]
    host      = a DNS name (letters, digits, "-" and "." only), an IPv4 address,
                or "[" an IPv6 address "]"
    port      = 1..65535 (default 3478, or 5349 for stuns/turns)

A URL is at most :data:`MAX_URL_LENGTH` characters. A TURN server needs a user name and a
credential (either both or neither, and only for TURN), each at most
:data:`MAX_CREDENTIAL_LENGTH` printable ASCII characters.

**Choice per peer.** A censor can block well-known STUN and TURN servers. A broker that knows
more servers than a peer needs hands each peer a random subset (:func:`choose_for_peer`): at
most ``per_peer`` STUN servers and at most ``per_peer`` TURN servers, so one blocked server
does not stop everyone, and no single request reveals the whole list.

**TURN credentials** follow the TURN REST API scheme that coturn implements
(``use-auth-secret`` with ``static-auth-secret``; draft-uberti-behave-turn-rest-00): the user
name is ``"<expiry as Unix seconds>:<random>"`` and the credential is the base64 of
HMAC-SHA1 of that user name under the secret shared by the broker and the TURN server. The
TURN server refuses the user name once its expiry has passed; no state is shared between the
two beyond the secret. The secret itself never leaves the broker.

This module is sans-IO: ``now`` and the random source are passed in.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ferry.core.nat_behaviour import StunServer
from ferry.errors import ConfigError

MAX_URL_LENGTH = 256
"""Longest ICE server URL accepted, in characters."""

MAX_CREDENTIAL_LENGTH = 256
"""Longest TURN user name or credential accepted, in characters."""

MAX_ICE_SERVERS = 8
"""Most ICE servers one broker message may carry (a peer needs two or three)."""

MAX_PER_PEER = MAX_ICE_SERVERS // 2
"""Largest ``ice_servers_per_peer``: that many STUN plus that many TURN servers fit in one
message."""

Scheme = Literal["stun", "stuns", "turn", "turns"]
"""The URL schemes of RFC 7064 and RFC 7065."""

Transport = Literal["udp", "tcp"]
"""How a TURN client reaches its server (``?transport=``)."""

_SCHEMES: dict[str, Scheme] = {"stun": "stun", "stuns": "stuns", "turn": "turn", "turns": "turns"}
_TRANSPORTS: dict[str, Transport] = {"udp": "udp", "tcp": "tcp"}
_DEFAULT_PORTS: dict[Scheme, int] = {"stun": 3478, "stuns": 5349, "turn": 3478, "turns": 5349}
_URL = re.compile(
    r"(?P<scheme>stuns?|turns?):"
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+))"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?"
)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


class IceServerError(ConfigError):
    """An ICE server URL or its credentials break the rules of this module.

    ``reason`` is a short label (``bad_url``, ``bad_credentials``) that a decoder turns into
    its own error.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IceServerUrl:
    """A parsed STUN or TURN URL."""

    scheme: Scheme
    """``stun``, ``stuns``, ``turn`` or ``turns``."""
    host: str
    """A DNS name, or an IP address (an IPv6 one without brackets)."""
    port: int
    """The port, the scheme's default when the URL names none."""
    transport: Transport | None
    """The ``?transport=`` of a TURN URL; ``None`` when left out (UDP for ``turn``, TCP for
    ``turns``)."""

    @property
    def is_turn(self) -> bool:
        """``True`` for ``turn:`` and ``turns:``."""
        return self.scheme in ("turn", "turns")

    @property
    def address_literal(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address, or ``None`` when it is a name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


@functools.lru_cache(maxsize=256)
def parse_url(url: str) -> IceServerUrl:
    """Parse a STUN or TURN URL; raise :class:`IceServerError` (``bad_url``) naming the
    problem. Cached: every :class:`IceServer` property reads it, and a role sees the same few
    URLs again and again."""

    def refuse(why: str) -> IceServerError:
        return IceServerError(f"the ICE server URL {url[:80]!r} {why}", reason="bad_url")

    if len(url) > MAX_URL_LENGTH:
        raise refuse(f"is longer than {MAX_URL_LENGTH} characters")
    match = _URL.fullmatch(url)
    if match is None:
        raise refuse(
            "is not stun:HOST[:PORT], stuns:HOST[:PORT] or turn(s):HOST[:PORT][?transport=udp|tcp]"
        )
    scheme = _SCHEMES[match["scheme"]]
    port = int(match["port"]) if match["port"] is not None else _DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise refuse("has a port outside 1..65535")
    transport = None if match["transport"] is None else _TRANSPORTS[match["transport"]]
    if transport is not None and scheme not in ("turn", "turns"):
        raise refuse("has ?transport=, which only TURN URLs take")
    if match["ipv6"] is not None:
        try:
            host = str(ipaddress.IPv6Address(match["ipv6"]))
        except ValueError as exc:
            raise refuse("has a malformed IPv6 address") from exc
    else:
        host = match["host"].lower()
        if not _valid_host_name(host):
            raise refuse("has a malformed host name")
    return IceServerUrl(scheme=scheme, host=host, port=port, transport=transport)


def _valid_host_name(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return False
    return not labels[-1].isdigit()  # "1.2.3" or "300.1.1.1": a number, not a name


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN or TURN server for ICE, as the broker hands it out and WebRTC takes it."""

    url: str
    """A ``stun:``, ``stuns:``, ``turn:`` or ``turns:`` URL (see the module docstring)."""

    username: str | None = None
    """The TURN user name; ``None`` for STUN."""

    credential: str | None = None
    """The TURN password; ``None`` for STUN."""

    def __post_init__(self) -> None:
        parsed = parse_url(self.url)
        if (self.username is None) != (self.credential is None):
            raise IceServerError(
                f"the ICE server {self.url!r} has a user name without a credential or the "
                "other way round",
                reason="bad_credentials",
            )
        if self.username is not None and not parsed.is_turn:
            raise IceServerError(
                f"the STUN server {self.url!r} takes no user name or credential",
                reason="bad_credentials",
            )
        for value in (self.username, self.credential):
            if value is not None and (
                len(value) > MAX_CREDENTIAL_LENGTH or _PRINTABLE.fullmatch(value) is None
            ):
                raise IceServerError(
                    f"the TURN user name and credential of {self.url!r} must be 1 to "
                    f"{MAX_CREDENTIAL_LENGTH} printable ASCII characters without spaces",
                    reason="bad_credentials",
                )

    @property
    def parsed(self) -> IceServerUrl:
        """The parsed :attr:`url`."""
        return parse_url(self.url)

    @property
    def is_turn(self) -> bool:
        """``True`` for a TURN server."""
        return self.parsed.is_turn

    def __repr__(self) -> str:  # never print a credential
        hidden = "" if self.credential is None else ", credential=<hidden>"
        user = "" if self.username is None else f", username={self.username!r}"
        return f"IceServer(url={self.url!r}{user}{hidden})"


def parse_user_ice_server(value: str) -> IceServer:
    """An ICE server given by a user on the command line: a STUN URL, or a TURN URL written
    ``turn:USER:PASSWORD@HOST[:PORT][?transport=...]`` (ferry's own notation for a server the
    user brings with static credentials; the part before ``@`` is removed from the URL).
    The password may contain ``:``, except after a TURN REST user name
    (``<unix seconds>:<random>``, which always has one): ``turn:1767225600:ab:PASS@HOST`` is
    user ``1767225600:ab`` with password ``PASS`` (a REST credential is base64, without
    ``:``)."""
    scheme, separator, rest = value.partition(":")
    if separator and scheme in ("turn", "turns") and "@" in rest:
        credentials, _, location = rest.rpartition("@")
        expiry, _, after_expiry = credentials.partition(":")
        if expiry.isdigit() and ":" in after_expiry:
            username, colon, credential = credentials.rpartition(":")
        else:
            username, colon, credential = credentials.partition(":")
        if not colon or not username or not credential:
            raise IceServerError(
                f"the TURN server {scheme}:…@{location} must be written "
                f"{scheme}:USER:PASSWORD@HOST[:PORT]",
                reason="bad_credentials",
            )
        return IceServer(f"{scheme}:{location}", username=username, credential=credential)
    return IceServer(value)


def choose_for_peer(
    servers: Sequence[IceServer], per_peer: int, chooser: random.Random
) -> tuple[IceServer, ...]:
    """A random subset of ``servers``: at most ``per_peer`` STUN and at most ``per_peer``
    TURN servers, each kind in a random order (the order a peer tries them in)."""
    stun = [server for server in servers if not server.is_turn]
    turn = [server for server in servers if server.is_turn]
    chosen = chooser.sample(stun, min(per_peer, len(stun)))
    chosen += chooser.sample(turn, min(per_peer, len(turn)))
    return tuple(chosen)


def turn_rest_credentials(
    secret: bytes, now: float, lifetime: float, chooser: random.Random
) -> tuple[str, str]:
    """A TURN REST user name and credential valid until ``now + lifetime`` (Unix seconds),
    with 96 random bits in the user name so that no two peers share one."""
    expiry = int(now + lifetime)
    username = f"{expiry}:{chooser.getrandbits(96):024x}"
    return username, turn_rest_credential(secret, username)


def turn_rest_credential(secret: bytes, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)): the password coturn expects for ``username``."""
    digest = hmac.new(secret, username.encode("ascii"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class IceServerPlan:
    """The broker's ICE servers and how it hands them out (``BrokerConfig`` builds one)."""

    servers: tuple[IceServer, ...] = ()
    """Every STUN and TURN server the broker knows. TURN servers here carry no credentials
    when :attr:`turn_secret` is set (they are minted per peer)."""
    per_peer: int = 2
    """At most this many STUN and this many TURN servers go to one peer."""
    turn_secret: bytes | None = None
    """The TURN REST shared secret; ``None``: TURN servers are handed out with the static
    credentials they were configured with."""
    credential_lifetime: float = 3600.0
    """Seconds a minted TURN credential stays valid."""

    def __post_init__(self) -> None:
        if not 1 <= self.per_peer <= MAX_PER_PEER:
            raise ConfigError(f"ice_servers_per_peer must be within 1..{MAX_PER_PEER}")
        if not 60 <= self.credential_lifetime <= 86400:
            raise ConfigError("turn_credential_ttl must be within 60..86400 seconds")
        if self.turn_secret is not None and not self.turn_secret:
            raise ConfigError("the TURN secret is empty")
        for server in self.servers:
            if server.is_turn and self.turn_secret is None and server.username is None:
                raise ConfigError(
                    f"the TURN server {server.url} needs credentials: give the broker "
                    "--turn-secret-file (the secret coturn's static-auth-secret holds)"
                )

    def for_peer(self, now: float, chooser: random.Random) -> tuple[IceServer, ...]:
        """A peer's random subset, with fresh TURN credentials if a secret is set."""
        chosen = choose_for_peer(self.servers, self.per_peer, chooser)
        if self.turn_secret is None:
            return chosen
        minted: list[IceServer] = []
        for server in chosen:
            if server.is_turn:
                username, credential = turn_rest_credentials(
                    self.turn_secret, now, self.credential_lifetime, chooser
                )
                server = IceServer(server.url, username=username, credential=credential)
            minted.append(server)
        return tuple(minted)


INTERNAL_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)
"""Where a broker may not send a peer's STUN or TURN requests: this host, the peer's own
network (RFC 1918, unique-local), link-local (which holds cloud metadata at 169.254.169.254),
carrier-grade NAT, unspecified, multicast and reserved addresses."""


def is_internal_address(server: IceServer) -> bool:
    """``True`` when the server's host is an IP address in :data:`INTERNAL_NETWORKS` (an
    IPv4-mapped IPv6 address counts as its IPv4 address). A name is not resolved here and
    counts as not internal."""
    address = server.parsed.address_literal
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in INTERNAL_NETWORKS)


def without_internal(
    servers: Sequence[IceServer], *, allow_internal: bool
) -> tuple[tuple[IceServer, ...], tuple[IceServer, ...]]:
    """``servers`` split into those a peer may use and those it refuses because a broker named
    them on an internal address (none refused with ``allow_internal``)."""
    if allow_internal:
        return tuple(servers), ()
    kept = tuple(server for server in servers if not is_internal_address(server))
    refused = tuple(server for server in servers if is_internal_address(server))
    return kept, refused


def nat_discovery_servers(servers: Sequence[IceServer]) -> tuple[StunServer, ...]:
    """The plain ``stun:`` servers of ``servers``, for RFC 5780 NAT discovery."""
    return tuple(
        StunServer(host=server.parsed.host, port=server.parsed.port)
        for server in servers
        if server.parsed.scheme == "stun"
    )
