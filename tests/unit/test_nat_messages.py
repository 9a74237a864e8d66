"""The optional ``nat`` field of client offers and volunteer polls (docs/protocol.md §2)."""

from __future__ import annotations

import json

import pytest

from ferry.client.status import format_nat
from ferry.core.broker_messages import (
    ClientOffer,
    MessageError,
    VolunteerPoll,
    decode_client_offer,
    decode_volunteer_poll,
    encode,
)
from ferry.core.nat_behaviour import (
    UNKNOWN_BEHAVIOUR,
    FilteringBehaviour,
    MappingBehaviour,
    NatBehaviour,
    NatClass,
)

SDP = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
EGRESS = "ws://127.0.0.1:8443/v1/relay"


@pytest.mark.parametrize("nat", list(NatClass))
def test_offers_and_polls_round_trip_every_class(nat: NatClass) -> None:
    offer = ClientOffer(offer=SDP, egress=EGRESS, nat=nat)
    poll = VolunteerPoll(volunteer_id="v" * 16, capacity=3, nat=nat)
    assert decode_client_offer(encode(offer)) == offer
    assert decode_volunteer_poll(encode(poll)) == poll


def test_unknown_is_left_out_so_older_brokers_accept_it() -> None:
    assert "nat" not in json.loads(encode(ClientOffer(offer=SDP, egress=EGRESS)))
    assert json.loads(encode(VolunteerPoll("v" * 16, 1, nat=NatClass.RESTRICTED)))["nat"] == (
        "restricted"
    )


@pytest.mark.parametrize("value", ['"Restricted"', '""', "1", "true", '["restricted"]'])
def test_a_bad_class_is_refused_naming_the_field(value: str) -> None:
    body = f'{{"version":1,"volunteer_id":"{"v" * 16}","capacity":1,"nat":{value}}}'
    with pytest.raises(MessageError) as caught:
        decode_volunteer_poll(body.encode())
    assert caught.value.field == "nat"
    assert caught.value.reason in ("bad_nat", "wrong_type")


def test_the_status_line_names_the_class_and_both_behaviours() -> None:
    behaviour = NatBehaviour(
        mapping=MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT,
        filtering=FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT,
    )
    assert format_nat(behaviour) == (
        "NAT: restricted (mapping address-and-port-dependent, filtering address-and-port-dependent)"
    )
    assert format_nat(UNKNOWN_BEHAVIOUR).startswith("NAT: unknown ")
