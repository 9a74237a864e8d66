"""``--event-loop``: uvloop when asked for and installed, asyncio's own loop otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from ferry.roles import EventLoop, new_event_loop_factory


def test_uvloop_choice_makes_a_uvloop_loop() -> None:
    loop = new_event_loop_factory(EventLoop.UVLOOP)()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_asyncio_choice_makes_asyncios_own_loop() -> None:
    loop = new_event_loop_factory(EventLoop.ASYNCIO)()
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.BaseEventLoop)
    finally:
        loop.close()


def test_uvloop_choice_falls_back_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    loop = new_event_loop_factory(EventLoop.UVLOOP)()
    try:
        assert not isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
