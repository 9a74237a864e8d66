"""ferry.core.relay_shares: the egress mirrors the client's spread of packets over relays."""

from __future__ import annotations

from collections import Counter

import pytest

from ferry.core.relay_shares import RelayShares, RelaySharesConfig


def test_no_relay_no_choice_and_one_relay_takes_all() -> None:
    shares = RelayShares()
    assert shares.choose(0.0) is None
    shares.heard(7, 0.0)
    assert [shares.choose(0.0) for _ in range(5)] == [7] * 5


def test_replies_follow_the_clients_spread() -> None:
    shares = RelayShares(RelaySharesConfig(half_life=10.0))
    for _ in range(200):
        shares.heard(1, 0.0)
    for _ in range(100):
        shares.heard(2, 0.0)
    picks = Counter(shares.choose(0.0) for _ in range(300))
    assert picks == {1: 200, 2: 100}
    assert shares.share(1) == pytest.approx(2 / 3)


def test_a_probe_only_spare_gets_almost_nothing() -> None:
    shares = RelayShares(RelaySharesConfig(half_life=10.0))
    for _ in range(400):
        shares.heard(1, 0.0)
    shares.heard(2, 0.0)  # one probe
    picks = Counter(shares.choose(0.0) for _ in range(401))
    assert picks[2] == 1


def test_an_abandoned_relay_fades_out() -> None:
    shares = RelayShares(RelaySharesConfig(half_life=0.25, decay_every=0.05))
    for _ in range(100):
        shares.heard(1, 0.0)
        shares.heard(2, 0.0)
    for step in range(1, 41):  # two seconds in which only relay 2 is used
        for _ in range(5):
            shares.heard(2, step * 0.05)
    assert shares.share(1) < 0.1
    assert shares.share(2) > 0.9


def test_removing_a_relay_hands_everything_to_the_rest() -> None:
    shares = RelayShares()
    shares.heard(1, 0.0)
    shares.heard(2, 0.0)
    shares.remove(2)
    assert 2 not in shares
    assert [shares.choose(0.1) for _ in range(3)] == [1, 1, 1]
    shares.remove(1)
    assert shares.choose(0.2) is None
