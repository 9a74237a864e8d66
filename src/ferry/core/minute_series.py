"""The broker's last hour, one sample a minute, for its status page (sans-IO).

:class:`MinuteSeries` keeps a ring of the last ``minutes`` one-minute samples: counts of
offers, matches and refusals that happened in each minute, and the highest number of
volunteers available and clients waiting seen in it. Time is passed in as ``now`` (seconds on
any monotonic clock); minutes are ``floor(now / 60)``. Nothing about any one person is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ferry.errors import ConfigError

MINUTE = 60.0
"""Seconds in one sample."""


@dataclass(frozen=True, slots=True)
class MinuteSample:
    """What happened in one minute."""

    minute: int
    """The minute's number, ``floor(now / 60)``."""
    offers: int
    """Client offers accepted in the minute."""
    matches: int
    """Clients handed to a volunteer in the minute."""
    refusals: int
    """Requests refused in the minute (any reason)."""
    volunteers_available: int
    """Most volunteer polls held at once, as seen in the minute."""
    clients_waiting: int
    """Most client offers held at once, as seen in the minute."""


class MinuteSeries:
    """A ring of one-minute samples; see the module docstring."""

    def __init__(self, minutes: int = 60) -> None:
        if minutes < 1:
            raise ConfigError("a minute series needs at least one minute")
        self.minutes = minutes
        self._samples: dict[int, list[int]] = {}
        """Minute -> [offers, matches, refusals, volunteers_available, clients_waiting]."""

    def _sample(self, now: float) -> list[int]:
        minute = math.floor(now / MINUTE)
        sample = self._samples.get(minute)
        if sample is None:
            sample = self._samples[minute] = [0, 0, 0, 0, 0]
            for old in [m for m in self._samples if m <= minute - self.minutes]:
                del self._samples[old]
        return sample

    def count(self, now: float, *, offers: int = 0, matches: int = 0, refusals: int = 0) -> None:
        """Add events that happened at ``now``."""
        sample = self._sample(now)
        sample[0] += offers
        sample[1] += matches
        sample[2] += refusals

    def observe(self, now: float, *, volunteers_available: int, clients_waiting: int) -> None:
        """Note the levels seen at ``now`` (each minute keeps its highest)."""
        sample = self._sample(now)
        sample[3] = max(sample[3], volunteers_available)
        sample[4] = max(sample[4], clients_waiting)

    def last(self, now: float) -> list[MinuteSample]:
        """The last ``minutes`` samples, oldest first, ending with the current minute; minutes
        with nothing recorded are zeros."""
        current = math.floor(now / MINUTE)
        samples = []
        for minute in range(current - self.minutes + 1, current + 1):
            values = self._samples.get(minute, [0, 0, 0, 0, 0])
            samples.append(MinuteSample(minute, *values))
        return samples
