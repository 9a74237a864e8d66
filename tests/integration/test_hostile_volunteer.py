"""A volunteer that swallows the client's traffic and sends junk back is dropped, and the
download finishes through an honest one (issue 15).

The hostile volunteer is real: it polls the broker, answers the client's offer with aiortc,
opens the data channel, and then never connects to the egress; it sends random datagrams to
the client instead. Before the fix, any datagram counted as a sign of life, so the junk kept
the path in the pool (and half the client's traffic going into it) for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.client.app import ClientApp, ClientConfig
from ferry.client.local_proxy import LocalProxyConfig
from ferry.client.session import TunnelConfig
from ferry.demo import LOOPBACK_WEBRTC
from ferry.transport.webrtc import AnsweringPeer
from ferry.volunteer.broker_client import BrokerClient, new_volunteer_id
from ferry.volunteer.relay import Volunteer, VolunteerConfig

from .chain import Origin, egress_and_broker, run_curl
from .client_network import CLIENT_WEBRTC

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class JunkVolunteer:
    """Answers one client, keeps its datagrams and sends random ones back until closed."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.swallowed = 0
        self.junk_sent = 0
        self.channel_closed = asyncio.Event()
        self.serving = asyncio.Event()

    async def run(self) -> None:
        peer = AnsweringPeer(LOOPBACK_WEBRTC)
        try:
            async with aiohttp.ClientSession() as session:
                broker = BrokerClient(self.broker_url, session)
                match = None
                for _ in range(30):  # bounded: at most 30 polls
                    match = await broker.poll(new_volunteer_id(), 1)
                    if match is not None:
                        break
                assert match is not None
                answer = await peer.accept_offer(match.offer)
                assert await broker.answer(match.id, answer)
            channel = await peer.wait_channel()

            def swallow(datagram: bytes) -> None:
                self.swallowed += 1

            channel.start(swallow, self.channel_closed.set)
            self.serving.set()
            for _ in range(6000):  # 10 ms apart: a minute at most
                if self.channel_closed.is_set():
                    return
                channel.send(os.urandom(1200))
                self.junk_sent += 1
                await asyncio.sleep(0.01)
        finally:
            await peer.close()


async def test_a_volunteer_returning_junk_is_dropped_and_the_download_finishes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ferry")
    origin = Origin()
    size = 4 * 1024 * 1024
    async with origin.running(), egress_and_broker() as (_, bridge, broker):
        junk = JunkVolunteer(broker.base_url)
        junk_task = asyncio.create_task(junk.run())
        await asyncio.sleep(0.3)  # the junk volunteer's poll waits first: it gets the client
        honest = Volunteer(
            VolunteerConfig(
                broker_url=broker.base_url, webrtc=LOOPBACK_WEBRTC, allow_internal_egress=True
            ),
            registry=CollectorRegistry(),
        )
        honest.start()
        client = ClientApp(
            ClientConfig(
                broker_url=broker.base_url,
                tunnel=TunnelConfig(
                    bridge=bridge, volunteers=2, spare_volunteers=0, webrtc=CLIENT_WEBRTC
                ),
                proxy=LocalProxyConfig(host="127.0.0.1", port=0),
            ),
            registry=CollectorRegistry(),
        )
        try:
            await client.start()
            await asyncio.wait_for(junk.serving.wait(), 30)
            assert client.proxy_address is not None
            host, port = client.proxy_address
            code, body, err = await run_curl(
                "--socks5-hostname",
                f"{host}:{port}",
                f"http://127.0.0.1:{origin.port}/bytes/{size}",
                timeout=90,
            )
            assert code == 0, err
            assert body == Origin.payload(size)
            # Dropped within a bounded time: the client gives the junk path up as silent.
            assert client.tunnel is not None
            pool = client.tunnel.pool
            for _ in range(600):  # 60 s at most
                if pool.policy.paths_dropped_silent >= 1:
                    break
                await asyncio.sleep(0.1)
            assert pool.policy.paths_dropped_silent >= 1
            assert pool.datagrams_refused >= 1  # the junk arrived and counted for nothing
            assert junk.swallowed >= 1 and junk.junk_sent >= 1
        finally:
            await client.close()
            await honest.close()
            junk_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, AssertionError):
                await junk_task
