"""SIGTERM drains a running ``ferry egress``: separate processes on 127.0.0.1.

A slow download is in progress when the egress gets SIGTERM; it completes intact, a session
started afterwards (over a relay WebSocket, as a volunteer carries it) is refused ("egress
draining", counted on the admin address's /metrics), and the egress exits 0 once the
download is done. A second test checks
that a second SIGTERM ends the drain at once. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ferry.errors import SessionError
from ferry.transport.quic import QuicSession, QuicSettings
from ferry.transport.websocket import connect_websocket_channel
from tests.waiting import wait_until_blocking

from .processes import ferry_command, origin_server, payload, process_network, start_curl

pytestmark = pytest.mark.timeout(240)

BODY_SIZE = 2_000_000
RATE = 250_000.0
"""Bytes per second the origin sends: the download takes about eight seconds."""

EGRESS_ARGUMENTS = (
    "--unsafe-allow-private-destinations",
    "--drain-seconds",
    "120",
    "--admin-listen",
    "127.0.0.1:0",
)


def admin_get(admin: str, path: str) -> tuple[int, str]:
    """GET ``admin + path``; (status, body)."""
    try:
        with urllib.request.urlopen(admin + path, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def metric(admin: str, name: str, **labels: str) -> float:
    """One sample's value from the admin address's /metrics (0 if absent)."""
    status, text = admin_get(admin, "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def new_session_outcome(egress_url: str) -> str:
    """Start a QUIC session to the egress over a relay WebSocket; how it ended."""
    settings = QuicSettings()
    async with aiohttp.ClientSession() as http:
        channel = await connect_websocket_channel(egress_url, http)
        try:
            session = QuicSession(
                settings.new_connection(settings.configuration(is_client=True)),
                settings=settings,
                send=channel.send,
            )
            channel.start(session.receive_datagram, lambda: None)
            session.connect()
            # The refusal comes right after the handshake: the client may or may not have
            # seen the handshake complete first.
            with contextlib.suppress(SessionError):
                await session.wait_handshake(30)
            await asyncio.wait_for(session.closed.wait(), 30)
            return session.close_reason
        finally:
            await channel.close()


def test_sigterm_lets_a_transfer_finish_refuses_new_sessions_and_exits_0(
    tmp_path: Path,
) -> None:
    body = payload(BODY_SIZE)
    with (
        origin_server(body, rate=RATE) as origin_port,
        process_network(
            tmp_path, egress_arguments=EGRESS_ARGUMENTS, volunteers=2, client_volunteers=1
        ) as net,
    ):
        assert net.egress is not None
        ready = json.loads(net.egress.ready_path.read_text())
        admin, egress_url = ready["admin"], ready["egress"]
        assert admin.startswith("http://127.0.0.1:")
        assert admin_get(admin, "/healthz")[0] == 200

        output = tmp_path / "download.bin"
        curl = start_curl(net.proxy, f"http://127.0.0.1:{origin_port}/", output)
        try:
            wait_until_blocking(
                lambda: output.exists() and output.stat().st_size > 100_000, "bytes"
            )
            net.egress.process.send_signal(signal.SIGTERM)
            wait_until_blocking(lambda: "draining" in net.egress.log(), "the drain to start")  # type: ignore[union-attr]
            status, health = admin_get(admin, "/healthz")
            assert status == 503 and json.loads(health)["draining"] is True

            # A session started now, through a relay WebSocket as a volunteer would carry
            # it, is refused: the client is told "egress draining".
            assert asyncio.run(new_session_outcome(egress_url)) == "egress draining"
            assert metric(admin, "ferry_egress_sessions_refused_total", reason="draining") == 1

            _, error = curl.communicate(timeout=120)
        finally:
            if curl.poll() is None:
                curl.kill()
                curl.communicate(timeout=10)
        assert curl.returncode == 0, error.decode() + net.logs()
        assert hashlib.sha256(output.read_bytes()).digest() == hashlib.sha256(body).digest()
        assert net.egress.process.wait(timeout=60) == 0, net.logs()
        log = net.egress.log()
        for stage in ("draining: refusing new sessions", "drained: every stream finished"):
            assert stage in log, log
        assert "egress stopped" in log
        assert "Traceback" not in log
        assert str(origin_port) not in log, "the egress logged the destination's port"


def test_a_second_sigterm_stops_the_drain_at_once(tmp_path: Path) -> None:
    body = payload(BODY_SIZE)
    with (
        origin_server(body, rate=RATE / 10) as origin_port,
        process_network(
            tmp_path, egress_arguments=EGRESS_ARGUMENTS, volunteers=1, client_volunteers=1
        ) as net,
    ):
        assert net.egress is not None
        output = tmp_path / "download.bin"
        curl = start_curl(net.proxy, f"http://127.0.0.1:{origin_port}/", output)
        try:
            wait_until_blocking(lambda: output.exists() and output.stat().st_size > 10_000, "bytes")
            net.egress.process.send_signal(signal.SIGTERM)
            wait_until_blocking(lambda: "draining" in net.egress.log(), "the drain to start")  # type: ignore[union-attr]
            assert net.egress.process.poll() is None, "one SIGTERM must wait for the stream"
            net.egress.process.send_signal(signal.SIGTERM)
            assert net.egress.process.wait(timeout=30) == 0
            assert "drain cut short: closing 1 open streams now" in net.egress.log()
            curl.communicate(timeout=60)
        finally:
            if curl.poll() is None:
                curl.kill()
                curl.communicate(timeout=10)
        assert curl.returncode != 0, "the cut download cannot have completed"
        assert output.stat().st_size < BODY_SIZE


def test_a_bad_admin_address_is_refused_with_the_flag_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [*ferry_command(), "egress", "--state-dir", str(tmp_path), "--admin-listen", "x:port"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    assert result.returncode == 2
    assert "--admin-listen 'x:port': the port must be a number" in result.stdout + result.stderr
