"""Where the broker keeps its state: one small interface, in memory or in Redis.

The HTTP handlers (``ferry.broker.server``) talk only to a :class:`MatchStore`. A store holds
waiting client offers and volunteer polls, pairs them by the matchmaking policy of
``ferry.core.matchmaking`` (NAT-aware, least loaded first, private pairing codes), passes the
answer back, and keeps the per-source rate-limit buckets (a wait first takes a token from its
source's bucket, in the same step: one round trip in Redis):

* :class:`MemoryMatchStore` (the default) drives the sans-IO
  :class:`~ferry.core.matchmaking.Matchmaker` with one timer; state lives in this process.
* :class:`ferry.broker.redis_store.RedisMatchStore` keeps everything in Redis, so any number of
  broker instances share it: a client matched through one instance can be answered by a
  volunteer polling another (``docs/architecture.md``, "The broker's store").

Waiting methods are cancellation-safe: cancelling :meth:`MatchStore.wait_for_volunteer` forgets
the client, cancelling :meth:`MatchStore.wait_for_client` forgets the poll (and gives a match
it was just handed to another volunteer).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from ferry.core.broker_messages import ClientOffer, MatchOffer, VolunteerAnswer, VolunteerPoll
from ferry.core.matchmaking import (
    AvailableVolunteers,
    ClientAnswered,
    ClientTicket,
    ClientTimedOut,
    Matchmaker,
    MatchmakerConfig,
    PollEnded,
    PollMatched,
    PollTicket,
)
from ferry.core.rate_limit import RateLimit, TokenBuckets
from ferry.errors import BrokerError


class StoreUnavailableError(BrokerError):
    """The store's backing service (Redis) could not be reached or refused a command."""


class RateLimitedError(BrokerError):
    """The request's source is over its rate limit; nothing was held or changed."""

    retry_after: float
    """Seconds until the source's bucket holds a token again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            f"over the rate limit; a token comes in {retry_after:.1f} s", retry_after=retry_after
        )


RateLimitName = Literal["client_offer", "volunteer_poll"]
"""Which per-source limit a request draws from."""


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """How a volunteer's poll ended."""

    match: MatchOffer | None
    """The client to serve, or ``None`` (no client came, or the poll was replaced)."""
    client_waited: float | None
    """With a match: seconds from the client's offer to the match (match latency)."""


