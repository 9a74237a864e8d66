"""Brokers sharing their state through a real Redis server (Debian's redis-server).

Two broker instances on one Redis, over HTTP: a client offering through one is answered by a
volunteer polling the other; what is kept of a client expires in Redis too; the rate limits
hold across instances; a broker restarted mid-poll loses its volunteer for no longer than one
poll interval; and a whole WebRTC chain runs through both brokers. The matching policy on
Redis (NAT classes, pairing codes, across instances) is pinned by the matchmaking vectors
(test_matchmaking_vectors.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as redis
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.client.app import ClientApp, ClientConfig
from ferry.client.local_proxy import LocalProxyConfig
from ferry.client.rendezvous import HttpRendezvous
from ferry.client.session import TunnelConfig
from ferry.demo import LOOPBACK_WEBRTC
from ferry.egress.policy import DestinationPolicy
from ferry.egress.server import Egress, EgressConfig
from ferry.transport.webrtc import OfferingPeer
from ferry.volunteer.relay import Volunteer, VolunteerConfig
from tests.integration.chain import echo_server, socks5_connect
from tests.integration.processes import Role, free_port
from tests.integration.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration

OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
)
ANSWER = OFFER + "a=setup:active\r\n"
EGRESS = "ws://127.0.0.1:8443/v1/relay"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def keys(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    """A plain Redis client to look at the brokers' keys."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


def _config(redis_server: RedisServer, **changes: object) -> BrokerConfig:
    config = BrokerConfig(
        host="127.0.0.1", port=0, allowed_egresses=(EGRESS,), redis_url=redis_server.url
    )
    return replace(config, **changes)  # type: ignore[arg-type]


async def _post(
    session: aiohttp.ClientSession, url: str, fields: dict[str, object]
) -> tuple[int, dict[str, object]]:
    body = json.dumps({"version": 1, **fields}).encode()
    async with session.post(
        url, data=body, headers={"Content-Type": "application/json"}
    ) as response:
        return response.status, await response.json()


def _offer(**fields: object) -> dict[str, object]:
    return {"offer": OFFER, "egress": EGRESS, **fields}


def _poll(number: int, **fields: object) -> dict[str, object]:
    return {"volunteer_id": f"volunteer-{number:010d}", "capacity": 1, **fields}


async def _wait_for_polls(broker: Broker, count: int) -> None:
    for _ in range(500):
        if sum(a.count for a in broker.store.available_volunteers()) == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the broker never held {count} polls")


async def test_client_through_one_instance_answered_by_a_volunteer_polling_another(
    redis_server: RedisServer,
) -> None:
    async with (
        Broker(_config(redis_server), CollectorRegistry()) as first,
        Broker(_config(redis_server), CollectorRegistry()) as second,
        aiohttp.ClientSession() as session,
    ):
        poll = asyncio.create_task(
            _post(session, second.base_url + "/v1/volunteer/poll", _poll(1, kind="python"))
        )
        await _wait_for_polls(second, 1)
        offer = asyncio.create_task(_post(session, first.base_url + "/v1/client/offer", _offer()))
        status, polled = await poll
        assert status == 200
        match = polled["match"]
        assert isinstance(match, dict) and match["offer"] == OFFER
        status, accepted = await _post(
            session,
            second.base_url + "/v1/volunteer/answer",
            {"match_id": match["id"], "answer": ANSWER},
        )
        assert (status, accepted) == (200, {"ok": True})
        assert await offer == (200, {"answer": ANSWER})


async def test_waiting_client_is_served_by_a_poll_on_another_instance(
    redis_server: RedisServer,
) -> None:
    async with (
        Broker(_config(redis_server), CollectorRegistry()) as first,
        Broker(_config(redis_server), CollectorRegistry()) as second,
        aiohttp.ClientSession() as session,
    ):
        offer = asyncio.create_task(_post(session, first.base_url + "/v1/client/offer", _offer()))
        for _ in range(500):
            if first.store.waiting_clients() == 1:
                break
            await asyncio.sleep(0.01)
        status, polled = await _post(session, second.base_url + "/v1/volunteer/poll", _poll(1))
        assert status == 200
        match = polled["match"]
        assert isinstance(match, dict)
        # the answer may come through either instance: here through the client's own
        status, _ = await _post(
            session,
            first.base_url + "/v1/volunteer/answer",
            {"match_id": match["id"], "answer": ANSWER},
        )
        assert status == 200
        assert await offer == (200, {"answer": ANSWER})
        # a second answer to the same match is refused, on any instance
        status, refused = await _post(
            session,
            second.base_url + "/v1/volunteer/answer",
            {"match_id": match["id"], "answer": ANSWER},
        )
        assert (status, refused["field"]) == (404, "match_id")


