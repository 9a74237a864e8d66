"""ferry.core.codes: every stream reply code maps to a SOCKS reply, an HTTP status, a sentence."""

from __future__ import annotations

from ferry.core.codes import DEFAULT_MESSAGE, HTTP_STATUS, SOCKS_REPLY, ReplyCode


def test_every_code_has_every_mapping() -> None:
    for code in ReplyCode:
        assert code in SOCKS_REPLY
        assert code in HTTP_STATUS
        assert DEFAULT_MESSAGE[code]


def test_mapping_follows_docs_protocol_table() -> None:
    """docs/protocol.md §1.3, row by row."""
    expected = {
        ReplyCode.SUCCEEDED: (0x00, 200),
        ReplyCode.GENERAL_FAILURE: (0x01, 502),
        ReplyCode.NOT_ALLOWED: (0x02, 403),
        ReplyCode.NETWORK_UNREACHABLE: (0x03, 502),
        ReplyCode.HOST_UNREACHABLE: (0x04, 502),
        ReplyCode.CONNECTION_REFUSED: (0x05, 502),
        ReplyCode.TIMED_OUT: (0x06, 504),
        ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED: (0x08, 400),
        ReplyCode.NAME_NOT_RESOLVED: (0x01, 502),
    }
    assert {code: (SOCKS_REPLY[code], HTTP_STATUS[code][0]) for code in ReplyCode} == expected


def test_wire_values_are_stable() -> None:
    assert [int(code) for code in ReplyCode] == [0, 1, 2, 3, 4, 5, 6, 8, 9]
