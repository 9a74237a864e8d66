"""Which egresses a volunteer connects to (``docs/architecture.md``, "Egresses a volunteer
trusts").

The broker names the egress in every match (``docs/protocol.md`` §2.3), and a volunteer
opens a WebSocket to it. A hostile broker could name an address inside the volunteer's own
machine or network (``ws://127.0.0.1:8080/admin/ws``, a router's page, a cloud metadata
service) and turn every volunteer into a request-forgery tool. So a volunteer:

1. refuses an egress that is not on its allowlist (``--egress-allow``, the widget's
   ``data-egress``) when it has one (``egress_not_allowed``);
2. refuses an egress host that is an internal address or a name for this host
   (``localhost``, ``*.localhost``) unless ``allow_internal`` is on
   (``egress_internal_address``);
3. checks every address a name resolves to, and the address each socket is finally opened
   to, against the same table (the Python volunteer: :mod:`ferry.volunteer.relay`), so a
   name that resolves inward, DNS rebinding and HTTP redirects are refused too.

Internal addresses, with the label each gets in logs:

=======================  ===============================================================
``unspecified``          0.0.0.0/8, ``::``
``loopback``             127.0.0.0/8, ``::1``
``private``              10/8, 172.16/12, 192.168/16, fc00::/7
``shared_address_space`` 100.64.0.0/10 (carrier-grade NAT)
``link_local``           169.254.0.0/16 (cloud metadata), fe80::/10
``site_local``           fec0::/10
``multicast``            224.0.0.0/4, ff00::/8
``reserved``             240.0.0.0/4 (and 255.255.255.255)
=======================  ===============================================================

An IPv6 address that embeds an IPv4 address (IPv4-mapped ``::ffff:0:0/96``, NAT64
``64:ff9b::/96``) is judged by the IPv4 address inside.

The widget (``src/ferry/web/widget/egress.js``) runs the same rules on IP literals and names of
this host; a web page cannot resolve names, so it cannot refuse a public name that resolves
inward (``docs/widget.md``). Both copies run the vectors of
``tests/vectors/volunteer_egress.json``.

This module is sans-IO.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from ferry.core.broker_messages import MessageError, check_egress_url
from ferry.errors import ConfigError

__all__ = [
    "EgressChoice",
    "EgressRefusal",
    "internal_address_class",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_INTERNAL: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(network), label)
    for network, label in (
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared_address_space"),
        ("169.254.0.0/16", "link_local"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link_local"),
        ("fec0::/10", "site_local"),
        ("ff00::/8", "multicast"),
    )
)
_EMBEDDING = (ipaddress.IPv6Network("::ffff:0:0/96"), ipaddress.IPv6Network("64:ff9b::/96"))

_DESCRIPTIONS = {
    "unspecified": "unspecified addresses",
    "loopback": "loopback addresses",
    "private": "private network addresses",
    "shared_address_space": "carrier-grade NAT addresses",
    "link_local": "link-local addresses",
    "site_local": "site-local addresses",
    "multicast": "multicast addresses",
    "reserved": "reserved addresses",
    "this_host": "names of this host",
}


def internal_address_class(address: Address) -> str | None:
    """The label of ``address``'s internal class (see the module docstring), or ``None`` when
    it is an address an egress may have."""
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(address.packed)  # without a %zone
        if any(address in network for network in _EMBEDDING):
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    for network, label in _INTERNAL:
        if address.version == network.version and address in network:
            return label
    return None


def _host_address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


def _names_this_host(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


@dataclass(frozen=True, slots=True)
class EgressRefusal:
    """Why a volunteer will not connect to an egress."""

    reason: str
    """A metrics label: ``egress_not_allowed`` (not on the allowlist) or
    ``egress_internal_address``."""
    message: str
    """A sentence for the log, naming the egress URL and why it is refused."""
    address_class: str | None = None
    """The internal class (module docstring; ``this_host`` for ``localhost``) of an
    ``egress_internal_address`` refusal, else ``None``."""


@dataclass(frozen=True, slots=True)
class _AllowEntry:
    url: str | None
    host: str

    def covers(self, url: str, host: str) -> bool:
        if self.url is not None:
            return _normal_url(url) == self.url
        return host == self.host


def _normal_host(host: str) -> str:
    address = _host_address(host.strip("[]"))
    return str(address) if address is not None else host.rstrip(".").lower()


def _normal_url(url: str) -> str:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "wss" else 80
    host = _normal_host(parts.hostname or "")
    shown = f"[{host}]" if ":" in host else host
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{shown}:{parts.port or default}{parts.path or '/'}{query}"


def _parse_allow_entry(text: str) -> _AllowEntry:
    entry = text.strip()
    if "://" in entry:
        try:
            check_egress_url(entry, "--egress-allow")
        except MessageError as exc:
            raise ConfigError(f"egress allowlist entry {text!r}: {exc}") from None
        return _AllowEntry(
            url=_normal_url(entry), host=_normal_host(urlsplit(entry).hostname or "")
        )
    if not entry or any(character in entry for character in "/?#@ "):
        raise ConfigError(
            f"egress allowlist entry {text!r}: write an egress URL (wss://egress.example/"
            "v1/relay) or a host name or address (egress.example)"
        )
    return _AllowEntry(url=None, host=_normal_host(entry))


@dataclass(frozen=True, slots=True)
class EgressChoice:
    """A volunteer's rules for the egresses a broker names (see the module docstring)."""

    allowed: tuple[str, ...] = ()
    """The egresses to accept, each a full URL (``wss://egress.example/v1/relay``: that URL
    only) or a host (``egress.example``: any URL on it); empty: any egress that passes the
    internal-address check."""
    allow_internal: bool = False
    """Accept egresses on internal addresses (loopback tests and demos, private networks).
    The allowlist still applies."""

    def __post_init__(self) -> None:
        for entry in self.allowed:
            _parse_allow_entry(entry)

    def refuse_url(self, url: str) -> EgressRefusal | None:
        """Why ``url`` (already a valid ``ws``/``wss`` URL) is refused before any name is
        resolved, or ``None`` when it may be tried."""
        host = _normal_host(urlsplit(url).hostname or "")
        if self.allowed:
            entries = [_parse_allow_entry(entry) for entry in self.allowed]
            if not any(entry.covers(url, host) for entry in entries):
                return EgressRefusal(
                    "egress_not_allowed",
                    f"refusing egress {url}: it is not on this volunteer's egress allowlist",
                )
        if self.allow_internal:
            return None
        address = _host_address(host)
        if address is not None:
            label = internal_address_class(address)
            return None if label is None else _internal(url, label)
        return _internal(url, "this_host") if _names_this_host(host) else None

    def refuse_address(self, url: str, address: Address) -> EgressRefusal | None:
        """Why connecting to ``address`` (what the egress's name resolved to, or where a
        socket is about to connect) is refused, or ``None`` when it is allowed."""
        if self.allow_internal:
            return None
        label = internal_address_class(address)
        return None if label is None else _internal(url, label)


def _internal(url: str, label: str) -> EgressRefusal:
    return EgressRefusal(
        "egress_internal_address",
        f"refusing egress {url}: {_DESCRIPTIONS[label]} are not egresses (a broker may not "
        "send a volunteer into its own machine or network; --unsafe-allow-internal-egress "
        "is for tests and private networks)",
        label,
    )
