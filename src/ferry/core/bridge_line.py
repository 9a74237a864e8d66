"""The bridge line: one copy-pasteable string naming an egress and its certificate
(``docs/protocol.md`` §6).

::

    ferry1 ws://egress.example:8443/v1/relay sha256=<64 lowercase hex digits> check=<8 hex>

``ferry1`` names the format, the URL is the egress's WebSocket URL (what volunteers connect
to) and the hash is the SHA-256 of the egress certificate's DER bytes, which the client pins.
``check=`` is a checksum of the rest (:func:`bridge_line_checksum`), so a mistyped or
truncated line is refused at once with a message saying so, not later in a handshake.

People paste bridge lines from e-mails and chat messages, so :func:`parse_bridge_line`
ignores whitespace around the line and accepts any run of whitespace between its three parts
(a line wrapped by a mail program still parses), but is otherwise strict, and its
:class:`~ferry.errors.ConfigError` messages say in plain words what is wrong.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from urllib.parse import urlsplit

from ferry.errors import ConfigError

__all__ = [
    "BRIDGE_LINE_FORMAT",
    "CHECKSUM_HEX_DIGITS",
    "FINGERPRINT_BYTES",
    "MAX_URL_LENGTH",
    "BridgeLine",
    "BridgeLineDamagedError",
    "bridge_line_checksum",
    "certificate_fingerprint",
    "check_egress_url",
    "parse_bridge_line",
]

BRIDGE_LINE_FORMAT = "ferry1"
"""The first word of every bridge line of this format."""

FINGERPRINT_BYTES = 32
"""Length of a SHA-256 fingerprint in bytes (64 hex digits)."""

MAX_URL_LENGTH = 2048
"""The longest egress URL accepted, as in the broker messages (§2)."""

CHECKSUM_HEX_DIGITS = 8
"""Length of the ``check=`` field in hex digits (the first 4 bytes of a SHA-256)."""

_FINGERPRINT_PREFIX = "sha256="
_CHECKSUM_PREFIX = "check="
_HEX_DIGITS = 2 * FINGERPRINT_BYTES
_LOWER_HEX = frozenset(string.digits + "abcdef")
_ANY_HEX = frozenset(string.hexdigits)


class BridgeLineDamagedError(ConfigError):
    """A bridge line whose ``check=`` checksum does not match the rest of it."""


@dataclass(frozen=True, slots=True)
class BridgeLine:
    """An egress's WebSocket URL and the fingerprint of its certificate.

    The constructor checks both fields and raises :class:`~ferry.errors.ConfigError` if
    either is invalid; ``str()`` gives the canonical line.
    """

    url: str
    """The egress's WebSocket URL: ``ws://`` or ``wss://`` with a host."""
    fingerprint: bytes
    """SHA-256 of the egress certificate's DER encoding (32 bytes)."""

    def __post_init__(self) -> None:
        check_egress_url(self.url)
        if len(self.fingerprint) != FINGERPRINT_BYTES:
            raise ConfigError(
                f"the certificate fingerprint must be {FINGERPRINT_BYTES} bytes (SHA-256), "
                f"not {len(self.fingerprint)}"
            )

    def __str__(self) -> str:
        body = _checked_text(self.url, self.fingerprint.hex())
        return f"{body} {_CHECKSUM_PREFIX}{bridge_line_checksum(body)}"


def _checked_text(url: str, fingerprint_hex: str) -> str:
    return f"{BRIDGE_LINE_FORMAT} {url} {_FINGERPRINT_PREFIX}{fingerprint_hex}"


def bridge_line_checksum(checked_text: str) -> str:
    """The ``check=`` value for ``ferry1 URL sha256=HEX`` (single spaces): the first
    :data:`CHECKSUM_HEX_DIGITS` lowercase hex digits of the SHA-256 of that text in UTF-8."""
    return hashlib.sha256(checked_text.encode()).hexdigest()[:CHECKSUM_HEX_DIGITS]


def certificate_fingerprint(der: bytes) -> bytes:
    """The fingerprint a bridge line carries for a certificate: SHA-256 of its DER bytes."""
    return hashlib.sha256(der).digest()


