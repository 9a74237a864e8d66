"""Faults a volunteer can inject into the datagrams it relays. FOR TESTS ONLY.

A malicious or broken volunteer may drop, duplicate, reorder or corrupt datagrams
(``DESIGN.md``, security model); the session must survive all of it with every byte intact,
because QUIC retransmits what is lost and its AEAD rejects what was altered. To test that
for real, the Python volunteer can impair what it relays on purpose: ``ferry volunteer``'s
hidden ``--test-impair-*`` options, or :attr:`VolunteerConfig.impairment`. Nobody should
run a real volunteer with them.

:class:`DatagramImpairer` is the pure part (no asyncio, ``now`` passed in, deterministic
under a seed); :class:`ImpairedSender` drives it in front of a channel's ``send`` and owns
the one timer a held-back datagram needs.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from ferry.errors import ConfigError

FaultHandler = Callable[[str], None]
"""Told each fault as it is injected: ``"lost"``, ``"corrupted"``, ``"duplicated"`` or
``"reordered"`` (metrics)."""


@dataclass(frozen=True, slots=True)
class RelayImpairment:
    """Faults injected into relayed datagrams, each direction on its own. Testing only."""

    loss: float = 0.0
    """Probability that a datagram is dropped."""
    duplicate: float = 0.0
    """Probability that a (surviving) datagram is sent twice in a row."""
    reorder: float = 0.0
    """Probability that a datagram is held back and sent after the next one."""
    corrupt: float = 0.0
    """Probability that one bit of a datagram, chosen at random, is flipped."""
    seed: int = 0
    """Seed of the random choices: the same seed and datagrams give the same faults."""
    reorder_hold: float = 0.02
    """Longest time, in seconds, a held-back datagram waits for one to overtake it; then it
    is sent anyway (late rather than lost)."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"the impairment's {name} must be a probability, 0 to 1")
        if not self.reorder_hold > 0:
            raise ConfigError("the impairment's reorder_hold must be a positive number of seconds")

    @property
    def active(self) -> bool:
        """Whether any fault is injected at all."""
        return any((self.loss, self.duplicate, self.reorder, self.corrupt))


@dataclass(slots=True)
class ImpairmentCounts:
    """How many datagrams one :class:`DatagramImpairer` treated, by fault."""

    seen: int = 0
    """Datagrams given to it."""
    lost: int = 0
    """Dropped."""
    duplicated: int = 0
    """Sent twice."""
    reordered: int = 0
    """Held back behind a later one (or the hold timer)."""
    corrupted: int = 0
    """Sent with one bit flipped."""


class DatagramImpairer:
    """Applies a :class:`RelayImpairment` to one stream of datagrams (one direction).

    ``stream`` names the stream inside the seed (e.g. ``"3/to_egress"``), so two directions
    or two relays with one seed get independent, reproducible faults. For each datagram, in
    this order: loss; corruption; duplication; reordering (hold it back if none is held).
    A held datagram is released right after the next datagram that is sent, or by
    :meth:`expire` once ``reorder_hold`` has passed.
    """

    def __init__(
        self, impairment: RelayImpairment, stream: str, *, on_fault: FaultHandler | None = None
    ) -> None:
        self.impairment = impairment
        self.counts = ImpairmentCounts()
        self._on_fault = on_fault
        self._random = random.Random(f"{impairment.seed}/{stream}")
        self._held: bytes | None = None
        self._held_until = 0.0

    def process(self, datagram: bytes, now: float) -> list[bytes]:
        """The datagrams to send now, in order, for one datagram to relay."""
        impairment, chance, counts = self.impairment, self._random.random, self.counts
        counts.seen += 1
        if impairment.loss and chance() < impairment.loss:
            counts.lost += 1
            self._report("lost")
            return self.expire(now)
        if impairment.corrupt and chance() < impairment.corrupt:
            counts.corrupted += 1
            self._report("corrupted")
            altered = bytearray(datagram)
            bit = self._random.randrange(len(altered) * 8)
            altered[bit // 8] ^= 1 << (bit % 8)
            datagram = bytes(altered)
        copies = [datagram]
        if impairment.duplicate and chance() < impairment.duplicate:
            counts.duplicated += 1
            self._report("duplicated")
            copies.append(datagram)
        if self._held is None and impairment.reorder and chance() < impairment.reorder:
            counts.reordered += 1
            self._report("reordered")
            self._held, self._held_until = datagram, now + impairment.reorder_hold
            return copies[1:]
        if self._held is not None:
            copies.append(self._held)
            self._held = None
        return copies

    def _report(self, fault: str) -> None:
        if self._on_fault is not None:
            self._on_fault(fault)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` must be called (a datagram is held), else ``None``."""
        return self._held_until if self._held is not None else None

    def expire(self, now: float) -> list[bytes]:
        """Release the held datagram if its hold has run out."""
        if self._held is not None and now >= self._held_until:
            held, self._held = self._held, None
            return [held]
        return []


class ImpairedSender:
    """``send`` with a :class:`DatagramImpairer` in front of it (asyncio; owns its timer)."""

    def __init__(
        self,
        send: Callable[[bytes], bool],
        impairment: RelayImpairment,
        stream: str,
        *,
        on_fault: FaultHandler | None = None,
    ) -> None:
        self._send = send
        self.impairer = DatagramImpairer(impairment, stream, on_fault=on_fault)
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None

    def send(self, datagram: bytes) -> bool:
        """Impair and send one datagram; ``True`` (a datagram lost on purpose looks sent)."""
        for output in self.impairer.process(datagram, self._loop.time()):
            self._send(output)
        self._arm_timer()
        return True

    def _arm_timer(self) -> None:
        deadline = self.impairer.next_deadline()
        if deadline is None or self._timer is not None:
            return
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        for output in self.impairer.expire(self._loop.time()):
            self._send(output)
        self._arm_timer()

    def close(self) -> None:
        """Cancel the timer; a held datagram is dropped."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
