"""Suite-wide fixtures and the loopback guard.

Tests may only talk to 127.0.0.0/8 and ::1. An audit hook on ``socket.connect``,
``socket.sendto`` and ``socket.sendmsg`` (CPython raises each before the system call, so nothing
leaves) turns any attempt at another address, made by ferry or by a library under
it (aiortc's ICE checks, aiohttp, resolvers), into an immediate ``PermissionError`` and records
it, and every test fails if anything was attempted. This enforces the rule rather than trusting
each test to keep it.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Iterator

import pytest

_violations: list[str] = []


def _is_loopback(address: object) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and other families carry no IP address
    host = address[0]
    if not isinstance(host, str):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name: nothing in this suite connects by name
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _guard(event: str, args: tuple[object, ...]) -> None:
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        # All three events carry (socket, address); sendmsg's address is None when the socket
        # is connected (its connect was checked then).
        address = args[1] if len(args) > 1 else None
        sock = args[0]
        family = getattr(sock, "family", None)
        if family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            _violations.append(f"{event} to {address!r}")
            raise PermissionError(f"tests may only reach loopback, not {address!r}")


sys.addaudithook(_guard)


@pytest.fixture(autouse=True)
def _no_traffic_off_loopback() -> Iterator[None]:
    start = len(_violations)
    yield
    attempted = _violations[start:]
    assert not attempted, f"the test tried to reach addresses off loopback: {attempted}"
