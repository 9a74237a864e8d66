"""The matchmaker's NAT-aware rule and its volunteer counts (docs/protocol.md §2.1)."""

from __future__ import annotations

from ferry.core.broker_messages import NatType
from ferry.core.matchmaking import (
    AvailableVolunteers,
    Matchmaker,
    PollMatched,
    PollTicket,
)

from .matchmaking_support import EGRESS, OFFER
from .matchmaking_support import drain as _drain
from .matchmaking_support import matchmaker as _matchmaker


def _matched_poll(matchmaker: Matchmaker) -> PollTicket:
    [matched] = _drain(matchmaker)
    assert isinstance(matched, PollMatched)
    return matched.poll


def _poll(matchmaker: Matchmaker, number: int, nat: NatType, capacity: int = 1) -> PollTicket:
    return matchmaker.volunteer_poll(f"volunteer-{number:08d}", capacity, now=0.0, nat=nat)


def test_restricted_client_gets_the_unrestricted_volunteer_even_if_more_loaded() -> None:
    matchmaker = _matchmaker()
    _poll(matchmaker, 1, "restricted", capacity=50)
    unrestricted = _poll(matchmaker, 2, "unrestricted", capacity=1)
    matchmaker.client_offer(OFFER, EGRESS, now=1.0, nat="restricted")
    assert _matched_poll(matchmaker) == unrestricted


def test_unknown_client_is_treated_as_restricted() -> None:
    matchmaker = _matchmaker()
    _poll(matchmaker, 1, "unknown", capacity=9)
    unrestricted = _poll(matchmaker, 2, "unrestricted")
    matchmaker.client_offer(OFFER, EGRESS, now=1.0)
    assert _matched_poll(matchmaker) == unrestricted


def test_unrestricted_client_leaves_the_unrestricted_volunteer_to_others() -> None:
    matchmaker = _matchmaker()
    unrestricted = _poll(matchmaker, 1, "unrestricted", capacity=50)
    restricted = _poll(matchmaker, 2, "restricted")
    matchmaker.client_offer(OFFER, EGRESS, now=1.0, nat="unrestricted")
    assert _matched_poll(matchmaker) == restricted
    matchmaker.client_offer(OFFER, EGRESS, now=1.0, nat="restricted")
    assert _matched_poll(matchmaker) == unrestricted


def test_restricted_pair_only_when_no_unrestricted_volunteer_is_free() -> None:
    matchmaker = _matchmaker()
    restricted = _poll(matchmaker, 1, "restricted")
    matchmaker.client_offer(OFFER, EGRESS, now=1.0, nat="restricted")
    assert _matched_poll(matchmaker) == restricted


def test_longest_waiting_volunteer_within_the_acceptable_class() -> None:
    matchmaker = _matchmaker()
    first = _poll(matchmaker, 1, "unrestricted", capacity=2)
    _poll(matchmaker, 2, "unrestricted", capacity=700)
    _poll(matchmaker, 3, "restricted", capacity=1000)
    matchmaker.client_offer(OFFER, EGRESS, now=1.0, nat="restricted")
    assert _matched_poll(matchmaker) == first


def test_new_volunteer_serves_the_waiting_client_of_the_other_class_first() -> None:
    matchmaker = _matchmaker()
    unrestricted_offer, restricted_offer = OFFER + "a=client:1\r\n", OFFER + "a=client:2\r\n"
    matchmaker.client_offer(unrestricted_offer, EGRESS, now=0.0, nat="unrestricted")
    matchmaker.client_offer(restricted_offer, EGRESS, now=0.1, nat="restricted")
    assert _drain(matchmaker) == []
    _poll(matchmaker, 1, "unrestricted")
    [matched] = _drain(matchmaker)
    assert isinstance(matched, PollMatched) and matched.match.offer == restricted_offer
    _poll(matchmaker, 2, "restricted")
    [matched] = _drain(matchmaker)
    assert isinstance(matched, PollMatched) and matched.match.offer == unrestricted_offer


def test_restricted_volunteer_serves_a_waiting_restricted_client_when_alone() -> None:
    matchmaker = _matchmaker()
    matchmaker.client_offer(OFFER, EGRESS, now=0.0, nat="restricted")
    poll = _poll(matchmaker, 1, "restricted")
    assert _matched_poll(matchmaker) == poll


def test_match_reports_how_long_the_client_waited() -> None:
    matchmaker = _matchmaker()
    matchmaker.client_offer(OFFER, EGRESS, now=2.0)
    matchmaker.volunteer_poll("volunteer-00000001", 1, now=2.25)
    [matched] = _drain(matchmaker)
    assert isinstance(matched, PollMatched) and matched.client_waited == 0.25


def test_available_volunteers_are_counted_by_nat_and_kind() -> None:
    matchmaker = _matchmaker()
    matchmaker.volunteer_poll("volunteer-00000001", 1, now=0.0, nat="unrestricted", kind="browser")
    matchmaker.volunteer_poll("volunteer-00000002", 1, now=0.0, nat="unrestricted", kind="browser")
    matchmaker.volunteer_poll("volunteer-00000003", 1, now=0.0, kind="python")
    assert sorted(matchmaker.available_volunteers(), key=lambda a: a.count) == [
        AvailableVolunteers("unknown", "python", 1),
        AvailableVolunteers("unrestricted", "browser", 2),
    ]
    matchmaker.client_offer(OFFER, EGRESS, now=1.0)
    _drain(matchmaker)
    assert AvailableVolunteers("unrestricted", "browser", 1) in matchmaker.available_volunteers()
