"""The suite's loopback guard (tests/conftest.py) refuses every way of sending off loopback.

CPython raises the audit events ``socket.connect``, ``socket.sendto`` and ``socket.sendmsg``
(each with the socket and the destination address) before it makes the system call, so a
refused attempt sends nothing. Each refusal is also recorded, which fails the test that made
it: these tests take their own record back out after checking it.

The sending sockets are bound to 127.0.0.1, so even with the guard broken nothing would leave
the machine: Linux refuses a loopback source on any other interface (EINVAL), and that error is
not the guard's ``PermissionError``, so the test fails instead.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator

import pytest

OFF_LOOPBACK = ("192.0.2.1", 9)
"""TEST-NET-1 (RFC 5737), the discard port: a documentation address, never reached here."""


def _violations() -> list[str]:
    guard = next(
        module
        for name, module in sys.modules.items()
        if name.endswith("conftest") and hasattr(module, "_violations")
    )
    violations = guard._violations
    assert isinstance(violations, list)
    return violations


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def _refused(attempt: Callable[[], object]) -> str:
    """Run ``attempt``; it must be refused by the guard. Returns what the guard recorded."""
    violations = _violations()
    before = len(violations)
    with pytest.raises(PermissionError, match="tests may only reach loopback"):
        attempt()
    recorded = violations[before:]
    del violations[before:]  # checked here: not a violation of this test
    assert len(recorded) == 1
    return recorded[0]


def test_sendmsg_to_an_address_off_loopback_is_refused(udp: socket.socket) -> None:
    recorded = _refused(lambda: udp.sendmsg([b"x"], [], 0, OFF_LOOPBACK))
    assert recorded.startswith("socket.sendmsg to ('192.0.2.1', 9)")


def test_sendto_and_connect_off_loopback_are_refused(udp: socket.socket) -> None:
    assert _refused(lambda: udp.sendto(b"x", OFF_LOOPBACK)).startswith("socket.sendto")
    assert _refused(lambda: udp.connect(OFF_LOOPBACK)).startswith("socket.connect")


def test_sendmsg_on_loopback_and_on_a_connected_socket_goes_through(udp: socket.socket) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        udp.sendmsg([b"to an address"], [], 0, receiver.getsockname())
        assert receiver.recv(64) == b"to an address"
        udp.connect(receiver.getsockname())
        udp.sendmsg([b"connected"])  # no address in the event: the connect was checked
        assert receiver.recv(64) == b"connected"
