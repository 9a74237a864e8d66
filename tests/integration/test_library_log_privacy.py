"""Third-party log lines are scrubbed when ferry runs embedded, with no ``ferry.logs.configure``.

A real broker listens on 127.0.0.1; a raw socket sends it a request with a header line that is
not a header, and aiohttp logs "Error handling request from <peer>" through ``aiohttp.server``.
The record must reach the root logger's handlers (caplog's) without the peer's address, unless
unsafe logging is on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.logs import (
    LIBRARY_LOGGERS,
    ScrubbingFilter,
    scrub_library_loggers,
    set_unsafe_logging,
    unsafe_logging_enabled,
)

pytestmark = pytest.mark.timeout(30)

MALFORMED_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: ferry\r\nthis line is not a header\r\n\r\n"


@pytest.fixture
def unsafe_logging_restored() -> Iterator[None]:
    before = unsafe_logging_enabled()
    try:
        yield
    finally:
        set_unsafe_logging(before)


async def _server_log_after_malformed_request(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Start a broker, send it :data:`MALFORMED_REQUEST`, return what ``aiohttp.server``
    logged (message and traceback, as a handler would format them)."""
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    broker = Broker(
        BrokerConfig(host="127.0.0.1", port=0, allowed_egresses=("ws://127.0.0.1:9/v1/relay",)),
        registry=CollectorRegistry(),
    )
    url = urlsplit(await broker.start())
    try:
        assert url.hostname is not None and url.port is not None
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            writer.write(MALFORMED_REQUEST)
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
            await writer.wait_closed()
        assert status_line.split()[1:2] == [b"400"]
        for _ in range(100):  # aiohttp logs before it answers; this only bounds the wait
            if any(record.name == "aiohttp.server" for record in caplog.records):
                break
            await asyncio.sleep(0.01)
    finally:
        await broker.close()
    formatter = logging.Formatter("%(name)s %(message)s")
    return [
        formatter.format(record) for record in caplog.records if record.name == "aiohttp.server"
    ]


async def test_aiohttp_server_lines_carry_no_peer_address_without_configure(
    caplog: pytest.LogCaptureFixture, unsafe_logging_restored: None
) -> None:
    set_unsafe_logging(False)
    lines = await _server_log_after_malformed_request(caplog)
    assert lines, "aiohttp.server logged nothing about the malformed request"
    assert any("Error handling request from [redacted]" in line for line in lines)
    assert not any("127.0.0.1" in line for line in lines)


async def test_unsafe_logging_leaves_the_peer_address_in(
    caplog: pytest.LogCaptureFixture, unsafe_logging_restored: None
) -> None:
    set_unsafe_logging(True)
    lines = await _server_log_after_malformed_request(caplog)
    assert any("Error handling request from 127.0.0.1" in line for line in lines)


def test_the_filter_is_put_on_each_library_logger_once() -> None:
    scrub_library_loggers()
    scrub_library_loggers()
    for name in LIBRARY_LOGGERS:
        filters = logging.getLogger(name).filters
        assert sum(isinstance(existing, ScrubbingFilter) for existing in filters) == 1, name


def test_extra_fields_of_a_record_are_scrubbed(unsafe_logging_restored: None) -> None:
    set_unsafe_logging(False)
    record = logging.LogRecord("aiohttp.access", logging.INFO, "", 0, "%s", ("::1",), None)
    record.remote_address = "127.0.0.1"
    record.request_header = {"X-Forwarded-For": "192.0.2.7"}
    ScrubbingFilter().filter(record)
    assert record.getMessage() == "[redacted]"
    assert record.remote_address == "[redacted]"
    assert record.request_header == {"X-Forwarded-For": "[redacted]"}