class MatchStore(Protocol):
    """The broker's state; see the module docstring."""

    async def start(self) -> None:
        """Connect (Redis) and start what the store runs in the background."""

    async def wait_for_volunteer(
        self, offer: ClientOffer, source: str, *, on_held: Callable[[], None]
    ) -> str | None:
        """Hold a client's (validated) offer until a volunteer answers: the SDP answer, or
        ``None`` when none answered within the client timeout or the store is ending waits.

        ``source`` (the sender's address; hashed with a secret salt before it is kept) pays
        one token of the ``client_offer`` limit first. ``on_held`` is called once the offer
        passed the limit and is held. Raises :class:`RateLimitedError` when the source is over
        its limit, :class:`~ferry.errors.BrokerError` when the store holds too many clients.
        """

    async def wait_for_client(
        self, poll: VolunteerPoll, source: str, *, on_held: Callable[[], None]
    ) -> PollOutcome:
        """Hold a volunteer's poll until a client comes or the poll timeout passes.

        ``source`` and ``on_held`` as for :meth:`wait_for_volunteer` (limit
        ``volunteer_poll``). Raises :class:`RateLimitedError` when the source is over its
        limit, :class:`~ferry.errors.BrokerError` when the store holds too many polls.
        """

    async def deliver_answer(self, answer: VolunteerAnswer) -> bool:
        """Give a volunteer's answer to its client; ``False`` if the match is unknown/expired."""

    def available_volunteers(self) -> list[AvailableVolunteers]:
        """Polls this instance holds, by NAT type and kind."""

    def waiting_clients(self) -> int:
        """Client offers this instance holds."""

    def end_waits(self) -> None:
        """Make every held wait return at once (clients ``None``, polls no match)."""

    async def close(self) -> None:
        """End waits, stop background work and disconnect."""


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The per-source limits a store enforces."""

    client_offer: RateLimit
    """Client offers per source."""
    volunteer_poll: RateLimit
    """Volunteer polls per source."""
    max_sources: int = 100_000
    """Most sources remembered per limit in memory (beyond: the quietest are forgotten)."""

    def of(self, name: RateLimitName) -> RateLimit:
        """The limit called ``name``."""
        return self.client_offer if name == "client_offer" else self.volunteer_poll


def hash_source(salt: bytes, source: str) -> str:
    """A source address as the stores keep it: a salted SHA-256, never the address itself."""
    return hashlib.sha256(salt + source.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class MemoryMatchStore:
    """A :class:`MatchStore` in this process, over the sans-IO matchmaker and token buckets."""

    def __init__(self, config: MatchmakerConfig, limits: RateLimits) -> None:
        self._matchmaker = Matchmaker(config)
        self._buckets = {
            name: TokenBuckets(limits.of(name), limits.max_sources)
            for name in ("client_offer", "volunteer_poll")
        }
        self._salt = secrets.token_bytes(16)
        self._client_waiters: dict[ClientTicket, asyncio.Future[str | None]] = {}
        self._poll_waiters: dict[PollTicket, asyncio.Future[PollOutcome]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ending = False

    async def start(self) -> None:
        """Remember the running loop (the store's clock and timer)."""
        self._loop = asyncio.get_running_loop()

    def _now(self) -> float:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    async def wait_for_volunteer(
        self, offer: ClientOffer, source: str, *, on_held: Callable[[], None]
    ) -> str | None:
        """See :meth:`MatchStore.wait_for_volunteer`."""
        if self._ending:
            return None
        self._take_token("client_offer", source)
        try:
            ticket = self._matchmaker.client_offer(
                offer.offer, offer.egress, self._now(), pairing=offer.pairing, nat=offer.nat
            )
        except BrokerError:
            self._after_matchmaking()  # the offer or poll expired others on its way
            raise
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._client_waiters[ticket] = future
        on_held()
        try:
            self._after_matchmaking()
            return await future
        except asyncio.CancelledError:
            self._matchmaker.cancel_client(ticket)
            self._after_matchmaking()
            raise
        finally:
            del self._client_waiters[ticket]

    async def wait_for_client(
        self, poll: VolunteerPoll, source: str, *, on_held: Callable[[], None]
    ) -> PollOutcome:
        """See :meth:`MatchStore.wait_for_client`."""
        if self._ending:
            return PollOutcome(None, None)
        self._take_token("volunteer_poll", source)
        try:
            ticket = self._matchmaker.volunteer_poll(
                poll.volunteer_id,
                poll.capacity,
                self._now(),
                pairing=poll.pairing,
                nat=poll.nat,
                kind=poll.kind,
            )
        except BrokerError:
            self._after_matchmaking()  # the offer or poll expired others on its way
            raise
        future: asyncio.Future[PollOutcome] = asyncio.get_running_loop().create_future()
        self._poll_waiters[ticket] = future
        on_held()
        try:
            self._after_matchmaking()
            return await future
        except asyncio.CancelledError:
            outcome = future.result() if future.done() and not future.cancelled() else None
            if outcome is not None and outcome.match is not None:
                self._matchmaker.abandon_match(outcome.match.id, self._now())
            else:
                self._matchmaker.cancel_poll(ticket)
            self._after_matchmaking()
            raise
        finally:
            del self._poll_waiters[ticket]

    async def deliver_answer(self, answer: VolunteerAnswer) -> bool:
        """See :meth:`MatchStore.deliver_answer`."""
        delivered = self._matchmaker.volunteer_answer(answer.match_id, answer.answer, self._now())
        self._after_matchmaking()
        return delivered

    def _take_token(self, limit: RateLimitName, source: str) -> None:
        decision = self._buckets[limit].take(hash_source(self._salt, source), self._now())
        if not decision.allowed:
            raise RateLimitedError(decision.retry_after)

    def available_volunteers(self) -> list[AvailableVolunteers]:
        """See :meth:`MatchStore.available_volunteers`."""
        return self._matchmaker.available_volunteers()

    def waiting_clients(self) -> int:
        """See :meth:`MatchStore.waiting_clients`."""
        return self._matchmaker.waiting_clients

    def end_waits(self) -> None:
        """See :meth:`MatchStore.end_waits`."""
        self._ending = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for client_future in self._client_waiters.values():
            if not client_future.done():
                client_future.set_result(None)
        for poll_future in self._poll_waiters.values():
            if not poll_future.done():
                poll_future.set_result(PollOutcome(None, None))

    async def close(self) -> None:
        """See :meth:`MatchStore.close`."""
        self.end_waits()

    # --- matchmaker plumbing -----------------------------------------------------------------

    def _after_matchmaking(self) -> None:
        """Deliver the matchmaker's events to the waiting handlers and re-arm the timer."""
        while (event := self._matchmaker.next_event()) is not None:
            match event:
                case PollMatched(poll=poll, match=match, client_waited=waited):
                    poll_future = self._poll_waiters.get(poll)
                    if poll_future is None or poll_future.done():
                        self._matchmaker.abandon_match(match.id, self._now())
                    else:
                        poll_future.set_result(PollOutcome(match, waited))
                case PollEnded(poll=poll):
                    poll_future = self._poll_waiters.get(poll)
                    if poll_future is not None and not poll_future.done():
                        poll_future.set_result(PollOutcome(None, None))
                case ClientAnswered(client=client, answer=answer):
                    client_future = self._client_waiters.get(client)
                    if client_future is not None and not client_future.done():
                        client_future.set_result(answer)
                case ClientTimedOut(client=client):
                    client_future = self._client_waiters.get(client)
                    if client_future is not None and not client_future.done():
                        client_future.set_result(None)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = None if self._ending else self._matchmaker.next_deadline()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        assert self._timer_deadline is not None
        # call_at may fire up to one clock tick early; the deadline is what was due.
        now = max(self._now(), self._timer_deadline)
        self._timer = None
        self._timer_deadline = None
        self._matchmaker.expire(now)
        self._after_matchmaking()
