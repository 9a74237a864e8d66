"""The self-check's front and STUN steps, wired to ``--front`` and ``--stun`` (real servers).

The front here is the broker's own loopback port reached under another name (the fronting
mechanics with TLS and nginx are tested in test_fronting.py); the STUN server is the tests'
RFC 5780 server on 127.0.0.1 and 127.0.0.2.
"""

from __future__ import annotations

import dataclasses
import socket
from urllib.parse import urlsplit

import pytest

from ferry.client.self_check import CheckStep, StepOutcome, StepResult
from ferry.core.nat_behaviour import NatDiscoveryConfig, StunServer

from ..support_nat import Rfc5780StunServer
from .client_network import ClientNetwork

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

QUICK_NAT = NatDiscoveryConfig(retransmit_interval=0.1, request_timeout=0.3)


def by_step(results: tuple[StepResult, ...]) -> dict[CheckStep, StepResult]:
    return {result.step: result for result in results}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_front_and_stun_steps_pass_when_both_answer() -> None:
    stun = Rfc5780StunServer(("127.0.0.1", "127.0.0.2"))
    await stun.start()
    try:
        async with ClientNetwork().running() as net:
            broker_port = urlsplit(net.broker_url).port
            config = dataclasses.replace(
                net.client_config(page=False),
                front=f"localhost:{broker_port}",
                stun_servers=(StunServer("127.0.0.1", stun.ports[0]),),
                nat_discovery=QUICK_NAT,
            )
            client = await net.start_client(config, connect=False)
            results = by_step(await client.self_check().run())
    finally:
        stun.close()
    assert results[CheckStep.FRONT].outcome is StepOutcome.OK, results[CheckStep.FRONT]
    assert results[CheckStep.FRONT].detail == f"through localhost:{broker_port}"
    assert results[CheckStep.STUN].outcome is StepOutcome.OK, results[CheckStep.STUN]
    assert results[CheckStep.STUN].detail.startswith("unrestricted (mapping no NAT")
    assert results[CheckStep.FETCH].outcome is StepOutcome.OK


async def test_a_silent_stun_server_fails_the_stun_step() -> None:
    async with ClientNetwork().running() as net:
        config = dataclasses.replace(
            net.client_config(page=False),
            stun_servers=(StunServer("127.0.0.1", free_udp_port()),),
            nat_discovery=QUICK_NAT,
        )
        client = await net.start_client(config, connect=False)
        results = by_step(await client.self_check().run())
    assert results[CheckStep.STUN].outcome is StepOutcome.FAILED
    assert "no STUN server answered" in results[CheckStep.STUN].detail
    assert results[CheckStep.FRONT].outcome is StepOutcome.SKIPPED
    # The check stops at the first failing step: the later ones are reported as not run.
    assert results[CheckStep.FETCH].outcome is StepOutcome.NOT_RUN


async def test_a_front_that_does_not_answer_fails_the_front_step() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]
        async with ClientNetwork().running() as net:
            config = dataclasses.replace(
                net.client_config(page=False), front=f"localhost:{dead_port}"
            )
            client = await net.start_client(config, connect=False)
            results = by_step(await client.self_check().run())
    assert results[CheckStep.BROKER].outcome is StepOutcome.OK
    assert results[CheckStep.FRONT].outcome is StepOutcome.FAILED
