"""The sans-IO matchmaker, driven synchronously with a fake clock: its events, deadlines and
API. The matching policy itself (NAT classes, pairing codes, order, bounds, timeouts) is pinned
by tests/vectors/matchmaking.json, which both broker stores run
(tests/integration/test_matchmaking_vectors.py)."""

from __future__ import annotations

import pytest

from ferry.core.matchmaking import (
    ClientAnswered,
    ClientTimedOut,
    Matchmaker,
    MatchmakerConfig,
    PollEnded,
    PollMatched,
)
from ferry.errors import ConfigError

from .matchmaking_support import ANSWER, EGRESS, OFFER
from .matchmaking_support import drain as _drain
from .matchmaking_support import matchmaker as _matchmaker


def _volunteer(number: int) -> str:
    return f"volunteer-{number:08d}"


def test_client_then_volunteer_then_answer() -> None:
    matchmaker = _matchmaker()
    client = matchmaker.client_offer(OFFER, EGRESS, now=0.0)
    assert _drain(matchmaker) == []
    poll = matchmaker.volunteer_poll(_volunteer(1), 3, now=1.0)
    [matched] = _drain(matchmaker)
    assert isinstance(matched, PollMatched)
    assert matched.poll == poll
    assert (matched.match.offer, matched.match.egress) == (OFFER, EGRESS)
    assert matchmaker.volunteer_answer(matched.match.id, ANSWER, now=2.0)
    assert _drain(matchmaker) == [ClientAnswered(client, ANSWER)]
    assert (matchmaker.waiting_clients, matchmaker.waiting_volunteers) == (0, 0)
    assert matchmaker.next_deadline() is None


def test_unmatched_client_times_out_at_client_timeout() -> None:
    matchmaker = _matchmaker(client_timeout=10.0)
    client = matchmaker.client_offer(OFFER, EGRESS, now=100.0)
    assert matchmaker.next_deadline() == 110.0
    matchmaker.expire(109.999)
    assert _drain(matchmaker) == []
    matchmaker.expire(110.0)
    assert _drain(matchmaker) == [ClientTimedOut(client)]
    assert matchmaker.waiting_clients == 0
    assert matchmaker.next_deadline() is None


def test_unanswered_poll_ends_at_poll_timeout() -> None:
    matchmaker = _matchmaker(poll_timeout=5.0)
    poll = matchmaker.volunteer_poll(_volunteer(1), 1, now=0.0)
    assert matchmaker.next_deadline() == 5.0
    matchmaker.expire(5.0)
    assert _drain(matchmaker) == [PollEnded(poll)]
    assert matchmaker.waiting_volunteers == 0


def test_answer_after_answer_timeout_is_refused_and_client_is_requeued() -> None:
    matchmaker = _matchmaker(client_timeout=10.0, answer_timeout=3.0)
    client = matchmaker.client_offer(OFFER, EGRESS, now=0.0)
    matchmaker.volunteer_poll(_volunteer(1), 1, now=1.0)
    [first] = _drain(matchmaker)
    assert isinstance(first, PollMatched)
    assert matchmaker.next_deadline() == 4.0
    matchmaker.expire(4.0)
    assert _drain(matchmaker) == []
    assert not matchmaker.volunteer_answer(first.match.id, ANSWER, now=4.5)
    second_poll = matchmaker.volunteer_poll(_volunteer(2), 1, now=5.0)
    [second] = _drain(matchmaker)
    assert isinstance(second, PollMatched) and second.poll == second_poll
    assert second.match.id != first.match.id
    assert second.match.offer == OFFER
    assert matchmaker.volunteer_answer(second.match.id, ANSWER, now=6.0)
    assert _drain(matchmaker) == [ClientAnswered(client, ANSWER)]


def test_match_cannot_outlive_the_client_deadline() -> None:
    matchmaker = _matchmaker(client_timeout=10.0, answer_timeout=10.0)
    client = matchmaker.client_offer(OFFER, EGRESS, now=0.0)
    matchmaker.volunteer_poll(_volunteer(1), 1, now=8.0)
    [matched] = _drain(matchmaker)
    assert isinstance(matched, PollMatched)
    assert matchmaker.next_deadline() == 10.0
    matchmaker.expire(10.0)
    assert _drain(matchmaker) == [ClientTimedOut(client)]
    assert not matchmaker.volunteer_answer(matched.match.id, ANSWER, now=10.5)
    assert matchmaker.pending_matches == 0


