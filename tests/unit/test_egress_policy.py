"""The egress's destination policy. Addresses here are values only: nothing is connected to."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from ferry.egress.policy import DestinationPolicy

DEFAULT = DestinationPolicy()
PERMISSIVE = DestinationPolicy(allow_private=True)

REFUSED_BY_DEFAULT = [
    # IPv4
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared_address_space"),
    ("100.127.255.254", "shared_address_space"),
    ("169.254.169.254", "link_local"),
    ("169.254.0.1", "link_local"),
    ("192.0.0.170", "protocol_assignments"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.254", "benchmarking"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.254", "reserved"),
    # IPv6
    ("::1", "loopback"),
    ("fc00::1", "private"),
    ("fd12:3456:789a::1", "private"),
    ("64:ff9b:1::1", "private"),
    ("fe80::1", "link_local"),
    ("fe80::1%2", "link_local"),
    ("febf:ffff::1", "link_local"),
    ("fec0::1", "site_local"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("100::1", "reserved"),
    ("4000::1", "reserved"),
    ("fe00::1", "reserved"),
    # IPv6 forms of refused IPv4 addresses are judged by the IPv4 inside.
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "link_local"),
    ("::ffff:0:192.168.0.1", "private"),
    ("::127.0.0.1", "loopback"),
    ("::10.1.2.3", "private"),
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "link_local"),
    ("2002:7f00:1::", "loopback"),
    ("2002:c0a8:101::1", "private"),
    ("2002:a9fe:a9fe::", "link_local"),
    # Teredo: server 127.0.0.1; client 10.0.0.1 (stored inverted: f5ff:fffe).
    ("2001:0:7f00:1::f5ff:fffe", "loopback"),
    ("2001:0:808:808::f5ff:fffe", "private"),
]

NEVER_ALLOWED = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this_network"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("::", "unspecified"),
    ("ff02::1", "multicast"),
    ("ff05::1:3", "multicast"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::2", "this_network"),
    ("::ffff:224.0.0.1", "multicast"),
    ("::ffff:255.255.255.255", "broadcast"),
    ("64:ff9b::e000:1", "multicast"),
    ("2002:e000:1::", "multicast"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.32.0.1",
    "100.128.0.1",
    "192.169.0.1",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "2001:0:808:808::f7f7:f7f7",
]


@pytest.mark.parametrize(("text", "reason"), REFUSED_BY_DEFAULT + NEVER_ALLOWED)
def test_default_policy_refuses_non_public_addresses(text: str, reason: str) -> None:
    decision = DEFAULT.check(ip_address(text))
    assert decision.allowed is False
    assert decision.reason == reason
    assert "refuse" in decision.message or "cannot be connected" in decision.message


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_are_allowed(text: str) -> None:
    for policy in (DEFAULT, PERMISSIVE):
        decision = policy.check(ip_address(text))
        assert decision.allowed is True
        assert decision.reason == "global"


@pytest.mark.parametrize(("text", "reason"), REFUSED_BY_DEFAULT)
def test_allow_private_allows_what_can_be_a_destination(text: str, reason: str) -> None:
    decision = PERMISSIVE.check(ip_address(text))
    assert decision.allowed is True
    assert decision.reason == reason
    assert "allow_private" in decision.message


@pytest.mark.parametrize(("text", "reason"), NEVER_ALLOWED)
def test_allow_private_still_refuses_what_cannot_be_a_destination(text: str, reason: str) -> None:
    decision = PERMISSIVE.check(ip_address(text))
    assert decision.allowed is False
    assert decision.reason == reason
    assert "cannot be connected to" in decision.message


@pytest.mark.parametrize(("text", "_reason"), REFUSED_BY_DEFAULT + NEVER_ALLOWED)
def test_messages_never_contain_the_address(text: str, _reason: str) -> None:
    address = ip_address(text)
    for policy in (DEFAULT, PERMISSIVE):
        message = policy.check(address).message
        assert str(address) not in message
        assert text not in message


def test_embedded_forms_say_they_were_written_as_ipv6() -> None:
    assert "written as an IPv6 address" in DEFAULT.check(ip_address("::ffff:127.0.0.1")).message
    assert "written as an IPv6 address" not in DEFAULT.check(ip_address("127.0.0.1")).message


def test_policy_is_frozen_and_safe_by_default() -> None:
    assert DestinationPolicy().allow_private is False
    with pytest.raises(AttributeError):
        DEFAULT.allow_private = True  # type: ignore[misc]
