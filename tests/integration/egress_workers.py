"""Several egress processes behind Debian's nginx (``ferry egress --workers N``), for the
integration test and ``benchmarks/egress_scale.py``.

The egress supervisor, the broker and the volunteers run as separate processes; clients may
run in the test's own process (:class:`RoutedClient`), so a test can give each one a routing
key that nginx is known to send to a chosen worker (:func:`keys_per_worker` learns that from
nginx itself, by opening WebSockets and watching which worker's relay count goes up).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import aiohttp

from ferry.client.rendezvous import HttpRendezvous
from ferry.client.session import TunnelClient, TunnelConfig
from ferry.core.addresses import Target
from ferry.core.bridge_line import parse_bridge_line
from ferry.core.route_key import new_route_key

from .client_network import CLIENT_WEBRTC
from .processes import Role, free_port


class WorkerNetwork:
    """``ferry egress --workers N`` (nginx in front), a broker and Python volunteers."""

    def __init__(self, folder: Path, *, workers: int, egress_arguments: tuple[str, ...] = ()):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.roles: list[Role] = []
        self.port = free_port()
        self.egress = self.start_role(
            "egress",
            [
                "egress",
                "--workers",
                str(workers),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--state-dir",
                str(folder / "egress-state"),
                "--unsafe-allow-private-destinations",
                *egress_arguments,
            ],
        )
        ready = self.egress.wait_ready(90)
        self.bridge = str(ready["bridge"])
        self.workers: list[dict[str, str]] = list(ready.get("workers", []))  # type: ignore[arg-type]
        broker = self.start_role(
            "broker",
            # Every client and volunteer comes from 127.0.0.1: the per-source limits of a
            # public broker would hold back this one "source" of many.
            [
                "broker",
                "--listen",
                "127.0.0.1:0",
                "--egress",
                self.relay_url,
                *("--offer-rate", "100", "--offer-burst", "500"),
                *("--poll-rate", "100", "--poll-burst", "500"),
            ],
        )
        self.broker_url = broker.wait_ready()["broker"]
        self.volunteers: list[Role] = []

    @property
    def relay_url(self) -> str:
        """nginx's relay URL: the one in the bridge line."""
        return f"ws://127.0.0.1:{self.port}/v1/relay"

    def start_role(self, name: str, arguments: list[str]) -> Role:
        """Start one more ferry process (stopped with the network)."""
        role = Role(name, arguments, self.folder)
        self.roles.append(role)
        return role

    def add_volunteers(self, count: int) -> None:
        """Start ``count`` Python volunteers and wait until each is ready."""
        started = [
            self.start_role(
                f"volunteer{len(self.volunteers) + n + 1}",
                [
                    "volunteer",
                    "--broker",
                    self.broker_url,
                    "--ice-address",
                    "127.0.0.1",
                    "--unsafe-allow-internal-egress",
                ],
            )
            for n in range(count)
        ]
        for volunteer in started:
            volunteer.wait_ready()
        self.volunteers += started

    def logs(self) -> str:
        """Every process's output, for a failure message."""
        return "\n".join(f"==== {role.name}\n{role.log()[-3000:]}" for role in self.roles)

    def close(self) -> None:
        """Stop every process this network started (the supervisor drains its workers)."""
        for role in reversed(self.roles):
            role.stop()


async def worker_metrics(session: aiohttp.ClientSession, admin: str) -> dict[str, float]:
    """One worker's metrics without labels, plus ``name{labels}`` for labelled ones."""
    async with session.get(f"{admin}/metrics") as response:
        text = await response.text()
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(ferry_egress_[a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


async def keys_per_worker(
    session: aiohttp.ClientSession, net: WorkerNetwork, per_worker: int
) -> list[list[str]]:
    """For each worker, ``per_worker`` routing keys nginx sends to it: WebSockets to nginx
    with fresh keys, kept open while each worker's ``ferry_egress_relays`` is read."""
    keys: list[list[str]] = [[] for _ in net.workers]
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    counts = [0.0] * len(net.workers)
    try:
        for _ in range(200):
            if all(len(found) >= per_worker for found in keys):
                return keys
            key = new_route_key()
            sockets.append(await session.ws_connect(f"{net.relay_url}?route={key}"))
            for _ in range(100):
                now = [
                    (await worker_metrics(session, worker["admin"]))["ferry_egress_relays"]
                    for worker in net.workers
                ]
                grown = [n for n, (a, b) in enumerate(zip(counts, now, strict=True)) if b > a]
                if grown:
                    counts = now
                    if len(keys[grown[0]]) < per_worker:
                        keys[grown[0]].append(key)
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("no worker counted the probe WebSocket")
        raise AssertionError(f"200 keys did not reach every worker {per_worker} times: {keys}")
    finally:
        for socket in sockets:
            await socket.close()


class RoutedClient:
    """A client tunnel in this process whose paths carry a routing key the test chose."""

    def __init__(self, net: WorkerNetwork, route_key: str, *, volunteers: int = 2) -> None:
        config = TunnelConfig(
            bridge=parse_bridge_line(net.bridge),
            volunteers=volunteers,
            spare_volunteers=1,
            webrtc=CLIENT_WEBRTC,
        )
        self.rendezvous = HttpRendezvous(net.broker_url)
        self.tunnel = TunnelClient(config, self.rendezvous)
        self.tunnel.pool.route_key = route_key

    async def start(self, timeout: float = 60.0) -> None:
        """Open paths and wait for the first session."""
        self.tunnel.start()
        await asyncio.wait_for(self.tunnel.ensure_session(), timeout)

    async def download(self, port: int, size: int, timeout: float = 60.0) -> bytes:
        """``GET /size/SIZE`` from the origin on 127.0.0.1:``port`` through the tunnel."""
        async with asyncio.timeout(timeout):
            stream = await self.tunnel.open_stream(Target("127.0.0.1", port))
            await stream.send_all(f"GET /size/{size} HTTP/1.0\r\nHost: origin\r\n\r\n".encode())
            received = bytearray()
            for _ in range(1_000_000):
                chunk = await stream.receive_some()
                if not chunk:
                    break
                received += chunk
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200"), head[:100]
        return body

    async def close(self) -> None:
        """Close the tunnel and the rendezvous."""
        await self.tunnel.close()
        await self.rendezvous.close()


def sha256(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()
