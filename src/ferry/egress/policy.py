"""The egress's destination policy: which addresses a client may ask the egress to reach.

A malicious client can ask the egress for any destination, so the egress must not become a
door into its own machine or network: by default it refuses every address that is not
public unicast. The policy judges *addresses*, after name resolution, so it is applied to
what the egress will actually connect to (see :mod:`ferry.egress.upstream`).

Refused by default, with the ``reason`` label each gets:

=============================  =========================================================
``unspecified``                0.0.0.0, ``::`` (never allowed)
``this_network``               the rest of 0.0.0.0/8 (never allowed: not a destination)
``loopback``                   127.0.0.0/8, ``::1``
``private``                    10/8, 172.16/12, 192.168/16, fc00::/7, 64:ff9b:1::/48
``shared_address_space``       100.64.0.0/10 (carrier-grade NAT)
``link_local``                 169.254.0.0/16 (cloud metadata 169.254.169.254), fe80::/10
``protocol_assignments``       192.0.0.0/24 (IETF protocol assignments, e.g. DS-Lite)
``documentation``              192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32,
                               3fff::/20 (never routed on the internet)
``benchmarking``               198.18.0.0/15, 2001:2::/48
``multicast``                  224.0.0.0/4, ff00::/8 (never allowed: not a TCP destination)
``broadcast``                  255.255.255.255 (never allowed: not a TCP destination)
``reserved``                   240.0.0.0/4, 100::/64 (discard-only), and every IPv6 address
                               outside 2000::/3 not listed above (unassigned by IANA)
``site_local``                 fec0::/10 (deprecated, still routed privately by some)
=============================  =========================================================

IPv6 addresses that embed an IPv4 address are judged by the IPv4 address inside, with the
embedded address's label: IPv4-mapped ``::ffff:0:0/96``, IPv4-translated ``::ffff:0:0:0/96``,
IPv4-compatible ``::/96``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16`` and Teredo
``2001::/32`` (both its server and its client address). Anything else is ``global``.

``allow_private=True`` allows all of these except the ones marked "never allowed", which
cannot be a TCP destination at all. It is for tests and demos on one machine only.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

__all__ = ["DestinationPolicy", "PolicyDecision"]


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """Whether one address may be connected to, and why."""

    allowed: bool
    """``True`` when the egress may connect to the address."""
    reason: str
    """The address's class as a short label (``global``, ``loopback``, ``private``...), for
    metrics and logs; it never contains the address itself."""
    message: str
    """A sentence for a human explaining the decision, without the address."""


@dataclass(frozen=True, slots=True)
class _AddressClass:
    reason: str
    description: str
    never_allowed: bool = False


_UNSPECIFIED = _AddressClass("unspecified", "the unspecified address", never_allowed=True)
_THIS_NETWORK = _AddressClass(
    "this_network", "an address of 'this network' (0.0.0.0/8)", never_allowed=True
)
_LOOPBACK = _AddressClass("loopback", "a loopback address of the egress itself")
_PRIVATE = _AddressClass("private", "a private network address")
_SHARED = _AddressClass("shared_address_space", "a carrier-grade NAT address (100.64.0.0/10)")
_LINK_LOCAL = _AddressClass(
    "link_local", "a link-local address (including cloud metadata services)"
)
_PROTOCOL = _AddressClass("protocol_assignments", "an IETF protocol assignment address")
_DOCUMENTATION = _AddressClass("documentation", "a documentation-only address")
_BENCHMARKING = _AddressClass("benchmarking", "a benchmarking-only address")
_MULTICAST = _AddressClass("multicast", "a multicast address", never_allowed=True)
_BROADCAST = _AddressClass("broadcast", "the broadcast address", never_allowed=True)
_RESERVED = _AddressClass("reserved", "a reserved address")
_SITE_LOCAL = _AddressClass("site_local", "a site-local address")

_IPV4_CLASSES: tuple[tuple[IPv4Network, _AddressClass], ...] = tuple(
    (IPv4Network(network), address_class)
    for network, address_class in (
        ("0.0.0.0/32", _UNSPECIFIED),
        ("0.0.0.0/8", _THIS_NETWORK),
        ("127.0.0.0/8", _LOOPBACK),
        ("10.0.0.0/8", _PRIVATE),
        ("172.16.0.0/12", _PRIVATE),
        ("192.168.0.0/16", _PRIVATE),
        ("100.64.0.0/10", _SHARED),
        ("169.254.0.0/16", _LINK_LOCAL),
        ("192.0.0.0/24", _PROTOCOL),
        ("192.0.2.0/24", _DOCUMENTATION),
        ("198.51.100.0/24", _DOCUMENTATION),
        ("203.0.113.0/24", _DOCUMENTATION),
        ("198.18.0.0/15", _BENCHMARKING),
        ("224.0.0.0/4", _MULTICAST),
        ("255.255.255.255/32", _BROADCAST),
        ("240.0.0.0/4", _RESERVED),
    )
)
"""IPv4 classes, most specific first: the first matching network decides."""

_IPV6_CLASSES: tuple[tuple[IPv6Network, _AddressClass], ...] = tuple(
    (IPv6Network(network), address_class)
    for network, address_class in (
        ("::/128", _UNSPECIFIED),
        ("::1/128", _LOOPBACK),
        ("fc00::/7", _PRIVATE),
        ("64:ff9b:1::/48", _PRIVATE),
        ("fe80::/10", _LINK_LOCAL),
        ("fec0::/10", _SITE_LOCAL),
        ("ff00::/8", _MULTICAST),
        ("2001:db8::/32", _DOCUMENTATION),
        ("3fff::/20", _DOCUMENTATION),
        ("2001:2::/48", _BENCHMARKING),
        ("100::/64", _RESERVED),
    )
)
"""IPv6 classes checked after the IPv4-embedding forms; the first matching network decides."""

_GLOBAL_UNICAST = IPv6Network("2000::/3")
_IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
_IPV4_TRANSLATED = IPv6Network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_SIXTOFOUR = IPv6Network("2002::/16")
_TEREDO = IPv6Network("2001::/32")


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Which destination addresses the egress connects to."""

    allow_private: bool = False
    """UNSAFE, for tests and demos on one machine only. ``True`` lets clients reach the
    egress's loopback, private networks, link-local (cloud metadata!) and other non-public
    addresses; unspecified, multicast and broadcast addresses stay refused because they can
    never be a TCP destination. Never turn it on for an egress that strangers use."""

    def check(self, address: IPv4Address | IPv6Address) -> PolicyDecision:
        """Decide whether the egress may connect to ``address``."""
        address_class, embedded = _classify(address)
        form = " (written as an IPv6 address)" if embedded else ""
        if address_class is None:
            return PolicyDecision(True, "global", "a public address")
        if address_class.never_allowed:
            return PolicyDecision(
                False,
                address_class.reason,
                f"the destination is {address_class.description}{form}, "
                "which cannot be connected to",
            )
        if self.allow_private:
            return PolicyDecision(
                True,
                address_class.reason,
                f"the destination is {address_class.description}{form}, "
                "allowed because allow_private is on",
            )
        return PolicyDecision(
            False,
            address_class.reason,
            f"the destination is {address_class.description}{form}, "
            "which the egress's destination policy refuses",
        )


