"""The network's live state as the broker's public page shows it (sans-IO).

The broker's ``GET /v1/stats`` (``docs/protocol.md`` §2.6) tells anyone two numbers: how many
volunteers are online and how many clients were handed a volunteer in the last hour. Both
are rounded **up** to a multiple of :data:`STATS_ROUNDING` (8) so that the page cannot be
used to watch one volunteer or one client come and go (a censor polling the page must not
learn that "one more client connected just now").

:class:`NetworkActivity` keeps only what those numbers need: the last time each volunteer
identifier polled (bounded in count) and a count of matches per minute for the last hour.
Nothing about a client is kept, not even an identifier. Time is passed in as ``now``
(seconds on any monotonic clock).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

from ferry.errors import ConfigError

STATS_ROUNDING = 8
"""Published counts are rounded up to a multiple of this."""


def round_up_for_privacy(count: int) -> int:
    """``count`` rounded up to a multiple of :data:`STATS_ROUNDING` (0 stays 0)."""
    if count < 0:
        raise ValueError("a count cannot be negative")
    return math.ceil(count / STATS_ROUNDING) * STATS_ROUNDING


@dataclass(frozen=True, slots=True)
class NetworkActivityConfig:
    """Windows and bounds of :class:`NetworkActivity`."""

    online_window: float = 30.0
    """A volunteer counts as online for this many seconds after its last poll. A volunteer
    polls again as soon as a poll ends (after at most the broker's ``poll_timeout``, 10 s);
    one whose every slot is busy stops polling and drops out of the count after this."""
    helped_window: float = 3600.0
    """Matches are counted over this many seconds ("people helped in the last hour")."""
    bucket_seconds: float = 60.0
    """Matches are counted in buckets this long; the window moves by whole buckets."""
    max_tracked_volunteers: int = 100_000
    """Most volunteer identifiers remembered; beyond it the least recently seen is dropped."""

    def __post_init__(self) -> None:
        for name in ("online_window", "helped_window", "bucket_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.max_tracked_volunteers < 1:
            raise ConfigError("max_tracked_volunteers must be at least 1")


@dataclass(frozen=True, slots=True)
class NetworkStats:
    """What ``GET /v1/stats`` publishes, already rounded up for privacy."""

    volunteers_online: int
    """Volunteers that polled within ``online_window``, rounded up to a multiple of 8."""
    clients_helped_last_hour: int
    """Clients matched with a volunteer within ``helped_window``, rounded up to a multiple
    of 8."""


class NetworkActivity:
    """Counts volunteers seen and clients helped; see the module docstring."""

    def __init__(self, config: NetworkActivityConfig | None = None) -> None:
        self.config = config if config is not None else NetworkActivityConfig()
        self._last_poll: OrderedDict[str, float] = OrderedDict()
        """Volunteer id -> time of its last poll, least recently seen first."""
        self._helped: deque[tuple[int, int]] = deque()
        """(bucket number, matches in it), oldest first."""

    def volunteer_polled(self, volunteer_id: str, now: float) -> None:
        """Note that ``volunteer_id`` polled at ``now``."""
        self._last_poll[volunteer_id] = now
        self._last_poll.move_to_end(volunteer_id)
        while len(self._last_poll) > self.config.max_tracked_volunteers:
            self._last_poll.popitem(last=False)

    def client_helped(self, now: float) -> None:
        """Note that a client was handed a volunteer's answer at ``now``."""
        bucket = math.floor(now / self.config.bucket_seconds)
        if self._helped and self._helped[-1][0] == bucket:
            self._helped[-1] = (bucket, self._helped[-1][1] + 1)
        else:
            self._helped.append((bucket, 1))
        self._forget_old(now)

    def snapshot(self, now: float) -> NetworkStats:
        """The published numbers at ``now`` (forgetting what fell out of the windows)."""
        self._forget_old(now)
        return NetworkStats(
            volunteers_online=round_up_for_privacy(len(self._last_poll)),
            clients_helped_last_hour=round_up_for_privacy(sum(n for _, n in self._helped)),
        )

    def _forget_old(self, now: float) -> None:
        online_since = now - self.config.online_window
        while self._last_poll:
            volunteer_id, seen = next(iter(self._last_poll.items()))
            if seen >= online_since:
                break
            del self._last_poll[volunteer_id]
        oldest_bucket = math.floor((now - self.config.helped_window) / self.config.bucket_seconds)
        while self._helped and self._helped[0][0] <= oldest_bucket:
            self._helped.popleft()
