"""The handshake of the client's local proxy port, sans-IO (``docs/protocol.md`` §1).

One TCP port speaks SOCKS5 (RFC 1928, with RFC 1929 username/password) and HTTP CONNECT;
the first byte tells them apart. :class:`ProxyHandshake` is driven like h11: feed it what
the application sent with :meth:`ProxyHandshake.receive_data` (``b""`` for EOF) and pull
events with :meth:`ProxyHandshake.next_event` until it returns :class:`ConnectRequest` or
:class:`HandshakeFailed`:

- :data:`NEED_DATA`: read more bytes from the application and feed them;
- :class:`SendBytes`: write these bytes to the application (SOCKS method choice, RFC 1929
  status), then ask again;
- :class:`ConnectRequest`: the application wants a tunnel to ``target``. Open it, then send
  :meth:`ProxyHandshake.reply_bytes` (or :meth:`ProxyHandshake.unavailable_reply_bytes`), and
  forward :attr:`ProxyHandshake.leftover` (bytes the application pipelined after its request)
  upstream before anything else;
- :class:`HandshakeFailed`: write ``reply`` (possibly empty) and close.

The machine never touches a socket or a clock; the caller bounds the handshake in time.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import ipaddress
import re
from dataclasses import dataclass
from typing import Final, Literal

from ferry.core.addresses import AddressType, Target
from ferry.core.codes import DEFAULT_MESSAGE, HTTP_STATUS, SOCKS_REPLY, ReplyCode
from ferry.errors import LocalError

__all__ = [
    "NEED_DATA",
    "ConnectRequest",
    "Credentials",
    "HandshakeEvent",
    "HandshakeFailed",
    "NeedData",
    "ProxyHandshake",
    "ProxyProtocol",
    "SendBytes",
    "http_response",
    "socks_reply",
]

ProxyProtocol = Literal["socks5", "http"]
"""Which protocol the application spoke."""

SOCKS_VERSION: Final = 0x05
AUTH_VERSION: Final = 0x01
METHOD_NO_AUTH: Final = 0x00
METHOD_USERNAME_PASSWORD: Final = 0x02
METHOD_NONE_ACCEPTABLE: Final = 0xFF
COMMAND_CONNECT: Final = 0x01
SOCKS_COMMAND_NOT_SUPPORTED: Final = 0x07
SOCKS_ADDRESS_TYPE_NOT_SUPPORTED: Final = 0x08
SOCKS_GENERAL_FAILURE: Final = 0x01

HTTP_UNAVAILABLE: Final = (503, "Service Unavailable")

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")
_PORT = re.compile(r"[0-9]{1,5}")
_HEADER_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_HEAD_END = b"\r\n\r\n"


class NeedData(enum.Enum):
    """Type of the :data:`NEED_DATA` sentinel."""

    NEED_DATA = enum.auto()


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by :meth:`ProxyHandshake.next_event` when it must be fed more bytes."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """The username and password an application must present (RFC 1929 or HTTP Basic)."""

    username: str
    """1..255 bytes of UTF-8, without ``:`` (HTTP Basic could not carry it)."""
    password: str
    """1..255 bytes of UTF-8."""

    def __post_init__(self) -> None:
        for field_name, value in (("username", self.username), ("password", self.password)):
            if not 1 <= len(value.encode("utf-8")) <= 255:
                raise LocalError(f"the proxy {field_name} must be 1..255 bytes of UTF-8")
        if ":" in self.username:
            raise LocalError("the proxy username must not contain ':' (HTTP Basic splits there)")

    def matches(self, username: bytes, password: bytes) -> bool:
        """Whether the presented bytes are these credentials (compared in constant time)."""
        username_ok = hmac.compare_digest(username, self.username.encode("utf-8"))
        password_ok = hmac.compare_digest(password, self.password.encode("utf-8"))
        return username_ok and password_ok


@dataclass(frozen=True, slots=True)
class SendBytes:
    """Bytes to write to the application before the handshake goes on."""

    data: bytes
    """The exact bytes (a SOCKS method selection or an RFC 1929 status)."""


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """The application asked for a tunnel; the handshake waits for a reply."""

    target: Target
    """Where the application wants to go."""
    protocol: ProxyProtocol
    """Which protocol it asked in."""


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """The application's bytes were refused; write ``reply`` and close."""

    reply: bytes
    """The exact bytes to send before closing; may be empty (close silently)."""
    reason: str
    """A short metrics label, such as ``"bad_version"`` or ``"auth_failed"``."""
    message: str
    """One sentence saying what was wrong, for logs (contains no destination)."""


