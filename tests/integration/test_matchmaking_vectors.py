"""The matchmaking vectors (``tests/vectors/matchmaking.json``), run against both stores.

The broker's matching is written twice: the sans-IO matchmaker behind
:class:`~ferry.broker.store.MemoryMatchStore` and the Lua scripts of
:class:`~ferry.broker.redis_store.RedisMatchStore`. Every vector runs against both (the Redis
one on a real ``redis-server``), through the stores' public interface, so a difference
between the two is a failing test.

The vectors' format
-------------------

The file holds ``{"vectors": [...]}``; a vector is ``{"name", "config", "steps"}``.
``config`` holds :class:`~ferry.core.matchmaking.MatchmakerConfig` fields (timeouts in
seconds). Each step is one object; requests are named by the step that makes them:

* ``{"offer": "c1", "nat": "restricted", "pairing": CODE, "instance": 1}`` — a client offers
  (``nat`` defaults to ``unknown``, ``pairing`` to none); its offer text names it.
* ``{"poll": "p1", "volunteer": "v1", "capacity": 3, "nat": ..., "kind": ..., "pairing": ...,
  "instance": 0}`` — a volunteer polls (``volunteer`` defaults to the poll's name: a second
  poll with the same ``volunteer`` replaces the first).
* ``{"answer": "p1", "delivered": true}`` — the volunteer of poll ``p1`` answers the match it
  was given (``"answer": null``: a match id nobody was given); ``delivered`` is what the
  store must say.
* ``{"cancel": "c1"}`` — the request goes away (its HTTP connection closed).
* ``{"advance": 11.0}`` — time passes (both stores run on one clock the test moves).
* ``{"expect": {"p1": "client:c1", "c1": "answer:p1", "c2": "none", "c3": "refused"},
  "available": [["unrestricted", "browser", 2]]}`` — exactly these requests ended since the
  previous ``expect``, with these outcomes: a poll given client ``c1``'s offer
  (``client:c1``), a client given poll ``p1``'s volunteer's answer (``answer:p1``), a wait that
  ended with nothing (``none``: timed out, replaced, or no answer in time), or a request
  refused at once (``refused``: the store was full). ``available`` (optional) is what
  ``available_volunteers()`` must count afterwards (single-instance vectors only).

A vector must end with every request ended or cancelled, so every outcome is pinned.
``instance`` (0 by default) chooses the broker instance for the Redis store (two instances
share one Redis); the memory store is one instance and ignores it.

How time passes: each vector runs on an event loop whose clock is the monotonic clock plus
everything the steps advanced; the memory store's timer, the Redis store's waits and (through
``RedisMatchStore(clock=...)``) its scripts' ``now`` all read it. A step's vector times are
seconds apart, so the milliseconds the test itself takes never decide an outcome.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from ferry.broker.redis_store import RedisMatchStore
from ferry.broker.store import MatchStore, MemoryMatchStore, PollOutcome, RateLimits
from ferry.core.broker_messages import ClientOffer, VolunteerAnswer, VolunteerPoll
from ferry.core.matchmaking import MatchmakerConfig
from ferry.core.rate_limit import RateLimit
from ferry.errors import BrokerError
from tests.integration.redis_server import RedisServer, running_redis
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "matchmaking.json").read_text("utf-8")
)["vectors"]
EGRESS = "ws://127.0.0.1:8443/v1/relay"
SOURCE = "127.0.0.1"
UNLIMITED = RateLimits(RateLimit(1e6, 1_000_000), RateLimit(1e6, 1_000_000))
STEP_WAIT = 15.0
"""Seconds (of the real clock) a step waits for what it expects before the test fails."""

VECTOR_TIMEOUT = 90.0
"""Seconds one vector may take, steps' advances included (pytest-timeout's 120 s is real)."""

Step = dict[str, Any]


class _ShiftedClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock the test moves forward: the monotonic clock plus every
    ``advanced`` second so far, so timers due in the advanced time fire at once."""

    def __init__(self) -> None:
        super().__init__()
        self.advanced = 0.0

    def time(self) -> float:
        return super().time() + self.advanced


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def _offer_text(name: str) -> str:
    return f"v=0\r\na=offer-of:{name}\r\n"


def _answer_text(poll: str) -> str:
    return f"v=0\r\na=answer-of:{poll}\r\n"


def _outcome(task: asyncio.Task[object]) -> str:
    """What a finished request ended with, in the vectors' words."""
    if task.cancelled():
        return "cancelled"
    if isinstance(task.exception(), BrokerError):
        return "refused"
    result = task.result()
    if isinstance(result, PollOutcome):
        if result.match is None:
            return "none"
        return "client:" + result.match.offer.removeprefix("v=0\r\na=offer-of:").rstrip()
    if result is None:
        return "none"
    assert isinstance(result, str)
    return "answer:" + result.removeprefix("v=0\r\na=answer-of:").rstrip()


