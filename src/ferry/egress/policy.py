"""The egress's destination policy: which destinations a client may ask the egress to reach.

A malicious client can ask the egress for any destination, so the egress must not become a
door into its own machine or network, nor a source of spam and worm traffic that gets its
operator abuse complaints. The policy judges a destination twice:

1. :meth:`DestinationPolicy.check_name`, **before** resolving a name: a name that spells an
   address (``"2130706433"``, ``"0x7f000001"``, ``"0177.0.0.1"``, ``"127.1"``, ``"[::1]"``)
   is refused outright. The system resolver (``getaddrinfo``, i.e. ``inet_aton``) would
   turn such names into addresses; a real application sends an address as an address
   (SOCKS ``ATYP`` 1 or 4), so only a trick arrives this way.
2. :meth:`DestinationPolicy.check`, on **every address the name resolved to** (or the literal
   address) together with the port, which is what the egress will actually connect to (see
   :mod:`ferry.egress.upstream`: it connects to the checked addresses, never to the name).

Precedence of :meth:`DestinationPolicy.check`, first match decides:

1. addresses that can never be a TCP destination (unspecified, ``this_network``, multicast,
   broadcast, in any spelling): **refused**, whatever the rest of the policy says;
2. the operator's ``denied_destinations`` (address *and* port match): **refused**
   (``denied_by_operator``);
3. the operator's ``allowed_destinations`` covering the address itself (address *and* port
   match): **allowed** (``allowed_by_operator``), even for a private or loopback address or
   a denied port;
4. ``denied_ports`` (default :data:`DEFAULT_DENIED_PORTS`): **refused** (``denied_port``);
5. the operator's ``allowed_destinations`` covering only the IPv4 addresses embedded in an
   IPv6 address (NAT64, 6to4, Teredo...): **allowed** (``allowed_by_operator``);
6. the address's class: public unicast is **allowed** (``global``); every other class in
   the table below is **refused** unless ``allow_private`` is on.

So a deny rule beats an allow rule, an allow rule beats both the default port list and the
private-range default, and nothing makes a multicast or unspecified address a destination.

IPv6 is handled as IPv4 is. An IPv6 address that embeds an IPv4 address (IPv4-mapped
``::ffff:0:0/96``, IPv4-translated ``::ffff:0:0:0/96``, IPv4-compatible ``::/96``, NAT64
``64:ff9b::/96``, 6to4 ``2002::/16`` and Teredo ``2001::/32``, both its server and its client
address) is judged by the IPv4 address inside, with the embedded address's label; so are the
operator's own NAT64 prefixes (``nat64_prefixes``, any RFC 6052 length). A deny rule matches
an address if it matches the address itself or any IPv4 address embedded in it (so
``::ffff:198.51.100.7`` cannot slip past a deny rule for ``198.51.100.0/24``); an allow rule
matches if it matches the address itself or *every* IPv4 address embedded in it. An IPv4-mapped
address *is* its IPv4 address (the socket connects to it), so an allow rule for the IPv4
address covers it fully. Every other embedded form reaches the IPv4 address through a
translator or relay, a different path and often a different host (a 6to4 address is a
global one): an allow rule covering only the embedded address lifts the class refusal (step
5) but not ``denied_ports`` (``[2002:a01:203::1]:25`` stays refused under an allow rule for
``10.1.2.0/24``).

Host names of the ``localhost`` domain (``localhost``, ``LOCALHOST.``, ``a.localhost``; RFC
6761 reserves them for loopback) are refused by :meth:`DestinationPolicy.check_name` as
``loopback``, before any lookup, unless loopback is allowed (``allow_private`` or an allow
rule covering 127.0.0.1 or ::1): the system resolver answers some spellings and not others,
and the client should hear "not allowed" for every one.

Classes refused by default, with the ``reason`` label each gets:

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

Ports refused by default (:data:`DEFAULT_DENIED_PORTS`), on every address:

- **25** (SMTP relay): a proxy that reaches port 25 is used to send spam straight to mail
  servers; the egress's address lands on blocklists and its operator gets the complaints.
  Mail *clients* never need it: they submit mail on 465 or 587.
- **119, 563** (NNTP, NNTPS): Usenet spam, refused by Tor's default exit policy for the
  same reason.
- **135-139, 445** (Windows RPC, NetBIOS, SMB): worm propagation and scanning; never
  meant to cross the internet and filtered by most networks anyway.

The mail-submission ports **465 and 587 stay open**: they require the user's own account at
their mail provider, so abuse needs stolen credentials and is the provider's to stop, while
refusing them would cut off everyone who sends mail from a mail program through ferry. An
operator who wants them closed adds them to ``denied_ports``.

``allow_private=True`` allows all classes except the ones marked "never allowed". It is for
tests and demos on one machine only. ``allowed_destinations`` is the safe way to open one
internal service (``10.1.2.0/24:443``) on a real egress.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from ferry.errors import ConfigError

__all__ = [
    "DEFAULT_DENIED_PORTS",
    "DestinationPolicy",
    "DestinationRule",
    "PolicyDecision",
    "PortRange",
    "parse_port_ranges",
]

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """Whether one destination may be connected to, and why."""

    allowed: bool
    """``True`` when the egress may connect to the destination."""
    reason: str
    """What decided, as a short label for metrics and logs: the address's class (``global``,
    ``loopback``, ``private``...), ``numeric_name``, ``denied_by_operator``,
    ``allowed_by_operator``, ``denied_port`` or ``name`` (a name that may be resolved). It
    never contains the address, name or port."""
    message: str
    """A sentence for a human explaining the decision, without the address, name or port."""


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive range of TCP ports, ``first``..``last``; one port has ``first == last``."""

    first: int
    """The lowest port in the range, 1..65535."""
    last: int
    """The highest port in the range, ``first``..65535."""

    def __post_init__(self) -> None:
        if not 1 <= self.first <= 65535 or not 1 <= self.last <= 65535:
            raise ConfigError(f"port range {self}: ports must be between 1 and 65535")
        if self.first > self.last:
            raise ConfigError(f"port range {self}: the first port is above the last")

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """``"25"`` or ``"135-139"``; :class:`~ferry.errors.ConfigError` if malformed."""
        first_text, dash, last_text = text.strip().partition("-")
        if not _DECIMAL.fullmatch(first_text) or (dash and not _DECIMAL.fullmatch(last_text)):
            raise ConfigError(f"port range {text!r}: write a port (25) or a range (135-139)")
        first = int(first_text)
        return cls(first, int(last_text) if dash else first)


