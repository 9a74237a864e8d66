"""Destinations as the client asks for them.

A :class:`Target` is what an application asked the local proxy to reach: a host (name or
literal address) and a port. It is what the stream request header (``docs/protocol.md`` §5)
carries to the egress, which alone resolves names.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass


class AddressType(enum.IntEnum):
    """Address type codes shared by SOCKS5 and ferry's stream request header."""

    IPV4 = 0x01
    DOMAIN = 0x03
    IPV6 = 0x04


@dataclass(frozen=True, slots=True)
class Target:
    """A destination requested by an application."""

    host: str
    """A domain name (1..255 bytes of ASCII), or a literal IPv4 or IPv6 address (no brackets)."""
    port: int
    """TCP port, 1..65535."""

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 1..65535")
        if not self.host:
            raise ValueError("empty host")
        if self.address_type is AddressType.DOMAIN:
            try:
                encoded = self.host.encode("ascii")
            except UnicodeEncodeError as exc:
                raise ValueError("host names must be ASCII (use IDNA/punycode)") from exc
            if len(encoded) > 255:
                raise ValueError("host name longer than 255 bytes")

    @property
    def address_type(self) -> AddressType:
        """How the host is spelled: IPv4 literal, IPv6 literal or domain name."""
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            return AddressType.DOMAIN
        return AddressType.IPV4 if address.version == 4 else AddressType.IPV6

    def __str__(self) -> str:
        if self.address_type is AddressType.IPV6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name, an IP address, a bracketed IPv6 address, an address with a
    zone) is this machine: ``localhost`` or a loopback address, an IPv4-mapped one included."""
    text = host.strip().strip("[]").split("%", 1)[0].rstrip(".").lower()
    if text == "localhost":
        return True
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
