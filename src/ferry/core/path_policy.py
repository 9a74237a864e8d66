"""The client's volunteer-path policy: which paths carry the session, which are dead.

Sans-IO: the asyncio layer (``ferry.client.session.PathPool``) tells this policy what
happened on each path (a datagram sent, one received, a probe acknowledged, a channel
closed) with ``now``, and asks it what to do: which path carries the next datagram, which
paths to probe, which to drop as dead, and how many new volunteers to ask the broker for.

**Active and spare paths.** The oldest ``active_paths`` healthy paths carry the session;
the next ``spare_paths`` stay connected and probed but idle, so losing an active path
promotes a warm spare at once instead of waiting for a new rendezvous.

**Scheduling.** Smooth weighted round robin over the active paths (the nginx algorithm:
each path gains its weight in credit per pick, the richest is picked and pays the total).
A path's weight is ``min_rtt / its_rtt`` clamped to ``[min_weight, 1]``: equal paths share
equally, and a path whose delay (probe round trip, which includes queueing at a slow or
rate-capped volunteer) is several times the best one's gets a share in proportion, so a slow
volunteer does not hold back a fast one.

**Loss detection.** A path is dead when it closed, or when it has been *silent*: datagrams
were sent on it and neither did anything come back on it nor was a probe sent through it
acknowledged, for ``silence_timeout`` while another path showed the egress alive in the
meantime (``lone_silence_timeout`` if no other path did: then the egress itself may be the
one that is silent, which is the session's business). A path silent for half the timeout is
probed directly. The egress answers on the path that most recently delivered a packet of the
session, so a live path that carries traffic hears back within about one round trip, and a
probe's acknowledgement proves the path delivered it whichever path brings the ack back (the
transport never sends a probe's PING again on another path: ``QuicSession.probe``).

**A scout when every path is silent.** Silence on every path at once is ambiguous: every
volunteer may have died together (one volunteer carrying all of the client's paths closed
its tab), or the egress went quiet. Waiting out ``lone_silence_timeout`` would stall the
session for that long in the first case, so once every path has been silent for
``silence_timeout`` (longer on a slow network: ``silence_rtt_multiple`` round trips) the
policy asks for one path beyond its target, until the egress is heard again. A fresh path
tells the two cases apart: if the egress answers through it, the silent paths were dead and
are dropped at once by the rule above (the scout stays, as one of the target's paths); if it
does not, the session's own liveness check judges the egress through it. At most one path
beyond the target is ever asked for.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ferry.errors import ConfigError


@dataclass(frozen=True, slots=True)
class PathPolicyConfig:
    """Tunables of the client's path pool."""

    active_paths: int = 2
    """Volunteer paths that carry the session at once."""
    spare_paths: int = 1
    """Extra paths kept connected and probed, ready to take over."""
    silence_timeout: float = 0.5
    """Longest a path may stay silent after a send, while another path hears the egress,
    before it is dropped (seconds)."""
    min_silence_timeout: float = 0.25
    """Shortest silence that drops a path: a path whose round trip is known is dropped
    after ``silence_rtt_multiple`` round trips, but never sooner than this."""
    silence_rtt_multiple: float = 8.0
    """Round trips of silence that mark a busy path dead (bounded by the two above)."""
    lone_silence_timeout: float = 2.0
    """Seconds a path may stay silent when no other path hears the egress either."""
    probe_interval: float = 0.25
    """Every path gets a probe (a QUIC PING sent through it) this often: it keeps the path's
    round trip, and so its share of the traffic, current."""
    idle_probe_interval: float = 1.0
    """Probe interval for paths of an idle session (no data sent for ``idle_after``). The
    probes double as keepalives and as the client's evidence that the egress is alive."""
    idle_after: float = 5.0
    """Seconds without data after which the session counts as idle."""
    min_weight: float = 0.05
    """Smallest share weight a slow but live path keeps (so it is still measured)."""
    rtt_gain: float = 0.25
    """Weight of a new round-trip sample in the smoothed round trip (EWMA)."""
    rate_window: float = 1.0
    """Seconds over which a path's rate is averaged."""

    def __post_init__(self) -> None:
        if self.active_paths < 1:
            raise ConfigError("the client needs at least 1 volunteer path")
        if self.spare_paths < 0:
            raise ConfigError("spare volunteer paths must not be negative")
        if not 0 < self.min_silence_timeout <= self.silence_timeout <= self.lone_silence_timeout:
            raise ConfigError(
                "need 0 < min_silence_timeout <= silence_timeout <= lone_silence_timeout"
            )


class PathRole(enum.Enum):
    """What a path is doing now."""

    ACTIVE = "active"
    SPARE = "spare"


