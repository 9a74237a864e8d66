"""Logging with privacy by default.

No ferry log line may carry a client's address or a destination unless the operator turned
on ``--unsafe-logging``. Code logs through :func:`get_logger`, and passes anything that names
a peer or a destination through :func:`redact`, which returns ``"[redacted]"`` unless unsafe
logging is on. As a second line of defence, :class:`ScrubbingFilter` (installed on the root
ferry handler by :func:`configure`) rewrites anything that looks like an IPv4 or IPv6 address
in every record, including messages from the libraries below us (aiortc, aioice, aiohttp).
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


def scrub(text: str) -> str:
    """Replace every IPv4/IPv6 address (with optional port) in ``text``, unless unsafe."""
    if _unsafe_logging:
        return text
    return _ADDRESS.sub(REDACTED, text)


class ScrubbingFilter(logging.Filter):
    """Rewrites each record's message with :func:`scrub` before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _unsafe_logging:
            message = scrub(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return True


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
    for noisy in ("aioice", "aiortc", "aioquic", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)
