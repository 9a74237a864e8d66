"""``ferry.logs.configure`` quiets the libraries' chatter under the names they really log
with (aioquic logs through ``quic``, not ``aioquic``), and ``--verbose`` lets it through."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from ferry import logs

LIBRARY_NAMES = ("aioice", "aiortc", "quic", "http3", "aiohttp.access")


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put the root logger and the library loggers back as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in LIBRARY_NAMES}
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)
        logs.set_unsafe_logging(False)


@pytest.mark.usefixtures("restored_logging")
def test_library_chatter_is_quiet_by_default_and_heard_when_verbose() -> None:
    logs.configure()
    for name in LIBRARY_NAMES:
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
    logs.configure(verbose=True)
    for name in LIBRARY_NAMES:
        assert logging.getLogger(name).isEnabledFor(logging.INFO), name


def test_a_record_may_name_public_servers_and_nothing_else_is_kept() -> None:
    record = logging.LogRecord(
        "ferry.transport.ice_probe", logging.WARNING, "", 0,
        "the STUN server stun:%s is left out; peer %s, [2001:db8::1]:3478", ("198.18.0.12:3478",
        "198.18.0.120:5000"), None,
    )  # fmt: skip
    record.__dict__[logs.PUBLIC_ADDRESSES] = ("198.18.0.12",)
    assert logs.ScrubbingFilter().filter(record)
    assert record.getMessage() == (
        "the STUN server stun:198.18.0.12:3478 is left out; peer [redacted], [redacted]"
    )
    assert logs.scrub("stun:198.18.0.12:3478") == "stun:[redacted]"
