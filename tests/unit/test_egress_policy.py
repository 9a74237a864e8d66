"""The egress's destination policy. Addresses here are values only: nothing is connected to."""

from __future__ import annotations

import socket
from ipaddress import ip_address

import pytest

from ferry.egress.policy import (
    DEFAULT_DENIED_PORTS,
    DestinationPolicy,
    DestinationRule,
    PortRange,
    parse_port_ranges,
)
from ferry.errors import ConfigError

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
    decision = DEFAULT.check(ip_address(text), 443)
    assert decision.allowed is False
    assert decision.reason == reason
    assert "refuse" in decision.message or "cannot be connected" in decision.message


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_are_allowed(text: str) -> None:
    for policy in (DEFAULT, PERMISSIVE):
        decision = policy.check(ip_address(text), 443)
        assert decision.allowed is True
        assert decision.reason == "global"


@pytest.mark.parametrize(("text", "reason"), REFUSED_BY_DEFAULT)
def test_allow_private_allows_what_can_be_a_destination(text: str, reason: str) -> None:
    decision = PERMISSIVE.check(ip_address(text), 443)
    assert decision.allowed is True
    assert decision.reason == reason
    assert "allow_private" in decision.message


@pytest.mark.parametrize(("text", "reason"), NEVER_ALLOWED)
def test_allow_private_still_refuses_what_cannot_be_a_destination(text: str, reason: str) -> None:
    decision = PERMISSIVE.check(ip_address(text), 443)
    assert decision.allowed is False
    assert decision.reason == reason
    assert "cannot be connected to" in decision.message


@pytest.mark.parametrize(("text", "_reason"), REFUSED_BY_DEFAULT + NEVER_ALLOWED)
def test_messages_never_contain_the_address(text: str, _reason: str) -> None:
    address = ip_address(text)
    for policy in (DEFAULT, PERMISSIVE):
        message = policy.check(address, 443).message
        assert str(address) not in message
        assert text not in message


def test_embedded_forms_say_they_were_written_as_ipv6() -> None:
    assert (
        "written as an IPv6 address" in DEFAULT.check(ip_address("::ffff:127.0.0.1"), 443).message
    )
    assert "written as an IPv6 address" not in DEFAULT.check(ip_address("127.0.0.1"), 443).message


def test_policy_is_frozen_and_safe_by_default() -> None:
    assert DestinationPolicy().allow_private is False
    with pytest.raises(AttributeError):
        DEFAULT.allow_private = True  # type: ignore[misc]


# --- Addresses spelled as names (refused before any resolution) -----------------------------

ADDRESSES_SPELLED_AS_NAMES = [
    # (name as a SOCKS domain / HTTP CONNECT host, what glibc's getaddrinfo makes of it)
    ("2130706433", "127.0.0.1: one decimal number"),
    ("0x7f000001", "127.0.0.1: one hexadecimal number"),
    ("0X7F000001", "127.0.0.1: hexadecimal, upper case"),
    ("017700000001", "127.0.0.1: one octal number"),
    ("0177.0.0.1", "127.0.0.1: octal first part"),
    ("0177.0000.0000.0001", "127.0.0.1: every part octal"),
    ("0x7f.0.0.1", "127.0.0.1: hexadecimal first part"),
    ("0x7f.0x0.0x0.0x1", "127.0.0.1: every part hexadecimal"),
    ("127.1", "127.0.0.1: two parts"),
    ("127.0.1", "127.0.0.1: three parts"),
    ("0x7f.1", "127.0.0.1: two parts, hexadecimal"),
    ("0177.1", "127.0.0.1: two parts, octal"),
    ("127.000.000.001", "127.0.0.1: zero-padded (octal to inet_aton)"),
    ("127.0.0.1.", "not numeric to getaddrinfo: would be sent to DNS"),
    ("127.0.0.1..", "not numeric to getaddrinfo"),
    ("0", "0.0.0.0"),
    ("0x0", "0.0.0.0"),
    ("00", "0.0.0.0"),
    ("3232235777", "192.168.1.1"),
    ("0xc0a80101", "192.168.1.1"),
    ("0300.0250.1.1", "192.168.1.1"),
    ("0xa9fea9fe", "169.254.169.254 (cloud metadata)"),
    ("0251.0376.0251.0376", "169.254.169.254 (cloud metadata)"),
    ("2852039166", "169.254.169.254 (cloud metadata)"),
    ("10.1", "10.0.0.1"),
    ("167772161", "10.0.0.1"),
    ("4294967295", "255.255.255.255"),
    ("4294967296", "too big: would be sent to DNS"),
    ("0x100000000", "too big: would be sent to DNS"),
    ("127.0.0.08", "08 is not octal: would be sent to DNS"),
    ("0x", "an empty hexadecimal number"),
    ("example.123", "a numeric top-level label"),
    ("[::1]", "an IPv6 literal in brackets"),
    ("[::ffff:127.0.0.1]", "a mapped IPv6 literal in brackets"),
    ("::ffff:127.1", "a mapped IPv6 with a short IPv4 part (ip_address rejects it)"),
    ("::1%", "an IPv6 literal with an empty zone"),
    ("fe80::1%eth0%", "an IPv6 literal with a malformed zone"),
]


