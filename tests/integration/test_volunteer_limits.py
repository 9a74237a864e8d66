"""A volunteer's limits and its test-only impairment, through the whole chain on loopback.

Real broker, egress, Python volunteers and clients in this process (LoopbackNetwork), real
WebRTC and QUIC, real TCP to an origin on 127.0.0.1. Nothing here measures wall-clock time:
the rate test compares bytes with what the volunteer's token bucket allowed according to the
volunteer's own clock readings.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from prometheus_client import CollectorRegistry

from ferry.client.app import ClientApp, ClientConfig
from ferry.client.local_proxy import LocalProxyConfig
from ferry.client.session import TunnelConfig
from ferry.core.bridge_line import parse_bridge_line
from ferry.demo import LOOPBACK_WEBRTC, LoopbackNetwork, LoopbackNetworkConfig
from ferry.volunteer.impairment import RelayImpairment
from ferry.volunteer.relay import Volunteer, VolunteerConfig
from tests.waiting import wait_until

from .chain import Origin, TableResolver, socks5_connect

pytestmark = pytest.mark.timeout(240)

RESOLVER = TableResolver({"origin.test": ["127.0.0.1"]})
MIB = 1024 * 1024


@asynccontextmanager
async def network(**options: object) -> AsyncIterator[LoopbackNetwork]:
    """A started loopback network whose client's first session is up."""
    config = LoopbackNetworkConfig(
        allow_private_destinations=True,
        resolver=RESOLVER,
        **options,  # type: ignore[arg-type]
    )
    net = LoopbackNetwork(config)
    try:
        await net.start()
        await asyncio.wait_for(net.wait_ready(), 30)
        yield net
    finally:
        await net.close()


