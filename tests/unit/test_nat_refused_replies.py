"""The sans-IO discovery says why it refuses a reply (the driver counts the reasons)."""

from __future__ import annotations

import itertools

from ferry.core.nat_behaviour import (
    Address,
    BindingResponse,
    FilteringBehaviour,
    MappingBehaviour,
    NatBehaviourDiscovery,
    ProbeSocket,
    RefusedReply,
)

SERVER: Address = ("198.18.0.1", 3478)
OTHER: Address = ("198.18.0.2", 3479)
LOCAL: Address = ("10.77.0.2", 40000)
PUBLIC: Address = ("198.18.0.254", 50000)


def _discovery() -> NatBehaviourDiscovery:
    counter = itertools.count(1)
    return NatBehaviourDiscovery(
        SERVER, LOCAL, 0.0, transaction_ids=lambda: next(counter).to_bytes(12, "big")
    )


def _answer(
    transaction_id: bytes,
    socket: ProbeSocket,
    *,
    mapped: Address | None = PUBLIC,
    other: Address | None = OTHER,
) -> BindingResponse:
    return BindingResponse(
        transaction_id=transaction_id,
        socket=socket,
        received_from=SERVER,
        mapped_address=mapped,
        other_address=other,
    )


def _first_ids(discovery: NatBehaviourDiscovery) -> dict[ProbeSocket, bytes]:
    return {request.socket: request.transaction_id for request in discovery.requests_to_send(0.0)}


def test_an_unknown_transaction_id_is_refused_and_changes_nothing() -> None:
    discovery = _discovery()
    _first_ids(discovery)
    stray = _answer(b"\xee" * 12, ProbeSocket.MAPPING)
    assert discovery.receive_response(stray, 0.1) is RefusedReply.WRONG_TRANSACTION_ID
    assert discovery.result is None
    assert discovery.get_timer() == 0.5  # the request still waits for its own answer


def test_a_late_duplicate_of_a_used_answer_is_ignored_not_refused() -> None:
    discovery = _discovery()
    ids = _first_ids(discovery)
    answer = _answer(ids[ProbeSocket.MAPPING], ProbeSocket.MAPPING)
    assert discovery.receive_response(answer, 0.1) is None
    assert discovery.receive_response(answer, 0.2) is None


def test_a_mapping_answer_without_a_mapped_address_is_refused_and_ends_the_mapping() -> None:
    discovery = _discovery()
    ids = _first_ids(discovery)
    bare = _answer(ids[ProbeSocket.MAPPING], ProbeSocket.MAPPING, mapped=None)
    assert discovery.receive_response(bare, 0.1) is RefusedReply.NO_MAPPED_ADDRESS
    filtering = _answer(ids[ProbeSocket.FILTERING], ProbeSocket.FILTERING, other=None)
    assert discovery.receive_response(filtering, 0.1) is RefusedReply.NO_OTHER_ADDRESS
    result = discovery.result
    assert result is not None
    assert result.mapping is MappingBehaviour.UNKNOWN
    assert result.filtering is FilteringBehaviour.UNKNOWN


def test_a_first_answer_without_other_address_is_refused() -> None:
    discovery = _discovery()
    ids = _first_ids(discovery)
    plain = _answer(ids[ProbeSocket.MAPPING], ProbeSocket.MAPPING, other=None)
    assert discovery.receive_response(plain, 0.1) is RefusedReply.NO_OTHER_ADDRESS


def test_every_reason_has_its_own_sentence() -> None:
    sentences = [reason.description for reason in RefusedReply]
    assert all(sentence.startswith("the reply") for sentence in sentences)
    assert len(set(sentences)) == len(RefusedReply)
