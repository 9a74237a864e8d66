"""Broker message decoding and encoding against the shared vectors (docs/protocol.md §2)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ferry.core.broker_messages import (
    DECODERS,
    MAX_BODY_BYTES,
    AnswerAccepted,
    BrokerMessage,
    ClientAnswer,
    ClientOffer,
    EgressList,
    ErrorBody,
    MatchOffer,
    MessageError,
    PollResponse,
    VolunteerAnswer,
    VolunteerPoll,
    decode_client_offer,
    decode_volunteer_poll,
    encode,
)
from ferry.errors import ProtocolError

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "broker_messages.json").read_text("utf-8")
)["vectors"]

SDP = "v=0\r\ns=-\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
EGRESS = "ws://127.0.0.1:8443/v1/relay"


def _body(vector: dict[str, object]) -> bytes:
    if "body_hex" in vector:
        return bytes.fromhex(str(vector["body_hex"]))
    return str(vector["body"]).encode("utf-8")


def _as_json(value: object) -> object:
    """Dataclass fields as the vectors spell them (tuples become lists)."""
    return json.loads(json.dumps(value))


VALID = [v for v in VECTORS if v["valid"]]
INVALID = [v for v in VECTORS if not v["valid"]]


def test_vectors_cover_every_message_both_ways() -> None:
    assert {v["message"] for v in VALID} == set(DECODERS)
    assert {v["message"] for v in INVALID} == set(DECODERS)


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_decodes_to_its_fields(vector: dict[str, object]) -> None:
    message = DECODERS[str(vector["message"])](_body(vector))
    assert _as_json(dataclasses.asdict(message)) == vector["decoded"]


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_survives_encode_and_decode(vector: dict[str, object]) -> None:
    decode = DECODERS[str(vector["message"])]
    message = decode(_body(vector))
    assert decode(encode(message)) == message


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector_is_refused_naming_the_field(vector: dict[str, object]) -> None:
    with pytest.raises(MessageError) as caught:
        DECODERS[str(vector["message"])](_body(vector))
    assert caught.value.field == vector["field"]
    assert caught.value.reason == vector["reason"]
    assert isinstance(caught.value, ProtocolError)
    if vector["field"] is not None:
        assert str(vector["field"]) in str(caught.value)


def test_body_over_64_kib_is_too_large() -> None:
    body = encode(ClientOffer(offer=SDP, egress=EGRESS))
    padded = body[:-1] + b" " * (MAX_BODY_BYTES - len(body) + 1) + b"}"
    assert len(padded) == MAX_BODY_BYTES + 1
    with pytest.raises(MessageError) as caught:
        decode_client_offer(padded)
    assert (caught.value.field, caught.value.reason) == (None, "too_large")


def test_body_of_exactly_64_kib_is_accepted() -> None:
    body = encode(ClientOffer(offer=SDP, egress=EGRESS))
    padded = body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + b"}"
    assert len(padded) == MAX_BODY_BYTES
    assert decode_client_offer(padded) == ClientOffer(offer=SDP, egress=EGRESS)


def test_deeply_nested_json_is_refused_not_crashing() -> None:
    body = b'{"version": 1, "volunteer_id": ' + b"[" * 30000 + b"]" * 30000 + b"}"
    with pytest.raises(MessageError) as caught:
        decode_volunteer_poll(body)
    assert (caught.value.field, caught.value.reason) == (None, "not_json")


def test_version_is_checked_before_unknown_fields() -> None:
    body = json.dumps({"version": 2, "future_field": 1}).encode()
    with pytest.raises(MessageError) as caught:
        decode_volunteer_poll(body)
    assert caught.value.field == "version"


@pytest.mark.parametrize(
    "message",
    [
        ClientOffer(offer=SDP, egress=EGRESS),
        ClientAnswer(answer=SDP),
        VolunteerPoll(volunteer_id="v" * 16, capacity=7),
        PollResponse(match=None),
        PollResponse(match=MatchOffer(id="m" * 32, offer=SDP, egress=EGRESS)),
        VolunteerAnswer(match_id="m" * 32, answer=SDP),
        AnswerAccepted(),
        EgressList(egresses=(EGRESS,)),
        ErrorBody(error="bad", field=None),
    ],
)
def test_encode_then_decode_gives_the_message_back(message: BrokerMessage) -> None:
    name = {
        ClientOffer: "client_offer",
        ClientAnswer: "client_answer",
        VolunteerPoll: "volunteer_poll",
        PollResponse: "poll_response",
        VolunteerAnswer: "volunteer_answer",
        AnswerAccepted: "answer_accepted",
        EgressList: "egress_list",
        ErrorBody: "error_body",
    }[type(message)]
    assert DECODERS[name](encode(message)) == message


def test_requests_carry_version_and_responses_do_not() -> None:
    assert json.loads(encode(VolunteerPoll(volunteer_id="v" * 16, capacity=1)))["version"] == 1
    assert "version" not in json.loads(encode(ClientAnswer(answer=SDP)))


def test_encoding_is_compact_ascii() -> None:
    body = encode(ErrorBody(error="caf\u00e9", field="offer"))
    assert body == b'{"error":"caf\\u00e9","field":"offer"}'


def test_messages_are_frozen() -> None:
    poll = VolunteerPoll(volunteer_id="v" * 16, capacity=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        poll.capacity = 2  # type: ignore[misc]


def test_lone_surrogate_in_sdp_does_not_crash() -> None:
    body = b'{"version": 1, "offer": "v=0\\ud800\\nm=application 9 x\\n", "egress": "%s"}' % (
        EGRESS.encode()
    )
    assert decode_client_offer(body).offer.startswith("v=0\ud800")
