"""``deploy/nginx-ferry-egress-pool.conf`` under Debian's nginx, with TLS from a test CA, in
front of three WebSocket servers standing in for egress processes: every WebSocket with one
routing key reaches the same process, the keys spread over all three, WebSockets without a key
(older clients) all reach one process, and when one process is
gone its keys move to the others while every other key stays where it was (consistent
hashing)."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ferry.core.route_key import new_route_key

from ..host_tools import require_host
from ..support_front import NGINX, make_test_ca
from .processes import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
]


@pytest.fixture(autouse=True)
def _host_has_nginx() -> None:
    require_host(NGINX)


DEPLOY = Path(__file__).parents[2] / "deploy" / "nginx-ferry-egress-pool.conf"
KEYS = 60


@asynccontextmanager
async def stand_in_egress(number: int, seen: dict[str, int]) -> AsyncIterator[web.AppRunner]:
    """A WebSocket server at /v1/relay that notes which route key reached it."""

    async def relay(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_str(str(number))
        seen[request.query.get("route", "")] = number
        await socket.close()
        return socket

    app = web.Application()
    app.router.add_get("/v1/relay", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    yield runner
    await runner.cleanup()


def _nginx_config(folder: Path, port: int, upstreams: list[int], cert: Path, key: Path) -> Path:
    """The deploy file inside a minimal nginx.conf, with this test's ports and certificate."""
    text = DEPLOY.read_text()
    for default, upstream in zip((8444, 8445, 8446), upstreams, strict=True):
        text = text.replace(f"127.0.0.1:{default} ", f"127.0.0.1:{upstream} ")
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    text = text.replace("/etc/ssl/ferry/egress.pem", str(cert))
    text = text.replace("/etc/ssl/ferry/egress.key", str(key))
    temp = "".join(
        f"{name}_temp_path {folder / name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = folder / "nginx.conf"
    config.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"events {{ worker_connections 256; }}\nhttp {{\n{temp}{text}\n}}\n"
    )
    return config


async def _which_process(
    session: aiohttp.ClientSession, url: str, key: str | None, context: ssl.SSLContext
) -> int:
    """The stand-in that took a WebSocket with ``key`` (``None``: an older client's URL)."""
    target = url if key is None else f"{url}?route={key}"
    async with session.ws_connect(target, ssl=context) as socket:
        message = await socket.receive(timeout=10)
        return int(message.data)


async def test_the_deploy_config_keeps_each_key_on_one_process_and_moves_only_a_dead_ones_keys(
    tmp_path: Path,
) -> None:
    ca, cert, key = make_test_ca(tmp_path)
    seen: dict[str, int] = {}
    async with (
        stand_in_egress(0, seen) as first,
        stand_in_egress(1, seen) as second,
        stand_in_egress(2, seen) as third,
    ):
        ports = []
        sites = []
        for runner in (first, second, third):
            site = web.TCPSite(runner, "127.0.0.1", free_port())
            await site.start()
            sites.append(site)
            ports.append(runner.addresses[-1][1])
        port = free_port()
        config = _nginx_config(tmp_path, port, ports, cert, key)
        nginx = await asyncio.create_subprocess_exec(
            *(NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(config)),
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                assert nginx.returncode is None, (tmp_path / "error.log").read_text()
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            context = ssl.create_default_context(cafile=str(ca))
            url = f"wss://localhost:{port}/v1/relay"
            keys = [new_route_key() for _ in range(KEYS)]
            async with aiohttp.ClientSession() as session:
                placed = [await _which_process(session, url, k, context) for k in keys]
                again = [await _which_process(session, url, k, context) for k in keys]
                assert placed == again
                assert sorted(set(placed)) == [0, 1, 2]
                assert [seen[k] for k in keys] == placed
                # An older client's volunteers send no key: one fixed process, which works.
                keyless = {await _which_process(session, url, None, context) for _ in range(5)}
                assert len(keyless) == 1
                # Process 1 is gone: its keys go elsewhere, no other key moves.
                await sites[1].stop()
                after = [await _which_process(session, url, k, context) for k in keys]
            assert 1 not in after
            assert [a for p, a in zip(placed, after, strict=True) if p != 1] == [
                p for p in placed if p != 1
            ]
        finally:
            nginx.terminate()
            await asyncio.wait_for(nginx.wait(), 10)
