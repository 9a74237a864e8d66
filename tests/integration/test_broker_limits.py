"""The broker's abuse limits on a live broker (in memory): per-source rate limits on offers and
polls (429 + Retry-After), the trusted source header, bounded holds (503), and that a normal
client's and volunteer's cadence never meets the default limits."""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
from dataclasses import replace

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.core.rate_limit import TokenBuckets
from ferry.errors import ConfigError
from ferry.volunteer.relay import VolunteerConfig

pytestmark = pytest.mark.integration

OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
)
EGRESS = "ws://127.0.0.1:8443/v1/relay"


def _config(**changes: object) -> BrokerConfig:
    config = BrokerConfig(host="127.0.0.1", port=0, allowed_egresses=(EGRESS,))
    return replace(config, **changes)  # type: ignore[arg-type]


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    fields: dict[str, object],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, object], str | None]:
    async with session.post(
        url,
        data=json.dumps({"version": 1, **fields}).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    ) as response:
        return response.status, await response.json(), response.headers.get("Retry-After")


async def _rejected(session: aiohttp.ClientSession, url: str, endpoint: str, reason: str) -> float:
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    sample = f'ferry_broker_rejected_total{{endpoint="{endpoint}",reason="{reason}"}} '
    for line in text.splitlines():
        if line.startswith(sample):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _offer() -> dict[str, object]:
    return {"offer": OFFER, "egress": EGRESS}


def _poll(number: int) -> dict[str, object]:
    return {"volunteer_id": f"volunteer-{number:010d}", "capacity": 1}


async def test_offer_limit_holds_the_next_offer_in_the_window_gets_429(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    config = _config(offer_burst=3, offer_rate=0.01, client_timeout=0.05)
    async with Broker(config, CollectorRegistry()) as broker, aiohttp.ClientSession() as session:
        url = broker.base_url + "/v1/client/offer"
        for _ in range(3):
            status, _, _ = await _post(session, url, _offer())
            assert status == 503  # let through; no volunteer came
        status, body, retry_after = await _post(session, url, _offer())
        assert status == 429
        assert retry_after is not None and int(retry_after) >= 1
        assert "too many requests" in str(body["error"])
        assert await _rejected(session, broker.base_url, "client_offer", "rate_limited") == 1
    assert "127.0.0.1" not in caplog.text  # never a source address in the logs


async def test_poll_limit_holds_the_next_poll_in_the_window_gets_429() -> None:
    config = _config(poll_burst=4, poll_rate=0.01, poll_timeout=0.05)
    async with Broker(config, CollectorRegistry()) as broker, aiohttp.ClientSession() as session:
        url = broker.base_url + "/v1/volunteer/poll"
        for number in range(4):
            status, body, _ = await _post(session, url, _poll(number))
            assert (status, body) == (200, {"match": None})
        status, _, retry_after = await _post(session, url, _poll(9))
        assert status == 429 and retry_after is not None
        assert await _rejected(session, broker.base_url, "volunteer_poll", "rate_limited") == 1


async def test_trusted_header_names_the_source_only_when_configured() -> None:
    config = _config(poll_burst=1, poll_rate=0.01, poll_timeout=0.05)
    fronted = replace(config, trusted_source_header="X-Forwarded-For")
    async with aiohttp.ClientSession() as session:
        async with Broker(fronted, CollectorRegistry()) as broker:
            url = broker.base_url + "/v1/volunteer/poll"
            # the last entry is the one the front added; earlier ones are the sender's own
            first = {"X-Forwarded-For": "198.51.100.1, 192.0.2.1"}
            other = {"X-Forwarded-For": "198.51.100.1, 192.0.2.2"}
            assert (await _post(session, url, _poll(1), first))[0] == 200
            assert (await _post(session, url, _poll(2), other))[0] == 200
            spoofed = {"X-Forwarded-For": "192.0.2.9, 192.0.2.1"}
            assert (await _post(session, url, _poll(3), spoofed))[0] == 429
        async with Broker(config, CollectorRegistry()) as broker:
            url = broker.base_url + "/v1/volunteer/poll"
            assert (await _post(session, url, _poll(1), first))[0] == 200
            # not configured: the header is ignored, the peer address is the source
            assert (await _post(session, url, _poll(2), other))[0] == 429


async def test_ipv6_sources_are_counted_by_their_64() -> None:
    """Thirty addresses of one /64 are one person (one home's prefix): with a burst of two,
    only two offers pass; another /64 has its own bucket."""
    config = _config(
        offer_burst=2, offer_rate=0.01, client_timeout=0.05, trusted_source_header="X-Real-IP"
    )
    async with Broker(config, CollectorRegistry()) as broker, aiohttp.ClientSession() as session:
        url = broker.base_url + "/v1/client/offer"
        statuses = [
            (await _post(session, url, _offer(), {"X-Real-IP": f"2001:db8:1:2::{n:x}"}))[0]
            for n in range(1, 31)
        ]
        other = await _post(session, url, _offer(), {"X-Real-IP": "2001:db8:1:3::1"})
    assert statuses[:2] == [503, 503]
    assert statuses[2:] == [429] * 28
    assert other[0] == 503


async def test_a_loopback_peer_without_a_trusted_header_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    config = _config(poll_timeout=0.05)
    async with Broker(config, CollectorRegistry()) as broker, aiohttp.ClientSession() as session:
        url = broker.base_url + "/v1/volunteer/poll"
        for number in range(3):
            assert (await _post(session, url, _poll(number)))[0] == 200
    warnings = [r for r in caplog.records if "--trusted-source-header" in r.getMessage()]
    assert len(warnings) == 1
    assert "127.0.0.1" not in warnings[0].getMessage()


async def test_held_polls_and_offers_are_bounded_per_instance() -> None:
    config = _config(max_held_polls=2, max_held_offers=1, poll_timeout=5.0, client_timeout=5.0)
    async with Broker(config, CollectorRegistry()) as broker, aiohttp.ClientSession() as session:
        poll_url = broker.base_url + "/v1/volunteer/poll"
        offer_url = broker.base_url + "/v1/client/offer"
        held = [asyncio.create_task(_post(session, poll_url, _poll(n))) for n in range(2)]
        for _ in range(500):
            if sum(a.count for a in broker.store.available_volunteers()) == 2:
                break
            await asyncio.sleep(0.01)
        status, body, retry_after = await _post(session, poll_url, _poll(3))
        assert status == 503 and "too many polls" in str(body["error"])
        assert retry_after == "5", retry_after  # BrokerConfig.busy_retry_after
        assert await _rejected(session, broker.base_url, "volunteer_poll", "busy") == 1
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        for _ in range(500):
            if not broker.store.available_volunteers():
                break
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(_post(session, offer_url, _offer()))
        for _ in range(500):
            if broker.store.waiting_clients() == 1:
                break
            await asyncio.sleep(0.01)
        status, body, retry_after = await _post(session, offer_url, _offer())
        assert status == 503 and "too many clients" in str(body["error"])
        assert retry_after == "5", retry_after
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)


