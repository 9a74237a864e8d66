"""A flood of bogus Initials does not lock real clients out of the egress (issue 15, item 1).

Real processes on 127.0.0.1: an egress with ``--max-sessions 20``, sent 40 bogus Initials
(real ClientHellos, never continued) every 2 s over one relay WebSocket, then a broker, a
volunteer and a client; the client's download through it must be byte-exact. Before the fix
the half-open sessions took all 20 slots and the client was refused ("egress full").
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .hostile_peers import InitialFlood
from .processes import Network, origin_server, payload, start_curl

pytestmark = pytest.mark.timeout(240)


def egress_metrics(admin_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the egress's ``/metrics``, by name and sorted labels."""
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_real_client_is_served_byte_exact_through_a_flood_of_initials(
    tmp_path: Path,
) -> None:
    body = payload(4 * 1024 * 1024)
    net = Network(
        tmp_path,
        egress_arguments=(
            "--unsafe-allow-private-destinations",
            "--max-sessions",
            "20",
            "--admin-listen",
            "127.0.0.1:0",
        ),
    )
    try:
        net.start_egress()
        egress_url = f"ws://127.0.0.1:{net.egress_port}/v1/relay"
        with InitialFlood(egress_url, per_round=40, interval=2.0) as flood:
            with origin_server(body) as port:
                net.start(volunteers=1, client_volunteers=1)
                output = tmp_path / "download.bin"
                curl = start_curl(net.proxy, f"http://127.0.0.1:{port}/all", output)
                _, error = curl.communicate(timeout=150)
                assert curl.returncode == 0, f"{error.decode()}\n{net.logs()}"
                assert hashlib.sha256(output.read_bytes()).digest() == (
                    hashlib.sha256(body).digest()
                )
            values = egress_metrics(net.egress_ready["admin"])
            assert flood.sent >= 40
        assert values[("ferry_egress_sessions", ())] == 1
        assert values[("ferry_egress_limits_hit_total", (("kind", "handshake_rate"),))] > 0
        refused = ("ferry_egress_sessions_refused_total", (("reason", "egress_full"),))
        assert values.get(refused, 0.0) == 0
    finally:
        net.close()
