"""Streams whose first packets reach the egress out of order are all served (issue 15, item 5).

A real broker, egress, two Python volunteers that hold back half the datagrams they relay
(the test-only reordering impairment) and a client striped over both: the first packets of
new streams overtake one another as a matter of course. Every stream must be served; before
the fix the egress kept only the highest stream ID seen and dropped the streams whose first
packet came after a higher one's.
"""

from __future__ import annotations

import asyncio

import pytest

from ferry.demo import LoopbackNetwork, LoopbackNetworkConfig
from ferry.volunteer.impairment import RelayImpairment
from ferry.volunteer.relay import VolunteerConfig

from .chain import echo_server, socks5_connect

pytestmark = pytest.mark.timeout(180)

WAIT = 30.0
"""Upper bound of any single wait in this test, in seconds."""

STREAMS = 40
"""Streams opened at once through the client."""


async def test_streams_reordered_across_two_volunteers_all_complete() -> None:
    # Every datagram waits for the next one to overtake it (or 0.1 s): two packets sent
    # one after the other through a volunteer arrive swapped.
    reorder = RelayImpairment(reorder=1.0, reorder_hold=0.1, seed=5)
    net = LoopbackNetwork(
        LoopbackNetworkConfig(
            allow_private_destinations=True,
            volunteers=2,
            client_paths=2,
            volunteer_config=VolunteerConfig(broker_url="", impairment=reorder),
        )
    )
    try:
        await net.start()
        await asyncio.wait_for(net.wait_ready(), WAIT)
        async with echo_server() as port:

            async def exchange(index: int) -> bytes:
                code, reader, writer = await socks5_connect(net.proxy, "127.0.0.1", port)
                try:
                    assert code == 0
                    message = f"stream {index:03d}".encode()
                    writer.write(message)
                    return await reader.readexactly(len(message))
                finally:
                    writer.close()

            async with asyncio.timeout(WAIT), asyncio.TaskGroup() as group:
                exchanges = []
                for index in range(STREAMS):  # one new stream per packet, roughly
                    exchanges.append(group.create_task(exchange(index)))
                    await asyncio.sleep(0.01)
            echoed = [task.result() for task in exchanges]
        assert echoed == [f"stream {index:03d}".encode() for index in range(STREAMS)]
        assert net.egress is not None
        registry = net.egress.metrics.registry
        assert registry.get_sample_value("ferry_egress_streams_total") == STREAMS
    finally:
        await net.close()