def test_a_normal_volunteer_cadence_never_meets_the_default_poll_limit() -> None:
    """An hour of three volunteers behind one address (a household), each of the default
    capacity: idle, a poll is held ``poll_timeout`` and then sent again; in a busy minute
    (one in three) clients come at once, so each poll is matched at once and the volunteer
    polls again after answering (~0.2 s) until its capacity is full; its clients leave at the
    end of the minute."""
    config = BrokerConfig()
    capacity = VolunteerConfig(broker_url="http://127.0.0.1:1").capacity
    buckets = TokenBuckets(config.rate_limits().volunteer_poll)
    polls = [(volunteer * 0.01, volunteer, 0) for volunteer in range(3)]  # (when, who, busy)
    heapq.heapify(polls)
    refused = sent = 0
    while polls[0][0] < 3600:
        now, volunteer, serving = heapq.heappop(polls)
        sent += 1
        refused += not buckets.take("one address", now).allowed
        if int(now // 60) % 3 == 0 and serving < capacity:  # a client is waiting: matched
            serving += 1
            following = now + (0.2 if serving < capacity else 60 - now % 60)
        else:
            serving, following = 0, now + config.poll_timeout
        heapq.heappush(polls, (following, volunteer, serving))
    assert sent > 1000
    assert refused == 0


def test_a_normal_client_cadence_never_meets_the_default_offer_limit() -> None:
    """A client starts with three offers at once and, as volunteers come and go, makes a new
    offer after each loss with its backoff (0.5 s doubling to 10 s) when none answers; here
    every offer fails for a minute (no volunteer), then one volunteer is lost a minute."""
    config = BrokerConfig()
    buckets = TokenBuckets(config.rate_limits().client_offer)
    refused = sum(not buckets.take("client", 0.0).allowed for _ in range(3))
    now, delay = 0.0, 0.5
    while now < 60:  # every offer is held client_timeout, then retried after the backoff
        now += config.client_timeout + delay
        delay = min(delay * 2, 10.0)
        refused += sum(not buckets.take("client", now).allowed for _ in range(3))
    while now < 3600:
        now += 60
        refused += not buckets.take("client", now).allowed
    assert refused == 0


@pytest.mark.parametrize(
    ("path", "fields", "field"),
    [
        ("/v1/client/offer", {**_offer(), "nat": "symmetric"}, "nat"),
        ("/v1/volunteer/poll", {**_poll(1), "nat": None}, "nat"),
        ("/v1/volunteer/poll", {**_poll(1), "kind": "go"}, "kind"),
    ],
)
async def test_a_bad_nat_or_kind_is_a_400_naming_the_field(
    path: str, fields: dict[str, object], field: str
) -> None:
    async with (
        Broker(_config(), CollectorRegistry()) as broker,
        aiohttp.ClientSession() as session,
    ):
        status, body, _ = await _post(session, broker.base_url + path, fields)
        assert (status, body["field"]) == (400, field)


async def test_no_volunteer_in_time_is_a_503_without_retry_after() -> None:
    """Not a busy broker: the client may offer again at once, so no Retry-After."""
    config = _config(client_timeout=0.2, busy_retry_after=7.0)
    async with Broker(config, CollectorRegistry()) as broker, aiohttp.ClientSession() as session:
        status, body, retry_after = await _post(
            session, broker.base_url + "/v1/client/offer", _offer()
        )
        assert status == 503 and "no volunteer answered" in str(body["error"])
        assert retry_after is None


def test_busy_retry_after_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="busy_retry_after"):
        _config(busy_retry_after=0.0)


async def test_metrics_answer_only_local_requests_that_did_not_come_through_the_front() -> None:
    config = _config(trusted_source_header="X-Forwarded-For")
    async with Broker(config, CollectorRegistry()) as broker, aiohttp.ClientSession() as session:
        async with session.get(broker.base_url + "/metrics") as local:
            assert local.status == 200
            assert "ferry_broker_offers_total" in await local.text()
        fronted = {"X-Forwarded-For": "198.51.100.1"}
        async with session.get(broker.base_url + "/metrics", headers=fronted) as outside:
            assert outside.status == 404
            assert "ferry_broker" not in await outside.text()
        assert await _rejected(session, broker.base_url, "metrics", "not_local") == 1