def check_egress_url(url: str) -> None:
    """Raise :class:`~ferry.errors.ConfigError` unless ``url`` is a usable egress URL."""
    if len(url) > MAX_URL_LENGTH:
        raise ConfigError(
            f"the egress URL in the bridge line is {len(url)} characters long; "
            f"at most {MAX_URL_LENGTH} are allowed"
        )
    if any(character.isspace() or not character.isprintable() for character in url):
        raise ConfigError("the egress URL in the bridge line contains spaces or invisible text")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(
            "the egress URL in the bridge line is not a valid URL (check the host and port)"
        ) from None
    if parts.scheme not in ("ws", "wss"):
        raise ConfigError(
            "the egress URL in the bridge line must start with ws:// or wss://"
            f" (it starts with {parts.scheme + '://' if parts.scheme else 'something else'})"
        )
    if not parts.hostname:
        raise ConfigError("the egress URL in the bridge line has no host name after ws://")
    if port == 0:
        raise ConfigError("the egress URL in the bridge line has port 0, which cannot be used")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "the egress URL in the bridge line must not contain a user name or password"
        )
    if parts.fragment or url.endswith("#"):
        raise ConfigError("the egress URL in the bridge line must not contain a '#' part")


def parse_bridge_line(text: str) -> BridgeLine:
    """Parse a bridge line as pasted by a person.

    Raises :class:`~ferry.errors.ConfigError` with a message for a non-technical reader
    saying what is wrong.
    """
    words = text.split()
    if not words:
        raise ConfigError(
            f"the bridge line is empty: paste the whole line, which starts with "
            f"{BRIDGE_LINE_FORMAT}"
        )
    first = words[0]
    if first != BRIDGE_LINE_FORMAT:
        if first.startswith("ferry") and first[5:].isdigit():
            raise ConfigError(
                f"this bridge line is in format {first}, which this version of ferry does not "
                f"understand (it reads {BRIDGE_LINE_FORMAT}): update ferry"
            )
        raise ConfigError(
            f"not a ferry bridge line: it must start with {BRIDGE_LINE_FORMAT}, "
            "then the egress URL, then sha256= and the fingerprint"
        )
    if len(words) == 1:
        raise ConfigError(
            "the bridge line is cut short: the egress URL and the fingerprint are missing"
        )
    if len(words) == 2:
        if words[1].startswith(_FINGERPRINT_PREFIX):
            raise ConfigError("the bridge line is missing the egress URL before sha256=")
        raise ConfigError(
            "the bridge line is cut short: the fingerprint (sha256=...) after the URL is missing"
        )
    if len(words) > 4:
        raise ConfigError(
            "the bridge line has extra text after the checksum: it must be exactly "
            f"{BRIDGE_LINE_FORMAT}, the egress URL, sha256=... and check=..., separated by spaces"
        )
    url, fingerprint_text = words[1], words[2]
    if len(words) == 3:
        if (
            fingerprint_text.startswith(_FINGERPRINT_PREFIX)
            and len(fingerprint_text) >= len(_FINGERPRINT_PREFIX) + _HEX_DIGITS
        ):
            raise ConfigError(
                "the bridge line is cut short: the checksum (check=...) at its end is missing; "
                "copy the whole line again (lines from before ferry added the checksum are "
                "no longer accepted: ask for a new one)"
            )
    else:
        _check_checksum(" ".join(words[:3]), words[3])
    check_egress_url(url)
    return BridgeLine(url, _parse_fingerprint(fingerprint_text))


def _check_checksum(checked_text: str, checksum_text: str) -> None:
    if not checksum_text.startswith(_CHECKSUM_PREFIX):
        raise ConfigError(
            "the bridge line has extra text after the fingerprint: its last part must be "
            f"{_CHECKSUM_PREFIX} followed by {CHECKSUM_HEX_DIGITS} hex digits"
        )
    if checksum_text[len(_CHECKSUM_PREFIX) :] != bridge_line_checksum(checked_text):
        raise BridgeLineDamagedError(
            "this bridge line is damaged: its checksum does not match, so a character was "
            "changed, lost or added; copy it again"
        )


def _parse_fingerprint(text: str) -> bytes:
    if not text.startswith(_FINGERPRINT_PREFIX):
        raise ConfigError(
            f"the fingerprint in the bridge line must start with {_FINGERPRINT_PREFIX} "
            f"followed by {_HEX_DIGITS} hex digits"
        )
    digits = text[len(_FINGERPRINT_PREFIX) :]
    for character in digits:
        if character not in _ANY_HEX:
            raise ConfigError(
                f"the fingerprint in the bridge line contains {character!r}, which is not a "
                "hex digit (0-9, a-f): copy the line again"
            )
    if len(digits) < _HEX_DIGITS:
        raise ConfigError(
            f"the bridge line is cut short: the fingerprint has {len(digits)} of "
            f"{_HEX_DIGITS} hex digits"
        )
    if len(digits) > _HEX_DIGITS:
        raise ConfigError(
            f"the fingerprint in the bridge line has {len(digits)} hex digits, but must have "
            f"exactly {_HEX_DIGITS}"
        )
    if any(character not in _LOWER_HEX for character in digits):
        raise ConfigError(
            "the fingerprint in the bridge line must be written in lowercase hex digits (a-f)"
        )
    return bytes.fromhex(digits)
