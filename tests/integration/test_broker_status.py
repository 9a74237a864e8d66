"""The broker's metrics by NAT type and kind, its match-latency histogram, and its /status
page (plain HTML, no script, counts rounded up to multiples of 8)."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig

pytestmark = pytest.mark.integration

OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
)
EGRESS = "ws://127.0.0.1:8443/v1/relay"


async def _post(session: aiohttp.ClientSession, url: str, fields: dict[str, object]) -> int:
    async with session.post(
        url,
        data=json.dumps({"version": 1, **fields}).encode(),
        headers={"Content-Type": "application/json"},
    ) as response:
        await response.read()
        return response.status


async def _text(session: aiohttp.ClientSession, url: str) -> tuple[aiohttp.ClientResponse, str]:
    async with session.get(url) as response:
        return response, await response.text()


async def test_metrics_and_status_page_count_volunteers_by_nat_and_kind() -> None:
    config = BrokerConfig(host="127.0.0.1", port=0, allowed_egresses=(EGRESS,), poll_timeout=5.0)
    async with Broker(config, CollectorRegistry()) as broker, aiohttp.ClientSession() as session:
        polls = [
            asyncio.create_task(
                _post(
                    session,
                    broker.base_url + "/v1/volunteer/poll",
                    {
                        "volunteer_id": f"volunteer-000000000{number}",
                        "capacity": 2,
                        "nat": "unrestricted",
                        "kind": kind,
                    },
                )
            )
            for number, kind in ((1, "python"), (2, "python-browser-engine"))
        ]
        for _ in range(500):
            if len(broker.store.available_volunteers()) == 2:
                break
            await asyncio.sleep(0.01)
        _, metrics = await _text(session, broker.base_url + "/metrics")
        assert (
            'ferry_broker_volunteers_available{kind="python",nat="unrestricted"} 8.0' in metrics
        )  # one volunteer, rounded up
        assert 'ferry_broker_volunteers_available{kind="browser",nat="unknown"} 0.0' in metrics
        assert (
            'ferry_broker_volunteers_available{kind="python-browser-engine",nat="unrestricted"} 8.0'
            in metrics
        )
        response, page = await _text(session, broker.base_url + "/status")
        assert response.status == 200 and response.content_type == "text/html"
        assert "script-src" not in response.headers["Content-Security-Policy"]
        assert "<script" not in page and "<svg" in page
        row = re.search(r"<tr><th>unrestricted</th>(.*?)</tr>", page)
        assert row is not None
        # browser (the widget), python (aiortc), python-browser-engine, unknown
        assert re.findall(r"<td>(\d+)</td>", row.group(1)) == ["0", "8", "8", "0"]
        assert "<th>python-browser-engine</th>" in page

        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)


async def test_a_match_is_timed_in_the_latency_histogram_and_charted() -> None:
    config = BrokerConfig(host="127.0.0.1", port=0, allowed_egresses=(EGRESS,), client_timeout=5)
    async with Broker(config, CollectorRegistry()) as broker, aiohttp.ClientSession() as session:
        offer = asyncio.create_task(
            _post(session, broker.base_url + "/v1/client/offer", {"offer": OFFER, "egress": EGRESS})
        )
        for _ in range(500):
            if broker.store.waiting_clients():
                break
            await asyncio.sleep(0.01)
        poll = {"volunteer_id": "volunteer-0000000001", "capacity": 1}
        assert await _post(session, broker.base_url + "/v1/volunteer/poll", poll) == 200
        _, metrics = await _text(session, broker.base_url + "/metrics")
        assert "ferry_broker_match_latency_seconds_count 1.0" in metrics
        assert "ferry_broker_matches_total 1.0" in metrics
        assert "ferry_broker_offers_total 1.0" in metrics
        _, page = await _text(session, broker.base_url + "/status")
        points = re.findall(r'<polyline fill="none" stroke="#d9730d"[^>]*points="([^"]*)"', page)
        assert len(points) == 1
        heights = {pair.split(",")[1] for pair in points[0].split()}
        assert len(heights) == 2  # zero for the earlier minutes, 8 (rounded) for this one
        offer.cancel()
        await asyncio.gather(offer, return_exceptions=True)
