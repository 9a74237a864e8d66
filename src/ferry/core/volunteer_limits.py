"""A volunteer's limits: clients at once, a byte rate, a daily quota (sans-IO).

Both volunteers, the Python one and the browser widget, obey the same policy; this module is
its reference, ``docs/architecture.md`` ("Volunteer limits") writes the algorithm down, and
``tests/vectors/volunteer_limits.json`` pins it for both implementations. Time is passed in
as ``now``: **seconds since the Unix epoch** (``time.time()`` in Python,
``Date.now() / 1000`` in a browser), because the quota follows the UTC calendar.

The policy, for one volunteer and all of its clients together:

* **Capacity.** At most ``capacity`` clients are relayed at once; a volunteer asks the broker
  only for as many more as it has room for.
* **Rate.** A token bucket of ``burst`` bytes, refilled at ``max_rate`` bytes per second,
  covers every relayed datagram in both directions. A datagram is *admitted* when the bucket
  holds at least its size, and then takes that many tokens; otherwise it is *dropped*, never
  queued: a relay that drops is what QUIC's congestion control reads as "slow down", so the
  session settles at the cap instead of building a queue in the volunteer.
* **Quota.** At most ``quota`` bytes are relayed per UTC calendar day (00:00 to 24:00 UTC,
  not a rolling 24 hours). A datagram is admitted while the day's count is *below* the quota,
  so the count may pass it by at most one datagram. Once it is reached the volunteer drops
  every datagram, ends its relays and stops polling the broker until the next UTC midnight.

Datagrams dropped for the rate do not count towards the quota; datagrams dropped for the
quota do not take tokens. A clock that steps backwards is tolerated: the bucket does not
refill for that step and refills from the new reading on, and a change of calendar day
(either way) starts a new day's count.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

from ferry.errors import ConfigError

SECONDS_PER_DAY = 86_400
"""Length of the quota's day: one UTC calendar day (leap seconds do not exist in Unix time)."""

MIN_BURST = 65_536
"""Smallest bucket allowed, in bytes: the largest datagram (65,527 bytes) must fit in it."""

MAX_BYTE_COUNT = 2**53 - 1
"""Largest rate, burst or quota accepted, so that a browser's numbers hold it exactly."""

MAX_CAPACITY = 1000
"""Largest ``capacity`` accepted (the broker refuses a poll offering more)."""


class Admission(enum.Enum):
    """What :meth:`VolunteerLimits.admit` decided for one datagram.

    Each value is also the label used in metrics and in the test vectors.
    """

    ADMITTED = "admitted"
    """Relay it."""
    OVER_RATE = "rate"
    """Drop it: the token bucket holds fewer bytes than the datagram."""
    OVER_QUOTA = "quota"
    """Drop it: today's quota is used up."""


