"""Delayed SCTP acknowledgements for aiortc (RFC 4960 §6.2), a pinned and tested patch.

aiortc 1.16 answers every SCTP packet that carries DATA with a SACK of its own: the receiver
pays a DTLS record and a UDP send per packet, and an aiortc sender runs its whole SACK
handling (a scan of its sent queue, then ``_transmit``) per packet as well. py-spy put SACK
work at 17 % of the client's samples and 45 % of the volunteer's, and at 48 % of the client's
with a Chromium volunteer (BENCHMARKS.md, issue 8).

RFC 4960 §6.2 lets a receiver acknowledge at least every second packet, and within 200 ms of
the first unacknowledged one. :class:`DelayedAcknowledgementSctpTransport` does that for the
connections ferry makes (:meth:`DelayedAcknowledgementSctpTransport.delay_acknowledgements`):

* it sends one SACK per :attr:`SctpAcknowledgementPolicy.packets_per_acknowledgement` packets
  carrying DATA, or :attr:`SctpAcknowledgementPolicy.maximum_delay` after the first packet
  left unacknowledged, whichever comes first;
* it acknowledges **at once**, as RFC 4960 §6.2 and §6.7 ask, a packet that leaves a gap in the
  TSNs or still sees one, the packet after a SACK that reported gaps (the gap was filled),
  duplicates, and a FORWARD TSN.

aiortc's sender grows its congestion window by at most one chunk per SACK in slow start and by
the bytes acknowledged in congestion avoidance (``_receive_sack_chunk``), and sends at most
four chunks beyond its flight per call to ``_transmit``; with one SACK per two packets it
still grows and stays ahead (the RFC's own arrangement). usrsctp, Chromium's SCTP, delays its
own SACKs the same way by default.

How it is installed: by :func:`ferry.transport.library_patches.install` (its
``sctp-delayed-acknowledgements`` entry), which replaces
``aiortc.rtcpeerconnection.RTCSctpTransport`` (the name ``RTCPeerConnection`` instantiates)
by this subclass **only** if aiortc's version is inside the entry's range and the methods it
overrides exist; otherwise one warning is logged and aiortc is left as it is. An instance
behaves exactly like aiortc's until
:meth:`~DelayedAcknowledgementSctpTransport.delay_acknowledgements` is called on it, so other
users of aiortc in the process see no change. It reads aiortc's private ``_sack_needed``,
``_sack_misordered``, ``_sack_duplicates`` and ``_association_state``;
tests/unit/test_sctp_acknowledgement.py fails if any of them changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiortc
import aiortc.rtcpeerconnection as aiortc_peer_connection
import aiortc.rtcsctptransport as aiortc_sctp

from ferry.errors import ConfigError
from ferry.logs import get_logger

__all__ = [
    "OVERRIDDEN_METHODS",
    "READ_ATTRIBUTES",
    "DelayedAcknowledgementSctpTransport",
    "SctpAcknowledgementPolicy",
    "installed",
]

logger = get_logger(__name__)

OVERRIDDEN_METHODS = ("_handle_data", "_send_sack", "_receive_forward_tsn_chunk", "_set_state")
"""aiortc ``RTCSctpTransport`` methods the subclass overrides (and calls)."""

READ_ATTRIBUTES = (
    "_sack_needed",
    "_sack_misordered",
    "_sack_duplicates",
    "_association_state",
)
"""aiortc ``RTCSctpTransport`` instance attributes the subclass reads."""


@dataclass(frozen=True, slots=True)
class SctpAcknowledgementPolicy:
    """When a receiving SCTP association acknowledges DATA (RFC 4960 §6.2)."""

    packets_per_acknowledgement: int = 2
    """Send a SACK once this many packets carrying DATA are unacknowledged. 2 is RFC 4960's
    "at least every second packet"; 1 is aiortc's own behaviour (a SACK per packet)."""

    maximum_delay: float = 0.05
    """Seconds after the first unacknowledged packet by which its SACK goes out even if no
    second packet came. RFC 4960 allows up to 0.5 s and suggests 0.2 s; shorter here, so an
    aiortc sender's round-trip estimate (its retransmission timeout is at least 1 s) and its
    send queue barely notice the delay."""

    def __post_init__(self) -> None:
        if self.packets_per_acknowledgement < 1:
            raise ConfigError(
                f"packets_per_acknowledgement must be ≥ 1, got {self.packets_per_acknowledgement}"
            )
        if not 0 < self.maximum_delay <= 0.5:
            raise ConfigError(
                f"maximum_delay must be > 0 and ≤ 0.5 s (RFC 4960), got {self.maximum_delay}"
            )

    @property
    def delays(self) -> bool:
        """Whether this policy ever holds a SACK back."""
        return self.packets_per_acknowledgement > 1