@pytest.mark.parametrize(("name", "meaning"), ADDRESSES_SPELLED_AS_NAMES)
def test_names_that_spell_addresses_are_refused(name: str, meaning: str) -> None:
    for policy in (DEFAULT, PERMISSIVE):
        decision = policy.check_name(name)
        assert decision.allowed is False, meaning
        assert decision.reason == "numeric_name"
        assert name not in decision.message
        assert "address" in decision.message


@pytest.mark.parametrize(
    "name",
    [
        "example.com",
        "origin.test",
        "1.2.3.example.com",
        "127.0.0.1.example.com",
        "0x7f000001.example",
        "3com.com",
        "xn--bcher-kva.example",
        "_service._tcp.example.org",
        "localhost.example.com",  # not in the localhost domain (localhost names: below)
        "example.com.",
    ],
)
def test_real_names_may_be_resolved(name: str) -> None:
    decision = DEFAULT.check_name(name)
    assert decision.allowed is True
    assert decision.reason == "name"


def test_every_name_inet_aton_accepts_is_refused() -> None:
    # Whatever the C library reads as an IPv4 address must never reach the resolver.
    checked = 0
    for name, _meaning in ADDRESSES_SPELLED_AS_NAMES:
        try:
            socket.inet_aton(name)
        except OSError:
            continue
        checked += 1
        assert DEFAULT.check_name(name).allowed is False
    assert checked >= 20


# --- Unspecified addresses, in every spelling and despite any allow rule --------------------

UNSPECIFIED_FORMS = ["0.0.0.0", "::", "0:0:0:0:0:0:0:0", "::ffff:0.0.0.0", "::ffff:0:0"]


@pytest.mark.parametrize("text", UNSPECIFIED_FORMS)
def test_unspecified_addresses_are_refused_even_when_allowed_by_rules(text: str) -> None:
    generous = DestinationPolicy(
        allow_private=True,
        allowed_destinations=(rule("0.0.0.0/8"), rule("::/96"), rule("::ffff:0:0/104")),
    )
    for policy in (DEFAULT, PERMISSIVE, generous):
        decision = policy.check(ip_address(text), 80)
        assert decision.allowed is False
        assert decision.reason == "unspecified"
        assert "cannot be connected to" in decision.message


@pytest.mark.parametrize("text", ["224.0.0.1", "ff02::1", "255.255.255.255", "::ffff:224.0.0.1"])
def test_multicast_and_broadcast_stay_refused_under_an_allow_rule(text: str) -> None:
    generous = DestinationPolicy(
        allowed_destinations=(rule("224.0.0.0/3"), rule("ff00::/8"), rule("::ffff:224.0.0.0/100"))
    )
    assert generous.check(ip_address(text), 80).allowed is False


# --- Ports refused by default ---------------------------------------------------------------

PUBLIC_V4 = ip_address("93.184.216.34")
PUBLIC_V6 = ip_address("2606:4700:4700::1111")


@pytest.mark.parametrize("port", [25, 119, 135, 136, 137, 138, 139, 445, 563])
def test_abuse_prone_ports_are_refused_by_default(port: int) -> None:
    for address in (PUBLIC_V4, PUBLIC_V6, ip_address("::ffff:93.184.216.34")):
        decision = DEFAULT.check(address, port)
        assert decision.allowed is False
        assert decision.reason == "denied_port"
        assert str(port) not in decision.message
    # allow_private does not open them either.
    assert PERMISSIVE.check(ip_address("127.0.0.1"), port).reason == "denied_port"