@dataclass(frozen=True, slots=True)
class VolunteerLimitsConfig:
    """The limits of one volunteer, over all its clients together."""

    capacity: int = 5
    """Clients relayed at once (1..1000)."""
    max_rate: int = 0
    """Bytes per second relayed, both directions together; 0 means unlimited."""
    burst: int = 0
    """Size of the token bucket in bytes (at least 65,536); 0 means the default,
    ``max(max_rate // 4, 65536)``: a quarter of a second at the full rate."""
    quota: int = 0
    """Bytes relayed per UTC calendar day, both directions together; 0 means unlimited."""
    queue_delay: float = 0.0
    """Longest a datagram over the rate may wait for tokens (seconds, :meth:`reserve`);
    0 means none: :meth:`admit` drops at once, a *policer*. Waiting turns the cap into delay
    (a *shaper*), which QUIC's congestion control and the client's delay-based scheduler
    read far better than loss."""

    def __post_init__(self) -> None:
        if not 1 <= self.capacity <= MAX_CAPACITY:
            raise ConfigError(f"capacity must be between 1 and {MAX_CAPACITY} clients")
        for name in ("max_rate", "burst", "quota"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_BYTE_COUNT:
                raise ConfigError(f"{name} must be between 0 and {MAX_BYTE_COUNT} bytes")
        if not 0 <= self.queue_delay <= 10:
            raise ConfigError("queue_delay must be between 0 and 10 seconds")
        if self.burst and self.burst < MIN_BURST:
            raise ConfigError(
                f"burst must be at least {MIN_BURST} bytes (the largest datagram must fit), "
                "or 0 for the default"
            )

    @property
    def bucket_size(self) -> int:
        """The token bucket's size in bytes: ``burst``, or its default when 0."""
        return self.burst or max(self.max_rate // 4, MIN_BURST)


def utc_day(now: float) -> int:
    """The UTC calendar day ``now`` (Unix seconds) falls in, as days since 1970-01-01."""
    return math.floor(now / SECONDS_PER_DAY)


class VolunteerLimits:
    """The limits' state for one volunteer; every method takes ``now`` in Unix seconds.

    The bucket starts full at the first :meth:`admit` call.
    """

    def __init__(self, config: VolunteerLimitsConfig) -> None:
        self.config = config
        self._bucket_size = config.bucket_size
        self._tokens = float(self._bucket_size)
        self._refilled_at: float | None = None
        self._day: int | None = None
        self._used_today = 0
        self.admitted_bytes = 0
        """Bytes admitted since the start (all days)."""
        self.dropped_for_rate = 0
        """Datagrams dropped because the bucket was short."""
        self.dropped_for_quota = 0
        """Datagrams dropped because the day's quota was used up."""
        self.held_for_rate = 0
        """Datagrams :meth:`reserve` made wait because the bucket was in debt (shaped)."""
        self.first_admit_call_at: float | None = None
        """``now`` of the first :meth:`admit` call (when the bucket started full)."""
        self.last_admit_call_at: float | None = None
        """``now`` of the latest :meth:`admit` call."""

    def admit(self, size: int, now: float) -> Admission:
        """Decide whether a datagram of ``size`` bytes may be relayed now, and count it."""
        if self.first_admit_call_at is None:
            self.first_admit_call_at = now
        self.last_admit_call_at = now
        config = self.config
        if config.quota:
            self._roll_day(now)
            if self._used_today >= config.quota:
                self.dropped_for_quota += 1
                return Admission.OVER_QUOTA
        if config.max_rate:
            if self._refilled_at is not None and now > self._refilled_at:
                refill = (now - self._refilled_at) * config.max_rate
                self._tokens = min(float(self._bucket_size), self._tokens + refill)
            self._refilled_at = now
            if self._tokens < size:
                self.dropped_for_rate += 1
                return Admission.OVER_RATE
            self._tokens -= size
        if config.quota:
            self._used_today += size
        self.admitted_bytes += size
        return Admission.ADMITTED

    def reserve(self, size: int, now: float) -> float | None:
        """Shape rather than police: seconds to hold a datagram of ``size`` bytes, or None.

        The bucket may go into debt down to ``max_rate × queue_delay`` bytes; a datagram that
        would go deeper is dropped (None) and counted as over the rate. A datagram that finds
        the bucket in debt waits until the debt is repaid, so datagrams leave at ``max_rate``
        on average and in the order they were reserved. The quota is counted as in
        :meth:`admit`. With ``queue_delay`` 0 this is :meth:`admit` (0.0 or None).
        """
        config = self.config
        if not config.max_rate or not config.queue_delay:
            return 0.0 if self.admit(size, now) is Admission.ADMITTED else None
        if self.first_admit_call_at is None:
            self.first_admit_call_at = now
        self.last_admit_call_at = now
        if config.quota:
            self._roll_day(now)
            if self._used_today >= config.quota:
                self.dropped_for_quota += 1
                return None
        if self._refilled_at is not None and now > self._refilled_at:
            refill = (now - self._refilled_at) * config.max_rate
            self._tokens = min(float(self._bucket_size), self._tokens + refill)
        self._refilled_at = now
        if self._tokens - size < -config.max_rate * config.queue_delay:
            self.dropped_for_rate += 1
            return None
        self._tokens -= size
        if config.quota:
            self._used_today += size
        self.admitted_bytes += size
        if self._tokens < 0:
            self.held_for_rate += 1
            return -self._tokens / config.max_rate
        return 0.0

    def quota_used(self, now: float) -> int:
        """Bytes counted towards the quota on ``now``'s UTC day."""
        return self._used_today if self._day == utc_day(now) else 0

    def quota_exhausted(self, now: float) -> bool:
        """Whether the quota of ``now``'s UTC day is used up."""
        return bool(self.config.quota) and self.quota_used(now) >= self.config.quota

    def can_take_client(self, active: int, now: float) -> bool:
        """Whether one more client may be taken while ``active`` are relayed."""
        return active < self.config.capacity and not self.quota_exhausted(now)

    def free_capacity(self, active: int) -> int:
        """How many more clients there is room for while ``active`` are relayed."""
        return max(0, self.config.capacity - active)

    def next_poll_delay(self, now: float) -> float:
        """Seconds to wait before polling the broker: 0, or until the next UTC midnight when
        today's quota is used up."""
        if not self.quota_exhausted(now):
            return 0.0
        return (utc_day(now) + 1) * SECONDS_PER_DAY - now

    def _roll_day(self, now: float) -> None:
        day = utc_day(now)
        if day != self._day:
            self._day = day
            self._used_today = 0


_BYTE_COUNT = re.compile(r"([0-9]{1,20})\s*(?:([kmgt])(i?))?b?", re.IGNORECASE)
_SUFFIX_POWER = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_byte_count(text: str, *, what: str = "the value") -> int:
    """``"2000000"``, ``"2M"``, ``"500k"``, ``"1GiB"`` → bytes; :class:`ConfigError` if bad.

    A whole number, optionally followed by a suffix: ``k``, ``M``, ``G``, ``T`` are powers of
    1000; ``Ki``, ``Mi``, ``Gi``, ``Ti`` powers of 1024; a trailing ``B`` is allowed; letters
    in any case. No fractions ("2500k", not "2.5M"). At most 2**53 - 1.
    """
    match = _BYTE_COUNT.fullmatch(text.strip())
    if match is None:
        raise ConfigError(
            f"{what} {text!r} is not a byte count: write a whole number, optionally with "
            "k, M, G (powers of 1000) or Ki, Mi, Gi (powers of 1024), e.g. 2M or 500k"
        )
    digits, suffix, binary = match.groups()
    value = int(digits)
    if suffix is not None:
        value *= (1024 if binary else 1000) ** _SUFFIX_POWER[suffix.lower()]
    if value > MAX_BYTE_COUNT:
        raise ConfigError(f"{what} {text!r} is too large (at most {MAX_BYTE_COUNT} bytes)")
    return value
