"""The widget in real Chromium relays real traffic for a Python client (docs/widget.md)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from ..integration.chain import Origin, run_curl
from .support import WidgetNetwork, chromium, wait_for_widget, widget_status

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

SIZE = 16 * 1024 * 1024


def _proxy(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


async def test_widget_carries_a_16_mib_download_intact(tmp_path: Path) -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await page.goto(net.page_url())
        await page.get_by_role("switch").click()
        await wait_for_widget(page, "s.state === 'looking'")
        client = await net.start_client(volunteers=1)
        target = tmp_path / "download.bin"
        code, _, err = await run_curl(
            "--socks5-hostname",
            _proxy(client.proxy_address),
            "-o",
            str(target),
            f"http://127.0.0.1:{net.origin.port}/bytes/{SIZE}",
        )
        assert code == 0, err
        expected = hashlib.sha256(Origin.payload(SIZE)).hexdigest()
        assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
        status = await widget_status(page)
        assert status["state"] == "helping"
        helping, people_helped = status["helping"], status["peopleHelped"]
        assert isinstance(helping, int) and helping >= 1
        assert isinstance(people_helped, int) and people_helped >= helping
        bytes_relayed = status["bytesRelayed"]
        assert isinstance(bytes_relayed, int) and bytes_relayed > SIZE


async def test_closing_the_page_mid_transfer_moves_the_client_to_another_volunteer(
    tmp_path: Path,
) -> None:
    async with WidgetNetwork().running() as net, chromium() as browser:
        page = await browser.new_page()
        await page.goto(net.page_url())
        await page.get_by_role("switch").click()
        await wait_for_widget(page, "s.state === 'looking'")
        # The browser volunteer is the client's first (oldest) path; a Python volunteer
        # becomes the second one.
        client = await net.start_client(volunteers=2)
        python_volunteer = net.start_python_volunteer()
        assert client.tunnel is not None
        target = tmp_path / "download.bin"
        download = asyncio.create_task(
            run_curl(
                "--socks5-hostname",
                _proxy(client.proxy_address),
                "--limit-rate",
                "2M",
                "-o",
                str(target),
                f"http://127.0.0.1:{net.origin.port}/bytes/{SIZE}",
            )
        )
        await wait_for_widget(page, f"s.bytesRelayed > {2 * 1024 * 1024}", timeout=60)
        await page.close(run_before_unload=True)
        code, _, err = await download
        assert code == 0, err
        expected = hashlib.sha256(Origin.payload(SIZE)).hexdigest()
        assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
        assert python_volunteer.bytes_relayed > 0
