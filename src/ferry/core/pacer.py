"""Pacing a stream of datagrams out at the times the rate limit reserved for them (sans-IO).

The volunteer's rate limit (:mod:`ferry.core.volunteer_limits`) shapes rather than polices:
for each datagram it says how long to hold it (``delay``, 0.0 for "now") or that it is
dropped. A :class:`Pacer` holds the datagrams of one direction until their time comes and
keeps them in order: a datagram never overtakes one held before it, even if its own delay is
shorter (or zero), because reordering costs QUIC more than a few milliseconds of waiting.

It never reads a clock and never sleeps. The caller passes ``now`` (seconds on a monotonic
clock), sends what :meth:`Pacer.push` and :meth:`Pacer.release` give back, and arranges to
call :meth:`Pacer.release` again at :meth:`Pacer.deadline`::

    decision = pacer.push(datagram, delay, now)      # SEND_NOW, HELD or FULL
    ...
    for datagram in pacer.release(now):              # at pacer.deadline()
        send(datagram)
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from ferry.errors import ConfigError


@dataclass(frozen=True, slots=True)
class PacerConfig:
    """Bounds of one :class:`Pacer`."""

    max_held: int = 65_536
    """Most datagrams held at once; one more is refused (:attr:`PaceDecision.FULL`) and the
    caller drops it. The rate limit's queue delay keeps the queue far shorter than this (its
    bucket may only go ``max_rate × queue_delay`` bytes into debt); the bound only keeps the
    memory finite whatever the limits are."""

    def __post_init__(self) -> None:
        if self.max_held < 1:
            raise ConfigError("max_held must be at least 1")


class PaceDecision(enum.Enum):
    """What :meth:`Pacer.push` decided for a datagram."""

    SEND_NOW = "send_now"
    """Send it now: its time has come and nothing is held before it."""
    HELD = "held"
    """Held: :meth:`Pacer.release` gives it back at or after :meth:`Pacer.deadline`."""
    FULL = "full"
    """Refused: ``max_held`` datagrams are held already; drop it."""


class Pacer:
    """A first-in first-out queue of datagrams, each with the time it may leave."""

    def __init__(self, config: PacerConfig | None = None) -> None:
        self.config = config if config is not None else PacerConfig()
        self._held: deque[tuple[float, bytes]] = deque()

    @property
    def held(self) -> int:
        """Datagrams held now."""
        return len(self._held)

    def push(self, datagram: bytes, delay: float, now: float) -> PaceDecision:
        """Decide for a datagram that may leave ``delay`` seconds after ``now``.

        On :attr:`PaceDecision.SEND_NOW` the caller sends ``datagram`` itself; on
        :attr:`PaceDecision.HELD` the pacer keeps it (and :meth:`deadline` may have moved
        earlier: it was ``None``); on :attr:`PaceDecision.FULL` the caller drops it.
        """
        if delay <= 0 and not self._held:
            return PaceDecision.SEND_NOW
        if len(self._held) >= self.config.max_held:
            return PaceDecision.FULL
        self._held.append((now + max(0.0, delay), datagram))
        return PaceDecision.HELD

    def deadline(self) -> float | None:
        """When :meth:`release` next has something to give (the oldest held datagram's
        time), or ``None`` when nothing is held."""
        return self._held[0][0] if self._held else None

    def release(self, now: float) -> list[bytes]:
        """The held datagrams whose time is at or before ``now``, oldest first, up to the first
        one whose time has not come (order is kept)."""
        released: list[bytes] = []
        while self._held and self._held[0][0] <= now:
            released.append(self._held.popleft()[1])
        return released

    def clear(self) -> int:
        """Forget every held datagram (the relay ended); returns how many were dropped."""
        dropped = len(self._held)
        self._held.clear()
        return dropped
