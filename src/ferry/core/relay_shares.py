"""How the egress spreads a session's datagrams over the relays that carry it.

The client decides how its session uses its volunteers (``core/path_policy.py``); the egress
mirrors that decision rather than making its own. Each relay's share of the datagrams the
egress sends is its share of the authenticated packets the egress *received* from it recently
(an exponentially decaying count with a ``half_life``), picked by smooth weighted round robin.
So a client that sends two thirds of its packets on one volunteer gets two thirds of the
replies back on it, a spare that only carries probes gets almost nothing, and a volunteer the
client stopped using fades out within a few half-lives even if its WebSocket stays open.

Sans-IO: ``now`` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RelaySharesConfig:
    """Tunables of the egress's relay mirroring."""

    half_life: float = 0.25
    """Seconds after which a relay's count of received packets has halved."""
    decay_every: float = 0.05
    """Seconds between decay steps (decay is applied lazily, at most this often)."""


class RelayShares:
    """Decaying per-relay packet counts and a smooth weighted round robin over them."""

    def __init__(self, config: RelaySharesConfig | None = None) -> None:
        self.config = config or RelaySharesConfig()
        self._counts: dict[int, float] = {}
        self._credit: dict[int, float] = {}
        self._last_decay: float | None = None
        self._most_recent: int | None = None

    def heard(self, relay_id: int, now: float) -> None:
        """An authenticated packet of the session arrived on ``relay_id``."""
        self._decay(now)
        self._counts[relay_id] = self._counts.get(relay_id, 0.0) + 1.0
        self._credit.setdefault(relay_id, 0.0)
        self._most_recent = relay_id

    def remove(self, relay_id: int) -> None:
        """The relay closed."""
        self._counts.pop(relay_id, None)
        self._credit.pop(relay_id, None)
        if self._most_recent == relay_id:
            self._most_recent = max(self._counts, key=self._counts.__getitem__, default=None)

    def __contains__(self, relay_id: int) -> bool:
        return relay_id in self._counts

    def __len__(self) -> int:
        return len(self._counts)

    def relay_ids(self) -> list[int]:
        """Every relay the session has been heard on, in no particular order."""
        return list(self._counts)

    def share(self, relay_id: int) -> float:
        """The relay's current share of the datagrams sent (0..1)."""
        total = sum(self._counts.values())
        return self._counts.get(relay_id, 0.0) / total if total > 0 else 0.0

    def choose(self, now: float) -> int | None:
        """The relay for the next datagram, or None when the session has no relay."""
        if len(self._counts) <= 1:
            return self._most_recent
        self._decay(now)
        total = 0.0
        best: int | None = None
        for relay_id, weight in self._counts.items():
            credit = self._credit[relay_id] + weight
            self._credit[relay_id] = credit
            total += weight
            if best is None or credit > self._credit[best]:
                best = relay_id
        if best is None or total <= 0:
            return self._most_recent
        self._credit[best] -= total
        return best

    def _decay(self, now: float) -> None:
        if self._last_decay is None:
            self._last_decay = now
            return
        elapsed = now - self._last_decay
        if elapsed < self.config.decay_every:
            return
        factor = 0.5 ** (elapsed / self.config.half_life)
        for relay_id in self._counts:
            self._counts[relay_id] *= factor
        self._last_decay = now