def parse_port_ranges(text: str) -> tuple[PortRange, ...]:
    """A comma-separated list of ports and ranges (``"25,119,135-139"``); ``""`` is none."""
    items = [item for item in text.split(",") if item.strip()]
    return tuple(PortRange.parse(item) for item in items)


DEFAULT_DENIED_PORTS: tuple[PortRange, ...] = (
    PortRange(25, 25),
    PortRange(119, 119),
    PortRange(135, 139),
    PortRange(445, 445),
    PortRange(563, 563),
)
"""Ports refused on every address unless an allow rule names them: SMTP relay (25), NNTP
(119, 563), Windows RPC, NetBIOS and SMB (135-139, 445). See the module docstring for why,
and why 465 and 587 are not among them."""


@dataclass(frozen=True, slots=True)
class DestinationRule:
    """One entry of an operator's allow or deny list: a network and the ports it covers.

    Written as text (flags, configuration files) like this:

    - ``10.1.2.0/24`` or ``10.1.2.3``: every port of a network or one address;
    - ``10.1.2.0/24:443``, ``10.1.2.0/24:80,443,8000-8099``: only these ports;
    - ``2001:db8::/32`` or ``[2001:db8::/32]:443``: IPv6, in brackets when ports follow;
    - ``*:25``: port 25 on every address (deny lists only).

    A network written in IPv4-mapped form (``::ffff:10.0.0.0/104``) is stored as the IPv4
    network it stands for, so it matches the same destinations.
    """

    network: Network | None
    """The addresses the rule covers; ``None`` means every address (``*``)."""
    ports: tuple[PortRange, ...] = ()
    """The ports the rule covers; empty means every port."""

    def __post_init__(self) -> None:
        network = self.network
        if (
            isinstance(network, IPv6Network)
            and network.prefixlen >= 96
            and network.subnet_of(_IPV4_MAPPED)
        ):
            mapped = IPv4Network(
                (int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96)
            )
            object.__setattr__(self, "network", mapped)

    def covers_port(self, port: int) -> bool:
        """Whether the rule applies to ``port``."""
        return not self.ports or any(port in ports for ports in self.ports)

    def covers_address(self, address: Address) -> bool:
        """Whether ``address`` (one form only, no embedded addresses) is in the network."""
        return self.network is None or address in self.network

    def __str__(self) -> str:
        ports = ",".join(str(ports) for ports in self.ports)
        if self.network is None:
            return f"*:{ports}" if ports else "*"
        if not ports:
            return str(self.network)
        if isinstance(self.network, IPv6Network):
            return f"[{self.network}]:{ports}"
        return f"{self.network}:{ports}"

    @classmethod
    def parse(cls, text: str) -> DestinationRule:
        """The rule written as ``text`` (see the class docstring); :class:`ConfigError` if bad."""
        stripped = text.strip()
        separator, ports_text = "", ""
        if stripped.startswith("["):
            end = stripped.find("]")
            rest = stripped[end + 1 :] if end > 0 else "?"
            if rest and not rest.startswith(":"):
                raise ConfigError(
                    f"destination rule {text!r}: write IPv6 with ports as [NETWORK]:PORTS"
                )
            network_text, separator, ports_text = stripped[1:end], rest[:1], rest[1:]
        elif stripped.count(":") == 1:
            network_text, separator, ports_text = stripped.partition(":")
        else:
            network_text = stripped
        if not network_text:
            raise ConfigError(f"destination rule {text!r}: the network is empty")
        ports = parse_port_ranges(ports_text)
        if separator and not ports:
            raise ConfigError(f"destination rule {text!r}: no port after ':'")
        if network_text == "*":
            return cls(None, ports)
        try:
            network = ip_network(network_text)
        except ValueError as exc:
            raise ConfigError(
                f"destination rule {text!r}: {_network_hint(network_text, exc)}"
            ) from None
        return cls(network, ports)


