"""The stream request and stream reply (docs/protocol.md §5), against the shared vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferry.core.addresses import Target
from ferry.core.codes import ReplyCode
from ferry.core.stream_header import (
    StreamReply,
    StreamReplyDecoder,
    StreamRequest,
    StreamRequestDecoder,
    encode_reply,
    encode_request,
)
from ferry.errors import LocalError, ProtocolError

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "stream_header.json").read_text("utf-8")
)


def _ids(cases: list[dict[str, object]]) -> list[str]:
    return [str(case["name"]) for case in cases]


def _splits(data: bytes) -> list[list[bytes]]:
    """Every way to cut ``data`` in two, plus one byte at a time."""
    ways = [[data[:cut], data[cut:]] for cut in range(len(data) + 1)]
    ways.append([data[i : i + 1] for i in range(len(data))])
    return ways


def _feed_request(chunks: list[bytes]) -> tuple[StreamRequest, StreamRequestDecoder]:
    decoder = StreamRequestDecoder()
    result: StreamRequest | None = None
    for chunk in chunks:
        assert result is None, "the request completed before all its bytes were fed"
        result = decoder.feed(chunk)
    assert result is not None
    return result, decoder


def _feed_reply(chunks: list[bytes]) -> tuple[StreamReply, StreamReplyDecoder]:
    decoder = StreamReplyDecoder()
    result: StreamReply | None = None
    for chunk in chunks:
        assert result is None, "the reply completed before all its bytes were fed"
        result = decoder.feed(chunk)
    assert result is not None
    return result, decoder


@pytest.mark.parametrize("case", VECTORS["requests"], ids=_ids(VECTORS["requests"]))
def test_request_vector_encodes_to_its_bytes(case: dict[str, object]) -> None:
    target = Target(str(case["host"]), int(str(case["port"])))
    assert encode_request(target).hex() == case["hex"]


@pytest.mark.parametrize("case", VECTORS["requests"], ids=_ids(VECTORS["requests"]))
def test_request_vector_decodes_under_every_split(case: dict[str, object]) -> None:
    data = bytes.fromhex(str(case["hex"]))
    expected = StreamRequest(Target(str(case["host"]), int(str(case["port"]))))
    for chunks in _splits(data):
        # Drop trailing empty chunks: the request is complete before them.
        while chunks and not chunks[-1]:
            chunks.pop()
        request, decoder = _feed_request(chunks)
        assert request == expected
        assert decoder.request == expected
        assert decoder.leftover == b""


def test_request_leftover_keeps_payload_after_header() -> None:
    header = encode_request(Target("example.com", 443))
    payload = b"GET / HTTP/1.1\r\n"
    for cut in range(len(header)):
        decoder = StreamRequestDecoder()
        assert decoder.feed(header[:cut]) is None
        request = decoder.feed(header[cut:] + payload)
        assert request == StreamRequest(Target("example.com", 443))
        assert decoder.leftover == payload


@pytest.mark.parametrize(
    "case", VECTORS["malformed_requests"], ids=_ids(VECTORS["malformed_requests"])
)
def test_malformed_request_is_refused_with_its_reason(case: dict[str, object]) -> None:
    data = bytes.fromhex(str(case["hex"]))
    for chunks in _splits(data):
        decoder = StreamRequestDecoder()
        with pytest.raises(ProtocolError) as caught:
            for chunk in chunks:
                assert decoder.feed(chunk) is None
        assert caught.value.reason == case["reason"]
        assert str(caught.value).startswith("stream request")


@pytest.mark.parametrize(
    "case", VECTORS["truncated_requests"], ids=_ids(VECTORS["truncated_requests"])
)
def test_truncated_request_needs_more_and_fails_at_eof(case: dict[str, object]) -> None:
    decoder = StreamRequestDecoder()
    assert decoder.feed(bytes.fromhex(str(case["hex"]))) is None
    assert decoder.request is None
    with pytest.raises(ProtocolError) as caught:
        decoder.feed_eof()
    assert caught.value.reason == "truncated"


def test_request_eof_after_completion_is_fine() -> None:
    decoder = StreamRequestDecoder()
    assert decoder.feed(encode_request(Target("10.1.2.3", 9))) is not None
    decoder.feed_eof()
    assert decoder.request == StreamRequest(Target("10.1.2.3", 9))


def test_feeding_a_completed_request_decoder_is_a_local_error() -> None:
    decoder = StreamRequestDecoder()
    decoder.feed(encode_request(Target("example.com", 80)))
    with pytest.raises(LocalError):
        decoder.feed(b"more")


def test_domain_that_spells_an_address_decodes_as_that_address() -> None:
    # The egress checks resolved addresses, so a literal sent as ATYP 3 is no bypass.
    request, _ = _feed_request([b"\x01\x03\x09127.0.0.1\x00\x50"])
    assert request.target == Target("127.0.0.1", 80)


@pytest.mark.parametrize(
    "target",
    [
        Target("192.0.2.7", 65535),
        Target("::ffff:127.0.0.1", 443),
        Target("fe80::1", 1),
        Target("xn--bcher-kva.example", 443),
        Target("a" * 255, 1234),
    ],
)
def test_request_round_trips(target: Target) -> None:
    request, decoder = _feed_request([encode_request(target)])
    assert request.target.port == target.port
    assert request.target.address_type is target.address_type
    assert encode_request(request.target) == encode_request(target)
    assert decoder.leftover == b""


@pytest.mark.parametrize("case", VECTORS["replies"], ids=_ids(VECTORS["replies"]))
def test_reply_vector_encodes_to_its_bytes(case: dict[str, object]) -> None:
    code = ReplyCode(int(str(case["code"])))
    assert encode_reply(code, str(case["message"])).hex() == case["hex"]


@pytest.mark.parametrize("case", VECTORS["replies"], ids=_ids(VECTORS["replies"]))
def test_reply_vector_decodes_under_every_split(case: dict[str, object]) -> None:
    data = bytes.fromhex(str(case["hex"]))
    expected = StreamReply(ReplyCode(int(str(case["code"]))), str(case["message"]))
    for chunks in _splits(data):
        while chunks and not chunks[-1]:
            chunks.pop()
        reply, decoder = _feed_reply(chunks)
        assert reply == expected
        assert decoder.reply == expected
        assert decoder.leftover == b""


def test_reply_leftover_keeps_payload_after_header() -> None:
    decoder = StreamReplyDecoder()
    reply = decoder.feed(encode_reply(ReplyCode.SUCCEEDED, "connected") + b"HTTP/1.1 200")
    assert reply == StreamReply(ReplyCode.SUCCEEDED, "connected")
    assert decoder.leftover == b"HTTP/1.1 200"


@pytest.mark.parametrize(
    "case", VECTORS["malformed_replies"], ids=_ids(VECTORS["malformed_replies"])
)
def test_malformed_reply_is_refused_with_its_reason(case: dict[str, object]) -> None:
    data = bytes.fromhex(str(case["hex"]))
    for chunks in _splits(data):
        decoder = StreamReplyDecoder()
        with pytest.raises(ProtocolError) as caught:
            for chunk in chunks:
                assert decoder.feed(chunk) is None
        assert caught.value.reason == case["reason"]
        assert str(caught.value).startswith("stream reply")


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x00", b"\x01\x00\x05abc"])
def test_truncated_reply_fails_at_eof(data: bytes) -> None:
    decoder = StreamReplyDecoder()
    assert decoder.feed(data) is None
    with pytest.raises(ProtocolError) as caught:
        decoder.feed_eof()
    assert caught.value.reason == "truncated"


def test_feeding_a_completed_reply_decoder_is_a_local_error() -> None:
    decoder = StreamReplyDecoder()
    decoder.feed(encode_reply(ReplyCode.TIMED_OUT, ""))
    with pytest.raises(LocalError):
        decoder.feed(b"x")


@pytest.mark.parametrize("case", VECTORS["reply_truncation"], ids=[f"case{i}" for i in range(2)])
def test_long_reply_message_is_cut_on_a_character_boundary(case: dict[str, object]) -> None:
    encoded = encode_reply(ReplyCode(int(str(case["code"]))), str(case["message"]))
    assert encoded.hex() == case["expected_hex"]
    assert len(encoded) <= 3 + 255
    reply, _ = _feed_reply([encoded])
    assert str(case["message"]).startswith(reply.message)


@pytest.mark.parametrize("length", [254, 255, 256, 300])
def test_reply_message_of_ascii_is_cut_at_255_bytes(length: int) -> None:
    reply, _ = _feed_reply([encode_reply(ReplyCode.GENERAL_FAILURE, "m" * length)])
    assert reply.message == "m" * min(length, 255)


@pytest.mark.parametrize("code", list(ReplyCode))
def test_every_reply_code_round_trips(code: ReplyCode) -> None:
    reply, _ = _feed_reply([encode_reply(code, code.name)])
    assert reply == StreamReply(code, code.name)
