"""Per-source token buckets (sans-IO), with a fake clock."""

from __future__ import annotations

import pytest

from ferry.core.rate_limit import RateLimit, TokenBuckets, source_key
from ferry.errors import ConfigError


def test_burst_then_refused_with_the_wait_until_the_next_token() -> None:
    buckets = TokenBuckets(RateLimit(rate=2.0, burst=5))
    assert all(buckets.take("a", now=10.0).allowed for _ in range(5))
    refused = buckets.take("a", now=10.0)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.5)
    assert buckets.take("a", now=10.5).allowed
    assert not buckets.take("a", now=10.5).allowed


def test_sources_have_their_own_buckets() -> None:
    buckets = TokenBuckets(RateLimit(rate=1.0, burst=1))
    assert buckets.take("a", now=0.0).allowed
    assert not buckets.take("a", now=0.0).allowed
    assert buckets.take("b", now=0.0).allowed


def test_sustained_rate_is_what_the_limit_allows() -> None:
    buckets = TokenBuckets(RateLimit(rate=4.0, burst=1))
    allowed = sum(buckets.take("a", now=step * 0.125).allowed for step in range(80))
    # 10 seconds at 8 requests/s against 4/s: every other request goes through
    assert allowed == 40


def test_a_quiet_source_is_forgotten_and_memory_is_bounded() -> None:
    buckets = TokenBuckets(RateLimit(rate=1.0, burst=2), max_sources=3)
    for number in range(10):
        buckets.take(f"source-{number}", now=0.0)
    assert buckets.sources == 3
    buckets.take("later", now=100.0)
    assert buckets.sources == 1


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (float("inf"), 1), (1.0, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ConfigError):
        RateLimit(rate=rate, burst=burst)


@pytest.mark.parametrize(
    ("source", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
    ],
)
def test_sources_are_keyed_by_address_or_ipv6_64(source: str, key: str) -> None:
    assert source_key(source) == key