HandshakeEvent = NeedData | SendBytes | ConnectRequest | HandshakeFailed
"""Everything :meth:`ProxyHandshake.next_event` can return."""


class _State(enum.Enum):
    START = enum.auto()
    SOCKS_GREETING = enum.auto()
    SOCKS_AUTH = enum.auto()
    SOCKS_REQUEST = enum.auto()
    HTTP_HEAD = enum.auto()
    AWAITING_REPLY = enum.auto()
    REPLIED = enum.auto()
    FAILED = enum.auto()


class _Refused(Exception):
    """Internal: the request is refused with these reply bytes."""

    def __init__(self, reply: bytes, reason: str, message: str) -> None:
        super().__init__(message)
        self.failure = HandshakeFailed(reply=reply, reason=reason, message=message)


def socks_reply(rep: int) -> bytes:
    """A SOCKS5 reply with ``rep`` that never reveals a bound address (0.0.0.0:0)."""
    return bytes([SOCKS_VERSION, rep, 0x00, AddressType.IPV4]) + bytes(6)


def http_response(
    status: int, phrase: str, sentence: str, extra_headers: tuple[str, ...] = ()
) -> bytes:
    """An HTTP/1.1 failure response: ``sentence`` as a text/plain body, then close."""
    body = (_one_sentence(sentence) + "\n").encode("utf-8")
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        *extra_headers,
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("ascii") + body


def _one_sentence(text: str) -> str:
    sentence = " ".join(text.split())
    if not sentence:
        sentence = "the request failed"
    sentence = sentence[0].upper() + sentence[1:]
    if sentence[-1] not in ".!?":
        sentence += "."
    return sentence


