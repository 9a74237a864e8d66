"""The broker's routes for the browser widget: /widget.js, /, /v1/stats, CORS and pairing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.client.rendezvous import HttpRendezvous
from ferry.errors import ConfigError, NoVolunteerError
from ferry.volunteer.broker_client import BrokerClient, new_volunteer_id
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

OFFER = "v=0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
ANSWER = "v=0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=x\r\n"
EGRESS = "ws://127.0.0.1:8443/v1/relay"
CODE = "pair_0123456789ABCDEF"
WEB = Path(__file__).parents[2] / "src" / "ferry" / "web"


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    config = BrokerConfig(port=0, allowed_egresses=(EGRESS,), client_timeout=2.0)
    async with Broker(config, CollectorRegistry()) as running:
        yield running


async def test_widget_and_page_are_served(broker: Broker) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(broker.base_url + "/widget.js") as response:
            assert response.status == 200
            assert response.content_type == "text/javascript"
            assert await response.read() == (WEB / "widget.js").read_bytes()
        async with session.get(broker.base_url + "/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
            policy = response.headers["Content-Security-Policy"]
    assert '<script src="/widget.js" async></script>' in page
    assert "<ferry-widget" in page
    assert "'sha256-" in policy and "default-src 'none'" in policy


async def test_cors_preflight_and_headers_on_volunteer_endpoints(broker: Broker) -> None:
    headers = {
        "Origin": "http://127.0.0.1:1",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with aiohttp.ClientSession() as session:
        for path in ("/v1/volunteer/poll", "/v1/volunteer/answer", "/v1/stats"):
            async with session.options(broker.base_url + path, headers=headers) as response:
                assert response.status == 204
                assert response.headers["Access-Control-Allow-Origin"] == "*"
                assert "POST" in response.headers["Access-Control-Allow-Methods"]
                assert response.headers["Access-Control-Allow-Headers"] == "Content-Type"
                assert "Access-Control-Allow-Credentials" not in response.headers
        # errors carry the header too, so a browser can read why it was refused
        async with session.post(
            broker.base_url + "/v1/volunteer/poll",
            data=b"{}",
            headers={"Content-Type": "application/json", "Origin": "http://127.0.0.1:1"},
        ) as response:
            assert response.status == 400
            assert response.headers["Access-Control-Allow-Origin"] == "*"
        # the client's endpoint is not opened to web pages
        async with session.options(broker.base_url + "/v1/client/offer") as response:
            assert "Access-Control-Allow-Origin" not in response.headers


async def _stats(session: aiohttp.ClientSession, broker: Broker) -> dict[str, int]:
    async with session.get(broker.base_url + "/v1/stats") as response:
        assert response.status == 200
        stats = json.loads(await response.read())
        assert isinstance(stats, dict)
        return stats


async def test_stats_count_volunteers_and_helped_clients_rounded_up_to_8(broker: Broker) -> None:
    async with aiohttp.ClientSession() as session:
        assert await _stats(session, broker) == {
            "volunteers_online": 0,
            "clients_helped_last_hour": 0,
        }
        volunteer = BrokerClient(broker.base_url, session)
        rendezvous = HttpRendezvous(broker.base_url, session)
        poll = asyncio.create_task(volunteer.poll(new_volunteer_id(), 1))
        client = asyncio.create_task(rendezvous.exchange(OFFER, EGRESS))
        match = await asyncio.wait_for(poll, 10)
        assert match is not None
        assert await volunteer.answer(match.id, ANSWER)
        assert await asyncio.wait_for(client, 10) == ANSWER
        assert await _stats(session, broker) == {
            "volunteers_online": 8,
            "clients_helped_last_hour": 8,
        }


def _polls_held(broker: Broker) -> int:
    return sum(available.count for available in broker.store.available_volunteers())


async def test_paired_client_is_served_only_by_the_paired_volunteer(broker: Broker) -> None:
    async with aiohttp.ClientSession() as session:
        public = BrokerClient(broker.base_url, session)
        paired = BrokerClient(broker.base_url, session)
        public_poll = asyncio.create_task(public.poll(new_volunteer_id(), 5))
        # The public volunteer waits at the broker before the paired client comes, so that
        # giving the client to it would be possible (and wrong).
        await wait_until(lambda: _polls_held(broker) == 1, "the public poll held")
        paired_client = HttpRendezvous(broker.base_url, session, pairing=CODE)
        exchange = asyncio.create_task(paired_client.exchange(OFFER, EGRESS))
        paired_poll = asyncio.create_task(paired.poll(new_volunteer_id(), 1, pairing=CODE))
        match = await asyncio.wait_for(paired_poll, 10)
        assert match is not None
        assert await paired.answer(match.id, ANSWER)
        assert await asyncio.wait_for(exchange, 10) == ANSWER
        assert not public_poll.done()
        # a public client is never given to a paired volunteer
        paired_poll = asyncio.create_task(paired.poll(new_volunteer_id(), 1, pairing=CODE))
        await wait_until(lambda: _polls_held(broker) == 2, "the paired poll held too")
        public_client = HttpRendezvous(broker.base_url, session)
        public_exchange = asyncio.create_task(public_client.exchange(OFFER, EGRESS))
        public_match = await asyncio.wait_for(public_poll, 10)
        assert public_match is not None
        assert await public.answer(public_match.id, ANSWER)
        assert await asyncio.wait_for(public_exchange, 10) == ANSWER
        assert not paired_poll.done()
        paired_poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await paired_poll
        # with no volunteer holding its code, a paired client is refused like any other
        lonely = HttpRendezvous(broker.base_url, session, pairing="pair_" + "Z" * 16)
        with pytest.raises(NoVolunteerError):
            await asyncio.wait_for(lonely.exchange(OFFER, EGRESS), 10)


def test_a_bad_pairing_code_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pairing"):
        HttpRendezvous("http://127.0.0.1:1", pairing="short")


def test_the_widget_is_one_small_file_with_no_external_requests() -> None:
    source = (WEB / "widget.js").read_text("utf-8")
    assert len(source.encode("utf-8")) < 60 * 1024
    # no framework, no import, no fetch of anything but the broker's own paths
    assert "import " not in source and "require(" not in source
    assert "https://" not in source and "http://" not in source
