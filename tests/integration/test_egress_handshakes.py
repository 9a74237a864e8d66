"""Sessions in their handshake at the egress: their own cap, timeout and rate per relay.

A real egress on 127.0.0.1:0 receives bogus Initials (real ClientHellos never continued) over
a relay WebSocket, and real client sessions over others. Nothing asserts a duration: every
wait is bounded, and each test asserts counts and metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ferry.egress.server import Egress, EgressConfig
from tests.waiting import wait_until

from .hostile_peers import WAIT, bogus_initials, real_session, relay

pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def egress(tmp_path: Path, **limits: object) -> AsyncIterator[Egress]:
    """A started egress on 127.0.0.1:0 with the given ``EgressConfig`` fields."""
    server = Egress(
        EgressConfig(state_dir=tmp_path, port=0, **limits),  # type: ignore[arg-type]
        registry=CollectorRegistry(),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def sample(server: Egress, name: str, **labels: str) -> float:
    """The current value of one egress metric sample (0 when it was never set)."""
    value = server.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def limit_hits(server: Egress, kind: str) -> float:
    return sample(server, "ferry_egress_limits_hit_total", kind=kind)


async def test_half_open_sessions_do_not_count_and_end_at_the_handshake_timeout(
    tmp_path: Path,
) -> None:
    async with (
        egress(tmp_path, max_sessions=1, handshake_timeout=1.0) as server,
        relay(server.url) as bogus,
    ):
        for datagram in bogus_initials(3):
            bogus.send(datagram)
        await wait_until(lambda: sample(server, "ferry_egress_handshakes") == 3, "3 handshakes")
        assert sample(server, "ferry_egress_sessions") == 0
        # The one session the cap allows is a real client's, not a half-open one.
        async with real_session(server.url) as session:
            await session.ping(WAIT)
            assert not session.closed.is_set()
            assert sample(server, "ferry_egress_sessions") == 1
            await wait_until(
                lambda: limit_hits(server, "handshake_timeout") == 3, "3 handshake timeouts"
            )
            assert sample(server, "ferry_egress_handshakes") == 0
            await session.ping(WAIT)
        assert sample(server, "ferry_egress_sessions_refused_total", reason="egress_full") == 0


async def test_initials_beyond_the_handshake_cap_are_dropped_and_counted(
    tmp_path: Path,
) -> None:
    async with (
        egress(tmp_path, max_handshakes=3, handshakes_per_relay_burst=100) as server,
        relay(server.url) as bogus,
    ):
        for datagram in bogus_initials(5):
            bogus.send(datagram)
        await wait_until(lambda: limit_hits(server, "handshakes") == 2, "2 handshake limit hits")
        assert sample(server, "ferry_egress_handshakes") == 3
        assert sample(server, "ferry_egress_sessions") == 0


async def test_one_relay_starts_only_a_burst_of_new_sessions(tmp_path: Path) -> None:
    async with (
        egress(tmp_path, handshakes_per_relay_burst=4) as server,
        relay(server.url) as bogus,
    ):
        for datagram in bogus_initials(10):
            bogus.send(datagram)
        await wait_until(
            lambda: limit_hits(server, "handshake_rate") >= 5, "5 handshake rate limit hits"
        )
        # Four at once and perhaps one more refilled meanwhile (one every 2 s).
        assert 4 <= sample(server, "ferry_egress_handshakes") <= 5
        # Another relay has its own bucket: a real client over it is served.
        async with real_session(server.url) as session:
            await session.ping(WAIT)
            assert sample(server, "ferry_egress_sessions") == 1
