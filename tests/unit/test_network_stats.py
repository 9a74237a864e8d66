"""The broker's public live state, rounded up for privacy (sans-IO, fake clock)."""

from __future__ import annotations

import pytest

from ferry.core.network_stats import (
    NetworkActivity,
    NetworkActivityConfig,
    NetworkStats,
    round_up_for_privacy,
)
from ferry.errors import ConfigError
from ferry.transport.webrtc import without_mdns_candidates


@pytest.mark.parametrize(("count", "published"), [(0, 0), (1, 8), (8, 8), (9, 16), (17, 24)])
def test_counts_are_rounded_up_to_multiples_of_8(count: int, published: int) -> None:
    assert round_up_for_privacy(count) == published


def test_volunteers_count_while_they_poll_and_drop_out_after_the_window() -> None:
    activity = NetworkActivity(NetworkActivityConfig(online_window=30.0))
    for number in range(9):
        activity.volunteer_polled(f"volunteer-{number:08d}", now=0.0)
    activity.volunteer_polled("volunteer-00000000", now=20.0)  # polls again: still one
    assert activity.snapshot(now=25.0) == NetworkStats(16, 0)
    assert activity.snapshot(now=45.0) == NetworkStats(8, 0)  # only the one that re-polled
    assert activity.snapshot(now=51.0) == NetworkStats(0, 0)


def test_helped_clients_are_counted_over_the_last_hour() -> None:
    activity = NetworkActivity()
    activity.client_helped(now=0.0)
    activity.client_helped(now=1800.0)
    assert activity.snapshot(now=1800.0).clients_helped_last_hour == 8
    assert activity.snapshot(now=3700.0).clients_helped_last_hour == 8  # the first expired
    assert activity.snapshot(now=5500.0).clients_helped_last_hour == 0


def test_tracked_volunteers_are_bounded() -> None:
    activity = NetworkActivity(NetworkActivityConfig(max_tracked_volunteers=10))
    for number in range(100):
        activity.volunteer_polled(f"volunteer-{number:08d}", now=float(number) / 100)
    assert activity.snapshot(now=1.0).volunteers_online == 16  # 10, rounded up


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ConfigError):
        NetworkActivityConfig(helped_window=0)
    with pytest.raises(ConfigError):
        NetworkActivityConfig(max_tracked_volunteers=0)


def test_mdns_and_off_list_candidates_are_left_out_of_a_peer_sdp() -> None:
    sdp = (
        "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        "a=candidate:1 1 udp 2113937151 0b4c1f7e-3c9d.local 50000 typ host\r\n"
        "a=candidate:2 1 udp 2113937151 127.0.0.1 50001 typ host\r\n"
        "a=candidate:3 1 udp 2113937151 192.0.2.2 50002 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    kept = without_mdns_candidates(sdp)
    assert ".local" not in kept and "127.0.0.1 50001" in kept and "192.0.2.2" in kept
    loopback_only = without_mdns_candidates(sdp, only=("127.0.0.1",))
    assert "192.0.2.2" not in loopback_only and "127.0.0.1 50001" in loopback_only
    assert loopback_only.endswith("a=end-of-candidates\r\n")