def _classify(address: IPv4Address | IPv6Address) -> tuple[_AddressClass | None, bool]:
    """The class of ``address`` (``None`` for public) and whether it was an embedded IPv4."""
    if isinstance(address, IPv4Address):
        return _classify_ipv4(address), False
    # Drop any zone ("%eth0"): it does not change which range an address is in.
    address = IPv6Address(address.packed)
    embedded = _embedded_ipv4(address)
    if embedded:
        classes = [_classify_ipv4(inner) for inner in embedded]
        # Judge by the worst embedded address: "never allowed" first, then any refusal.
        for address_class in classes:
            if address_class is not None and address_class.never_allowed:
                return address_class, True
        for address_class in classes:
            if address_class is not None:
                return address_class, True
        return None, True
    for network, address_class in _IPV6_CLASSES:
        if address in network:
            return address_class, False
    if address not in _GLOBAL_UNICAST:
        return _RESERVED, False
    return None, False


def _classify_ipv4(address: IPv4Address) -> _AddressClass | None:
    for network, address_class in _IPV4_CLASSES:
        if address in network:
            return address_class
    return None


def _embedded_ipv4(address: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for, or ``[]`` if it embeds none.

    ``::`` and ``::1`` are IPv6's own unspecified and loopback addresses, not IPv4-compatible
    forms, and are left to the IPv6 table.
    """
    value = int(address)
    low32 = IPv4Address(value & 0xFFFFFFFF)
    if address in _IPV4_MAPPED or address in _IPV4_TRANSLATED or address in _NAT64:
        return [low32]
    if address in _IPV4_COMPATIBLE:
        return [] if value <= 1 else [low32]
    if address in _SIXTOFOUR:
        return [IPv4Address((value >> 80) & 0xFFFFFFFF)]
    if address in _TEREDO:
        server = IPv4Address((value >> 64) & 0xFFFFFFFF)
        client = IPv4Address(~value & 0xFFFFFFFF)
        return [server, client]
    return []