class DelayedAcknowledgementSctpTransport(aiortc_sctp.RTCSctpTransport):
    """aiortc's SCTP transport that can acknowledge every second packet (module docstring).

    Until :meth:`delay_acknowledgements` is called it acknowledges every packet, as aiortc
    does. The counters are for tests and benchmarks.
    """

    def __init__(self, transport: aiortc.RTCDtlsTransport, port: int = 5000) -> None:
        super().__init__(transport, port)
        self._ferry_policy: SctpAcknowledgementPolicy | None = None
        self._ferry_in_packet = False
        self._ferry_forward_tsn_in_packet = False
        self._ferry_last_sack_reported_gaps = False
        self._ferry_unacknowledged_packets = 0
        self._ferry_first_unacknowledged_at: float | None = None
        self._ferry_timer: asyncio.TimerHandle | None = None
        self._ferry_sack_tasks: set[asyncio.Task[None]] = set()
        self.acknowledgements_sent = 0
        """SACK chunks sent."""
        self.acknowledgements_held = 0
        """Packets carrying DATA whose SACK was held back for a later packet or the timer."""

    def delay_acknowledgements(self, policy: SctpAcknowledgementPolicy) -> bool:
        """Acknowledge as ``policy`` says from now on; ``False`` (and aiortc's behaviour
        kept) if this aiortc instance lacks an attribute the patch reads."""
        missing = [name for name in READ_ATTRIBUTES if not hasattr(self, name)]
        if missing:
            logger.warning(
                "aiortc's SCTP transport has no %s: SACKs stay one per packet", ", ".join(missing)
            )
            return False
        self._ferry_policy = policy if policy.delays else None
        return True

    @property
    def delaying(self) -> bool:
        """Whether SACKs are currently held back for a second packet."""
        return self._ferry_policy is not None

    # --- aiortc overrides ---------------------------------------------------------------------

    async def _handle_data(self, data: bytes) -> None:
        # aiortc parses one SCTP packet, handles its chunks, then calls _send_sack() if any
        # DATA or FORWARD TSN came: mark that call as the end of one received packet
        self._ferry_in_packet = True
        self._ferry_forward_tsn_in_packet = False
        try:
            await super()._handle_data(data)
        finally:
            self._ferry_in_packet = False

    async def _receive_forward_tsn_chunk(self, chunk: aiortc_sctp.ForwardTsnChunk) -> None:
        self._ferry_forward_tsn_in_packet = True
        await super()._receive_forward_tsn_chunk(chunk)

    async def _send_sack(self) -> None:
        policy = self._ferry_policy
        if policy is not None and self._ferry_in_packet and self._may_hold(policy):
            self._hold_acknowledgement(policy)
            return
        await self._send_sack_now()

    def _set_state(self, state: aiortc_sctp.RTCSctpTransport.State) -> None:
        super()._set_state(state)
        if state == aiortc_sctp.RTCSctpTransport.State.CLOSED:
            self._stop_delayed_acknowledgements()

    # --- the delayed acknowledgement ------------------------------------------------------

    def _may_hold(self, policy: SctpAcknowledgementPolicy) -> bool:
        return (
            not self._ferry_forward_tsn_in_packet
            and not self._sack_duplicates
            and not self._sack_misordered
            and not self._ferry_last_sack_reported_gaps
            and self._ferry_unacknowledged_packets + 1 < policy.packets_per_acknowledgement
        )

    def _hold_acknowledgement(self, policy: SctpAcknowledgementPolicy) -> None:
        self._ferry_unacknowledged_packets += 1
        self.acknowledgements_held += 1
        if self._ferry_first_unacknowledged_at is None:
            self._ferry_first_unacknowledged_at = asyncio.get_running_loop().time()
            # one lazily re-armed timer: not cancelled and re-created for every SACK
            if self._ferry_timer is None:
                self._ferry_timer = asyncio.get_running_loop().call_later(
                    policy.maximum_delay, self._acknowledgement_timer_expired
                )

    async def _send_sack_now(self) -> None:
        self._ferry_last_sack_reported_gaps = bool(self._sack_misordered)
        self._ferry_unacknowledged_packets = 0
        self._ferry_first_unacknowledged_at = None
        self.acknowledgements_sent += 1
        await super()._send_sack()

    def _acknowledgement_timer_expired(self) -> None:
        self._ferry_timer = None
        policy = self._ferry_policy
        first = self._ferry_first_unacknowledged_at
        if policy is None or first is None:
            return
        remaining = first + policy.maximum_delay - asyncio.get_running_loop().time()
        if remaining > 0:
            self._ferry_timer = asyncio.get_running_loop().call_later(
                remaining, self._acknowledgement_timer_expired
            )
            return
        task = asyncio.get_running_loop().create_task(self._send_held_acknowledgement())
        self._ferry_sack_tasks.add(task)
        task.add_done_callback(self._ferry_sack_tasks.discard)

    async def _send_held_acknowledgement(self) -> None:
        if not self._sack_needed or self._ferry_first_unacknowledged_at is None:
            return
        if self._association_state != aiortc_sctp.RTCSctpTransport.State.ESTABLISHED:
            return
        # the DTLS transport may have closed since the packet came: nothing left to ack
        with contextlib.suppress(ConnectionError):
            await self._send_sack_now()

    def _stop_delayed_acknowledgements(self) -> None:
        self._ferry_first_unacknowledged_at = None
        if self._ferry_timer is not None:
            self._ferry_timer.cancel()
            self._ferry_timer = None
        for task in self._ferry_sack_tasks:
            task.cancel()


def installed() -> bool:
    """Whether ``RTCPeerConnection`` now creates :class:`DelayedAcknowledgementSctpTransport`
    (after :func:`ferry.transport.library_patches.install`)."""
    return (
        getattr(aiortc_peer_connection, "RTCSctpTransport", None)
        is DelayedAcknowledgementSctpTransport
    )