async def test_what_is_kept_of_a_client_expires_in_redis_too(
    redis_server: RedisServer, keys: redis.Redis
) -> None:
    config = _config(redis_server, client_timeout=2.0, answer_timeout=1.5)
    async with (
        Broker(config, CollectorRegistry()) as broker,
        aiohttp.ClientSession() as session,
    ):
        offer = asyncio.create_task(_post(session, broker.base_url + "/v1/client/offer", _offer()))
        for _ in range(500):
            if await keys.keys("ferry:client:*"):
                break
            await asyncio.sleep(0.01)
        client_keys = [
            *await keys.keys("ferry:client:*"),
            *await keys.keys("ferry:clients:*"),
            "ferry:waiting-clients",
        ]
        assert len(client_keys) == 3
        for key in client_keys:
            ttl = await keys.pttl(key)
            assert 0 < ttl <= 3000, (key, ttl)  # client_timeout + 1 s of grace
        # matched: the match id lives no longer than the answer may take
        status, polled = await _post(session, broker.base_url + "/v1/volunteer/poll", _poll(1))
        assert status == 200 and polled["match"] is not None
        [match_key] = await keys.keys("ferry:match:*")
        assert 0 < await keys.pttl(match_key) <= 1500
        status, _ = await offer  # nobody answers: the client is told no volunteer came
        assert status == 503
        assert await keys.keys("ferry:client*") == []
        assert await keys.keys("ferry:match:*") == []
        assert await keys.zcard("ferry:waiting-clients") == 0


async def test_offer_rate_limit_is_counted_across_instances(redis_server: RedisServer) -> None:
    config = _config(redis_server, offer_burst=3, offer_rate=0.01, client_timeout=0.1)
    async with (
        Broker(config, CollectorRegistry()) as first,
        Broker(config, CollectorRegistry()) as second,
        aiohttp.ClientSession() as session,
    ):
        statuses = [
            (await _post(session, broker.base_url + "/v1/client/offer", _offer()))[0]
            for broker in (first, first, second)
        ]
        assert statuses == [503, 503, 503]  # allowed, but no volunteer came
        async with session.post(
            second.base_url + "/v1/client/offer",
            data=json.dumps({"version": 1, **_offer()}),
            headers={"Content-Type": "application/json"},
        ) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) >= 1
            assert (await response.json())["field"] is None


async def test_broker_restarted_mid_poll_loses_its_volunteer_for_at_most_one_poll_interval(
    redis_server: RedisServer,
) -> None:
    """The client's wait (``client_timeout``) is one poll interval: its offer, made right
    after the restart, is answered by the volunteer that was polling the old instance."""
    poll_interval = 3.0
    config = _config(redis_server, poll_timeout=poll_interval, client_timeout=poll_interval)
    client_side = Broker(config, CollectorRegistry())
    polled = Broker(config, CollectorRegistry())
    await client_side.start()
    port = int((await polled.start()).rsplit(":", 1)[1])
    volunteer = Volunteer(
        VolunteerConfig(
            broker_url=polled.base_url,
            webrtc=LOOPBACK_WEBRTC,
            poll_backoff_initial=0.5,
            allow_internal_egress=True,
        )
    )
    peer = OfferingPeer(LOOPBACK_WEBRTC)
    restarted: Broker | None = None
    try:
        volunteer.start()
        await _wait_for_polls(polled, 1)
        assert [a.kind for a in polled.store.available_volunteers()] == ["python"]
        await polled.close()  # mid-poll
        restarted = Broker(replace(config, port=port), CollectorRegistry())
        await restarted.start()
        async with aiohttp.ClientSession() as session:
            rendezvous = HttpRendezvous(client_side.base_url, session)
            answer = await rendezvous.exchange(await peer.create_offer(), EGRESS)
        # a real answer from the volunteer (its relay then fails: no egress listens here)
        assert answer.startswith("v=0") and "a=fingerprint:" in answer
    finally:
        await peer.close()
        await volunteer.close()
        if restarted is not None:
            await restarted.close()
        await client_side.close()


def _broker_process(redis_server: RedisServer, folder: Path, port: int, name: str) -> Role:
    return Role(
        name,
        [
            "broker",
            "--listen",
            f"127.0.0.1:{port}",
            "--egress",
            EGRESS,
            "--redis",
            redis_server.url,
            "--poll-timeout",
            "5",
        ],
        folder,
    )


