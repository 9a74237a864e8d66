"""ICE server URLs, the broker's per-peer choice and TURN REST credentials (sans-IO)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random

import pytest

from ferry.core.addresses import is_loopback_host
from ferry.core.ice_servers import (
    MAX_PER_PEER,
    IceServer,
    IceServerError,
    IceServerPlan,
    choose_for_peer,
    is_internal_address,
    parse_url,
    parse_user_ice_server,
    turn_rest_credential,
    turn_rest_credentials,
)
from ferry.errors import ConfigError

STUN = tuple(IceServer(f"stun:stun{n}.example:3478") for n in range(5))
TURN = tuple(IceServer(f"turn:turn{n}.example", username="u", credential="p") for n in range(3))


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "transport"),
    [
        ("stun:stun.example", "stun", "stun.example", 3478, None),
        ("stuns:stun.example", "stuns", "stun.example", 5349, None),
        ("turn:TURN.Example:80?transport=tcp", "turn", "turn.example", 80, "tcp"),
        ("turns:turn.example", "turns", "turn.example", 5349, None),
        ("stun:198.51.100.7:19302", "stun", "198.51.100.7", 19302, None),
        ("stun:[2001:DB8::1]", "stun", "2001:db8::1", 3478, None),
    ],
)
def test_urls_parse_into_their_parts(
    url: str, scheme: str, host: str, port: int, transport: str | None
) -> None:
    parsed = parse_url(url)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.transport) == (
        scheme,
        host,
        port,
        transport,
    )


def test_a_bad_url_is_refused_naming_it() -> None:
    with pytest.raises(IceServerError, match="stun:host/x") as caught:
        parse_url("stun:host/x")
    assert caught.value.reason == "bad_url"
    assert isinstance(caught.value, ConfigError)


def test_the_repr_of_a_server_never_shows_its_credential() -> None:
    server = IceServer("turn:turn.example", username="1:abc", credential="s3cret-value")
    assert "s3cret-value" not in repr(server)
    assert "s3cret-value" not in str(server)
    assert "1:abc" in repr(server)


def test_a_users_turn_server_carries_its_credentials_before_the_at_sign() -> None:
    server = parse_user_ice_server("turn:alice:pa:ss@turn.example:3478?transport=udp")
    assert server == IceServer(
        "turn:turn.example:3478?transport=udp", username="alice", credential="pa:ss"
    )
    # A TURN REST user name carries a colon of its own; its base64 password has none.
    assert parse_user_ice_server("turn:1767225600:ab12:q0sd+Z/w=@198.18.0.20") == IceServer(
        "turn:198.18.0.20", username="1767225600:ab12", credential="q0sd+Z/w="
    )
    assert parse_user_ice_server("stun:stun.example") == IceServer("stun:stun.example")
    with pytest.raises(IceServerError, match="USER:PASSWORD@HOST"):
        parse_user_ice_server("turn:alice@turn.example")


def test_each_peer_gets_at_most_per_peer_of_each_kind_and_the_choice_varies() -> None:
    chooser = random.Random(7)
    seen: set[tuple[IceServer, ...]] = set()
    for _ in range(50):
        chosen = choose_for_peer(STUN + TURN, 2, chooser)
        assert sum(1 for s in chosen if not s.is_turn) == 2
        assert sum(1 for s in chosen if s.is_turn) == 2
        assert len(set(chosen)) == 4
        seen.add(chosen)
    assert len(seen) > 10  # random subsets in random orders, not always the first two
    every_stun = {s for chosen in seen for s in chosen if not s.is_turn}
    assert every_stun == set(STUN)  # no server is left out for everyone


def test_fewer_servers_than_per_peer_are_all_handed_out() -> None:
    assert set(choose_for_peer(STUN[:1] + TURN[:1], 3, random.Random(1))) == {STUN[0], TURN[0]}
    assert choose_for_peer((), 2, random.Random(1)) == ()


def test_turn_rest_credentials_are_coturns_hmac_of_the_expiring_user_name() -> None:
    secret = b"shared-with-coturn"
    username, credential = turn_rest_credentials(secret, 1_700_000_000.5, 600, random.Random(3))
    expiry, _, random_part = username.partition(":")
    assert expiry == "1700000600"
    assert len(random_part) == 24
    expected = base64.b64encode(hmac.new(secret, username.encode(), hashlib.sha1).digest()).decode()
    assert credential == expected == turn_rest_credential(secret, username)
    other_user, _ = turn_rest_credentials(secret, 1_700_000_000.5, 600, random.Random(4))
    assert other_user != username


def test_a_plan_with_a_secret_mints_fresh_credentials_per_peer() -> None:
    plan = IceServerPlan(
        servers=(STUN[0], IceServer("turn:turn.example")),
        per_peer=2,
        turn_secret=b"k",
        credential_lifetime=120,
    )
    chooser = random.Random(5)
    first = plan.for_peer(1000.0, chooser)
    second = plan.for_peer(1000.0, chooser)
    turn_first = next(s for s in first if s.is_turn)
    turn_second = next(s for s in second if s.is_turn)
    assert turn_first.username is not None and turn_first.username.startswith("1120:")
    assert turn_first.username != turn_second.username
    assert turn_first.credential == turn_rest_credential(b"k", turn_first.username)
    assert next(s for s in first if not s.is_turn) == STUN[0]


def test_a_plan_refuses_turn_without_credentials_or_secret() -> None:
    with pytest.raises(ConfigError, match="--turn-secret-file"):
        IceServerPlan(servers=(IceServer("turn:turn.example"),))
    with pytest.raises(ConfigError, match="ice_servers_per_peer"):
        IceServerPlan(per_peer=MAX_PER_PEER + 1)
    with pytest.raises(ConfigError, match="turn_credential_ttl"):
        IceServerPlan(credential_lifetime=10)


@pytest.mark.parametrize(
    ("url", "internal"),
    [
        ("stun:127.0.0.1", True),
        ("stun:10.1.2.3", True),
        ("stun:192.168.1.1", True),
        ("stun:172.16.0.1", True),
        ("stun:169.254.169.254", True),
        ("stun:100.64.0.1", True),
        ("stun:0.0.0.0", True),
        ("stun:[::1]", True),
        ("stun:[fe80::1]", True),
        ("stun:[fd00::1]", True),
        ("stun:[::ffff:10.0.0.1]", True),
        ("stun:224.0.0.1", True),
        ("stun:198.51.100.7", False),
        ("stun:198.18.0.11", False),
        ("stun:[2001:db8::1]", False),
        ("stun:stun.example", False),
    ],
)
def test_internal_addresses_are_told_apart(url: str, internal: bool) -> None:
    assert is_internal_address(IceServer(url)) is internal


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("::1%lo", True),
        ("198.18.0.1", False),
        ("10.0.0.1", False),
        ("localhost.example", False),
        ("", False),
    ],
)
def test_loopback_hosts_are_recognised(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
