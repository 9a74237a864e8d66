"""Matching clients that need a relay with volunteers that offer one (sans-IO).

The broker's HTTP handlers are thin shells over a :class:`Matchmaker`. A client's offer and a
volunteer's poll each become a *ticket*; the matchmaker pairs them and reports what each
waiting request should be told as events, which the caller drains with
:meth:`Matchmaker.next_event` after every call (as with aioquic's ``QuicConnection``):

* :class:`PollMatched` — give this poll this client's offer;
* :class:`PollEnded` — answer this poll with "no client" (its wait ran out, or the same
  volunteer polled again);
* :class:`ClientAnswered` — give this client this answer;
* :class:`ClientTimedOut` — tell this client no volunteer answered in time.

Every ticket ends with exactly one event, unless the caller cancels it first. Time is passed
in as ``now`` (seconds on any monotonic clock, never decreasing); :meth:`Matchmaker.next_deadline`
says when :meth:`Matchmaker.expire` should next be called.

Policy:

* **NAT-aware.** Clients and polls carry a NAT type (``docs/protocol.md`` §2.1); ``unknown``
  counts as ``restricted`` here. A restricted client is given an unrestricted volunteer
  whenever one is free, and a restricted one only when none is (two restricted peers may fail
  to connect, but an attempt is better than none when no type was measured). An unrestricted
  client takes a restricted volunteer first, keeping the unrestricted ones for the clients
  that need them; likewise a new unrestricted poll serves the oldest waiting restricted client
  first, a restricted poll the oldest unrestricted one.
* Within the chosen NAT class, a client's offer goes to the volunteer waiting longest. The
  ``capacity`` a poll announces is the volunteer's own claim, so it does not decide who gets
  a client: a censor's volunteers claiming 1,000 free slots would otherwise be served first.
  A volunteer with room for more polls again at once and joins the back of the queue. Within
  a class, waiting clients are served oldest first.
* A client waits at most ``client_timeout`` in all. Once matched, the volunteer's answer must
  come within ``answer_timeout``; if it does not (the volunteer vanished) and the client still
  has time, the client goes back to the head of the queue for another volunteer, and a late
  answer to the old match is refused.
* **Private pairing.** A client or poll may carry a pairing code. A client with a code is
  matched only with a poll holding the same code, and a poll with a code serves only
  clients with that code; clients and polls without a code match only each other. Each code
  is its own pair of queues, with the same policy as above; an empty one is forgotten.
* Both queues are bounded; beyond the bound a new request is refused with
  :class:`ferry.errors.BrokerError`.
* Nothing about a client outlives its ticket: the offer and egress are dropped as soon as
  the client is answered, times out or is cancelled.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NewType

from ferry.core.broker_messages import MatchOffer, NatType, VolunteerKind
from ferry.errors import BrokerError, ConfigError

ClientTicket = NewType("ClientTicket", int)
"""Identifies one waiting client offer within a :class:`Matchmaker`."""

PollTicket = NewType("PollTicket", int)
"""Identifies one waiting volunteer poll within a :class:`Matchmaker`."""


@dataclass(frozen=True, slots=True)
class MatchmakerConfig:
    """Timeouts and bounds of the matchmaker."""

    client_timeout: float = 10.0
    """Longest a client's offer waits, in seconds, for a volunteer's answer (all included)."""
    poll_timeout: float = 10.0
    """Longest a volunteer's poll waits, in seconds, for a client before "no client"."""
    answer_timeout: float = 10.0
    """Longest, in seconds, a matched volunteer may take to answer before the match is void."""
    max_waiting_clients: int = 1000
    """Most client offers waiting or matched at once; more are refused."""
    max_waiting_volunteers: int = 10000
    """Most volunteer polls waiting at once; more are refused."""

    def __post_init__(self) -> None:
        for name in ("client_timeout", "poll_timeout", "answer_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        for name in ("max_waiting_clients", "max_waiting_volunteers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")


@dataclass(frozen=True, slots=True)
class PollMatched:
    """A waiting poll got a client: reply to it with ``match``."""

    poll: PollTicket
    """The poll to reply to."""
    match: MatchOffer
    """The client's offer, egress and the match id the volunteer must quote."""
    client_waited: float
    """Seconds from the client's offer to this match (the broker-side match latency)."""


@dataclass(frozen=True, slots=True)
class PollEnded:
    """A waiting poll ends without a client (timed out, or replaced by a newer poll)."""

    poll: PollTicket
    """The poll to reply to with ``{"match": null}``."""


@dataclass(frozen=True, slots=True)
class ClientAnswered:
    """A volunteer answered a client's offer: reply to the client with ``answer``."""

    client: ClientTicket
    """The client to reply to."""
    answer: str
    """The volunteer's SDP answer."""


@dataclass(frozen=True, slots=True)
class ClientTimedOut:
    """No volunteer answered a client within ``client_timeout``."""

    client: ClientTicket
    """The client to reply to with "no volunteer"."""


MatchmakerEvent = PollMatched | PollEnded | ClientAnswered | ClientTimedOut
"""Everything :meth:`Matchmaker.next_event` returns."""


Pairing = str | None
"""A pairing code, or ``None`` for the public pool."""

_Pool = tuple[Pairing, bool]
"""A queue's key: the pairing code, and whether its members are unrestricted."""


def is_unrestricted(nat: NatType) -> bool:
    """Whether the matchmaker treats ``nat`` as unrestricted (``unknown`` is not)."""
    return nat == "unrestricted"


@dataclass(frozen=True, slots=True)
class AvailableVolunteers:
    """How many polls wait for a client with one NAT type and kind."""

    nat: NatType
    """The NAT type the polls reported."""
    kind: VolunteerKind
    """The kind of volunteer the polls reported."""
    count: int
    """How many such polls wait."""


@dataclass(slots=True)
class _Client:
    ticket: ClientTicket
    offer: str
    egress: str
    deadline: float
    pairing: Pairing
    nat: NatType
    arrived: float
    match_id: str | None = None
    answer_deadline: float = 0.0

    @property
    def pool(self) -> _Pool:
        return (self.pairing, is_unrestricted(self.nat))


@dataclass(slots=True)
class _Poll:
    ticket: PollTicket
    volunteer_id: str
    capacity: int
    deadline: float
    pairing: Pairing
    nat: NatType
    kind: VolunteerKind

    @property
    def pool(self) -> _Pool:
        return (self.pairing, is_unrestricted(self.nat))


def _new_match_id() -> str:
    return secrets.token_urlsafe(24)


class Matchmaker:
    """Pairs client offers with volunteer polls; see the module docstring for the policy.

    ``new_match_id`` makes the unguessable match identifiers (16..64 of ``[A-Za-z0-9_-]``); a
    match id is the only proof a volunteer has that it was given the match.
    """

    def __init__(
        self,
        config: MatchmakerConfig | None = None,
        *,
        new_match_id: Callable[[], str] = _new_match_id,
    ) -> None:
        self.config = config if config is not None else MatchmakerConfig()
        self._new_match_id = new_match_id
        self._tickets = itertools.count(1)
        self._clients: dict[ClientTicket, _Client] = {}
        """Every live client, waiting or matched."""
        self._client_queues: dict[_Pool, deque[ClientTicket]] = {}
        """Waiting (unmatched) clients by pairing code and NAT class, oldest first; may hold
        stale tickets."""
        self._matches: dict[str, ClientTicket] = {}
        """Matched clients by match id."""
        self._polls: dict[PollTicket, _Poll] = {}
        """Waiting polls in arrival order."""
        self._poll_of_volunteer: dict[str, PollTicket] = {}
        self._poll_counts: dict[tuple[NatType, VolunteerKind], int] = {}
        """Waiting polls by NAT type and kind (kept as polls come and go)."""
        self._poll_choices: dict[_Pool, list[tuple[int, PollTicket]]] = {}
        """By pairing code and NAT class, a heap of (arrival, ticket) over waiting polls (the
        one waiting longest first); may hold stale entries."""
        self._timers: list[tuple[float, int, int]] = []
        """Heap of (deadline, order, ticket) for clients, matches and polls; may be stale."""
        self._events: deque[MatchmakerEvent] = deque()

    # --- what the caller reads ---------------------------------------------------------------

    @property
    def waiting_clients(self) -> int:
        """Clients waiting for a volunteer or for their match's answer."""
        return len(self._clients)

    @property
    def waiting_volunteers(self) -> int:
        """Volunteer polls waiting for a client."""
        return len(self._polls)

    @property
    def pairing_codes_held(self) -> int:
        """Pairing codes that still have a queue of clients or polls (for tests and bounds)."""
        return len({pool[0] for pool in (*self._client_queues, *self._poll_choices)} - {None})

    def available_volunteers(self) -> list[AvailableVolunteers]:
        """The waiting polls counted by NAT type and kind (only the non-zero counts)."""
        return [
            AvailableVolunteers(nat, kind, count)
            for (nat, kind), count in self._poll_counts.items()
            if count
        ]

    @property
    def pending_matches(self) -> int:
        """Matches handed to a volunteer whose answer has not come yet."""
        return len(self._matches)

    def next_event(self) -> MatchmakerEvent | None:
        """The oldest undelivered event, or ``None``."""
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """When :meth:`expire` should next be called, or ``None`` if nothing waits."""
        while self._timers:
            deadline, _, ticket = self._timers[0]
            if self._deadline_is_current(deadline, ticket):
                return deadline
            heapq.heappop(self._timers)
        return None

    # --- clients -----------------------------------------------------------------------------

    def client_offer(
        self,
        offer: str,
        egress: str,
        now: float,
        *,
        pairing: Pairing = None,
        nat: NatType = "unknown",
    ) -> ClientTicket:
        """Queue a client's (already validated) offer; match it at once if a volunteer waits.

        With a ``pairing`` code only volunteers polling with that code are considered; ``nat``
        chooses among them (see the module docstring). Raises
        :class:`~ferry.errors.BrokerError` when ``max_waiting_clients`` are waiting.
        """
        self.expire(now)
        if len(self._clients) >= self.config.max_waiting_clients:
            raise BrokerError("too many clients are waiting for a volunteer; try again later")
        ticket = ClientTicket(next(self._tickets))
        client = _Client(
            ticket,
            offer,
            egress,
            deadline=now + self.config.client_timeout,
            pairing=pairing,
            nat=nat,
            arrived=now,
        )
        self._clients[ticket] = client
        self._arm(client.deadline, ticket)
        self._serve_client(client, now, requeued=False)
        return ticket

    def cancel_client(self, ticket: ClientTicket) -> None:
        """Forget a client that gave up (no event follows). Unknown tickets are ignored."""
        client = self._clients.pop(ticket, None)
        if client is None:
            return
        if client.match_id is not None:
            del self._matches[client.match_id]
        self._oldest_waiting_client(client.pool)  # forgets the pool's queue if empty

    # --- volunteers --------------------------------------------------------------------------

    def volunteer_poll(
        self,
        volunteer_id: str,
        capacity: int,
        now: float,
        *,
        pairing: Pairing = None,
        nat: NatType = "unknown",
        kind: VolunteerKind = "unknown",
    ) -> PollTicket:
        """Register a volunteer's poll; match it at once if a client waits.

        With a ``pairing`` code the poll serves only clients offering with that code; ``nat``
        chooses among them (see the module docstring); ``kind`` is only counted.

        A newer poll from the same ``volunteer_id`` replaces the older, which ends with
        :class:`PollEnded`. Raises :class:`~ferry.errors.BrokerError` when
        ``max_waiting_volunteers`` polls are waiting.
        """
        self.expire(now)
        previous = self._poll_of_volunteer.get(volunteer_id)
        if previous is not None:
            self._end_poll(previous)
        elif len(self._polls) >= self.config.max_waiting_volunteers:
            raise BrokerError("too many volunteers are waiting for clients; poll again later")
        ticket = PollTicket(next(self._tickets))
        poll = _Poll(
            ticket,
            volunteer_id,
            capacity,
            deadline=now + self.config.poll_timeout,
            pairing=pairing,
            nat=nat,
            kind=kind,
        )
        unrestricted = is_unrestricted(nat)
        # An unrestricted volunteer serves a waiting restricted client first, and vice versa.
        for client_pool in ((pairing, not unrestricted), (pairing, unrestricted)):
            client = self._oldest_waiting_client(client_pool)
            if client is not None:
                self._client_queues[client_pool].popleft()
                self._pair(client, poll, now)
                return ticket
        self._polls[ticket] = poll
        self._poll_of_volunteer[volunteer_id] = ticket
        self._poll_counts[(nat, kind)] = self._poll_counts.get((nat, kind), 0) + 1
        heapq.heappush(self._poll_choices.setdefault(poll.pool, []), (ticket, ticket))
        self._arm(poll.deadline, ticket)
        return ticket

    def cancel_poll(self, ticket: PollTicket) -> None:
        """Forget a poll whose volunteer went away (no event follows). Unknown: ignored."""
        poll = self._polls.pop(ticket, None)
        if poll is None:
            return
        del self._poll_of_volunteer[poll.volunteer_id]
        self._poll_counts[(poll.nat, poll.kind)] -= 1
        self._longest_waiting_poll(poll.pool)  # forgets the pool's heap if empty

    def volunteer_answer(self, match_id: str, answer: str, now: float) -> bool:
        """Deliver a volunteer's answer; ``False`` if the match is unknown or has expired.

        On ``True`` a :class:`ClientAnswered` event is queued and the client is forgotten.
        """
        self.expire(now)
        ticket = self._matches.pop(match_id, None)
        if ticket is None:
            return False
        del self._clients[ticket]
        self._events.append(ClientAnswered(ticket, answer))
        return True

    def abandon_match(self, match_id: str, now: float) -> None:
        """The match could not be handed to its volunteer: give the client another chance.

        The client returns to the head of the queue (it keeps its original deadline); the
        match id becomes unknown. Unknown match ids are ignored.
        """
        ticket = self._matches.pop(match_id, None)
        if ticket is None:
            self.expire(now)
            return
        client = self._clients[ticket]
        client.match_id = None
        self.expire(now)
        self._serve_client(client, now, requeued=True)

    # --- time --------------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """End every wait whose deadline is at or before ``now``."""
        requeued: list[_Client] = []
        while self._timers and self._timers[0][0] <= now:
            deadline, _, ticket = heapq.heappop(self._timers)
            if not self._deadline_is_current(deadline, ticket):
                continue
            poll = self._polls.get(PollTicket(ticket))
            if poll is not None:
                self._end_poll(poll.ticket)
                continue
            client = self._clients[ClientTicket(ticket)]
            if client.deadline <= now:
                self.cancel_client(client.ticket)
                self._events.append(ClientTimedOut(client.ticket))
            else:  # the answer did not come in time, but the client still may wait
                assert client.match_id is not None
                del self._matches[client.match_id]
                client.match_id = None
                requeued.append(client)
        for client in requeued:
            self._serve_client(client, now, requeued=True)

    # --- internals ---------------------------------------------------------------------------

    def _arm(self, deadline: float, ticket: int) -> None:
        heapq.heappush(self._timers, (deadline, next(self._tickets), ticket))

    def _deadline_is_current(self, deadline: float, ticket: int) -> bool:
        poll = self._polls.get(PollTicket(ticket))
        if poll is not None:
            return poll.deadline == deadline
        client = self._clients.get(ClientTicket(ticket))
        if client is None:
            return False
        if client.match_id is None:
            return client.deadline == deadline
        return client.answer_deadline == deadline

    def _end_poll(self, ticket: PollTicket) -> None:
        self.cancel_poll(ticket)
        self._events.append(PollEnded(ticket))

    def _oldest_waiting_client(self, pool: _Pool) -> _Client | None:
        queue = self._client_queues.get(pool)
        if queue is None:
            return None
        while queue:
            client = self._clients.get(queue[0])
            if client is not None and client.match_id is None:
                return client
            queue.popleft()
        del self._client_queues[pool]
        return None

    def _longest_waiting_poll(self, pool: _Pool) -> _Poll | None:
        choice = self._poll_choices.get(pool)
        if choice is None:
            return None
        while choice:
            _, ticket = choice[0]
            poll = self._polls.get(ticket)
            if poll is not None:
                return poll
            heapq.heappop(choice)
        del self._poll_choices[pool]
        return None

    def _serve_client(self, client: _Client, now: float, *, requeued: bool) -> None:
        """Pair a new or requeued client with the best waiting poll, or queue it.

        A requeued client goes back to the head of its queue (it has waited longest).
        """
        unrestricted = is_unrestricted(client.nat)
        # A restricted client needs an unrestricted volunteer; an unrestricted client leaves
        # those to the clients that need them and takes a restricted one first.
        for poll_pool in ((client.pairing, not unrestricted), (client.pairing, unrestricted)):
            poll = self._longest_waiting_poll(poll_pool)
            if poll is not None:
                heapq.heappop(self._poll_choices[poll_pool])
                self.cancel_poll(poll.ticket)
                self._pair(client, poll, now)
                return
        queue = self._client_queues.setdefault(client.pool, deque())
        if requeued:
            queue.appendleft(client.ticket)
        else:
            queue.append(client.ticket)

    def _pair(self, client: _Client, poll: _Poll, now: float) -> None:
        match_id = self._new_match_id()
        client.match_id = match_id
        client.answer_deadline = min(client.deadline, now + self.config.answer_timeout)
        self._matches[match_id] = client.ticket
        self._arm(client.answer_deadline, client.ticket)
        self._events.append(
            PollMatched(
                poll.ticket,
                MatchOffer(match_id, client.offer, client.egress),
                client_waited=now - client.arrived,
            )
        )