def _network_hint(network_text: str, error: ValueError) -> str:
    """A sentence saying what is wrong with a network written as ``network_text``."""
    if "has host bits set" in str(error):
        widened = ip_network(network_text, strict=False)
        return f"the network has host bits set; did you mean {widened}?"
    if network_text.count(":") >= 2 and ":" in network_text.rsplit("/", 1)[-1]:
        return "write IPv6 with ports as [NETWORK]:PORTS"
    return "not an IPv4 or IPv6 address or network (CIDR)"


_DECIMAL = re.compile(r"[0-9]{1,5}")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")
"""A label that ``inet_aton`` or a URL parser reads as a number: decimal (and octal, with a
leading 0), or hexadecimal with ``0x``."""
_ADDRESS_CHARACTERS = frozenset(":[]%")
"""Characters no host name contains but IPv6 spellings (``[::1]``, ``::1%lo``) do."""


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
    """Which destinations the egress connects to (see the module docstring for the order)."""

    allow_private: bool = False
    """UNSAFE, for tests and demos on one machine only. ``True`` lets clients reach the
    egress's loopback, private networks, link-local (cloud metadata!) and other non-public
    addresses; unspecified, multicast and broadcast addresses stay refused because they can
    never be a TCP destination. Never turn it on for an egress that strangers use: open one
    internal service with ``allowed_destinations`` instead."""
    allowed_destinations: tuple[DestinationRule, ...] = ()
    """Destinations allowed even though the defaults refuse them (a private or loopback
    address, a port in ``denied_ports``), e.g. ``10.1.2.0/24:443`` for an internal service.
    Each rule must name a network: a rule for every address (``*``, ``0.0.0.0/0``,
    ``::/0``) is refused, because it would open the whole private network too; to open a
    port everywhere, take it out of ``denied_ports``."""
    denied_destinations: tuple[DestinationRule, ...] = ()
    """Destinations refused even though the defaults or ``allowed_destinations`` allow them,
    e.g. ``203.0.113.0/24`` or ``*:6881-6999``. Deny beats allow."""
    denied_ports: tuple[PortRange, ...] = DEFAULT_DENIED_PORTS
    """Ports refused on every address not named by an allow rule (default: SMTP 25, NNTP 119
    and 563, Windows RPC/NetBIOS/SMB 135-139 and 445). ``()`` refuses no port."""
    nat64_prefixes: tuple[IPv6Network, ...] = ()
    """The site's own NAT64 prefixes (RFC 6052: /32, /40, /48, /56, /64 or /96), treated like
    the well-known ``64:ff9b::/96``: an address in one is judged by the IPv4 address it
    embeds, so a client cannot reach ``10.0.0.1`` as ``[PREFIX::10.0.0.1]``."""

    def __post_init__(self) -> None:
        for prefix in self.nat64_prefixes:
            if prefix.prefixlen not in _NAT64_PREFIX_LENGTHS:
                raise ConfigError(
                    f"NAT64 prefix {prefix}: RFC 6052 prefixes are /32, /40, /48, /56, /64 or /96"
                )
        for rule in self.allowed_destinations:
            if rule.network is None or rule.network.prefixlen == 0:
                raise ConfigError(
                    f"allowed destination {rule}: an allow rule must name a network, not "
                    "every address (it would open loopback and private networks too); to "
                    "open a port everywhere, remove it from denied_ports"
                )

    def check_name(self, host: str) -> PolicyDecision:
        """Decide whether the name ``host`` may be resolved at all.

        Refuses (``numeric_name``) a name that spells an address: its last label (ignoring
        trailing dots) is a decimal, octal or ``0x`` hexadecimal number, it contains ``:``,
        ``[``, ``]`` or ``%``, or ``inet_aton`` parses it. Such a name would become an address
        in the resolver without ever being a name; a real address arrives as an address.
        """
        if _spells_an_address(host):
            return PolicyDecision(
                False,
                "numeric_name",
                "the destination is an address written as a name (decimal, octal or "
                "hexadecimal digits, or an IPv6 spelling), which the egress refuses; "
                "send addresses as addresses",
            )
        if _is_localhost_name(host) and not self._loopback_allowed():
            return PolicyDecision(
                False,
                _LOOPBACK.reason,
                f"the destination is {_LOOPBACK.description} (a localhost name), which the "
                "egress's destination policy refuses",
            )
        return PolicyDecision(True, "name", "a host name, to be resolved and checked")

    def _loopback_allowed(self) -> bool:
        """Whether some loopback destination may be allowed (so localhost names resolve)."""
        loopbacks = (IPv4Address("127.0.0.1"), IPv6Address("::1"))
        return self.allow_private or any(
            rule.covers_address(address)
            for rule in self.allowed_destinations
            for address in loopbacks
        )

    def check(self, address: Address, port: int) -> PolicyDecision:
        """Decide whether the egress may connect to ``address`` on TCP ``port``."""
        address = _without_zone(address)
        address_class, embedded = _classify(address, self.nat64_prefixes)
        form = " (written as an IPv6 address)" if embedded else ""
        if address_class is not None and address_class.never_allowed:
            return PolicyDecision(
                False,
                address_class.reason,
                f"the destination is {address_class.description}{form}, "
                "which cannot be connected to",
            )
        forms = [address, *_embedded_ipv4(address, self.nat64_prefixes)]
        if any(
            rule.covers_port(port) and any(rule.covers_address(each) for each in forms)
            for rule in self.denied_destinations
        ):
            return PolicyDecision(
                False,
                "denied_by_operator",
                "the destination is on the egress operator's deny list",
            )
        allowed_itself, allowed_embedded = self._allowed_by_operator(address, port)
        allowed = PolicyDecision(
            True, "allowed_by_operator", "the destination is on the egress operator's allow list"
        )
        if allowed_itself:
            return allowed
        if any(port in ports for ports in self.denied_ports):
            return PolicyDecision(
                False,
                "denied_port",
                "the destination port is closed by the egress's destination policy "
                "(ports abused for spam and worms, such as SMTP)",
            )
        if allowed_embedded:
            return allowed
        if address_class is None:
            return PolicyDecision(True, "global", "a public address")
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

    def _allowed_by_operator(self, address: Address, port: int) -> tuple[bool, bool]:
        """Whether allow rules cover ``address`` itself (or the IPv4 address it maps), and
        whether they cover every IPv4 address embedded in it (see the module docstring)."""
        rules = [rule for rule in self.allowed_destinations if rule.covers_port(port)]
        if not rules:
            return False, False
        itself = [address]
        if isinstance(address, IPv6Address) and address in _IPV4_MAPPED:
            itself.append(IPv4Address(int(address) & 0xFFFFFFFF))
        if any(rule.covers_address(form) for rule in rules for form in itself):
            return True, False
        embedded = _embedded_ipv4(address, self.nat64_prefixes)
        return False, bool(embedded) and all(
            any(rule.covers_address(inner) for rule in rules) for inner in embedded
        )