@pytest.mark.parametrize("port", [22, 24, 26, 80, 134, 140, 443, 444, 446, 465, 587, 993, 8080])
def test_other_ports_are_allowed_by_default(port: int) -> None:
    assert DEFAULT.check(PUBLIC_V4, port).allowed is True
    assert DEFAULT.check(PUBLIC_V6, port).allowed is True


def test_denied_ports_can_be_replaced() -> None:
    no_ports = DestinationPolicy(denied_ports=())
    assert no_ports.check(PUBLIC_V4, 25).allowed is True
    mail_too = DestinationPolicy(denied_ports=parse_port_ranges("25,465,587"))
    assert mail_too.check(PUBLIC_V4, 587).reason == "denied_port"
    assert mail_too.check(PUBLIC_V4, 119).allowed is True


def test_default_denied_ports_are_the_documented_ones() -> None:
    assert [str(ports) for ports in DEFAULT_DENIED_PORTS] == ["25", "119", "135-139", "445", "563"]


# --- The operator's allow list --------------------------------------------------------------


def rule(text: str) -> DestinationRule:
    return DestinationRule.parse(text)


INTERNAL = DestinationPolicy(
    allowed_destinations=(
        rule("10.1.2.0/24:443"),
        rule("10.9.0.0/16"),
        rule("[fd00:1::/64]:443,8000-8099"),
        rule("127.0.0.1:8080"),
        rule("93.184.216.34:25"),
    )
)


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("10.1.2.3", 443),
        ("10.1.2.255", 443),
        ("10.9.200.1", 22),
        ("10.9.200.1", 25),  # a network allowed on every port includes the denied ones
        ("::ffff:10.1.2.3", 443),  # the same address, IPv4-mapped
        ("::ffff:0:10.9.0.1", 22),  # IPv4-translated
        ("fd00:1::5", 443),
        ("fd00:1::5", 8042),
        ("127.0.0.1", 8080),
        ("93.184.216.34", 25),  # a public smarthost on a denied port
    ],
)
def test_allow_rules_override_the_defaults(text: str, port: int) -> None:
    decision = INTERNAL.check(ip_address(text), port)
    assert decision.allowed is True
    assert decision.reason == "allowed_by_operator"
    assert text not in decision.message


@pytest.mark.parametrize(
    ("text", "port", "reason"),
    [
        ("10.1.2.3", 22, "private"),  # right network, wrong port
        ("10.1.3.1", 443, "private"),  # right port, wrong network
        ("::ffff:10.1.3.1", 443, "private"),
        ("fd00:2::5", 443, "private"),
        ("fd00:1::5", 8100, "private"),
        ("127.0.0.1", 8081, "loopback"),
        ("127.0.0.2", 8080, "loopback"),
        ("::1", 8080, "loopback"),  # IPv6 loopback is not 127.0.0.1
        ("93.184.216.35", 25, "denied_port"),
        ("169.254.169.254", 80, "link_local"),
        # Teredo whose server is allowed but whose client address is not.
        ("2001:0:a09:1::f5ff:fffe", 80, "private"),
    ],
)
def test_allow_rules_open_nothing_else(text: str, port: int, reason: str) -> None:
    decision = INTERNAL.check(ip_address(text), port)
    assert decision.allowed is False
    assert decision.reason == reason


@pytest.mark.parametrize("text", ["*", "*:25", "0.0.0.0/0", "::/0", "0.0.0.0/0:443", "[::/0]:25"])
def test_an_allow_rule_for_every_address_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="must name a network"):
        DestinationPolicy(allowed_destinations=(rule(text),))


# --- The operator's deny list ---------------------------------------------------------------

DENYING = DestinationPolicy(
    allowed_destinations=(rule("10.1.2.0/24"),),
    denied_destinations=(
        rule("93.184.216.0/24"),
        rule("10.1.2.5"),
        rule("*:6881-6999"),
        rule("[2606:4700::/32]:443"),
        rule("::ffff:198.51.0.0/112"),  # written IPv4-mapped; means 198.51.0.0/16
    ),
)


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("93.184.216.34", 443),
        ("::ffff:93.184.216.34", 443),  # IPv4-mapped
        ("::ffff:0:93.184.216.34", 443),  # IPv4-translated
        ("::93.184.216.34", 443),  # IPv4-compatible
        ("64:ff9b::5db8:d822", 443),  # NAT64
        ("2002:5db8:d822::1", 443),  # 6to4
        ("2001:0:5db8:d822::f7f7:f7f7", 443),  # Teredo server
        ("10.1.2.5", 443),  # deny beats allow
        ("8.8.8.8", 6881),
        ("2001:4860:4860::8888", 6999),
        ("2606:4700:4700::1111", 443),
        ("198.51.7.7", 80),
    ],
)
def test_deny_rules_refuse_every_spelling(text: str, port: int) -> None:
    decision = DENYING.check(ip_address(text), port)
    assert decision.allowed is False
    assert decision.reason == "denied_by_operator"
    assert text not in decision.message


