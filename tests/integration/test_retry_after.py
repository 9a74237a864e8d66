"""The Python client and volunteer honour the broker's Retry-After, on a live broker.

A real in-memory broker on 127.0.0.1 with its rate limits set very low, and a test middleware
that records the loop time at which each request arrives (and, for some tests, rewrites the
broker's Retry-After). The assertions compare the gap between a refused request and the next
one with the Retry-After the broker sent: a lower bound, never a wall-clock budget.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker
from ferry.client.messages import catalogue
from ferry.client.rendezvous import HttpRendezvous
from ferry.client.self_check import CheckStep, SelfCheck, SelfCheckConfig, StepOutcome
from ferry.client.session import PathPool, TunnelConfig
from ferry.core.bridge_line import BridgeLine
from ferry.core.ice_servers import IceServer
from ferry.demo import LOOPBACK_WEBRTC
from ferry.errors import BrokerRateLimitedError, NoVolunteerError
from ferry.transport.quic import QuicSettings
from ferry.transport.webrtc import PythonPeers
from ferry.volunteer.relay import Volunteer, VolunteerConfig
from tests.waiting import wait_until

from .broker_recorder import (
    CLOCK_SLACK,
    EGRESS,
    assert_waited,
    broker_config,
    record_requests,
    refused_then_next,
    set_retry_after,
)

pytestmark = pytest.mark.integration

OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
)


def path_pool(url: str, registry: CollectorRegistry) -> tuple[PathPool, HttpRendezvous]:
    bridge = BridgeLine(EGRESS, bytes(32))
    config = TunnelConfig(
        bridge=bridge,
        volunteers=1,
        spare_volunteers=0,
        rendezvous_backoff_initial=0.3,
        webrtc=LOOPBACK_WEBRTC,
    )
    rendezvous = HttpRendezvous(url, registry=registry)
    pool = PathPool(config, rendezvous, lambda datagram: False, PythonPeers(LOOPBACK_WEBRTC))
    return pool, rendezvous


def malformed_count(registry: CollectorRegistry, role: str) -> float:
    value = registry.get_sample_value(f"ferry_{role}_broker_retry_after_malformed_total")
    return value or 0.0


async def test_client_sends_no_offer_before_the_429s_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ferry")
    # One offer, then a token every 2 s; offers end in 0.1 s (503: no volunteer), and the
    # client's own backoff (0.3 s) would send the next one long before a token is back.
    config = broker_config(offer_rate=0.5, offer_burst=1, client_timeout=0.1)
    registry = CollectorRegistry()
    broker = Broker(config, CollectorRegistry())
    seen = record_requests(broker)
    async with broker:
        pool, rendezvous = path_pool(broker.base_url, registry)
        pool.start()
        try:
            await wait_until(
                lambda: len(refused_then_next(seen, "/v1/client/offer", 429)) >= 2,
                "two offers refused with 429, each followed by another",
            )
        finally:
            await pool.close()
            await rendezvous.close()
    assert_waited(refused_then_next(seen, "/v1/client/offer", 429))
    assert any("too many requests (HTTP 429)" in r.getMessage() for r in caplog.records)
    assert malformed_count(registry, "client") == 0


async def test_client_honours_a_retry_after_on_503() -> None:
    config = broker_config(client_timeout=0.1)  # no rate limit met: every offer ends in 503
    broker = Broker(config, CollectorRegistry())
    seen = record_requests(broker, set_retry_after(503, "2"))
    async with broker:
        pool, rendezvous = path_pool(broker.base_url, CollectorRegistry())
        pool.start()
        try:
            await wait_until(
                lambda: len(refused_then_next(seen, "/v1/client/offer", 503)) >= 2,
                "two offers refused with 503, each followed by another",
            )
        finally:
            await pool.close()
            await rendezvous.close()
    assert_waited(refused_then_next(seen, "/v1/client/offer", 503))


async def test_client_falls_back_to_its_backoff_and_counts_a_malformed_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ferry")
    config = broker_config(client_timeout=0.1)
    registry = CollectorRegistry()
    broker = Broker(config, CollectorRegistry())
    seen = record_requests(broker, set_retry_after(503, "in a little while"))
    async with broker:
        pool, rendezvous = path_pool(broker.base_url, registry)
        pool.start()
        try:
            await wait_until(
                lambda: malformed_count(registry, "client") >= 2, "two malformed Retry-After"
            )
        finally:
            await pool.close()
            await rendezvous.close()
    offers = [request for request in seen if request.path == "/v1/client/offer"]
    assert offers and all(request.status == 503 for request in offers)
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert retries[0].endswith("retrying in 0.3 s")  # the client's own backoff, unchanged
    said = [r for r in caplog.records if "Retry-After header is neither" in r.getMessage()]
    assert len(said) == 1  # logged once, however often it comes
    assert "127.0.0.1" not in said[0].getMessage()


async def test_volunteer_sends_no_poll_before_the_429s_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ferry")
    # One poll, then a token every 2 s; polls end in 0.1 s, and the volunteer's own backoff
    # (0.3 s) would send the next one long before a token is back.
    config = broker_config(poll_rate=0.5, poll_burst=1, poll_timeout=0.1)
    registry = CollectorRegistry()
    broker = Broker(config, CollectorRegistry())
    seen = record_requests(broker)
    async with broker:
        volunteer = Volunteer(
            VolunteerConfig(
                broker.base_url,
                poll_backoff_initial=0.3,
                webrtc=LOOPBACK_WEBRTC,
                allow_internal_egress=True,
            ),
            registry=registry,
        )
        volunteer.start()
        try:
            await wait_until(
                lambda: len(refused_then_next(seen, "/v1/volunteer/poll", 429)) >= 2,
                "two polls refused with 429, each followed by another",
            )
        finally:
            await volunteer.close()
    assert_waited(refused_then_next(seen, "/v1/volunteer/poll", 429))
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert retries and all("too many requests" in message for message in retries)
    assert malformed_count(registry, "volunteer") == 0


async def test_volunteer_falls_back_to_its_backoff_and_counts_a_malformed_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ferry")
    config = broker_config(poll_rate=0.5, poll_burst=1, poll_timeout=0.1)
    registry = CollectorRegistry()
    broker = Broker(config, CollectorRegistry())
    record_requests(broker, set_retry_after(429, "-5"))
    async with broker:
        volunteer = Volunteer(
            VolunteerConfig(
                broker.base_url,
                poll_backoff_initial=0.3,
                webrtc=LOOPBACK_WEBRTC,
                allow_internal_egress=True,
            ),
            registry=registry,
        )
        volunteer.start()
        try:
            await wait_until(
                lambda: malformed_count(registry, "volunteer") >= 2, "two malformed Retry-After"
            )
        finally:
            await volunteer.close()
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert retries[0].endswith("retrying in 0.3 s")  # the volunteer's own backoff, unchanged
    said = [r for r in caplog.records if "Retry-After header is neither" in r.getMessage()]
    assert len(said) == 1
    assert "127.0.0.1" not in said[0].getMessage()


async def test_the_self_check_says_the_broker_said_too_many_requests() -> None:
    config = broker_config(offer_rate=0.01, offer_burst=1, client_timeout=0.1)
    async with Broker(config, CollectorRegistry()) as broker, aiohttp.ClientSession() as http:
        rendezvous = HttpRendezvous(broker.base_url, http)
        with pytest.raises(NoVolunteerError):  # the one offer the limit lets through
            await rendezvous.exchange(OFFER, EGRESS)
        check = SelfCheck(
            broker_url=broker.base_url,
            bridge=BridgeLine(EGRESS, bytes(32)),
            rendezvous=rendezvous,
            http=http,
            webrtc=LOOPBACK_WEBRTC,
            quic=QuicSettings(),
            config=SelfCheckConfig(volunteer_timeout=5.0),
        )
        results = {result.step: result for result in await check.run()}
    volunteer = results[CheckStep.VOLUNTEER]
    assert volunteer.outcome is StepOutcome.FAILED
    assert volunteer.explanation == "check.volunteer.rate_limited"
    assert volunteer.advice == "check.volunteer.advice_rate_limited"
    assert "HTTP 429" in volunteer.detail
    assert "too many requests" in catalogue("en").text(volunteer.explanation)


async def test_a_widgets_429_exposes_retry_after_to_cross_origin_scripts() -> None:
    config = broker_config(poll_rate=0.01, poll_burst=1, poll_timeout=0.1)
    poll = b'{"version":1,"volunteer_id":"volunteer-0000000001","capacity":1}'
    headers = {"Content-Type": "application/json", "Origin": "http://127.0.0.1:9"}
    async with Broker(config, CollectorRegistry()) as broker, aiohttp.ClientSession() as http:
        url = broker.base_url + "/v1/volunteer/poll"
        async with http.options(url, headers=headers) as preflight:
            assert preflight.headers["Access-Control-Expose-Headers"] == "Retry-After"
        statuses = []
        for _ in range(2):
            async with http.post(url, data=poll, headers=headers) as response:
                statuses.append(response.status)
                exposed = response.headers.get("Access-Control-Expose-Headers")
                retry_after = response.headers.get("Retry-After")
    assert statuses == [200, 429]
    assert exposed == "Retry-After"
    assert retry_after is not None and int(retry_after) >= 1


class OneRefusalRendezvous:
    """A :class:`~ferry.client.rendezvous.Rendezvous` double: the first exchange fails without
    a wait once the second has been told "too many requests, retry after 1.5 s"; every later
    exchange is recorded and then waits until the pool closes."""

    def __init__(self) -> None:
        self.calls = 0
        self.refused_at = 0.0
        self.later_calls: list[float] = []
        self._second_refused = asyncio.Event()
        self._never = asyncio.Event()

    async def exchange(self, offer_sdp: str, egress_url: str) -> str:
        self.calls += 1
        loop = asyncio.get_running_loop()
        if self.calls == 1:
            await self._second_refused.wait()
            raise NoVolunteerError("no volunteer answered in time")
        if self.calls == 2:
            self.refused_at = loop.time()
            self._second_refused.set()
            raise BrokerRateLimitedError("too many requests", retry_after=1.5)
        self.later_calls.append(loop.time())
        await self._never.wait()
        raise AssertionError("unreachable")

    async def ice_servers(self) -> tuple[IceServer, ...]:
        return ()

    def forget_ice_servers(self) -> None:
        pass


async def test_a_retry_after_told_to_one_path_holds_back_every_path() -> None:
    rendezvous = OneRefusalRendezvous()
    config = TunnelConfig(
        bridge=BridgeLine(EGRESS, bytes(32)),
        volunteers=2,
        spare_volunteers=0,
        rendezvous_backoff_initial=0.3,  # the unrefused path alone would come back after 0.3 s
        webrtc=LOOPBACK_WEBRTC,
    )
    pool = PathPool(config, rendezvous, lambda datagram: False, PythonPeers(LOOPBACK_WEBRTC))
    pool.start()
    try:
        await wait_until(lambda: len(rendezvous.later_calls) >= 2, "two later calls")
    finally:
        await pool.close()
    assert all(at - rendezvous.refused_at >= 1.5 - CLOCK_SLACK for at in rendezvous.later_calls)
