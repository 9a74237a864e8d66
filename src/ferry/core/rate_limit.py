"""Per-source token buckets: how often one source may offer or poll (sans-IO).

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; each request takes
one. A request finding less than one token is refused, and told how long until a token is
there (the HTTP ``Retry-After``). Sources are opaque strings (the broker passes a salted hash
of the address, never the address). Time is passed in as ``now`` (seconds, any monotonic
clock). The broker's Redis store runs the same arithmetic in Redis (``ferry.broker.redis_store``)
so that every instance draws from one bucket per source.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

from ferry.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket's shape."""

    rate: float
    """Tokens gained per second (the sustained request rate allowed)."""
    burst: int
    """Most tokens held (the requests allowed at once after a quiet spell)."""

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError("a rate limit's rate must be a positive number per second")
        if self.burst < 1:
            raise ConfigError("a rate limit's burst must be at least 1")


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether one request may go ahead."""

    allowed: bool
    """``True`` when a token was taken."""
    retry_after: float
    """Seconds until a token will be there (0 when allowed)."""


def refill(tokens: float, updated: float, now: float, limit: RateLimit) -> float:
    """The tokens of a bucket that held ``tokens`` at ``updated``, as of ``now``."""
    return min(float(limit.burst), tokens + max(0.0, now - updated) * limit.rate)


def take_token(tokens: float, limit: RateLimit) -> tuple[float, RateDecision]:
    """Take one token from a bucket holding ``tokens``: the bucket's new count and the decision."""
    if tokens >= 1.0:
        return tokens - 1.0, RateDecision(True, 0.0)
    return tokens, RateDecision(False, (1.0 - tokens) / limit.rate)


class TokenBuckets:
    """One token bucket per source, in memory; at most ``max_sources`` are remembered.

    When more sources than that are active, the bucket untouched longest is forgotten (that
    source starts again with a full bucket): memory stays bounded under a flood of sources.
    """

    def __init__(self, limit: RateLimit, max_sources: int = 100_000) -> None:
        if max_sources < 1:
            raise ConfigError("max_sources must be at least 1")
        self.limit = limit
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """By source, ``(tokens, updated)``; least recently used first."""

    @property
    def sources(self) -> int:
        """How many sources have a bucket now."""
        return len(self._buckets)

    def take(self, source: str, now: float) -> RateDecision:
        """Take a token for one request from ``source`` at ``now``."""
        self._forget_full(now)
        held = self._buckets.pop(source, None)
        tokens = float(self.limit.burst) if held is None else refill(*held, now, self.limit)
        tokens, decision = take_token(tokens, self.limit)
        self._buckets[source] = (tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return decision

    def _forget_full(self, now: float) -> None:
        """Drop buckets (oldest first) that have refilled completely: they hold nothing."""
        full_after = self.limit.burst / self.limit.rate
        while self._buckets:
            source, (_, updated) = next(iter(self._buckets.items()))
            if now - updated < full_after:
                return
            del self._buckets[source]


IPV6_SOURCE_PREFIX = 64
"""IPv6 sources are counted by their /64: one home or phone gets a /64 (or more) and can pick
any address in it, so a bucket per address would give one person 2^64 buckets."""


def source_key(source: str) -> str:
    """The key a request's source is counted under: an IPv4 address as it is (an IPv4-mapped
    IPv6 address as its IPv4 address), an IPv6 address as its /64 network, anything else
    (not an address: a front's header gone wrong) as it is."""
    try:
        address = ipaddress.ip_address(source.strip().split("%", 1)[0])
    except ValueError:
        return source
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/{IPV6_SOURCE_PREFIX}", strict=False))
    return str(address)