@pytest.mark.parametrize(
    ("text", "port"),
    [("10.1.2.6", 443), ("8.8.8.8", 6880), ("8.8.8.8", 7000), ("2606:4700:4700::1111", 80)],
)
def test_deny_rules_refuse_nothing_else(text: str, port: int) -> None:
    assert DENYING.check(ip_address(text), port).allowed is True


def test_precedence_order() -> None:
    everything = DestinationPolicy(
        allow_private=True,
        allowed_destinations=(rule("10.0.0.0/8"), rule("224.0.0.0/4"), rule("8.8.8.8:25")),
        denied_destinations=(rule("10.0.0.5"), rule("8.8.4.4")),
    )
    # 1. never allowed beats an allow rule
    assert everything.check(ip_address("224.0.0.1"), 80).reason == "multicast"
    # 2. deny beats allow
    assert everything.check(ip_address("10.0.0.5"), 80).reason == "denied_by_operator"
    # 3. allow beats denied ports
    assert everything.check(ip_address("10.0.0.6"), 25).reason == "allowed_by_operator"
    assert everything.check(ip_address("8.8.8.8"), 25).reason == "allowed_by_operator"
    # 4. denied ports beat allow_private and public addresses
    assert everything.check(ip_address("192.168.0.1"), 25).reason == "denied_port"
    assert everything.check(ip_address("8.8.8.9"), 25).reason == "denied_port"
    # 5. the address class last
    assert everything.check(ip_address("192.168.0.1"), 80).reason == "private"
    assert everything.check(ip_address("192.168.0.1"), 80).allowed is True
    assert DestinationPolicy().check(ip_address("192.168.0.1"), 80).allowed is False


# --- Writing rules and port lists -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("10.1.2.0/24", "10.1.2.0/24"),
        ("10.1.2.3", "10.1.2.3/32"),
        (" 10.1.2.0/24:443 ", "10.1.2.0/24:443"),
        ("10.1.2.0/24:80,443,8000-8099", "10.1.2.0/24:80,443,8000-8099"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("[2001:db8::/32]:443", "[2001:db8::/32]:443"),
        ("[::1]", "::1/128"),
        ("*:25", "*:25"),
        ("*", "*"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
    ],
)
def test_rules_parse_and_print(text: str, canonical: str) -> None:
    parsed = rule(text)
    assert str(parsed) == canonical
    assert rule(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("10.1.2.3/24", "did you mean 10.1.2.0/24"),
        ("2001:db8::/32:443", r"\[NETWORK\]:PORTS"),
        ("[2001:db8::/32", r"\[NETWORK\]:PORTS"),
        ("[2001:db8::/32]443", r"\[NETWORK\]:PORTS"),
        ("10.0.0.0/8:", "no port"),
        (":25", "network is empty"),
        ("10.0.0.0/8:0", "between 1 and 65535"),
        ("10.0.0.0/8:70000", "between 1 and 65535"),
        ("10.0.0.0/8:30-20", "above the last"),
        ("10.0.0.0/8:http", "write a port"),
        ("intranet.example", "not an IPv4 or IPv6"),
        ("10.0.0.0/33", "not an IPv4 or IPv6"),
    ],
)
def test_malformed_rules_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        rule(text)


def test_port_lists_parse() -> None:
    assert parse_port_ranges("25, 119 ,135-139") == (
        PortRange(25, 25),
        PortRange(119, 119),
        PortRange(135, 139),
    )
    assert parse_port_ranges("") == ()
    assert 137 in PortRange(135, 139)
    assert 140 not in PortRange(135, 139)
    with pytest.raises(ConfigError, match="write a port"):
        parse_port_ranges("25,smtp")


# Issue 15: embedded IPv4 forms, site NAT64 prefixes, localhost names.

INTERNAL_EVERY_PORT = DestinationPolicy(allowed_destinations=(rule("10.1.2.0/24"),))