class ProxyHandshake:
    """One application connection's SOCKS5 or HTTP CONNECT handshake, as a state machine.

    ``credentials``, when given, are required: SOCKS clients must choose RFC 1929 and present
    them, HTTP clients must send ``Proxy-Authorization: Basic``. ``max_request_bytes`` caps
    an HTTP request head (request line, headers and the empty line).
    """

    def __init__(
        self, credentials: Credentials | None = None, max_request_bytes: int = 8192
    ) -> None:
        if max_request_bytes < 64:
            raise LocalError("max_request_bytes must be at least 64")
        self._credentials = credentials
        self._max_request_bytes = max_request_bytes
        self._buffer = bytearray()
        self._eof = False
        self._state = _State.START
        self._protocol: ProxyProtocol | None = None
        self._leftover = b""

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes the application sent; ``b""`` means it closed its side (EOF)."""
        if self._eof:
            raise LocalError("receive_data() called after EOF was fed")
        if self._state in (_State.AWAITING_REPLY, _State.REPLIED, _State.FAILED):
            raise LocalError("receive_data() called after the handshake finished")
        if data:
            self._buffer += data
        else:
            self._eof = True

    # -- output ------------------------------------------------------------------------------

    @property
    def protocol(self) -> ProxyProtocol | None:
        """``"socks5"`` or ``"http"`` once the first byte was seen, else ``None``."""
        return self._protocol

    @property
    def leftover(self) -> bytes:
        """Bytes the application sent after its request; forward them upstream first."""
        return self._leftover

    def next_event(self) -> HandshakeEvent:
        """The next thing the caller must do; see the module docstring."""
        if self._state in (_State.AWAITING_REPLY, _State.REPLIED, _State.FAILED):
            raise LocalError("next_event() called after the handshake finished")
        try:
            event = self._parse()
        except _Refused as refused:
            self._state = _State.FAILED
            self._buffer.clear()
            return refused.failure
        if event is NEED_DATA and self._eof:
            self._state = _State.FAILED
            return HandshakeFailed(
                reply=b"",
                reason="truncated",
                message="the application closed the connection before finishing its request",
            )
        return event

    def reply_bytes(self, code: ReplyCode, message: str) -> bytes:
        """The reply to the :class:`ConnectRequest`: SOCKS5 reply or HTTP response.

        ``message`` becomes the body of an HTTP failure response (SOCKS has no room for it);
        if empty, a default sentence for ``code`` is used.
        """
        protocol = self._take_reply_turn()
        if protocol == "socks5":
            return socks_reply(SOCKS_REPLY[code])
        status, phrase = HTTP_STATUS[code]
        if code is ReplyCode.SUCCEEDED:
            return f"HTTP/1.1 {status} {phrase}\r\n\r\n".encode("ascii")
        return http_response(status, phrase, message or DEFAULT_MESSAGE[code])

    def unavailable_reply_bytes(self, message: str) -> bytes:
        """The reply when no volunteer could be reached: SOCKS5 0x01 or HTTP 503."""
        protocol = self._take_reply_turn()
        if protocol == "socks5":
            return socks_reply(SOCKS_GENERAL_FAILURE)
        status, phrase = HTTP_UNAVAILABLE
        return http_response(status, phrase, message or "no volunteer relay is reachable now")

    def _take_reply_turn(self) -> ProxyProtocol:
        if self._state is not _State.AWAITING_REPLY or self._protocol is None:
            raise LocalError("a reply can be made once, and only after a ConnectRequest")
        self._state = _State.REPLIED
        return self._protocol

    # -- parsing -----------------------------------------------------------------------------

    def _parse(self) -> HandshakeEvent:
        if self._state is _State.START:
            return self._parse_first_byte()
        if self._state is _State.SOCKS_GREETING:
            return self._parse_socks_greeting()
        if self._state is _State.SOCKS_AUTH:
            return self._parse_socks_auth()
        if self._state is _State.SOCKS_REQUEST:
            return self._parse_socks_request()
        return self._parse_http_head()

    def _parse_first_byte(self) -> HandshakeEvent:
        if not self._buffer:
            return NEED_DATA
        first = self._buffer[0]
        if first == SOCKS_VERSION:
            self._protocol = "socks5"
            self._state = _State.SOCKS_GREETING
            return self._parse_socks_greeting()
        if chr(first).isascii() and chr(first).isalpha():
            self._protocol = "http"
            self._state = _State.HTTP_HEAD
            return self._parse_http_head()
        message = f"the first byte 0x{first:02x} starts neither SOCKS5 nor an HTTP request"
        if 0x20 <= first <= 0x7E:
            raise _Refused(
                http_response(
                    400,
                    "Bad Request",
                    "this port speaks SOCKS5 and HTTP CONNECT only",
                ),
                "unknown_protocol",
                message,
            )
        raise _Refused(b"", "unknown_protocol", message)

    def _parse_socks_greeting(self) -> HandshakeEvent:
        buffer = self._buffer
        if len(buffer) < 2:
            return NEED_DATA
        method_count = buffer[1]
        if len(buffer) < 2 + method_count:
            return NEED_DATA
        methods = bytes(buffer[2 : 2 + method_count])
        del buffer[: 2 + method_count]
        wanted = METHOD_NO_AUTH if self._credentials is None else METHOD_USERNAME_PASSWORD
        if wanted not in methods:
            needed = "no authentication" if self._credentials is None else "username/password"
            raise _Refused(
                bytes([SOCKS_VERSION, METHOD_NONE_ACCEPTABLE]),
                "no_acceptable_method",
                f"the SOCKS5 greeting did not offer {needed}, which this proxy requires",
            )
        if wanted == METHOD_USERNAME_PASSWORD:
            self._state = _State.SOCKS_AUTH
        else:
            self._state = _State.SOCKS_REQUEST
        return SendBytes(bytes([SOCKS_VERSION, wanted]))

    def _parse_socks_auth(self) -> HandshakeEvent:
        buffer = self._buffer
        failure = bytes([AUTH_VERSION, 0x01])
        if not buffer:
            return NEED_DATA
        if buffer[0] != AUTH_VERSION:
            raise _Refused(
                failure,
                "bad_version",
                f"the RFC 1929 sub-negotiation has version {buffer[0]}, not 1",
            )
        if len(buffer) < 2:
            return NEED_DATA
        username_end = 2 + buffer[1]
        if len(buffer) < username_end + 1:
            return NEED_DATA
        password_end = username_end + 1 + buffer[username_end]
        if len(buffer) < password_end:
            return NEED_DATA
        username = bytes(buffer[2:username_end])
        password = bytes(buffer[username_end + 1 : password_end])
        del buffer[:password_end]
        assert self._credentials is not None
        if not self._credentials.matches(username, password):
            raise _Refused(failure, "auth_failed", "wrong SOCKS5 username or password")
        self._state = _State.SOCKS_REQUEST
        return SendBytes(bytes([AUTH_VERSION, 0x00]))

    def _parse_socks_request(self) -> HandshakeEvent:
        buffer = self._buffer
        general_failure = socks_reply(SOCKS_GENERAL_FAILURE)
        if not buffer:
            return NEED_DATA
        if buffer[0] != SOCKS_VERSION:
            raise _Refused(
                general_failure,
                "bad_version",
                f"the SOCKS5 request has version {buffer[0]}, not 5",
            )
        if len(buffer) < 2:
            return NEED_DATA
        if buffer[1] != COMMAND_CONNECT:
            raise _Refused(
                socks_reply(SOCKS_COMMAND_NOT_SUPPORTED),
                "unsupported_command",
                f"SOCKS5 command {buffer[1]} is not supported, only CONNECT (1)",
            )
        if len(buffer) < 3:
            return NEED_DATA
        if buffer[2] != 0x00:
            raise _Refused(
                general_failure, "malformed", "the SOCKS5 request's reserved byte is not zero"
            )
        if len(buffer) < 4:
            return NEED_DATA
        address_type = buffer[3]
        if address_type == AddressType.IPV4:
            address_end = 4 + 4
        elif address_type == AddressType.IPV6:
            address_end = 4 + 16
        elif address_type == AddressType.DOMAIN:
            if len(buffer) < 5:
                return NEED_DATA
            address_end = 5 + buffer[4]
        else:
            raise _Refused(
                socks_reply(SOCKS_ADDRESS_TYPE_NOT_SUPPORTED),
                "unsupported_address_type",
                f"SOCKS5 address type {address_type} is not supported (only 1, 3 and 4)",
            )
        if len(buffer) < address_end + 2:
            return NEED_DATA
        raw_address = bytes(buffer[4:address_end])
        port = int.from_bytes(buffer[address_end : address_end + 2], "big")
        self._leftover = bytes(buffer[address_end + 2 :])
        buffer.clear()
        if address_type == AddressType.IPV4:
            host = str(ipaddress.IPv4Address(raw_address))
        elif address_type == AddressType.IPV6:
            host = str(ipaddress.IPv6Address(raw_address))
        else:
            host = _socks_domain(raw_address[1:], general_failure)
        if port == 0:
            raise _Refused(general_failure, "bad_target", "the SOCKS5 request asks for port 0")
        return self._connect(Target(host=host, port=port))

    def _parse_http_head(self) -> HandshakeEvent:
        buffer = self._buffer
        limit = self._max_request_bytes
        end = buffer.find(_HEAD_END, 0, limit)
        if end < 0:
            if len(buffer) >= limit:
                raise _Refused(
                    http_response(
                        431,
                        "Request Header Fields Too Large",
                        f"the request head is larger than {limit} bytes",
                    ),
                    "request_too_large",
                    f"the HTTP request head is larger than {limit} bytes",
                )
            return NEED_DATA
        head = bytes(buffer[:end])
        self._leftover = bytes(buffer[end + len(_HEAD_END) :])
        buffer.clear()
        request_line, *header_lines = head.split(b"\r\n")
        target = self._check_http_request_line(request_line)
        self._check_http_headers(header_lines)
        return self._connect(target)

    def _check_http_request_line(self, line: bytes) -> Target:
        parts = line.split(b" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
            raise _bad_request("malformed", "the HTTP request line is malformed")
        method, authority, version = parts
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise _bad_request("bad_version", "only HTTP/1.0 and HTTP/1.1 are supported")
        if method != b"CONNECT":
            raise _Refused(
                http_response(
                    405,
                    "Method Not Allowed",
                    "this proxy only tunnels with CONNECT; it does not forward requests",
                    ("Allow: CONNECT",),
                ),
                "http_method_not_allowed",
                "the HTTP method is not CONNECT",
            )
        return _http_authority(authority)

    def _check_http_headers(self, lines: list[bytes]) -> None:
        authorizations: list[bytes] = []
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise _bad_request("malformed", "an HTTP header line is malformed")
            value = value.strip(b" \t")
            if not _HEADER_VALUE.fullmatch(value):
                raise _bad_request("malformed", "an HTTP header value has control characters")
            lowered = name.lower()
            if lowered == b"proxy-authorization":
                authorizations.append(value)
            elif lowered == b"transfer-encoding" or (
                lowered == b"content-length" and value != b"0"
            ):
                raise _bad_request("malformed", "a CONNECT request must not have a body")
        if self._credentials is not None and not (
            len(authorizations) == 1 and _basic_matches(authorizations[0], self._credentials)
        ):
            raise _Refused(
                http_response(
                    407,
                    "Proxy Authentication Required",
                    "this proxy requires a valid username and password",
                    ('Proxy-Authenticate: Basic realm="ferry"',),
                ),
                "auth_failed",
                "missing or wrong HTTP proxy credentials",
            )

    def _connect(self, target: Target) -> ConnectRequest:
        assert self._protocol is not None
        self._state = _State.AWAITING_REPLY
        return ConnectRequest(target=target, protocol=self._protocol)


def _bad_request(reason: str, sentence: str) -> _Refused:
    return _Refused(http_response(400, "Bad Request", sentence), reason, sentence)


def _socks_domain(raw: bytes, failure_reply: bytes) -> str:
    if not raw:
        raise _Refused(failure_reply, "bad_target", "the SOCKS5 request has an empty domain name")
    if not all(0x21 <= byte <= 0x7E for byte in raw):
        raise _Refused(
            failure_reply,
            "bad_target",
            "the SOCKS5 domain name has bytes that are not printable ASCII",
        )
    return raw.decode("ascii")


def _http_authority(authority: bytes) -> Target:
    invalid = _bad_request(
        "bad_target", "the CONNECT target must be host:port with a port in 1..65535"
    )
    try:
        text = authority.decode("ascii")
    except UnicodeDecodeError:
        raise invalid from None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":") or "%" in host:
            raise invalid
        port_text = rest[1:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise invalid from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not _HOST_NAME.fullmatch(host):
            raise invalid
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise invalid
    return Target(host=host, port=int(port_text))


def _basic_matches(value: bytes, credentials: Credentials) -> bool:
    scheme, _, encoded = value.partition(b" ")
    if scheme.lower() != b"basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(b" "), validate=True)
    except (binascii.Error, ValueError):
        return False
    username, colon, password = decoded.partition(b":")
    return bool(colon) and credentials.matches(username, password)