class _VectorRun:
    """One vector's steps against one store kind (``stores[i]`` is broker instance ``i``)."""

    def __init__(self, stores: list[MatchStore], loop: _ShiftedClockLoop) -> None:
        self.stores = stores
        self.loop = loop
        self.tasks: dict[str, asyncio.Task[object]] = {}
        self.settled: set[str] = set()
        """Requests whose end an ``expect`` (or a ``cancel``) already accounted for."""

    def _store(self, step: Step) -> MatchStore:
        return self.stores[min(int(step.get("instance", 0)), len(self.stores) - 1)]

    async def _start(
        self, name: str, request: Callable[[Callable[[], None]], Coroutine[Any, Any, object]]
    ) -> None:
        assert name not in self.tasks, f"the vector names {name} twice"
        held = asyncio.Event()
        task = asyncio.create_task(request(held.set))
        self.tasks[name] = task
        await wait_until(
            lambda: held.is_set() or task.done(), f"{name} held or refused", interval=0.002
        )

    async def step(self, step: Step) -> None:
        if "offer" in step:
            offer = ClientOffer(
                _offer_text(step["offer"]),
                EGRESS,
                pairing=step.get("pairing"),
                nat=step.get("nat", "unknown"),
            )
            store = self._store(step)
            await self._start(
                step["offer"],
                lambda on_held: store.wait_for_volunteer(offer, SOURCE, on_held=on_held),
            )
        elif "poll" in step:
            poll = VolunteerPoll(
                "volunteer-" + step.get("volunteer", step["poll"]),
                int(step.get("capacity", 1)),
                pairing=step.get("pairing"),
                nat=step.get("nat", "unknown"),
                kind=step.get("kind", "unknown"),
            )
            store = self._store(step)
            await self._start(
                step["poll"], lambda on_held: store.wait_for_client(poll, SOURCE, on_held=on_held)
            )
        elif "answer" in step:
            await self._answer(step)
        elif "cancel" in step:
            task = self.tasks[step["cancel"]]
            task.cancel()
            await asyncio.wait([task])
            self.settled.add(step["cancel"])
        elif "advance" in step:
            self.loop.advanced += float(step["advance"])
        elif "expect" in step:
            await self._expect(step)
        else:
            raise AssertionError(f"unknown step {step}")

    async def _answer(self, step: Step) -> None:
        poll = step["answer"]
        if poll is None:
            match_id = "match-nobody-was-given-this-0000"
        else:
            outcome = self.tasks[poll].result()
            assert isinstance(outcome, PollOutcome) and outcome.match is not None
            match_id = outcome.match.id
        answer = VolunteerAnswer(match_id, _answer_text(str(poll)))
        delivered = await self._store(step).deliver_answer(answer)
        assert delivered == step["delivered"], f"answer of {poll}: delivered {delivered}"

    async def _expect(self, step: Step) -> None:
        expected: dict[str, str] = step["expect"]
        await wait_until(
            lambda: all(self.tasks[name].done() for name in expected),
            f"{sorted(expected)} ended",
            timeout=STEP_WAIT,
            interval=0.002,
        )
        ended = {
            name: _outcome(task)
            for name, task in self.tasks.items()
            if task.done() and name not in self.settled
        }
        assert ended == expected
        self.settled.update(expected)
        if "available" in step:
            available = sorted(
                (a.nat, a.kind, a.count) for a in self.stores[0].available_volunteers()
            )
            assert available == sorted(tuple(a) for a in step["available"])

    def unsettled(self) -> list[str]:
        return sorted(set(self.tasks) - self.settled)

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for store in self.stores:
            await store.close()


def _config(vector: Step) -> MatchmakerConfig:
    return MatchmakerConfig(**vector.get("config", {}))


async def _run(
    vector: Step, make_stores: Callable[[Callable[[], float]], list[MatchStore]]
) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, _ShiftedClockLoop)
    run = _VectorRun(make_stores(loop.time), loop)
    try:
        for store in run.stores:
            await store.start()
        for index, step in enumerate(vector["steps"]):
            try:
                await run.step(step)
            except AssertionError as exc:
                raise AssertionError(f"step {index} {json.dumps(step)}: {exc}") from exc
        assert run.unsettled() == [], "the vector must end every request it makes"
    finally:
        await run.close()


async def _bounded(coroutine: Coroutine[Any, Any, None]) -> None:
    # On the loop's clock, which the steps advance by at most a few dozen seconds.
    async with asyncio.timeout(VECTOR_TIMEOUT):
        await coroutine


def _run_on_shifted_clock(coroutine: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=_ShiftedClockLoop) as runner:
        runner.run(_bounded(coroutine))


_NAMES = [vector["name"] for vector in VECTORS]


@pytest.mark.parametrize("vector", VECTORS, ids=_NAMES)
def test_vector_on_the_memory_store(vector: Step) -> None:
    config = _config(vector)
    _run_on_shifted_clock(
        _run(vector, lambda clock: [cast(MatchStore, MemoryMatchStore(config, UNLIMITED))])
    )


@pytest.mark.parametrize("vector", VECTORS, ids=_NAMES)
def test_vector_on_the_redis_store(vector: Step, redis_server: RedisServer) -> None:
    config = _config(vector)
    prefix = f"vector-{uuid.uuid4().hex}:"

    # redis-py bounds every read by a socket timeout on the loop's clock (5 s by default): a
    # step that advances that clock would cut the dispatcher's BLPOP short and lose what it
    # popped. The vectors' clock only moves by steps, so reads here may take an hour of it.
    url = redis_server.url + "?socket_timeout=3600"

    def stores(clock: Callable[[], float]) -> list[MatchStore]:
        return [
            RedisMatchStore(url, config, UNLIMITED, prefix=prefix, clock=clock) for _ in range(2)
        ]

    _run_on_shifted_clock(_run(vector, stores))


def test_the_vectors_cover_every_kind_of_step_and_outcome() -> None:
    """Guards the file against losing what makes it worth running twice."""
    kinds = {key for vector in VECTORS for step in vector["steps"] for key in step}
    assert {"offer", "poll", "answer", "cancel", "advance", "expect", "pairing", "nat"} <= kinds
    assert {"instance", "available", "volunteer", "kind", "capacity"} <= kinds
    outcomes = {
        outcome.split(":")[0]
        for vector in VECTORS
        for step in vector["steps"]
        for outcome in step.get("expect", {}).values()
    }
    assert outcomes == {"client", "answer", "none", "refused"}
    assert len(set(_NAMES)) == len(_NAMES)