@pytest.mark.parametrize(
    "text",
    [
        "2002:a01:203::1",  # 6to4 of 10.1.2.3: a global address, via a 6to4 relay
        "64:ff9b::10.1.2.3",  # NAT64
        "::ffff:0:10.1.2.3",  # IPv4-translated
    ],
)
def test_an_allow_rule_matching_only_an_embedded_address_keeps_denied_ports(text: str) -> None:
    decision = INTERNAL_EVERY_PORT.check(ip_address(text), 25)
    assert decision.allowed is False
    assert decision.reason == "denied_port"
    # The allow rule still lifts the class refusal on other ports.
    assert INTERNAL_EVERY_PORT.check(ip_address(text), 443).reason == "allowed_by_operator"


@pytest.mark.parametrize("text", ["10.1.2.3", "::ffff:10.1.2.3"])
def test_an_allow_rule_for_the_address_itself_still_opens_denied_ports(text: str) -> None:
    # An IPv4-mapped address is the IPv4 address itself: the socket connects to it.
    decision = INTERNAL_EVERY_PORT.check(ip_address(text), 25)
    assert decision.allowed is True
    assert decision.reason == "allowed_by_operator"


SITE_NAT64 = DestinationPolicy(
    nat64_prefixes=(
        DestinationRule.parse("2001:db8:64::/96").network,  # type: ignore[arg-type]
        DestinationRule.parse("2a00:1:2::/48").network,  # type: ignore[arg-type]
    )
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2001:db8:64::10.0.0.1", "private"),
        ("2001:db8:64::127.0.0.1", "loopback"),
        ("2001:db8:64::a9fe:a9fe", "link_local"),  # 169.254.169.254
        # /48: the IPv4 address sits in octets 6-7 and 9-10 (octet 8 is RFC 6052's u octet).
        ("2a00:1:2:a00:0:100::", "private"),  # 10.0.0.1
    ],
)
def test_site_nat64_prefixes_are_judged_by_the_embedded_address(text: str, reason: str) -> None:
    # Without the prefix configured it is judged as the IPv6 address it looks like.
    assert DEFAULT.check(ip_address(text), 443).reason in ("documentation", "global")
    decision = SITE_NAT64.check(ip_address(text), 443)
    assert decision.allowed is False
    assert decision.reason == reason
    assert "written as an IPv6 address" in decision.message


def test_a_site_nat64_prefix_embedding_a_public_address_is_allowed() -> None:
    decision = SITE_NAT64.check(ip_address("2a00:1:2:5db8:d8:2200::"), 443)  # 93.184.216.34
    assert decision.allowed is True and decision.reason == "global"


@pytest.mark.parametrize("text", ["2001:db8:64::/95", "2001:db8:64::/120"])
def test_nat64_prefixes_must_have_an_rfc_6052_length(text: str) -> None:
    with pytest.raises(ConfigError, match="RFC 6052"):
        DestinationPolicy(nat64_prefixes=(DestinationRule.parse(text).network,))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["localhost", "LOCALHOST.", "localhost..", "LocalHost", "ip6-loop.localhost"]
)
def test_localhost_names_are_refused_as_loopback_before_any_lookup(name: str) -> None:
    decision = DEFAULT.check_name(name)
    assert decision.allowed is False
    assert decision.reason == "loopback"


@pytest.mark.parametrize("name", ["localhost.example.com", "notlocalhost", "localhost-a.test"])
def test_names_merely_containing_localhost_may_be_resolved(name: str) -> None:
    assert DEFAULT.check_name(name).allowed is True


def test_localhost_names_resolve_when_loopback_may_be_allowed() -> None:
    assert PERMISSIVE.check_name("LOCALHOST.").allowed is True
    allowed = DestinationPolicy(allowed_destinations=(rule("127.0.0.1:8080"),))
    assert allowed.check_name("localhost").allowed is True


def test_nat64_prefixes_from_settings() -> None:
    from ferry.egress.policy_reload import destination_policy

    prefixes = ("2001:db8:64::/96",)
    policy = destination_policy((), (), "", allow_private=False, nat64_prefixes=prefixes)
    assert policy.check(ip_address("2001:db8:64::10.0.0.1"), 443).reason == "private"
    with pytest.raises(ConfigError, match="NAT64 prefix 'nope'"):
        destination_policy((), (), "", allow_private=False, nat64_prefixes=("nope",))
