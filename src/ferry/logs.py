"""Logging with privacy by default.

No ferry log line may carry a client's address or a destination unless the operator turned
on ``--unsafe-logging``. Code logs through :func:`get_logger`, and passes anything that names
a peer or a destination through :func:`redact`, which returns ``"[redacted]"`` unless unsafe
logging is on. As a second line of defence, :class:`ScrubbingFilter` (installed on the root
ferry handler by :func:`configure`) rewrites anything that looks like an IPv4 or IPv6 address
in every record, including messages from the libraries below us (aiortc, aioice, aiohttp).

Embedded (without :func:`configure`: ``ferry.demo``, tests, someone's own program with its
own handlers), each role calls :func:`scrub_library_loggers` when it starts: the filter then
sits on the loggers of :data:`LIBRARY_LOGGERS` themselves, so their records are scrubbed
before any handler of the embedding program sees them.
"""

from __future__ import annotations

import logging
import re
import sys

_unsafe_logging = False

_IPV4 = r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\w.])"
_IPV6 = r"(?<![\w:])\[?(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%\w+)?\]?(?::\d{1,5})?(?![\w:])"
_ADDRESS = re.compile(f"{_IPV4}|{_IPV6}")

REDACTED = "[redacted]"


def set_unsafe_logging(enabled: bool) -> None:
    """Turn on (``True``) the logging of addresses and destinations, for debugging only."""
    global _unsafe_logging
    _unsafe_logging = enabled


def unsafe_logging_enabled() -> bool:
    """Whether ``--unsafe-logging`` is on."""
    return _unsafe_logging


def redact(value: object) -> str:
    """``str(value)`` when unsafe logging is on, else ``"[redacted]"``."""
    return str(value) if _unsafe_logging else REDACTED


PUBLIC_ADDRESSES = "ferry_public_addresses"
"""The ``extra=`` key of a record whose message names public servers by IP address (a STUN or
TURN server that did not answer): :class:`ScrubbingFilter` leaves those addresses, and only
those, in that record's message. Never a peer's or a destination's address."""


def scrub(text: str, keep: frozenset[str] = frozenset()) -> str:
    """Replace every IPv4/IPv6 address (with optional port) in ``text``, unless unsafe; the
    addresses in ``keep`` (without port or brackets) stay."""
    if _unsafe_logging:
        return text
    if not keep:
        return _ADDRESS.sub(REDACTED, text)
    return _ADDRESS.sub(lambda found: found[0] if _host(found[0]) in keep else REDACTED, text)


def _host(address: str) -> str:
    """``address`` without its port and brackets."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    return address.partition(":")[0] if address.count(":") == 1 else address


_STANDARD_RECORD_FIELDS = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime"}

LIBRARY_LOGGERS = (
    # aiohttp/log.py: "Error handling request from <peer>" (server), the access log (whose
    # ``extra`` fields carry the remote address too), client and websocket errors
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
    # aioice: candidate pairs, STUN/TURN servers, mDNS names and the addresses they resolve to
    "aioice.ice",
    "aioice.mdns",
    "aioice.turn",
    # aiortc: every module logger that emits (ICE, DTLS and SCTP lines name the transports)
    "aiortc.contrib.media",
    "aiortc.contrib.signaling",
    "aiortc.rtcdatachannel",
    "aiortc.rtcdtlstransport",
    "aiortc.rtcicetransport",
    "aiortc.rtcpeerconnection",
    "aiortc.rtcrtpreceiver",
    "aiortc.rtcrtpsender",
    "aiortc.rtcrtptransceiver",
    "aiortc.rtcsctptransport",
    # aioquic: "Network path <address> validated/discovered/promoted" (quic/connection.py)
    "quic",
    "http3",
    # the event loop's exception handler prints transports and peers on fatal errors
    "asyncio",
)
"""The third-party loggers that emit records which can carry a peer's address, by exact name
(a logger's filters do not apply to records of its child loggers, so parents are no use)."""


class ScrubbingFilter(logging.Filter):
    """Rewrites each record's message (and its traceback, and the string fields a library
    passed in ``extra=``) with :func:`scrub` before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _unsafe_logging:
            message = scrub(record.getMessage(), frozenset(getattr(record, PUBLIC_ADDRESSES, ())))
            record.msg, record.args = message, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            for name, value in list(record.__dict__.items()):
                if name in _STANDARD_RECORD_FIELDS:
                    continue
                if isinstance(value, str):
                    setattr(record, name, scrub(value))
                elif isinstance(value, dict):
                    setattr(record, name, {key: _scrub_field(item) for key, item in value.items()})
        return True


def _scrub_field(value: object) -> object:
    return scrub(value) if isinstance(value, str) else value


def scrub_library_loggers() -> None:
    """Put one :class:`ScrubbingFilter` on each logger of :data:`LIBRARY_LOGGERS` (never two:
    calling it again, as every role does when it starts, changes nothing). The filter reads
    the unsafe-logging switch for each record, so with ``--unsafe-logging`` on (set before or
    after this call) records pass unchanged."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, ScrubbingFilter) for existing in logger.filters):
            logger.addFilter(ScrubbingFilter())


def get_logger(name: str) -> logging.Logger:
    """The logger for a ferry module (``name`` is its ``__name__``)."""
    return logging.getLogger(name)


def configure(*, verbose: bool = False, unsafe_logging: bool = False) -> None:
    """Install one stderr handler with the scrubbing filter on the root logger."""
    set_unsafe_logging(unsafe_logging)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ScrubbingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_ferry", False):
            root.removeHandler(existing)
    handler._ferry = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # aioquic logs through "quic" and "http3" (its only loggers), not "aioquic"
    for noisy in ("aioice", "aiortc", "quic", "http3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)
