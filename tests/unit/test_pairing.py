"""Private pairing in the matchmaker: paired clients and volunteers serve only each other."""

from __future__ import annotations

import itertools

from ferry.core.matchmaking import (
    ClientAnswered,
    ClientTimedOut,
    Matchmaker,
    MatchmakerConfig,
    MatchmakerEvent,
    PollEnded,
    PollMatched,
)

OFFER = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
ANSWER = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=setup:active\r\n"
EGRESS = "ws://127.0.0.1:8443/v1/relay"
CODE = "pair_0123456789ABCDEF"
OTHER_CODE = "pair_FEDCBA9876543210"


def _matchmaker() -> Matchmaker:
    counter = itertools.count(1)
    return Matchmaker(MatchmakerConfig(), new_match_id=lambda: f"match-{next(counter):016d}")


def _drain(matchmaker: Matchmaker) -> list[MatchmakerEvent]:
    events: list[MatchmakerEvent] = []
    for _ in range(1000):
        event = matchmaker.next_event()
        if event is None:
            return events
        events.append(event)
    raise AssertionError("the matchmaker produced too many events")


def test_paired_client_skips_public_volunteers_and_gets_its_own() -> None:
    matchmaker = _matchmaker()
    matchmaker.volunteer_poll("public-volunteer-0001", 10, now=0.0)
    client = matchmaker.client_offer(OFFER, EGRESS, now=0.0, pairing=CODE)
    assert _drain(matchmaker) == []
    paired = matchmaker.volunteer_poll("paired-volunteer-0001", 1, now=1.0, pairing=CODE)
    [matched] = _drain(matchmaker)
    assert isinstance(matched, PollMatched) and matched.poll == paired
    assert matchmaker.volunteer_answer(matched.match.id, ANSWER, now=1.5)
    assert _drain(matchmaker) == [ClientAnswered(client, ANSWER)]


def test_paired_volunteer_serves_no_public_client_and_no_other_code() -> None:
    matchmaker = _matchmaker()
    public = matchmaker.client_offer(OFFER, EGRESS, now=0.0)
    other = matchmaker.client_offer(OFFER, EGRESS, now=0.0, pairing=OTHER_CODE)
    paired = matchmaker.volunteer_poll("paired-volunteer-0001", 5, now=0.0, pairing=CODE)
    assert _drain(matchmaker) == []
    matchmaker.expire(now=10.0)
    assert set(_drain(matchmaker)) == {
        ClientTimedOut(public),
        ClientTimedOut(other),
        PollEnded(paired),
    }


def test_public_clients_still_match_public_volunteers() -> None:
    matchmaker = _matchmaker()
    matchmaker.volunteer_poll("paired-volunteer-0001", 50, now=0.0, pairing=CODE)
    public_poll = matchmaker.volunteer_poll("public-volunteer-0001", 1, now=0.0)
    matchmaker.client_offer(OFFER, EGRESS, now=0.0)
    [matched] = _drain(matchmaker)
    assert isinstance(matched, PollMatched) and matched.poll == public_poll


def test_unanswered_paired_match_is_requeued_within_its_code() -> None:
    matchmaker = _matchmaker()
    matchmaker.client_offer(OFFER, EGRESS, now=0.0, pairing=CODE)
    matchmaker.volunteer_poll("paired-volunteer-0001", 1, now=0.0, pairing=CODE)
    [first] = _drain(matchmaker)
    assert isinstance(first, PollMatched)
    matchmaker.volunteer_poll("public-volunteer-0001", 1, now=0.5)
    second = matchmaker.volunteer_poll("paired-volunteer-0002", 1, now=0.5, pairing=CODE)
    matchmaker.abandon_match(first.match.id, now=1.0)
    [matched] = _drain(matchmaker)
    assert isinstance(matched, PollMatched) and matched.poll == second


def test_codes_leave_nothing_behind_when_their_waits_end() -> None:
    matchmaker = _matchmaker()
    for number in range(100):
        code = f"pair_{number:016d}"
        matchmaker.client_offer(OFFER, EGRESS, now=0.0, pairing=code)
        matchmaker.volunteer_poll(f"volunteer-{number:012d}", 1, now=0.0, pairing=code + "x")
    matchmaker.expire(now=60.0)
    assert len(_drain(matchmaker)) == 200
    assert (matchmaker.waiting_clients, matchmaker.waiting_volunteers) == (0, 0)
    assert matchmaker.pairing_codes_held == 0