@dataclass(frozen=True, slots=True)
class PathStatus:
    """A snapshot of one path, for status output."""

    path_id: int
    """The pool's number for the path."""
    role: PathRole
    """Carrying traffic or standing by."""
    age: float
    """Seconds since the path opened."""
    rtt: float | None
    """Smoothed probe round trip in seconds (None before the first sample)."""
    rate_up: float
    """Bytes per second sent on the path over the last rate window."""
    rate_down: float
    """Bytes per second received on the path over the last rate window."""
    bytes_sent: int
    """Bytes sent on the path in all."""
    bytes_received: int
    """Bytes received on the path in all."""


@dataclass(frozen=True, slots=True)
class PoolDecision:
    """What the asyncio layer should do after :meth:`PathPolicy.tick`."""

    drop: tuple[int, ...]
    """Paths to close as dead (silent)."""
    probe: tuple[int, ...]
    """Paths to send a probe through now."""
    open_more: int
    """How many new volunteers to ask the broker for."""


class _Path:
    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "credit",
        "first_unanswered_at",
        "last_probe_at",
        "last_received_at",
        "last_sent_at",
        "opened_at",
        "path_id",
        "probe_sent_at",
        "rate_down",
        "rate_up",
        "rtt",
        "window_received",
        "window_sent",
        "window_start",
    )

    def __init__(self, path_id: int, now: float) -> None:
        self.path_id = path_id
        self.opened_at = now
        self.last_sent_at = now
        self.last_received_at: float | None = None
        self.first_unanswered_at: float | None = None
        self.probe_sent_at: float | None = None
        self.last_probe_at = now
        self.rtt: float | None = None
        self.credit = 0.0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.window_start = now
        self.window_sent = 0
        self.window_received = 0
        self.rate_up = 0.0
        self.rate_down = 0.0


