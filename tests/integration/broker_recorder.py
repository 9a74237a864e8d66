"""A live broker's request log for tests: when each request arrived and what it was told.

:func:`record_requests` adds a test middleware (before the broker starts) that records the loop
time of every request's arrival, its status and Retry-After, and can rewrite the response
(e.g. a malformed Retry-After). :func:`assert_waited` checks that each refusal was followed by
the next request no sooner than its Retry-After: a lower bound, never a wall-clock budget.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from aiohttp import web

from ferry.broker.server import Broker, BrokerConfig

EGRESS = "ws://127.0.0.1:8443/v1/relay"
CLOCK_SLACK = time.get_clock_info("monotonic").resolution
"""asyncio may run a timer up to one clock tick early."""


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request as the broker answered it."""

    at: float
    """Loop time at which it arrived."""
    path: str
    """The request's path."""
    status: int
    """The status the client received."""
    retry_after: str | None
    """The Retry-After header the client received."""


Rewrite = Callable[[web.StreamResponse], None]


def record_requests(broker: Broker, rewrite: Rewrite | None = None) -> list[SeenRequest]:
    """Record every request the broker answers (and let ``rewrite`` change the response).

    Called before the broker starts: its middlewares are frozen then."""
    seen: list[SeenRequest] = []

    @web.middleware
    async def recorder(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        arrived = asyncio.get_running_loop().time()
        response = await handler(request)
        if rewrite is not None:
            rewrite(response)
        seen.append(
            SeenRequest(arrived, request.path, response.status, response.headers.get("Retry-After"))
        )
        return response

    broker.app.middlewares.append(recorder)
    return seen


def set_retry_after(status: int, value: str) -> Rewrite:
    def rewrite(response: web.StreamResponse) -> None:
        if response.status == status:
            response.headers["Retry-After"] = value

    return rewrite


def broker_config(**changes: float) -> BrokerConfig:
    config = BrokerConfig(host="127.0.0.1", port=0, allowed_egresses=(EGRESS,))
    return replace(config, **changes)  # type: ignore[arg-type]


def refused_then_next(
    seen: list[SeenRequest], path: str, status: int
) -> list[tuple[SeenRequest, SeenRequest]]:
    """Each refusal with ``status`` on ``path`` and the request to ``path`` that followed."""
    on_path = [request for request in seen if request.path == path]
    return [
        (request, following)
        for request, following in itertools.pairwise(on_path)
        if request.status == status
    ]


def assert_waited(pairs: list[tuple[SeenRequest, SeenRequest]]) -> None:
    assert pairs, "no refusal was followed by another request"
    for refused, following in pairs:
        assert refused.retry_after is not None
        asked = int(refused.retry_after)
        assert asked >= 1
        assert following.at - refused.at >= asked - CLOCK_SLACK, (refused, following)