@asynccontextmanager
async def extra_client(net: LoopbackNetwork, **tunnel: float) -> AsyncIterator[ClientApp]:
    """Another client of the same network, with its own QUIC session."""
    client = ClientApp(
        ClientConfig(
            broker_url=net.broker_url,
            tunnel=TunnelConfig(
                bridge=parse_bridge_line(net.bridge_line),
                volunteers=1,
                webrtc=LOOPBACK_WEBRTC,
                **tunnel,  # type: ignore[arg-type]
            ),
            proxy=LocalProxyConfig(host="127.0.0.1", port=0),
        ),
        registry=CollectorRegistry(),
    )
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def download(proxy: tuple[str, int], origin: Origin, size: int) -> bytes:
    """GET ``/bytes/SIZE`` through the SOCKS5 proxy; the body (fails if the stream ends early)."""
    rep, reader, writer = await socks5_connect(proxy, "origin.test", origin.port)
    try:
        assert rep == 0, f"SOCKS reply {rep}"
        writer.write(f"GET /bytes/{size} HTTP/1.1\r\nHost: origin.test\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        return await reader.readexactly(size)
    finally:
        writer.close()


def counter_values(volunteer: Volunteer, name: str) -> dict[str, float]:
    """A labelled counter of a volunteer's, label value → count."""
    metric = getattr(volunteer.metrics, name)
    return {
        next(iter(sample.labels.values()), ""): sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def gauge_value(volunteer: Volunteer, name: str) -> float:
    [family] = getattr(volunteer.metrics, name).collect()
    [sample] = family.samples
    return float(sample.value)


async def test_a_rate_capped_volunteer_carries_a_transfer_within_its_cap() -> None:
    relayed = {"to_egress": 0, "to_client": 0}

    def tap(direction: str, datagram: bytes) -> None:
        relayed[direction] += len(datagram)

    # A cap well below what the chain carries even on a loaded 2-core machine (0.44 MB/s was
    # seen there with load 10), so that the bucket is certain to be reached.
    config = VolunteerConfig(broker_url="", max_rate=300_000)
    size = 4 * MIB
    async with (
        Origin().running() as origin,
        network(volunteers=1, client_paths=1, volunteer_config=config, volunteer_tap=tap) as net,
    ):
        body = await asyncio.wait_for(download(net.proxy, origin, size), 120)
        assert hashlib.sha256(body).digest() == hashlib.sha256(Origin.payload(size)).digest()
        [volunteer] = net.volunteers
        limits = volunteer.limits
        total = relayed["to_egress"] + relayed["to_client"]
        assert total == limits.admitted_bytes, "every relayed byte went through the one bucket"
        assert limits.first_admit_call_at is not None and limits.last_admit_call_at is not None
        span = limits.last_admit_call_at - limits.first_admit_call_at
        # Shaping admits a datagram into the bucket's debt (at most max_rate × queue_delay
        # bytes) and holds it until the debt is repaid: the bytes admitted by the last
        # admission may run ahead of the rate by that debt.
        debt = config.max_rate * config.limits.queue_delay
        allowance = config.limits.bucket_size + config.max_rate * span + debt
        print(
            f"relayed {total} bytes in {span:.2f} s of the volunteer's clock: "
            f"{total / span / 1e6:.2f} MB/s against a cap of 0.3 MB/s (+ a 75 kB bucket)"
        )
        assert size < total <= allowance
        assert relayed["to_egress"] > 0, "both directions count"
        dropped = counter_values(volunteer, "dropped")
        # The cap must have been reached to prove anything: datagrams waited for the bucket
        # (shaping, the default) or were dropped over it.
        assert limits.held_for_rate + dropped.get("rate", 0) > 0
        assert dropped.get("quota", 0) == 0


NOON_UTC = 1_767_268_800.0
"""2026-01-01T12:00:00Z."""
CLOCK_START = time.monotonic()


def noon_clock() -> float:
    """A clock that starts at 12:00 UTC: a test's quota day cannot end while it runs."""
    return NOON_UTC + (time.monotonic() - CLOCK_START)


async def test_a_volunteer_whose_quota_is_used_up_ends_its_relays_and_stops_polling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ferry")
    quota = 1_000_000
    config = VolunteerConfig(broker_url="", quota=quota)
    async with (
        Origin().running() as origin,
        network(
            volunteers=1, client_paths=1, volunteer_config=config, volunteer_clock=noon_clock
        ) as net,
    ):
        [volunteer] = net.volunteers
        assert gauge_value(volunteer, "quota_exhausted") == 0
        # A download four times the quota: the volunteer ends the relay part-way through.
        transfer = asyncio.create_task(download(net.proxy, origin, 4 * MIB))
        try:
            await wait_until(
                lambda: gauge_value(volunteer, "quota_exhausted") == 1, "quota used up"
            )
        finally:
            transfer.cancel()
            await asyncio.gather(transfer, return_exceptions=True)
        used = volunteer.limits.quota_used(noon_clock())
        assert quota <= used <= quota + 65_527, "passed by at most one datagram"
        assert gauge_value(volunteer, "quota_used") == used
        await wait_until(lambda: volunteer.active == 0, "every relay ended")
        polls = counter_values(volunteer, "polls")[""]

        # A new client waits at the broker for 3 s: a polling volunteer would take it at once.
        async with extra_client(net, volunteer_wait=3.0) as late:
            rep, _reader, writer = await socks5_connect(late.proxy_address, "origin.test", 80)
            writer.close()
        assert rep == 0x01, "no volunteer: the only one has used up its quota"
        assert counter_values(volunteer, "polls")[""] == polls, "it stopped polling"
        assert volunteer.limits.quota_exhausted(noon_clock())
        assert volunteer.limits.next_poll_delay(noon_clock()) > 11 * 3600, "until 00:00 UTC"
    said = [r.getMessage() for r in caplog.records if "quota" in r.getMessage()]
    assert len([line for line in said if "used up" in line and "relays ended" in line]) == 1, said


CORRUPTION_TRANSFERS = 20
"""4 MiB transfers in the impairment test. The issue asks for 100, but the whole chain runs
in this one process, on one core, and under these faults costs about 0.55 CPU-seconds per
MiB (measured: 20 transfers in 46 CPU-seconds), so 100 would take over 4 minutes even on an
idle machine. 20 stays under a minute on an idle 2-core machine (87 s were measured while
other test suites ran beside it)."""

IMPAIRMENT = RelayImpairment(loss=0.05, duplicate=0.02, reorder=0.02, corrupt=0.02, seed=3)
"""5 % loss, 2 % each of duplication, reordering and corruption, on every relayed datagram
in both directions."""


async def test_transfers_arrive_intact_despite_loss_duplication_reordering_corruption() -> None:
    size = 4 * MIB
    expected = hashlib.sha256(Origin.payload(size)).digest()
    config = VolunteerConfig(broker_url="", impairment=IMPAIRMENT)
    async with (
        Origin().running() as origin,
        network(volunteers=2, client_paths=1, volunteer_config=config) as net,
        AsyncExitStack() as stack,
    ):
        proxies = [net.proxy]
        for _ in range(2):  # three clients, three QUIC sessions: more throughput on 2 cores
            client = await stack.enter_async_context(extra_client(net))
            proxies.append(client.proxy_address)
        remaining = list(range(CORRUPTION_TRANSFERS))
        digests: list[bytes] = []

        async def transfers(proxy: tuple[str, int]) -> None:
            while remaining:
                remaining.pop()
                body = await download(proxy, origin, size)
                digests.append(hashlib.sha256(body).digest())

        async with asyncio.timeout(200):
            await asyncio.gather(*(transfers(proxy) for proxy in proxies))
        faults: dict[str, float] = {}
        for volunteer in net.volunteers:
            for fault, count in counter_values(volunteer, "impaired").items():
                faults[fault] = faults.get(fault, 0) + count
    print(f"{len(digests)} transfers of 4 MiB; faults injected: {faults}")
    assert len(digests) == CORRUPTION_TRANSFERS
    assert digests.count(expected) == CORRUPTION_TRANSFERS, "zero corrupt transfers"
    for fault in ("lost", "duplicated", "reordered", "corrupted"):
        assert faults.get(fault, 0) > 100, f"too few datagrams {fault} to prove anything"
