"""The client's local page (ferry.client.local_page) over real HTTP on 127.0.0.1: what it
serves, what it refuses (foreign Host or Origin, cross-site, missing token), and what its
POST routes change in a running client."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest

from ferry.client.app import ClientApp
from ferry.client.local_page import TOKEN_HEADER, proxy_auto_config
from ferry.core.bridge_line import BridgeLine

from .chain import socks5_connect
from .client_network import ORIGIN_NAME, ClientNetwork

pytestmark = pytest.mark.integration


def refused(client: ClientApp, reason: str) -> float:
    value = client.registry.get_sample_value("ferry_client_page_refused_total", {"reason": reason})
    return value or 0.0


async def page_token(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as response:
        text = await response.text()
    match = re.search(r'"token": "([^"]+)"', text)
    assert match, text[:500]
    return match.group(1)


async def test_page_status_and_pac_are_served_to_loopback_only() -> None:
    async with ClientNetwork().running() as net:
        client = await net.start_client()
        url = client.page_url
        port = int(url.rsplit(":", 1)[1].strip("/"))
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as response:
                assert response.status == 200
                page = await response.text()
                assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
                assert response.headers["X-Frame-Options"] == "DENY"
            assert '<html lang="en" dir="ltr">' in page
            # Everything the page loads comes from the client itself.
            assert re.findall(r'(?:src|href)="([^"]*)"', page)
            assert all(link.startswith("/") for link in re.findall(r'(?:src|href)="([^"]*)"', page))
            async with http.get(url + "v1/status") as response:
                status = await response.json()
            assert status["connected"] is True
            assert status["state"] == "connected"
            assert status["volunteers"] == 1
            assert status["bridge"] == str(net.bridge)
            async with http.get(url + "proxy.pac") as response:
                assert response.content_type == "application/x-ns-proxy-autoconfig"
                assert await response.text() == proxy_auto_config(client.proxy_address)

            for host in (f"localhost:{port}", f"[::1]:{port}"):
                async with http.get(url + "v1/status", headers={"Host": host}) as response:
                    assert response.status == 200, host
            for host in ("evil.example", f"evil.example:{port}", "127.0.0.1", f"127.0.0.2:{port}"):
                async with http.get(url + "v1/status", headers={"Host": host}) as response:
                    assert response.status == 403, host
            assert refused(client, "host") == 4
            for origin in ("http://evil.example", "null", f"http://127.0.0.1:{port + 1}"):
                async with http.get(url + "v1/status", headers={"Origin": origin}) as response:
                    assert response.status == 403, origin
            assert refused(client, "origin") == 3
            async with http.get(
                url + "v1/status", headers={"Sec-Fetch-Site": "cross-site"}
            ) as response:
                assert response.status == 403
            assert refused(client, "cross_site") == 1


async def test_post_routes_need_the_token_and_change_the_client() -> None:
    async with ClientNetwork().running() as net:
        client = await net.start_client()
        url = client.page_url
        origin = url.rstrip("/")
        async with aiohttp.ClientSession() as http:
            token = await page_token(http, url)
            async with http.post(url + "v1/reconnect") as response:
                assert response.status == 403
            async with http.post(url + "v1/reconnect", headers={TOKEN_HEADER: "x"}) as response:
                assert response.status == 403
            async with http.post(url + "v1/reconnect", headers={TOKEN_HEADER: "é"}) as response:
                assert response.status == 403
            assert refused(client, "token") == 3
            headers = {TOKEN_HEADER: token, "Origin": origin}

            # A damaged bridge line is refused before anything else happens.
            damaged = str(net.bridge)[:-1] + ("0" if str(net.bridge)[-1] != "0" else "1")
            async with http.post(url + "v1/bridge", json={"bridge": damaged}, headers=headers) as r:
                assert r.status == 400
                assert (await r.json())["error"] == "bridge.damaged"
            async with http.post(url + "v1/bridge", data=b"{", headers=headers) as r:
                assert r.status == 400
            big = {"bridge": "x" * 10_000}
            async with http.post(url + "v1/bridge", json=big, headers=headers) as r:
                assert r.status == 413
            bad = client.registry.get_sample_value(
                "ferry_client_page_bad_requests_total", {"reason": "too_large"}
            )
            assert bad == 1
            assert client.bridge == net.bridge

            # Reconnect: a new tunnel, which connects again; data counted across tunnels.
            old_tunnel = client.tunnel
            async with http.post(url + "v1/reconnect", headers=headers) as response:
                assert response.status == 200
            assert client.tunnel is not old_tunnel
            # The client connects again by itself (no traffic needed); the page says so.
            async with asyncio.timeout(30):
                while True:
                    async with http.get(url + "v1/status") as response:
                        status = await response.json()
                    if status["connected"]:
                        break
                    await asyncio.sleep(0.2)

            # A new, valid bridge line (a wrong fingerprint) is applied without a restart...
            assert net.bridge is not None
            wrong = BridgeLine(net.bridge.url, bytes(32))
            async with http.post(
                url + "v1/bridge", json={"bridge": str(wrong)}, headers=headers
            ) as r:
                assert r.status == 200, await r.text()
            assert client.bridge == wrong
            # ...and the page then says why it cannot connect.
            async with asyncio.timeout(30):
                while True:
                    async with http.get(url + "v1/status") as response:
                        status = await response.json()
                    if status["state"] == "identity":
                        break
                    await asyncio.sleep(0.2)
            assert status["connected"] is False
            assert status["bridge"] == str(wrong)


async def test_status_counts_data_and_speed_of_a_download() -> None:
    async with ClientNetwork().running() as net:
        client = await net.start_client()
        size = 3_000_000
        code, reader, writer = await socks5_connect(
            client.proxy_address, ORIGIN_NAME, net.origin.port
        )
        assert code == 0
        writer.write(f"GET /bytes/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        body = await asyncio.wait_for(reader.read(), 60)
        writer.close()
        assert len(body) > size
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(10):
                while True:
                    async with http.get(client.page_url + "v1/status") as response:
                        status = await response.json()
                    if any(sample["down"] > 0 for sample in status["history"]):
                        break
                    await asyncio.sleep(0.2)
        assert status["bytesReceived"] > size
        assert status["bytesSent"] > 0
        assert json.dumps(status).count("down") == len(status["history"])
