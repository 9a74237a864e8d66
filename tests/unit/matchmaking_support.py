"""What the matchmaker's unit tests share: an SDP offer and answer, an egress, a matchmaker
with numbered match IDs, and draining its events (bounded)."""

from __future__ import annotations

import itertools

from ferry.core.matchmaking import Matchmaker, MatchmakerConfig, MatchmakerEvent

OFFER = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
ANSWER = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=setup:active\r\n"
EGRESS = "ws://127.0.0.1:8443/v1/relay"


def matchmaker(**config: float) -> Matchmaker:
    """A matchmaker with ``MatchmakerConfig(**config)`` and IDs match-0000000000000001, ..."""
    counter = itertools.count(1)
    return Matchmaker(
        MatchmakerConfig(**config),  # type: ignore[arg-type]
        new_match_id=lambda: f"match-{next(counter):016d}",
    )


def drain(matchmaker: Matchmaker) -> list[MatchmakerEvent]:
    """Every event the matchmaker has for now (at most 10,000)."""
    events: list[MatchmakerEvent] = []
    for _ in range(10_000):
        event = matchmaker.next_event()
        if event is None:
            return events
        events.append(event)
    raise AssertionError("the matchmaker produced too many events")