class PathPolicy:
    """Decides how the client uses its volunteer paths (see the module docstring)."""

    def __init__(self, config: PathPolicyConfig) -> None:
        self.config = config
        self._paths: dict[int, _Path] = {}
        self._pending = 0
        self._last_data_at: float | None = None
        self._scouting = False
        """Whether the target is one path higher for a scout (until the egress is heard)."""
        self.paths_dropped_silent = 0
        self.scouts_opened = 0
        """Extra paths asked for because every path was silent (see the module docstring)."""

    # -- membership ------------------------------------------------------------------------

    @property
    def target(self) -> int:
        """Paths the pool aims to keep open (active plus spare, plus one while a scout is
        wanted because every path went silent)."""
        return self.config.active_paths + self.config.spare_paths + int(self._scouting)

    def wanted(self) -> int:
        """How many more paths to open now (target minus open and opening)."""
        return max(0, self.target - len(self._paths) - self._pending)

    def opening(self, count: int) -> None:
        """The asyncio layer started ``count`` rendezvous attempts (negative: ended)."""
        self._pending += count

    def add(self, path_id: int, now: float) -> None:
        """A new path opened."""
        self._paths[path_id] = _Path(path_id, now)

    def remove(self, path_id: int) -> None:
        """A path closed (for any reason)."""
        self._paths.pop(path_id, None)

    def __len__(self) -> int:
        return len(self._paths)

    def active(self) -> list[int]:
        """Paths carrying traffic: the oldest ``active_paths``."""
        return list(self._paths)[: self.config.active_paths]

    # -- events ----------------------------------------------------------------------------

    def on_sent(self, path_id: int, size: int, now: float, *, data: bool = True) -> None:
        """A datagram of ``size`` bytes went out on ``path_id`` (``data``: not a probe)."""
        path = self._paths.get(path_id)
        if path is None:
            return
        self._roll(path, now)
        path.last_sent_at = now
        path.bytes_sent += size
        path.window_sent += size
        if path.first_unanswered_at is None:
            path.first_unanswered_at = now
        if data:
            self._last_data_at = now
        else:
            path.last_probe_at = now
            if path.probe_sent_at is None:
                path.probe_sent_at = now

    def on_received(self, path_id: int, size: int, now: float) -> None:
        """A datagram of ``size`` bytes arrived on ``path_id``."""
        path = self._paths.get(path_id)
        if path is None:
            return
        self._roll(path, now)
        path.last_received_at = now
        path.first_unanswered_at = None
        self._scouting = False
        path.bytes_received += size
        path.window_received += size

    def on_probe_acknowledged(self, path_id: int, rtt: float, now: float) -> None:
        """A probe sent through ``path_id`` was acknowledged after ``rtt`` seconds.

        The acknowledgement may come back on any path, but it proves this path delivered
        the probe to the egress: the path is alive.
        """
        path = self._paths.get(path_id)
        if path is None or rtt < 0:
            return
        path.first_unanswered_at = None
        path.probe_sent_at = None
        self._scouting = False
        gain = self.config.rtt_gain
        path.rtt = rtt if path.rtt is None else (1 - gain) * path.rtt + gain * rtt

    def _roll(self, path: _Path, now: float) -> None:
        elapsed = now - path.window_start
        if elapsed >= self.config.rate_window:
            path.rate_up = path.window_sent / elapsed
            path.rate_down = path.window_received / elapsed
            path.window_start = now
            path.window_sent = 0
            path.window_received = 0

    # -- decisions -------------------------------------------------------------------------

    def weight(self, path_id: int) -> float:
        """The path's share weight (1 for the fastest path, less for slower ones)."""
        path = self._paths[path_id]
        rtts = [p.rtt for p in (self._paths[i] for i in self.active()) if p.rtt is not None]
        if path.rtt is None or not rtts or path.rtt <= 0:
            return 1.0
        return max(self.config.min_weight, min(1.0, min(rtts) / path.rtt))

    def choose(self) -> int | None:
        """The path for the next datagram (smooth weighted round robin), or None."""
        active = self.active()
        if not active:
            return None
        if len(active) == 1:
            return active[0]
        total = 0.0
        best: _Path | None = None
        for path_id in active:
            path = self._paths[path_id]
            weight = self.weight(path_id)
            path.credit += weight
            total += weight
            if best is None or path.credit > best.credit:
                best = path
        assert best is not None
        best.credit -= total
        return best.path_id

    def tick(self, now: float) -> PoolDecision:
        """Find dead paths, paths due a probe, and how many volunteers to ask for."""
        config = self.config
        drop: list[int] = []
        for path in self._paths.values():
            if path.first_unanswered_at is None:
                continue
            silent_for = now - path.first_unanswered_at
            egress_heard_elsewhere = any(
                other is not path
                and other.last_received_at is not None
                and other.last_received_at > path.first_unanswered_at
                for other in self._paths.values()
            )
            if egress_heard_elsewhere:
                limit = config.silence_timeout
                if path.rtt is not None:
                    limit = min(
                        limit,
                        max(config.min_silence_timeout, config.silence_rtt_multiple * path.rtt),
                    )
            else:
                limit = config.lone_silence_timeout
            if silent_for > limit:
                drop.append(path.path_id)
        for path_id in drop:
            self.remove(path_id)
            self.paths_dropped_silent += 1
        self._scout_if_all_silent(now)
        idle = self._last_data_at is None or now - self._last_data_at > config.idle_after
        interval = config.idle_probe_interval if idle else config.probe_interval
        probe = []
        for path in self._paths.values():
            if path.probe_sent_at is not None:
                if now - path.probe_sent_at < config.lone_silence_timeout:
                    continue  # one probe at a time per path
                path.probe_sent_at = None  # that probe was lost: try another
            if path.first_unanswered_at is None:
                # Busy paths are probed too: the scheduler's weights need fresh round trips.
                if now - path.last_probe_at >= interval:
                    probe.append(path.path_id)
            elif now - path.first_unanswered_at >= config.silence_timeout / 2:
                probe.append(path.path_id)  # silent for a while: ask it directly
        return PoolDecision(drop=tuple(drop), probe=tuple(probe), open_more=self.wanted())

    def _scout_if_all_silent(self, now: float) -> None:
        """Ask for one extra path once every path has been silent for ``silence_timeout``
        (or ``silence_rtt_multiple`` of the slowest known round trip, if longer, so that a
        slow network does not look silent)."""
        if self._scouting or not self._paths:
            return
        spell = 0.0
        slowest = 0.0
        for path in self._paths.values():
            if path.first_unanswered_at is None:
                return  # a path never sent on, or answered: not every path is silent
            spell = max(spell, path.first_unanswered_at)
            slowest = max(slowest, path.rtt or 0.0)
        config = self.config
        limit = min(
            config.lone_silence_timeout,
            max(config.silence_timeout, config.silence_rtt_multiple * slowest),
        )
        if now - spell >= limit:
            self._scouting = True
            self.scouts_opened += 1

    def status(self, now: float) -> list[PathStatus]:
        """A snapshot of every path, oldest first."""
        active = set(self.active())
        result = []
        for path in self._paths.values():
            self._roll(path, now)
            result.append(
                PathStatus(
                    path_id=path.path_id,
                    role=PathRole.ACTIVE if path.path_id in active else PathRole.SPARE,
                    age=now - path.opened_at,
                    rtt=path.rtt,
                    rate_up=path.rate_up,
                    rate_down=path.rate_down,
                    bytes_sent=path.bytes_sent,
                    bytes_received=path.bytes_received,
                )
            )
        return result
