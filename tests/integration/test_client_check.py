"""``ferry client --check`` (ferry.client.self_check) against real roles on loopback."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from ferry.client.messages import catalogue
from ferry.client.rendezvous import HttpRendezvous
from ferry.client.self_check import (
    CheckStep,
    SelfCheck,
    StepOutcome,
    StepResult,
    format_summary,
    parse_check_url,
)
from ferry.core.bridge_line import BridgeLine
from ferry.core.codes import ReplyCode
from ferry.core.self_check_target import SELF_CHECK_ANSWER, SELF_CHECK_TARGET
from ferry.errors import BrokerError, ChannelClosedError, FerryError
from ferry.transport.quic import QuicSettings

from .chain import socks5_connect
from .client_network import CLIENT_WEBRTC, FAST_CHECK, ORIGIN_NAME, ClientNetwork

pytestmark = pytest.mark.integration


def outcomes(results: tuple[StepResult, ...]) -> dict[CheckStep, StepOutcome]:
    return {result.step: result.outcome for result in results}


def failed_step(results: tuple[StepResult, ...]) -> CheckStep:
    failures = [result.step for result in results if result.outcome is StepOutcome.FAILED]
    assert len(failures) == 1, results
    return failures[0]


async def test_every_step_passes_in_a_healthy_network() -> None:
    async with ClientNetwork().running() as net:
        client = await net.start_client(net.client_config(page=False), connect=False)
        heard: list[StepResult] = []
        results = await client.self_check().run(heard.append)
    assert heard == list(results)
    assert [result.step for result in results] == list(CheckStep)
    assert outcomes(results) == {
        CheckStep.BROKER: StepOutcome.OK,
        CheckStep.FRONT: StepOutcome.SKIPPED,
        CheckStep.STUN: StepOutcome.SKIPPED,
        CheckStep.VOLUNTEER: StepOutcome.OK,
        CheckStep.CHANNEL: StepOutcome.OK,
        CheckStep.IDENTITY: StepOutcome.OK,
        CheckStep.FETCH: StepOutcome.OK,
    }
    assert results[-1].explanation == "check.fetch.ok_egress"
    assert format_summary(results, catalogue("en")) == "Every step passed: ferry works."


async def test_fetch_of_a_given_url_goes_through_the_chain() -> None:
    async with ClientNetwork().running() as net:
        url = f"http://{ORIGIN_NAME}:{net.origin.port}/hello"
        config = net.client_config(page=False, check_fetch=parse_check_url(url))
        client = await net.start_client(config, connect=False)
        results = await client.self_check().run()
    assert results[-1].outcome is StepOutcome.OK
    assert results[-1].detail == "HTTP/1.1 200 OK"
    assert net.resolver.asked == [ORIGIN_NAME]


async def test_broker_stopped_fails_the_first_step() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_broker = f"http://127.0.0.1:{unused.getsockname()[1]}"
        async with ClientNetwork().running(volunteers=0) as net:
            config = net.client_config(page=False, broker_url=dead_broker)
            client = await net.start_client(config, connect=False)
            results = await client.self_check().run()
    assert failed_step(results) is CheckStep.BROKER
    assert results[0].advice == "check.broker.advice"
    assert all(result.outcome is StepOutcome.NOT_RUN for result in results[3:])
    summary = format_summary(results, catalogue("en"))
    assert summary == "The check failed at step 1: The broker, directly."


async def test_no_volunteer_fails_the_volunteer_step() -> None:
    async with ClientNetwork().running(volunteers=0, broker_client_timeout=1.0) as net:
        client = await net.start_client(net.client_config(page=False), connect=False)
        results = await client.self_check().run()
    assert failed_step(results) is CheckStep.VOLUNTEER
    assert outcomes(results)[CheckStep.BROKER] is StepOutcome.OK
    volunteer = results[3]
    assert volunteer.explanation == "check.volunteer.failed"
    assert "no volunteer" in volunteer.detail
    assert format_summary(results, catalogue("ru")) == (
        "Проверка не прошла на шаге 4: Волонтёр откликнулся."
    )


async def test_wrong_fingerprint_fails_the_identity_step() -> None:
    async with ClientNetwork().running() as net:
        assert net.bridge is not None
        wrong = BridgeLine(net.bridge.url, bytes(32))
        client = await net.start_client(net.client_config(page=False, bridge=wrong), connect=False)
        results = await client.self_check().run()
    assert failed_step(results) is CheckStep.IDENTITY
    identity = results[5]
    assert identity.explanation == "check.identity.mismatch"
    assert identity.advice == "check.identity.advice_mismatch"
    assert outcomes(results)[CheckStep.FETCH] is StepOutcome.NOT_RUN


async def test_only_the_exact_self_check_target_is_answered_by_the_egress() -> None:
    async with ClientNetwork().running() as net:
        client = await net.start_client(net.client_config(page=False))
        code, reader, writer = await socks5_connect(
            client.proxy_address, SELF_CHECK_TARGET.host, SELF_CHECK_TARGET.port
        )
        assert code == 0
        assert await asyncio.wait_for(reader.read(), 10) == SELF_CHECK_ANSWER
        writer.close()
        # Another port of the same name is an ordinary destination: looked up, and unknown.
        code, _, writer = await socks5_connect(client.proxy_address, SELF_CHECK_TARGET.host, 2)
        writer.close()
        assert code != ReplyCode.SUCCEEDED  # refused: the name resolves nowhere
        assert net.resolver.asked == [SELF_CHECK_TARGET.host]


class FixedProbe:
    """A ReachabilityProbe that answers ``detail`` or fails with ``error``."""

    def __init__(self, detail: str = "", error: FerryError | None = None) -> None:
        self.detail = detail
        self.error = error
        self.calls = 0

    async def probe(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.detail


async def test_with_a_front_a_blocked_direct_broker_is_bypassed_and_probes_are_reported() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        blocked = f"http://127.0.0.1:{unused.getsockname()[1]}"
        async with ClientNetwork().running() as net, aiohttp.ClientSession() as http:
            assert net.bridge is not None
            front = FixedProbe("the broker answered through cdn.example")
            nat = FixedProbe("endpoint-independent mapping")
            check = SelfCheck(
                broker_url=blocked,  # what the censor blocks
                bridge=net.bridge,
                rendezvous=HttpRendezvous(net.broker_url, http),  # stands for the fronted path
                http=http,
                webrtc=CLIENT_WEBRTC,
                quic=QuicSettings(),
                front_probe=front,
                nat_probe=nat,
                config=FAST_CHECK,
            )
            results = await check.run()
    assert outcomes(results) == {
        CheckStep.BROKER: StepOutcome.BYPASSED,
        CheckStep.FRONT: StepOutcome.OK,
        CheckStep.STUN: StepOutcome.OK,
        CheckStep.VOLUNTEER: StepOutcome.OK,
        CheckStep.CHANNEL: StepOutcome.OK,
        CheckStep.IDENTITY: StepOutcome.OK,
        CheckStep.FETCH: StepOutcome.OK,
    }
    assert results[0].explanation == "check.broker.bypassed"
    assert results[2].detail == "endpoint-independent mapping"
    assert front.calls == nat.calls == 1
    assert format_summary(results, catalogue("en")) == "Every step passed: ferry works."


async def test_a_failing_front_or_stun_probe_names_its_step() -> None:
    async with ClientNetwork().running() as net, aiohttp.ClientSession() as http:
        assert net.bridge is not None
        for front, nat, step in (
            (FixedProbe(error=BrokerError("the front refused")), None, CheckStep.FRONT),
            (None, FixedProbe(error=ChannelClosedError("no STUN answer")), CheckStep.STUN),
        ):
            check = SelfCheck(
                broker_url=net.broker_url,
                bridge=net.bridge,
                rendezvous=HttpRendezvous(net.broker_url, http),
                http=http,
                webrtc=CLIENT_WEBRTC,
                quic=QuicSettings(),
                front_probe=front,
                nat_probe=nat,
                config=FAST_CHECK,
            )
            results = await check.run()
            assert failed_step(results) is step
            failure = results[1 if step is CheckStep.FRONT else 2]
            assert failure.explanation == f"check.{step.value}.failed"
            assert failure.advice == f"check.{step.value}.advice"
