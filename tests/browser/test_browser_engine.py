"""ferry's browser engine (ferry.transport.browser_webrtc) with Debian's real Chromium.

Who may use the engine's socket, what happens when the browser dies, and what is left once
the engine is closed. The download through the whole chain is in
tests/integration/test_browser_webrtc_chain.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.demo import LOOPBACK_WEBRTC
from ferry.errors import ChannelClosedError, LocalError
from ferry.transport.browser_webrtc import (
    BrowserEngine,
    BrowserEngineConfig,
    WebRtcMode,
    WebRtcStack,
    browser_arguments,
    sandbox_arguments,
)
from ferry.transport.webrtc import AnsweringPeer, OfferingPeer

from .support import CHROMIUM

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def _refused(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("ferry_browser_engine_refused_total", {"reason": reason})
    return value or 0.0


def _exists(path: str) -> bool:
    return Path(path).exists()


def _command_lines(pid: int) -> list[bytes]:
    """``/proc/PID/cmdline`` of ``pid`` and of its descendants (what any local user reads)."""
    lines, pending = [], [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            lines.append(Path(f"/proc/{current}/cmdline").read_bytes())
            for children in Path(f"/proc/{current}/task").glob("*/children"):
                pending += [int(child) for child in children.read_text().split()]
    return lines


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_only_the_engine_page_with_the_secret_gets_the_socket() -> None:
    registry = CollectorRegistry()
    stack = WebRtcStack(
        WebRtcMode.BROWSER,
        LOOPBACK_WEBRTC,
        BrowserEngineConfig(executable=CHROMIUM),
        registry=registry,
    )
    status = await stack.start()
    engine = stack.engine
    assert status.stack == "browser" and engine is not None and engine.alive
    socket_url = f"http://{engine.host}/engine/socket"
    try:
        async with aiohttp.ClientSession() as http:
            # another web page: refused before any WebSocket exists
            with pytest.raises(aiohttp.WSServerHandshakeError) as other_page:
                await http.ws_connect(socket_url, origin="http://evil.example")
            assert other_page.value.status == 403
            # a local program without Origin: refused too
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(socket_url)
            # the right Origin but the page is already in: refused
            with pytest.raises(aiohttp.WSServerHandshakeError) as second:
                await http.ws_connect(socket_url, origin=engine.origin)
            assert second.value.status == 409
        assert _refused(registry, "origin") == 2
        assert _refused(registry, "second_socket") == 1
        assert engine.alive  # nothing above disturbed the real page
    finally:
        await stack.close()


def test_the_sandbox_is_off_only_as_root() -> None:
    assert sandbox_arguments(0) == ["--no-sandbox"]
    assert sandbox_arguments(1000) == []
    assert ("--no-sandbox" in browser_arguments(LOOPBACK_WEBRTC)) is (os.geteuid() == 0)


async def test_the_secret_is_not_on_the_browser_command_line() -> None:
    """Issue 15, item 8: other local users read ``/proc/PID/cmdline``; the secret is in a
    file only this user can read, gone once the page connected."""
    registry = CollectorRegistry()
    stack = WebRtcStack(
        WebRtcMode.BROWSER,
        LOOPBACK_WEBRTC,
        BrowserEngineConfig(executable=CHROMIUM),
        registry=registry,
    )
    await stack.start()
    engine = stack.engine
    assert engine is not None and engine.pid is not None
    try:
        secret = engine._secret  # read-only: the value to look for
        command_lines = _command_lines(engine.pid)
        assert len(command_lines) > 1  # the browser and its helper processes
        assert all(secret.encode() not in line for line in command_lines)
        arguments = command_lines[0].split(b"\0")
        page = next(argument for argument in arguments if argument.startswith(b"file://"))
        assert b"#" not in page
        assert not _exists(page.decode()[len("file://") :])  # removed once connected
        assert (b"--no-sandbox" in arguments) is (os.geteuid() == 0)
    finally:
        await stack.close()


async def test_a_browser_that_never_opens_the_page_is_reported() -> None:
    engine = BrowserEngine(
        BrowserEngineConfig(executable="/bin/false", start_timeout=3), LOOPBACK_WEBRTC
    )
    with pytest.raises(LocalError, match=r"did not open ferry's engine page.*exited with code"):
        await engine.start()
    assert not engine.alive
    assert engine.profile is None  # the temporary profile is gone


async def test_a_forged_hello_without_the_secret_is_closed(tmp_path: Path) -> None:
    """A program that knows the Origin but not the secret (``/bin/sleep`` stands in for a
    browser that never connects, so the socket is free)."""
    registry = CollectorRegistry()
    stack = WebRtcStack(
        WebRtcMode.BROWSER,
        LOOPBACK_WEBRTC,
        BrowserEngineConfig(executable=str(_sleeper(tmp_path)), start_timeout=4),
        registry=registry,
    )
    start = asyncio.create_task(stack.start())
    try:
        engine = await _engine_of(stack)
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"http://{engine.host}/engine/socket", origin=engine.origin) as ws,
        ):
            await ws.send_str(json.dumps({"op": "hello", "secret": "guessed"}))
            message = await ws.receive(timeout=10)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert _refused(registry, "secret") == 1
        with pytest.raises(LocalError):
            await start
    finally:
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
        await stack.close()


def _sleeper(folder: Path) -> Path:
    """A stand-in browser that ignores its arguments and waits (killed by the engine)."""
    script = folder / "browser"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)
    return script


async def _engine_of(stack: WebRtcStack) -> BrowserEngine:
    for _ in range(100):
        engine = stack.engine
        if engine is not None and engine.host:
            return engine
        await asyncio.sleep(0.05)
    raise AssertionError("the engine did not start serving")


async def test_the_browser_s_death_closes_its_channels_and_auto_falls_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack = WebRtcStack(WebRtcMode.AUTO, LOOPBACK_WEBRTC, BrowserEngineConfig(executable=CHROMIUM))
    assert (await stack.start()).stack == "browser"
    engine = stack.engine
    assert engine is not None and engine.pid is not None
    profile = engine.profile
    assert profile is not None and _exists(profile)
    closed = asyncio.Event()
    volunteer = AnsweringPeer(LOOPBACK_WEBRTC)
    client = stack.offering_peer()
    try:
        offer = await client.create_offer()
        answer = await volunteer.accept_offer(offer)
        channel = await client.accept_answer(answer)
        channel.start(lambda datagram: None, closed.set)
        caplog.set_level(logging.WARNING)
        os.killpg(engine.pid, 9)  # the browser crashes
        await asyncio.wait_for(closed.wait(), 20)
        assert not channel.is_open
        status = stack.stack_status()
        assert status.stack == "python" and "died" in status.detail and status.warning
        assert "falling back to the Python WebRTC stack" in caplog.text
        # the next path is made by aiortc
        fallback = stack.offering_peer()
        sdp = await fallback.create_offer()
        assert sdp.startswith("v=0")
        await fallback.close()
    finally:
        await client.close()
        await volunteer.close()
        await stack.close()
    assert not _exists(profile)


async def test_browser_mode_starts_a_new_browser_after_a_death() -> None:
    stack = WebRtcStack(
        WebRtcMode.BROWSER, LOOPBACK_WEBRTC, BrowserEngineConfig(executable=CHROMIUM)
    )
    await stack.start()
    first = stack.engine
    assert first is not None and first.pid is not None
    try:
        os.killpg(first.pid, 9)
        for _ in range(200):
            if not first.alive:
                break
            await asyncio.sleep(0.05)
        assert not first.alive and first.failure  # exited, or its page disconnected
        volunteer = AnsweringPeer(LOOPBACK_WEBRTC)
        client = stack.offering_peer()
        try:
            answer = await volunteer.accept_offer(await client.create_offer())
            channel = await client.accept_answer(answer)
            assert channel.is_open
            second = stack.engine
            assert second is not None and second is not first and second.alive
            assert stack.stack_status().stack == "browser"
        finally:
            await client.close()
            await volunteer.close()
    finally:
        await stack.close()


async def test_closing_kills_the_browser_and_removes_its_profile() -> None:
    engine = BrowserEngine(BrowserEngineConfig(executable=CHROMIUM), LOOPBACK_WEBRTC)
    await engine.start()
    pid, profile = engine.pid, engine.profile
    assert pid is not None and profile is not None and _alive(pid)
    await engine.close()
    assert not _exists(profile)
    for _ in range(100):  # the group's other processes go with it
        if not _alive(pid):
            break
        await asyncio.sleep(0.05)
    assert not _alive(pid)
    with pytest.raises(ChannelClosedError, match="not running"):
        await engine.offering_peer().create_offer()


async def test_a_datagram_crosses_browser_to_aiortc_both_ways() -> None:
    engine = BrowserEngine(BrowserEngineConfig(executable=CHROMIUM), LOOPBACK_WEBRTC)
    await engine.start()
    volunteer = OfferingPeer(LOOPBACK_WEBRTC)
    answering = engine.answering_peer()
    try:
        answer = await answering.accept_offer(await volunteer.create_offer())
        python_side = await volunteer.accept_answer(answer)
        browser_side = await answering.wait_channel()
        to_browser: asyncio.Queue[bytes] = asyncio.Queue()
        to_python: asyncio.Queue[bytes] = asyncio.Queue()
        browser_side.start(to_browser.put_nowait, lambda: None)
        python_side.start(to_python.put_nowait, lambda: None)
        for size in (1, 1200, 1232):
            payload = bytes([size % 251]) * size
            for _ in range(20):  # unreliable channel: retry a bounded number of times
                assert python_side.send(payload)
                try:
                    assert await asyncio.wait_for(to_browser.get(), 1) == payload
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError(f"{size} bytes never reached the browser")
            for _ in range(20):
                assert browser_side.send(payload[::-1])
                try:
                    assert await asyncio.wait_for(to_python.get(), 1) == payload[::-1]
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError(f"{size} bytes never came back from the browser")
    finally:
        await volunteer.close()
        await answering.close()
        await engine.close()


def test_loopback_flags_only_when_candidates_are_pinned() -> None:
    pinned = browser_arguments(LOOPBACK_WEBRTC)
    assert "--allow-loopback-in-peer-connection" in pinned
    assert "--disable-features=WebRtcHideLocalIpsWithMdns" in pinned
    default = browser_arguments(LOOPBACK_WEBRTC.__class__())
    assert "--allow-loopback-in-peer-connection" not in default
    assert "--headless" in default and "--no-first-run" in default