async def test_broker_killed_mid_poll_loses_its_volunteer_for_at_most_one_poll_interval(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """As above, but the instance holding the poll is SIGKILLed (its state stays in Redis):
    once the dead instance's liveness key lapses (3 s), its stale poll is never matched, and
    the volunteer's next poll, through the restarted instance, replaces it."""
    poll_interval = 5.0
    config = _config(redis_server, client_timeout=poll_interval)
    port = free_port()
    polled = _broker_process(redis_server, tmp_path, port, "polled")
    restarted: Role | None = None
    volunteer: Volunteer | None = None
    peer = OfferingPeer(LOOPBACK_WEBRTC)
    try:
        url = await asyncio.to_thread(lambda: polled.wait_ready()["broker"])
        async with (
            Broker(config, CollectorRegistry()) as client_side,
            redis.Redis.from_url(redis_server.url, decode_responses=True) as keys,
        ):
            volunteer = Volunteer(
                VolunteerConfig(
                    broker_url=url,
                    webrtc=LOOPBACK_WEBRTC,
                    poll_backoff_initial=0.5,
                    poll_backoff_max=1.0,  # back within a second of the restart
                    allow_internal_egress=True,
                )
            )
            volunteer.start()
            for _ in range(500):
                if await keys.keys("ferry:poll:*"):
                    break
                await asyncio.sleep(0.01)
            [stale] = await keys.keys("ferry:poll:*")
            polled.kill()  # mid-poll: its poll stays in Redis, held by no one
            restarted = _broker_process(redis_server, tmp_path, port, "restarted")
            await asyncio.to_thread(restarted.wait_ready)
            # the dead instance's liveness lapses within ALIVE_FOR (3 s, less than the poll
            # interval); from then on nothing is matched with the poll it held
            for _ in range(500):
                if len(await keys.keys("ferry:alive:*")) == 2:  # client_side and restarted
                    break
                await asyncio.sleep(0.02)
            async with aiohttp.ClientSession() as session:
                rendezvous = HttpRendezvous(client_side.base_url, session)
                answer = await rendezvous.exchange(await peer.create_offer(), EGRESS)
            assert answer.startswith("v=0") and "a=fingerprint:" in answer
            assert stale.startswith("ferry:poll:")
    finally:
        await peer.close()
        if volunteer is not None:
            await volunteer.close()
        polled.stop()
        if restarted is not None:
            restarted.stop()


async def test_whole_chain_through_two_brokers_sharing_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    egress = Egress(
        EgressConfig(
            state_dir=tmp_path / "egress",
            host="127.0.0.1",
            port=0,
            policy=DestinationPolicy(allow_private=True),
        ),
        registry=CollectorRegistry(),
    )
    bridge = await egress.start()
    config = replace(_config(redis_server), allowed_egresses=(bridge.url,))
    client_side = Broker(config, CollectorRegistry())
    volunteer_side = Broker(config, CollectorRegistry())
    volunteers: list[Volunteer] = []
    client: ClientApp | None = None
    try:
        await client_side.start()
        await volunteer_side.start()
        for _ in range(2):
            volunteer = Volunteer(
                VolunteerConfig(
                    broker_url=volunteer_side.base_url,
                    webrtc=LOOPBACK_WEBRTC,
                    allow_internal_egress=True,
                )
            )
            volunteer.start()
            volunteers.append(volunteer)
        client = ClientApp(
            ClientConfig(
                broker_url=client_side.base_url,
                tunnel=TunnelConfig(bridge=bridge, volunteers=2, webrtc=LOOPBACK_WEBRTC),
                proxy=LocalProxyConfig(host="127.0.0.1", port=0),
            ),
            registry=CollectorRegistry(),
        )
        proxy = await client.start()
        async with echo_server() as port:
            reply, reader, writer = await socks5_connect(proxy, "127.0.0.1", port)
            try:
                assert reply == 0
                writer.write(b"through two brokers and one redis\n")
                async with asyncio.timeout(30):
                    assert await reader.readline() == b"through two brokers and one redis\n"
            finally:
                writer.close()
        assert sum(volunteer.clients_served for volunteer in volunteers) >= 1
    finally:
        if client is not None:
            await client.close()
        for volunteer in volunteers:
            await volunteer.close()
        await volunteer_side.close()
        await client_side.close()
        await egress.close()
