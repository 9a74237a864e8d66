"""Throughput of one browser volunteer (the widget in Debian's Chromium) next to one Python
volunteer, in the same arrangement.

In this process: an egress (allowed to reach loopback), a broker, an origin HTTP server on
127.0.0.1 serving ``--megabytes`` MB, a page embedding the widget, and a Python client
(``volunteers=1``, loopback WebRTC). The volunteer runs in its own process: either Chromium
(Playwright, ``/usr/bin/chromium``) with the widget switched on, or ``ferry volunteer
--ice-address 127.0.0.1``. Each run downloads the payload with curl through the client's
SOCKS5 port, checks its SHA-256 and reports MB/s (curl's ``time_total``; MB = 10**6 bytes).

Usage::

    python benchmarks/browser_volunteer.py [--megabytes 50] [--runs 3]

Exits 1 if a download fails or its hash does not match. Only 127.0.0.1 is contacted, and
only the processes this script started are stopped (by their own handles).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.support import (  # noqa: E402
    WidgetNetwork,
    chromium,
    wait_for_widget,
)
from tests.integration.chain import run_curl  # noqa: E402

MEGABYTE = 1_000_000
RUN_FERRY = "import sys; from ferry.cli import main; sys.argv[0] = 'ferry'; main()"


async def _serve_payload(payload: bytes) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/payload", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def _download(proxy: tuple[str, int], url: str, expected: str, folder: Path) -> float:
    target = folder / "download.bin"
    code, out, err = await run_curl(
        "--socks5-hostname",
        f"{proxy[0]}:{proxy[1]}",
        "-o",
        str(target),
        "-w",
        "%{time_total} %{size_download}",
        url,
        timeout=600,
    )
    if code != 0:
        raise SystemExit(f"download failed: {err.decode(errors='replace')}")
    if hashlib.sha256(target.read_bytes()).hexdigest() != expected:
        raise SystemExit("the download's SHA-256 does not match the payload")
    seconds, size = out.decode().split()
    return int(size) / MEGABYTE / float(seconds)


async def _runs(net: WidgetNetwork, url: str, expected: str, runs: int) -> list[float]:
    client = await net.start_client(volunteers=1)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(runs):
            results.append(await _download(client.proxy_address, url, expected, Path(folder)))
    await client.close()
    net.clients.remove(client)
    return results


async def main(megabytes: int, runs: int) -> None:
    payload = hashlib.shake_256(b"ferry").digest(megabytes * MEGABYTE)
    expected = hashlib.sha256(payload).hexdigest()
    runner, port = await _serve_payload(payload)
    url = f"http://127.0.0.1:{port}/payload"
    table: dict[str, list[float]] = {}
    try:
        async with WidgetNetwork().running() as net:
            async with chromium() as browser:
                page = await browser.new_page()
                await page.goto(net.page_url())
                await page.get_by_role("switch").click()
                await wait_for_widget(page, "s.state === 'looking'")
                table["browser volunteer (Chromium widget)"] = await _runs(net, url, expected, runs)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                RUN_FERRY,
                "volunteer",
                "--broker",
                net.broker_url,
                "--ice-address",
                "127.0.0.1",
                "--capacity",
                "1",
            )
            try:
                table["Python volunteer (ferry volunteer)"] = await _runs(net, url, expected, runs)
            finally:
                process.terminate()
                await process.wait()
    finally:
        await runner.cleanup()
    print(f"{megabytes} MB per run, MB/s per run and median:")
    for name, values in table.items():
        cells = "  ".join(f"{value:6.2f}" for value in values)
        print(f"{name:38s} {cells}   median {statistics.median(values):6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.megabytes, arguments.runs))
