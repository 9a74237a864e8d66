"""What the egress's public relay port tells anyone who asks (issue 15).

A real egress on 127.0.0.1:0 with a real client session: ``/healthz`` on the relay port says
only that the egress is up; the exact counts are on the admin address.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.egress.server import RELAY_PATH, Egress, EgressConfig

from .hostile_peers import real_session

pytestmark = pytest.mark.timeout(60)


async def test_healthz_on_the_relay_port_says_only_ok(tmp_path: Path) -> None:
    egress = Egress(
        EgressConfig(state_dir=tmp_path, port=0, admin_port=0), registry=CollectorRegistry()
    )
    await egress.start()
    try:
        async with real_session(egress.url), aiohttp.ClientSession() as http:
            public = egress.url.replace("ws://", "http://").removesuffix(RELAY_PATH)
            async with http.get(f"{public}/healthz") as response:
                assert response.status == 200
                assert await response.json() == {"ok": True}
            async with http.get(f"{egress.admin_url}/healthz") as response:
                assert (await response.json())["sessions"] == 1
    finally:
        await egress.close()