def test_cancelled_client_is_forgotten_without_event() -> None:
    matchmaker = _matchmaker()
    client = matchmaker.client_offer(OFFER, EGRESS, now=0.0)
    matchmaker.cancel_client(client)
    assert matchmaker.waiting_clients == 0
    assert matchmaker.next_deadline() is None
    poll = matchmaker.volunteer_poll(_volunteer(1), 1, now=1.0)
    assert _drain(matchmaker) == []
    matchmaker.expire(100.0)
    assert _drain(matchmaker) == [PollEnded(poll)]


def test_abandoned_match_goes_to_the_next_volunteer() -> None:
    matchmaker = _matchmaker()
    client = matchmaker.client_offer(OFFER, EGRESS, now=0.0)
    matchmaker.volunteer_poll(_volunteer(1), 1, now=0.0)
    [first] = _drain(matchmaker)
    assert isinstance(first, PollMatched)
    second_poll = matchmaker.volunteer_poll(_volunteer(2), 1, now=0.5)
    assert _drain(matchmaker) == []
    matchmaker.abandon_match(first.match.id, now=1.0)
    [second] = _drain(matchmaker)
    assert isinstance(second, PollMatched) and second.poll == second_poll
    assert matchmaker.volunteer_answer(second.match.id, ANSWER, now=1.5)
    assert _drain(matchmaker) == [ClientAnswered(client, ANSWER)]


def test_every_ticket_ends_with_exactly_one_event() -> None:
    matchmaker = _matchmaker(client_timeout=4.0, poll_timeout=3.0, answer_timeout=2.0)
    clients, polls, events = set(), set(), []
    for step in range(60):
        now = step * 0.5
        if step % 3 == 0:
            clients.add(matchmaker.client_offer(OFFER, EGRESS, now))
        if step % 4 == 0:
            polls.add(matchmaker.volunteer_poll(_volunteer(step), 1 + step % 5, now))
        matchmaker.expire(now)
        new_events = _drain(matchmaker)
        for event in new_events:
            if isinstance(event, PollMatched) and step % 2 == 0:
                matchmaker.volunteer_answer(event.match.id, ANSWER, now)
        events += new_events + _drain(matchmaker)
    matchmaker.expire(1000.0)
    events += _drain(matchmaker)
    ended_polls = [e.poll for e in events if isinstance(e, PollMatched | PollEnded)]
    ended_clients = [e.client for e in events if isinstance(e, ClientAnswered | ClientTimedOut)]
    assert sorted(ended_polls) == sorted(polls)
    assert sorted(ended_clients) == sorted(clients)
    assert any(isinstance(e, ClientAnswered) for e in events)
    assert any(isinstance(e, ClientTimedOut) for e in events)
    assert (matchmaker.waiting_clients, matchmaker.waiting_volunteers) == (0, 0)
    assert matchmaker.next_deadline() is None


def test_match_ids_are_unguessable_by_default() -> None:
    matchmaker = Matchmaker()
    matchmaker.client_offer(OFFER, EGRESS, now=0.0)
    matchmaker.client_offer(OFFER, EGRESS, now=0.0)
    matchmaker.volunteer_poll(_volunteer(1), 1, now=0.0)
    matchmaker.volunteer_poll(_volunteer(2), 1, now=0.0)
    ids = [e.match.id for e in _drain(matchmaker) if isinstance(e, PollMatched)]
    assert len(ids) == 2 and ids[0] != ids[1]
    assert all(len(match_id) >= 32 for match_id in ids)


@pytest.mark.parametrize(
    "bad",
    [{"client_timeout": 0.0}, {"answer_timeout": -1.0}, {"max_waiting_clients": 0}],
)
def test_config_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        MatchmakerConfig(**bad)  # type: ignore[arg-type]


def test_match_reports_how_long_the_client_waited() -> None:
    matchmaker = _matchmaker()
    matchmaker.client_offer(OFFER, EGRESS, now=2.0)
    matchmaker.volunteer_poll("volunteer-00000001", 1, now=2.25)
    [matched] = _drain(matchmaker)
    assert isinstance(matched, PollMatched) and matched.client_waited == 0.25


def test_paired_codes_leave_nothing_behind_when_their_waits_end() -> None:
    matchmaker = _matchmaker()
    for number in range(100):
        code = f"pair_{number:016d}"
        matchmaker.client_offer(OFFER, EGRESS, now=0.0, pairing=code)
        matchmaker.volunteer_poll(f"volunteer-{number:012d}", 1, now=0.0, pairing=code + "x")
    matchmaker.expire(now=60.0)
    assert len(_drain(matchmaker)) == 200
    assert (matchmaker.waiting_clients, matchmaker.waiting_volunteers) == (0, 0)
    assert matchmaker.pairing_codes_held == 0
