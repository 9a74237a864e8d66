"""NAT discovery's asyncio side on loopback: the driver, the monitor and the ``nat`` field.

The test STUN server listens on 127.0.0.1 and 127.0.0.2 (both loopback), so the host sees
its own address mapped: no NAT, endpoint-independent filtering, unrestricted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.client.rendezvous import HttpRendezvous
from ferry.core.broker_messages import (
    ClientAnswer,
    PollResponse,
    decode_client_offer,
    decode_volunteer_poll,
    encode,
)
from ferry.core.nat_behaviour import (
    FilteringBehaviour,
    MappingBehaviour,
    NatClass,
    NatDiscoveryConfig,
    StunServer,
)
from ferry.transport.stun import (
    NatBehaviourMonitor,
    discover_nat_behaviour,
    discover_with_servers,
)
from ferry.volunteer.relay import Volunteer, VolunteerConfig

from ..support_nat import Rfc5780StunServer

pytestmark = pytest.mark.timeout(60)

QUICK = NatDiscoveryConfig(retransmit_interval=0.1, request_timeout=0.3, rediscovery_interval=0.05)
ANSWER_SDP = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"


@asynccontextmanager
async def stun_server() -> AsyncIterator[StunServer]:
    server = Rfc5780StunServer(("127.0.0.1", "127.0.0.2"))
    await server.start()
    try:
        yield StunServer("127.0.0.1", server.ports[0])
    finally:
        server.close()


async def test_discovery_on_loopback_sees_no_nat() -> None:
    async with stun_server() as server:
        behaviour = await discover_nat_behaviour(server)
    assert behaviour.mapping is MappingBehaviour.NO_NAT
    assert behaviour.filtering is FilteringBehaviour.ENDPOINT_INDEPENDENT
    assert behaviour.nat_class is NatClass.UNRESTRICTED


async def test_a_silent_server_is_skipped_and_none_at_all_is_unknown() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent_server = StunServer("127.0.0.1", silent.getsockname()[1])
        async with stun_server() as server:
            behaviour = await discover_with_servers((silent_server, server), QUICK)
        assert behaviour.nat_class is NatClass.UNRESTRICTED
        alone = await discover_with_servers((silent_server,), QUICK)
    assert alone.nat_class is NatClass.UNKNOWN
    assert (await discover_with_servers((), QUICK)).nat_class is NatClass.UNKNOWN


async def test_the_monitor_rediscovers_and_logs_one_line_without_addresses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ferry.transport.stun")
    async with stun_server() as server:
        monitor = NatBehaviourMonitor((server,), QUICK, role="client")
        assert monitor.nat_class is NatClass.UNKNOWN
        monitor.start()
        try:
            await asyncio.wait_for(monitor.discovered.wait(), 10)
            assert monitor.nat_class is NatClass.UNRESTRICTED
            for _ in range(200):
                if monitor.discoveries >= 3:
                    break
                await asyncio.sleep(0.05)
            assert monitor.discoveries >= 3
        finally:
            await monitor.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "ferry.transport.stun"]
    assert lines == ["client NAT: unrestricted (mapping no NAT, filtering endpoint-independent)"]


async def test_a_monitor_without_servers_stays_unknown_and_starts_nothing() -> None:
    monitor = NatBehaviourMonitor((), role="volunteer")
    monitor.start()
    await asyncio.sleep(0)
    assert not monitor.discovered.is_set()
    assert monitor.nat_class is NatClass.UNKNOWN
    await monitor.close()


@asynccontextmanager
async def recording_broker() -> AsyncIterator[tuple[str, list[bytes], list[bytes]]]:
    """A stand-in broker that records offers and polls (no volunteer, no client)."""
    offers: list[bytes] = []
    polls: list[bytes] = []

    async def offer(request: web.Request) -> web.Response:
        offers.append(await request.read())
        return web.Response(body=encode(ClientAnswer(answer=ANSWER_SDP)))

    async def poll(request: web.Request) -> web.Response:
        polls.append(await request.read())
        await asyncio.sleep(0.02)
        return web.Response(body=encode(PollResponse(match=None)))

    app = web.Application()
    app.router.add_post("/v1/client/offer", offer)
    app.router.add_post("/v1/volunteer/poll", poll)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", offers, polls
    finally:
        await runner.cleanup()


async def test_offers_carry_the_class_the_client_knows_at_that_moment() -> None:
    current = NatClass.UNKNOWN
    async with recording_broker() as (url, offers, _):
        rendezvous = HttpRendezvous(url, nat_class=lambda: current)
        try:
            await rendezvous.exchange(ANSWER_SDP, "ws://127.0.0.1:9/v1/relay")
            current = NatClass.RESTRICTED
            await rendezvous.exchange(ANSWER_SDP, "ws://127.0.0.1:9/v1/relay")
        finally:
            await rendezvous.close()
    assert [decode_client_offer(body).nat for body in offers] == [
        NatClass.UNKNOWN,
        NatClass.RESTRICTED,
    ]
    assert b'"nat"' not in offers[0]


async def test_a_volunteer_with_stun_reports_its_class_in_its_polls() -> None:
    async with stun_server() as server, recording_broker() as (url, _, polls):
        volunteer = Volunteer(
            VolunteerConfig(
                broker_url=url,
                stun_servers=(server,),
                nat_discovery=QUICK,
                allow_internal_egress=True,
            )
        )
        volunteer.start()
        try:
            for _ in range(400):
                if any(decode_volunteer_poll(body).nat is NatClass.UNRESTRICTED for body in polls):
                    break
                await asyncio.sleep(0.025)
        finally:
            await volunteer.close()
    classes = [decode_volunteer_poll(body).nat for body in polls]
    assert NatClass.UNRESTRICTED in classes
    # once known, every later poll carries it
    assert NatClass.UNKNOWN not in classes[classes.index(NatClass.UNRESTRICTED) :]


async def test_the_broker_refuses_a_bad_nat_class_naming_the_field_and_counts_it() -> None:
    registry = CollectorRegistry()
    broker = Broker(
        BrokerConfig(host="127.0.0.1", port=0, allowed_egresses=("ws://127.0.0.1:9/v1/relay",)),
        registry=registry,
    )
    url = await broker.start()
    body = b'{"version":1,"volunteer_id":"vvvvvvvvvvvvvvvv","capacity":1,"nat":"symmetric"}'
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{url}/v1/volunteer/poll",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response,
        ):
            assert response.status == 400
            assert (await response.json())["field"] == "nat"
    finally:
        await broker.close()
    samples = [
        sample
        for metric in registry.collect()
        if metric.name == "ferry_broker_rejected"
        for sample in metric.samples
        if sample.name == "ferry_broker_rejected_total" and sample.labels["reason"] == "bad_nat"
    ]
    assert [sample.value for sample in samples] == [1.0]
