"""A broker that names an egress inside the volunteer's own machine (issue 15, item 6): the
Python volunteer refuses it, says why, counts it, and never connects there."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from ferry.demo import LOOPBACK_WEBRTC
from ferry.transport.webrtc import OfferingPeer
from ferry.volunteer.relay import Volunteer, VolunteerConfig

from .fake_broker import FakeBroker, Listener

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _rejected(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("ferry_volunteer_rejected_total", {"reason": reason})
    return value or 0.0


async def _volunteer_against(broker: FakeBroker, **changes: object) -> CollectorRegistry:
    """Run a volunteer until it polled again after the broker's three matches."""
    registry = CollectorRegistry()
    config = replace(VolunteerConfig(broker_url=broker.url, webrtc=LOOPBACK_WEBRTC), **changes)
    volunteer = Volunteer(config, registry=registry)
    volunteer.start()
    try:
        await broker.wait_for_polls(broker.matches + 1)
    finally:
        await volunteer.close()
    return registry


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_a_loopback_egress_named_by_the_broker_is_refused_and_never_contacted(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ferry.volunteer.relay")
    async with Listener().running() as victim:
        egress = f"ws://{host}:{victim.port}/admin/ws"
        async with FakeBroker(egress=egress).running() as broker:
            registry = await _volunteer_against(broker)
        assert victim.connections == 0
        assert broker.answers == []  # not even answered: no peer connection either
    assert _rejected(registry, "egress_internal_address") == broker.matches
    refusals = [r.getMessage() for r in caplog.records if "refusing egress" in r.getMessage()]
    assert len(refusals) == 1, refusals  # logged once, counted every time
    assert "are not egresses" in refusals[0]


async def test_an_egress_off_the_allowlist_is_refused() -> None:
    async with Listener().running() as victim:
        egress = f"ws://127.0.0.1:{victim.port}/admin/ws"
        async with FakeBroker(egress=egress).running() as broker:
            registry = await _volunteer_against(
                broker,
                allow_internal_egress=True,
                egress_allow=(f"ws://127.0.0.1:{victim.port}/v1/relay",),
            )
        assert victim.connections == 0
        assert broker.answers == []
    assert _rejected(registry, "egress_not_allowed") == broker.matches


async def test_with_internal_egresses_allowed_the_volunteer_answers_and_connects() -> None:
    """The control: the same broker and listener, with the test networks' switch on."""
    peer = OfferingPeer(LOOPBACK_WEBRTC)
    try:
        offer = await peer.create_offer()
        async with Listener().running() as victim:
            egress = f"ws://127.0.0.1:{victim.port}/v1/relay"
            async with FakeBroker(egress=egress, offer=offer, matches=1).running() as broker:
                config = VolunteerConfig(
                    broker_url=broker.url, webrtc=LOOPBACK_WEBRTC, allow_internal_egress=True
                )
                volunteer = Volunteer(config, registry=CollectorRegistry())
                volunteer.start()
                try:
                    async with asyncio.timeout(30):
                        await victim.connected.wait()
                finally:
                    await volunteer.close()
                assert len(broker.answers) == 1
    finally:
        await peer.close()
