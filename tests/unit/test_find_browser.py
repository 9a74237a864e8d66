"""Which browser the engine runs by default: Chromium's headless shell before the full
browser, then Chrome; the fixed paths before ``PATH``."""

from __future__ import annotations

import os

import pytest

from ferry.transport import browser_webrtc
from ferry.transport.browser_webrtc import BROWSER_PATHS, find_browser


def _only(monkeypatch: pytest.MonkeyPatch, present: set[str], on_path: dict[str, str]) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: path in present)
    monkeypatch.setattr(browser_webrtc.shutil, "which", lambda name: on_path.get(name))


def test_the_headless_shell_comes_before_the_full_chromium(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _only(monkeypatch, {"/usr/bin/chromium", "/usr/bin/chromium-headless-shell"}, {})
    assert find_browser() == "/usr/bin/chromium-headless-shell"


def test_the_full_chromium_then_chrome_when_there_is_no_headless_shell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _only(monkeypatch, {"/usr/bin/chromium", "/usr/bin/google-chrome"}, {})
    assert find_browser() == "/usr/bin/chromium"
    _only(monkeypatch, {"/usr/bin/google-chrome"}, {})
    assert find_browser() == "/usr/bin/google-chrome"


def test_path_is_searched_in_the_same_order_after_the_fixed_places(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_path = {
        "chromium": "/opt/bin/chromium",
        "chrome-headless-shell": "/opt/chrome-headless-shell/chrome-headless-shell",
    }
    _only(monkeypatch, set(), on_path)
    assert find_browser() == "/opt/chrome-headless-shell/chrome-headless-shell"
    _only(monkeypatch, set(), {})
    assert find_browser() is None


def test_every_fixed_place_is_an_absolute_path_of_a_known_browser() -> None:
    assert BROWSER_PATHS[0] == "/usr/bin/chromium-headless-shell"
    assert all(os.path.isabs(path) for path in BROWSER_PATHS)
