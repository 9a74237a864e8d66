"""Warnings a role logs when it starts in a way that exposes its user (issue 15, item 6)."""

from __future__ import annotations

import pytest

from ferry.client.app import open_proxy_warning
from ferry.transport.broker_http import plain_http_warning


@pytest.mark.parametrize(
    "url",
    ["https://broker.example", "http://127.0.0.1:8080", "http://[::1]:80/", "http://localhost:1"],
)
def test_https_and_loopback_brokers_start_quietly(url: str) -> None:
    assert plain_http_warning(url) is None


@pytest.mark.parametrize("url", ["http://broker.example", "http://192.0.2.7:8080/"])
def test_a_plain_http_broker_elsewhere_is_warned_about(url: str) -> None:
    warning = plain_http_warning(url)
    assert warning is not None and "https://" in warning and url in warning


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_a_loopback_proxy_starts_quietly(host: str) -> None:
    assert open_proxy_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "myhost"])
def test_a_proxy_open_to_the_network_is_warned_about(host: str) -> None:
    warning = open_proxy_warning(host)
    assert warning is not None and "anyone" in warning