def _spells_an_address(host: str) -> bool:
    """Whether the name ``host`` is really an address in disguise (see ``check_name``)."""
    if any(character in _ADDRESS_CHARACTERS for character in host):
        return True
    last_label = host.rstrip(".").rpartition(".")[2]
    if _NUMERIC_LABEL.fullmatch(last_label):
        return True
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    return True


def _without_zone(address: Address) -> Address:
    """``address`` without an IPv6 zone (``%eth0``): a zone does not change the range."""
    if isinstance(address, IPv6Address) and address.scope_id is not None:
        return IPv6Address(address.packed)
    return address


def _classify(
    address: IPv4Address | IPv6Address, nat64_prefixes: tuple[IPv6Network, ...] = ()
) -> tuple[_AddressClass | None, bool]:
    """The class of ``address`` (``None`` for public) and whether it was an embedded IPv4."""
    if isinstance(address, IPv4Address):
        return _classify_ipv4(address), False
    address = _without_zone(address)
    embedded = _embedded_ipv4(address, nat64_prefixes)
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


def _embedded_ipv4(
    address: Address, nat64_prefixes: tuple[IPv6Network, ...] = ()
) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for, or ``[]`` if it embeds none.

    ``::`` and ``::1`` are IPv6's own unspecified and loopback addresses, not IPv4-compatible
    forms, and are left to the IPv6 table. ``nat64_prefixes`` are the site's own NAT64
    prefixes (RFC 6052 layouts).
    """
    if isinstance(address, IPv4Address):
        return []
    for prefix in nat64_prefixes:
        if address in prefix:
            return [_rfc6052_ipv4(address, prefix.prefixlen)]
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


_NAT64_PREFIX_LENGTHS = (32, 40, 48, 56, 64, 96)
"""The NAT64 prefix lengths RFC 6052 defines."""


def _rfc6052_ipv4(address: IPv6Address, prefix_length: int) -> IPv4Address:
    """The IPv4 address embedded in ``address`` under a NAT64 prefix of ``prefix_length``
    (RFC 6052 §2.2: after the prefix, skipping bits 64-71, the "u" octet)."""
    packed = address.packed
    if prefix_length == 96:
        return IPv4Address(packed[12:16])
    without_u_octet = packed[:8] + packed[9:]
    start = prefix_length // 8
    return IPv4Address(without_u_octet[start : start + 4])


def _is_localhost_name(host: str) -> bool:
    """Whether ``host`` is in the ``localhost`` domain (RFC 6761), in any case, with or
    without trailing dots."""
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")
