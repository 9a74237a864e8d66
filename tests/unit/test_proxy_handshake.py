"""The local proxy handshake (docs/protocol.md §1), fed every split of every input."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest

from ferry.core.addresses import Target
from ferry.core.codes import ReplyCode
from ferry.core.proxy_handshake import (
    NEED_DATA,
    ConnectRequest,
    Credentials,
    HandshakeEvent,
    HandshakeFailed,
    ProxyHandshake,
    SendBytes,
)
from ferry.errors import LocalError

CREDENTIALS = Credentials(username="alice", password="s3cret")
SOCKS_FAILURE = b"\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00"
SOCKS_NO_COMMAND = b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"
SOCKS_NO_ATYP = b"\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00"
NO_AUTH_GREETING = b"\x05\x01\x00"
NO_AUTH_CHOSEN = SendBytes(b"\x05\x00")


def http_failure(status_line: str, sentence: str, *extra_headers: str) -> bytes:
    body = sentence.encode() + b"\n"
    head = [
        status_line,
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        *extra_headers,
        "Connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


BAD_TARGET_400 = http_failure(
    "HTTP/1.1 400 Bad Request",
    "The CONNECT target must be host:port with a port in 1..65535.",
)


def basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass(frozen=True)
class Case:
    """One input, the handshake settings, and exactly what must come out."""

    name: str
    data: bytes
    events: tuple[HandshakeEvent, ...]
    leftover: bytes = b""
    credentials: Credentials | None = None


def socks_connect(atyp_and_address: bytes, port: int) -> bytes:
    return b"\x05\x01\x00" + atyp_and_address + port.to_bytes(2, "big")


CASES = [
    # ---- SOCKS5, valid ---------------------------------------------------------------------
    Case(
        "socks_ipv4",
        NO_AUTH_GREETING + socks_connect(b"\x01\x7f\x00\x00\x01", 80),
        (NO_AUTH_CHOSEN, ConnectRequest(Target("127.0.0.1", 80), "socks5")),
    ),
    Case(
        "socks_ipv6",
        NO_AUTH_GREETING + socks_connect(b"\x04" + bytes(15) + b"\x01", 443),
        (NO_AUTH_CHOSEN, ConnectRequest(Target("::1", 443), "socks5")),
    ),
    Case(
        "socks_domain",
        NO_AUTH_GREETING + socks_connect(b"\x03\x0bexample.com", 8443),
        (NO_AUTH_CHOSEN, ConnectRequest(Target("example.com", 8443), "socks5")),
    ),
    Case(
        "socks_several_methods_offered",
        b"\x05\x03\x02\x01\x00" + socks_connect(b"\x01\x0a\x00\x00\x01", 65535),
        (NO_AUTH_CHOSEN, ConnectRequest(Target("10.0.0.1", 65535), "socks5")),
    ),
    Case(
        "socks_pipelined_leftover",
        NO_AUTH_GREETING + socks_connect(b"\x03\x09localhost", 80) + b"GET / HTTP/1.1\r\n\r\n",
        (NO_AUTH_CHOSEN, ConnectRequest(Target("localhost", 80), "socks5")),
        leftover=b"GET / HTTP/1.1\r\n\r\n",
    ),
    Case(
        "socks_user_password",
        b"\x05\x02\x00\x02"
        + b"\x01\x05alice\x06s3cret"
        + socks_connect(b"\x01\xc0\x00\x02\x01", 22),
        (
            SendBytes(b"\x05\x02"),
            SendBytes(b"\x01\x00"),
            ConnectRequest(Target("192.0.2.1", 22), "socks5"),
        ),
        credentials=CREDENTIALS,
    ),
    # ---- SOCKS5, refused -------------------------------------------------------------------
    Case(
        "socks_no_acceptable_method",
        b"\x05\x01\x02",
        (HandshakeFailed(b"\x05\xff", "no_acceptable_method", "n/a"),),
    ),
    Case(
        "socks_zero_methods",
        b"\x05\x00",
        (HandshakeFailed(b"\x05\xff", "no_acceptable_method", "n/a"),),
    ),
    Case(
        "socks_no_auth_refused_when_credentials_configured",
        b"\x05\x01\x00",
        (HandshakeFailed(b"\x05\xff", "no_acceptable_method", "n/a"),),
        credentials=CREDENTIALS,
    ),
    Case(
        "socks_wrong_password",
        b"\x05\x01\x02\x01\x05alice\x05wrong",
        (SendBytes(b"\x05\x02"), HandshakeFailed(b"\x01\x01", "auth_failed", "n/a")),
        credentials=CREDENTIALS,
    ),
    Case(
        "socks_wrong_username",
        b"\x05\x01\x02\x01\x03bob\x06s3cret",
        (SendBytes(b"\x05\x02"), HandshakeFailed(b"\x01\x01", "auth_failed", "n/a")),
        credentials=CREDENTIALS,
    ),
    Case(
        "socks_auth_bad_version",
        b"\x05\x01\x02\x05\x05alice\x06s3cret",
        (SendBytes(b"\x05\x02"), HandshakeFailed(b"\x01\x01", "bad_version", "n/a")),
        credentials=CREDENTIALS,
    ),
    Case(
        "socks_bind",
        NO_AUTH_GREETING + b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50",
        (NO_AUTH_CHOSEN, HandshakeFailed(SOCKS_NO_COMMAND, "unsupported_command", "n/a")),
    ),
    Case(
        "socks_udp_associate",
        NO_AUTH_GREETING + b"\x05\x03\x00\x01\x7f\x00\x00\x01\x00\x50",
        (NO_AUTH_CHOSEN, HandshakeFailed(SOCKS_NO_COMMAND, "unsupported_command", "n/a")),
    ),
    Case(
        "socks_bad_address_type",
        NO_AUTH_GREETING + b"\x05\x01\x00\x05\x7f\x00\x00\x01\x00\x50",
        (NO_AUTH_CHOSEN, HandshakeFailed(SOCKS_NO_ATYP, "unsupported_address_type", "n/a")),
    ),
    Case(
        "socks_empty_domain",
        NO_AUTH_GREETING + socks_connect(b"\x03\x00", 80),
        (NO_AUTH_CHOSEN, HandshakeFailed(SOCKS_FAILURE, "bad_target", "n/a")),
    ),
    Case(
        "socks_domain_with_space",
        NO_AUTH_GREETING + socks_connect(b"\x03\x03a b", 80),
        (NO_AUTH_CHOSEN, HandshakeFailed(SOCKS_FAILURE, "bad_target", "n/a")),
    ),
    Case(
        "socks_port_zero",
        NO_AUTH_GREETING + socks_connect(b"\x01\x7f\x00\x00\x01", 0),
        (NO_AUTH_CHOSEN, HandshakeFailed(SOCKS_FAILURE, "bad_target", "n/a")),
    ),
    Case(
        "socks_request_bad_version",
        NO_AUTH_GREETING + b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50",
        (NO_AUTH_CHOSEN, HandshakeFailed(SOCKS_FAILURE, "bad_version", "n/a")),
    ),
    Case(
        "socks_reserved_not_zero",
        NO_AUTH_GREETING + b"\x05\x01\x01\x01\x7f\x00\x00\x01\x00\x50",
        (NO_AUTH_CHOSEN, HandshakeFailed(SOCKS_FAILURE, "malformed", "n/a")),
    ),
    # ---- HTTP CONNECT, valid ---------------------------------------------------------------
    Case(
        "http_name",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        (ConnectRequest(Target("example.com", 443), "http"),),
    ),
    Case(
        "http_ipv4_http10_no_headers",
        b"CONNECT 127.0.0.1:8080 HTTP/1.0\r\n\r\n",
        (ConnectRequest(Target("127.0.0.1", 8080), "http"),),
    ),
    Case(
        "http_ipv6",
        b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nUser-Agent: test/1\r\n\r\n",
        (ConnectRequest(Target("::1", 443), "http"),),
    ),
    Case(
        "http_ipv6_long_form_is_normalised",
        b"CONNECT [2001:db8:0:0:0:0:0:1]:443 HTTP/1.1\r\n\r\n",
        (ConnectRequest(Target("2001:db8::1", 443), "http"),),
    ),
    Case(
        "http_pipelined_leftover",
        b"CONNECT example.com:443 HTTP/1.1\r\n\r\n\x16\x03\x01\x00\x05hello",
        (ConnectRequest(Target("example.com", 443), "http"),),
        leftover=b"\x16\x03\x01\x00\x05hello",
    ),
    Case(
        "http_basic_auth",
        b"CONNECT example.com:443 HTTP/1.1\r\nproxy-authorization:  Basic "
        + basic("alice", "s3cret").encode()
        + b"  \r\n\r\n",
        (ConnectRequest(Target("example.com", 443), "http"),),
        credentials=CREDENTIALS,
    ),
    # ---- HTTP CONNECT, refused -------------------------------------------------------------
    Case(
        "http_get_is_405",
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
        (
            HandshakeFailed(
                b"HTTP/1.1 405 Method Not Allowed\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: 68\r\n"
                b"Allow: CONNECT\r\n"
                b"Connection: close\r\n"
                b"\r\n"
                b"This proxy only tunnels with CONNECT; it does not forward requests.\n",
                "http_method_not_allowed",
                "n/a",
            ),
        ),
    ),
    Case(
        "http_lowercase_connect_is_405",
        b"connect example.com:443 HTTP/1.1\r\n\r\n",
        (
            HandshakeFailed(
                http_failure(
                    "HTTP/1.1 405 Method Not Allowed",
                    "This proxy only tunnels with CONNECT; it does not forward requests.",
                    "Allow: CONNECT",
                ),
                "http_method_not_allowed",
                "n/a",
            ),
        ),
    ),
    Case(
        "http_missing_credentials_is_407",
        b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
        (
            HandshakeFailed(
                http_failure(
                    "HTTP/1.1 407 Proxy Authentication Required",
                    "This proxy requires a valid username and password.",
                    'Proxy-Authenticate: Basic realm="ferry"',
                ),
                "auth_failed",
                "n/a",
            ),
        ),
        credentials=CREDENTIALS,
    ),
    Case(
        "http_wrong_credentials_is_407",
        b"CONNECT example.com:443 HTTP/1.1\r\nProxy-Authorization: Basic "
        + basic("alice", "guess").encode()
        + b"\r\n\r\n",
        (
            HandshakeFailed(
                http_failure(
                    "HTTP/1.1 407 Proxy Authentication Required",
                    "This proxy requires a valid username and password.",
                    'Proxy-Authenticate: Basic realm="ferry"',
                ),
                "auth_failed",
                "n/a",
            ),
        ),
        credentials=CREDENTIALS,
    ),
    *(
        Case(
            f"http_bad_target_{index}",
            b"CONNECT " + authority + b" HTTP/1.1\r\n\r\n",
            (HandshakeFailed(BAD_TARGET_400, "bad_target", "n/a"),),
        )
        for index, authority in enumerate(
            [
                b"example.com",
                b"example.com:0",
                b"example.com:65536",
                b"example.com:http",
                b"::1:443",
                b"[::1]443",
                b"[fe80::1%eth0]:443",
                b"[example.com]:443",
                b"exa/mple.com:443",
                b":443",
                b"\xc3\xa9.com:443",
            ]
        )
    ),
    Case(
        "http_unsupported_version",
        b"CONNECT example.com:443 HTTP/2.0\r\n\r\n",
        (
            HandshakeFailed(
                http_failure(
                    "HTTP/1.1 400 Bad Request",
                    "Only HTTP/1.0 and HTTP/1.1 are supported.",
                ),
                "bad_version",
                "n/a",
            ),
        ),
    ),
    Case(
        "http_malformed_request_line",
        b"CONNECT  example.com:443 HTTP/1.1\r\n\r\n",
        (
            HandshakeFailed(
                http_failure("HTTP/1.1 400 Bad Request", "The HTTP request line is malformed."),
                "malformed",
                "n/a",
            ),
        ),
    ),
    Case(
        "http_header_without_colon",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost example.com\r\n\r\n",
        (
            HandshakeFailed(
                http_failure("HTTP/1.1 400 Bad Request", "An HTTP header line is malformed."),
                "malformed",
                "n/a",
            ),
        ),
    ),
    Case(
        "http_folded_header",
        b"CONNECT example.com:443 HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
        (
            HandshakeFailed(
                http_failure("HTTP/1.1 400 Bad Request", "An HTTP header line is malformed."),
                "malformed",
                "n/a",
            ),
        ),
    ),
    Case(
        "http_connect_with_body",
        b"CONNECT example.com:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        (
            HandshakeFailed(
                http_failure("HTTP/1.1 400 Bad Request", "A CONNECT request must not have a body."),
                "malformed",
                "n/a",
            ),
        ),
    ),
    # ---- neither ---------------------------------------------------------------------------
    Case(
        "printable_garbage_gets_400",
        b"{not a proxy request}",
        (
            HandshakeFailed(
                b"HTTP/1.1 400 Bad Request\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: 47\r\n"
                b"Connection: close\r\n"
                b"\r\n"
                b"This port speaks SOCKS5 and HTTP CONNECT only.\n",
                "unknown_protocol",
                "n/a",
            ),
        ),
    ),
    Case(
        "socks4_is_closed_silently",
        b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00",
        (HandshakeFailed(b"", "unknown_protocol", "n/a"),),
    ),
    Case(
        "tls_client_hello_is_closed_silently",
        b"\x16\x03\x01\x02\x00\x01",
        (HandshakeFailed(b"", "unknown_protocol", "n/a"),),
    ),
]


def drive(
    credentials: Credentials | None, chunks: list[bytes], *, end_with_eof: bool = False
) -> tuple[list[HandshakeEvent], bytes, ProxyHandshake]:
    """Feed ``chunks`` one by one; return the events, the leftover and the handshake.

    After a ConnectRequest, bytes of chunks that were never fed count as leftover, because
    the caller would read them from the socket and forward them upstream. After a failure
    nothing is forwarded, so the leftover is empty.
    """
    handshake = ProxyHandshake(credentials)
    events: list[HandshakeEvent] = []
    remaining = list(chunks) + ([b""] if end_with_eof else [])
    while remaining:
        handshake.receive_data(remaining.pop(0))
        for _ in range(10):
            event = handshake.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
            if isinstance(event, HandshakeFailed):
                return events, b"", handshake
            if isinstance(event, ConnectRequest):
                return events, handshake.leftover + b"".join(remaining), handshake
        else:
            pytest.fail("the handshake produced more than 10 events for one chunk")
    return events, b"", handshake


def normalise(events: list[HandshakeEvent]) -> list[HandshakeEvent]:
    """Blank the human messages so cases compare reply bytes and reasons exactly."""
    return [
        HandshakeFailed(event.reply, event.reason, "n/a")
        if isinstance(event, HandshakeFailed)
        else event
        for event in events
    ]


def two_part_splits(data: bytes) -> list[list[bytes]]:
    return [[part for part in (data[:i], data[i:]) if part] for i in range(len(data) + 1)]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_two_part_split_gives_the_same_events(case: Case) -> None:
    for chunks in two_part_splits(case.data):
        events, leftover, _ = drive(case.credentials, chunks)
        assert normalise(events) == list(case.events), chunks
        assert leftover == case.leftover, chunks


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_byte_at_a_time_gives_the_same_events(case: Case) -> None:
    chunks = [case.data[i : i + 1] for i in range(len(case.data))]
    events, leftover, _ = drive(case.credentials, chunks)
    assert normalise(events) == list(case.events)
    assert leftover == case.leftover


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_failures_carry_a_sentence(case: Case) -> None:
    events, _, _ = drive(case.credentials, [case.data])
    for event in events:
        if isinstance(event, HandshakeFailed):
            assert event.message and event.message != "n/a"
            assert event.reason


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_eof_before_the_last_byte_fails_without_reply(case: Case) -> None:
    handshake_data = case.data[: len(case.data) - len(case.leftover)]
    events, _, _ = drive(case.credentials, [handshake_data[:-1]], end_with_eof=True)
    assert isinstance(events[-1], HandshakeFailed)
    if events[-1].reason == "truncated":
        assert events[-1].reply == b""
    else:
        # Refused before the last byte mattered: the same refusal as with all bytes.
        assert normalise(events) == list(case.events)


def test_eof_on_an_empty_connection() -> None:
    events, _, _ = drive(None, [], end_with_eof=True)
    assert normalise(events) == [HandshakeFailed(b"", "truncated", "n/a")]


def test_eof_after_a_complete_request_still_connects() -> None:
    data = NO_AUTH_GREETING + socks_connect(b"\x01\x7f\x00\x00\x01", 80)
    events, _, _ = drive(None, [data], end_with_eof=True)
    assert events == [NO_AUTH_CHOSEN, ConnectRequest(Target("127.0.0.1", 80), "socks5")]


def _http_head_of_size(size: int) -> bytes:
    start = b"CONNECT example.com:443 HTTP/1.1\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def test_http_head_of_exactly_the_limit_is_accepted() -> None:
    data = _http_head_of_size(8192)
    assert len(data) == 8192
    for chunks in ([data], [data[:4000], data[4000:]], [data[:8190], data[8190:]]):
        events, leftover, _ = drive(None, chunks)
        assert events == [ConnectRequest(Target("example.com", 443), "http")]
        assert leftover == b""


def test_http_head_over_the_limit_is_431() -> None:
    expected = http_failure(
        "HTTP/1.1 431 Request Header Fields Too Large",
        "The request head is larger than 8192 bytes.",
    )
    data = _http_head_of_size(8193)
    for chunks in (
        [data],
        [data[:100], data[100:]],
        [data[:8192], data[8192:]],
        [data[i : i + 1] for i in range(len(data))],
    ):
        events, _, _ = drive(None, chunks)
        assert normalise(events) == [HandshakeFailed(expected, "request_too_large", "n/a")]


def test_http_head_that_never_ends_is_431_at_the_limit() -> None:
    handshake = ProxyHandshake(max_request_bytes=100)
    handshake.receive_data(b"CONNECT a:1 HTTP/1.1\r\n" + b"X: " + b"y" * 74)
    assert handshake.next_event() is NEED_DATA
    handshake.receive_data(b"y")
    event = handshake.next_event()
    assert isinstance(event, HandshakeFailed)
    assert event.reason == "request_too_large"
    assert event.reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def _connected(data: bytes) -> ProxyHandshake:
    events, _, handshake = drive(None, [data])
    assert isinstance(events[-1], ConnectRequest)
    return handshake


SOCKS_REQUEST = NO_AUTH_GREETING + socks_connect(b"\x01\x7f\x00\x00\x01", 80)
HTTP_REQUEST = b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize(
    ("code", "rep"),
    [
        (ReplyCode.SUCCEEDED, 0x00),
        (ReplyCode.GENERAL_FAILURE, 0x01),
        (ReplyCode.NOT_ALLOWED, 0x02),
        (ReplyCode.NETWORK_UNREACHABLE, 0x03),
        (ReplyCode.HOST_UNREACHABLE, 0x04),
        (ReplyCode.CONNECTION_REFUSED, 0x05),
        (ReplyCode.TIMED_OUT, 0x06),
        (ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED, 0x08),
        (ReplyCode.NAME_NOT_RESOLVED, 0x01),
    ],
)
def test_socks_reply_bytes(code: ReplyCode, rep: int) -> None:
    handshake = _connected(SOCKS_REQUEST)
    assert handshake.reply_bytes(code, "ignored") == bytes([5, rep, 0, 1, 0, 0, 0, 0, 0, 0])


def test_socks_unavailable_reply_is_general_failure() -> None:
    handshake = _connected(SOCKS_REQUEST)
    assert handshake.unavailable_reply_bytes("no volunteer") == SOCKS_FAILURE


def test_http_success_reply() -> None:
    handshake = _connected(HTTP_REQUEST)
    assert handshake.reply_bytes(ReplyCode.SUCCEEDED, "connected") == (
        b"HTTP/1.1 200 Connection established\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("code", "status_line"),
    [
        (ReplyCode.GENERAL_FAILURE, "HTTP/1.1 502 Bad Gateway"),
        (ReplyCode.NOT_ALLOWED, "HTTP/1.1 403 Forbidden"),
        (ReplyCode.NETWORK_UNREACHABLE, "HTTP/1.1 502 Bad Gateway"),
        (ReplyCode.HOST_UNREACHABLE, "HTTP/1.1 502 Bad Gateway"),
        (ReplyCode.CONNECTION_REFUSED, "HTTP/1.1 502 Bad Gateway"),
        (ReplyCode.TIMED_OUT, "HTTP/1.1 504 Gateway Timeout"),
        (ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED, "HTTP/1.1 400 Bad Request"),
        (ReplyCode.NAME_NOT_RESOLVED, "HTTP/1.1 502 Bad Gateway"),
    ],
)
def test_http_failure_replies(code: ReplyCode, status_line: str) -> None:
    handshake = _connected(HTTP_REQUEST)
    assert handshake.reply_bytes(code, "the egress said no") == http_failure(
        status_line, "The egress said no."
    )


def test_http_failure_reply_literal_bytes_and_one_line_body() -> None:
    handshake = _connected(HTTP_REQUEST)
    assert handshake.reply_bytes(
        ReplyCode.CONNECTION_REFUSED, "the destination\r\nrefused the connection"
    ) == (
        b"HTTP/1.1 502 Bad Gateway\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 40\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"The destination refused the connection.\n"
    )


def test_http_failure_reply_without_message_uses_the_default_sentence() -> None:
    handshake = _connected(HTTP_REQUEST)
    assert handshake.reply_bytes(ReplyCode.TIMED_OUT, "") == http_failure(
        "HTTP/1.1 504 Gateway Timeout", "The destination did not answer in time."
    )


def test_http_unavailable_reply_is_503() -> None:
    handshake = _connected(HTTP_REQUEST)
    assert handshake.unavailable_reply_bytes("no volunteer was reachable") == http_failure(
        "HTTP/1.1 503 Service Unavailable", "No volunteer was reachable."
    )


def test_reply_only_once_and_only_after_a_request() -> None:
    fresh = ProxyHandshake()
    with pytest.raises(LocalError):
        fresh.reply_bytes(ReplyCode.SUCCEEDED, "connected")
    handshake = _connected(SOCKS_REQUEST)
    handshake.reply_bytes(ReplyCode.SUCCEEDED, "connected")
    with pytest.raises(LocalError):
        handshake.unavailable_reply_bytes("again")


def test_no_events_or_data_after_the_handshake_finished() -> None:
    handshake = _connected(SOCKS_REQUEST)
    with pytest.raises(LocalError):
        handshake.next_event()
    with pytest.raises(LocalError):
        handshake.receive_data(b"more")


def test_protocol_property() -> None:
    assert ProxyHandshake().protocol is None
    assert _connected(SOCKS_REQUEST).protocol == "socks5"
    assert _connected(HTTP_REQUEST).protocol == "http"


@pytest.mark.parametrize(
    ("username", "password"),
    [("", "x"), ("x", ""), ("a:b", "x"), ("u" * 256, "x"), ("x", "p" * 256)],
)
def test_invalid_credentials_are_refused(username: str, password: str) -> None:
    with pytest.raises(LocalError):
        Credentials(username=username, password=password)


def test_credentials_compare_bytes() -> None:
    assert CREDENTIALS.matches(b"alice", b"s3cret")
    assert not CREDENTIALS.matches(b"alice", b"s3cre")
    assert not CREDENTIALS.matches(b"Alice", b"s3cret")
