"""Stream reply codes (``docs/protocol.md`` §1.3 and §5) and what they mean to applications."""

from __future__ import annotations

import enum


class ReplyCode(enum.IntEnum):
    """The egress's answer to a stream request. Values follow SOCKS5 where SOCKS has one."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TIMED_OUT = 0x06
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08
    NAME_NOT_RESOLVED = 0x09


SOCKS_REPLY: dict[ReplyCode, int] = {
    ReplyCode.SUCCEEDED: 0x00,
    ReplyCode.GENERAL_FAILURE: 0x01,
    ReplyCode.NOT_ALLOWED: 0x02,
    ReplyCode.NETWORK_UNREACHABLE: 0x03,
    ReplyCode.HOST_UNREACHABLE: 0x04,
    ReplyCode.CONNECTION_REFUSED: 0x05,
    ReplyCode.TIMED_OUT: 0x06,
    ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
    ReplyCode.NAME_NOT_RESOLVED: 0x01,
}
"""SOCKS5 REP byte for each stream reply code."""

HTTP_STATUS: dict[ReplyCode, tuple[int, str]] = {
    ReplyCode.SUCCEEDED: (200, "Connection established"),
    ReplyCode.GENERAL_FAILURE: (502, "Bad Gateway"),
    ReplyCode.NOT_ALLOWED: (403, "Forbidden"),
    ReplyCode.NETWORK_UNREACHABLE: (502, "Bad Gateway"),
    ReplyCode.HOST_UNREACHABLE: (502, "Bad Gateway"),
    ReplyCode.CONNECTION_REFUSED: (502, "Bad Gateway"),
    ReplyCode.TIMED_OUT: (504, "Gateway Timeout"),
    ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED: (400, "Bad Request"),
    ReplyCode.NAME_NOT_RESOLVED: (502, "Bad Gateway"),
}
"""HTTP status line for each stream reply code."""

DEFAULT_MESSAGE: dict[ReplyCode, str] = {
    ReplyCode.SUCCEEDED: "connected",
    ReplyCode.GENERAL_FAILURE: "the egress could not open the connection",
    ReplyCode.NOT_ALLOWED: "the egress's destination policy does not allow this destination",
    ReplyCode.NETWORK_UNREACHABLE: "the destination's network is unreachable from the egress",
    ReplyCode.HOST_UNREACHABLE: "the destination host is unreachable from the egress",
    ReplyCode.CONNECTION_REFUSED: "the destination refused the connection",
    ReplyCode.TIMED_OUT: "the destination did not answer in time",
    ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED: "address type not supported",
    ReplyCode.NAME_NOT_RESOLVED: "the destination's name could not be resolved",
}
"""A plain sentence for each code, used when the egress sends no message."""
