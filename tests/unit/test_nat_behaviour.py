"""The RFC 5780 test sequence, driven synchronously against a simulated server and NAT."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from ferry.core.nat_behaviour import (
    Address,
    BindingRequest,
    BindingResponse,
    FilteringBehaviour,
    MappingBehaviour,
    NatBehaviour,
    NatBehaviourDiscovery,
    NatClass,
    NatDiscoveryConfig,
    ProbeSocket,
    StunServer,
    parse_stun_url,
)
from ferry.errors import ConfigError

PRIMARY: Address = ("198.18.0.1", 3478)
OTHER: Address = ("198.18.0.2", 3479)
LOCAL = {ProbeSocket.MAPPING: ("10.77.0.2", 40000), ProbeSocket.FILTERING: ("10.77.0.2", 40001)}
PUBLIC_IP = "198.18.0.254"


@dataclass
class SimulatedNetwork:
    """A STUN server on PRIMARY/OTHER behind which sits a NAT of the given behaviours."""

    mapping: str  # none | independent | address | address_and_port
    filtering: str  # independent | address | address_and_port
    honours_change_request: bool = True
    sends_other_address: bool = True
    drops_everything: bool = False
    sent: dict[ProbeSocket, set[Address]] = field(default_factory=dict)

    def mapped(self, request: BindingRequest) -> Address:
        local = LOCAL[request.socket]
        if self.mapping == "none":
            return local
        base = 50000 + 100 * list(ProbeSocket).index(request.socket)
        if self.mapping == "independent":
            return PUBLIC_IP, base
        if self.mapping == "address":
            return PUBLIC_IP, base + (request.destination[0] == OTHER[0])
        return PUBLIC_IP, base + 2 * (request.destination[0] == OTHER[0]) + (
            request.destination[1] == OTHER[1]
        )

    def answer(self, request: BindingRequest) -> BindingResponse | None:
        if self.drops_everything:
            return None
        self.sent.setdefault(request.socket, set()).add(request.destination)
        ip, port = request.destination
        if self.honours_change_request:
            if request.change_ip:
                ip = OTHER[0] if ip == PRIMARY[0] else PRIMARY[0]
            if request.change_port:
                port = OTHER[1] if port == PRIMARY[1] else PRIMARY[1]
        origin = (ip, port)
        contacted = self.sent[request.socket]
        if self.mapping != "none":
            if self.filtering == "address" and ip not in {a[0] for a in contacted}:
                return None
            if self.filtering == "address_and_port" and origin not in contacted:
                return None
        other = (  # the server's other IP address with its other port
            OTHER[0] if request.destination[0] == PRIMARY[0] else PRIMARY[0],
            OTHER[1] if request.destination[1] == PRIMARY[1] else PRIMARY[1],
        )
        return BindingResponse(
            transaction_id=request.transaction_id,
            socket=request.socket,
            received_from=origin,
            mapped_address=self.mapped(request),
            other_address=other if self.sends_other_address else None,
        )


def _counter_ids() -> Callable[[], bytes]:
    counter = itertools.count(1)
    return lambda: next(counter).to_bytes(12, "big")


def discover(network: SimulatedNetwork) -> tuple[NatBehaviour, float, int]:
    """Run a discovery to its end; (result, seconds it took, requests sent)."""
    now = 0.0
    discovery = NatBehaviourDiscovery(
        PRIMARY, LOCAL[ProbeSocket.MAPPING], now, transaction_ids=_counter_ids()
    )
    sent = 0
    for _ in range(200):
        result = discovery.result
        if result is not None:
            return result, now, sent
        answers = []
        for request in discovery.requests_to_send(now):
            sent += 1
            answer = network.answer(request)
            if answer is not None:
                answers.append(answer)
        for answer in answers:
            discovery.receive_response(answer, now)
        if answers:
            continue
        timer = discovery.get_timer()
        assert timer is not None
        now = timer
        discovery.handle_timer(now)
    raise AssertionError("the discovery did not end")


@pytest.mark.parametrize(
    ("mapping", "filtering", "expected"),
    [
        ("none", "independent", ("no NAT", "endpoint-independent", "unrestricted")),
        ("independent", "independent", ("endpoint-independent",) * 2 + ("unrestricted",)),
        (
            "independent",
            "address_and_port",
            ("endpoint-independent", "address-and-port-dependent", "unrestricted"),
        ),
        ("independent", "address", ("endpoint-independent", "address-dependent", "unrestricted")),
        ("address", "address", ("address-dependent", "address-dependent", "restricted")),
        (
            "address_and_port",
            "address_and_port",
            ("address-and-port-dependent",) * 2 + ("restricted",),
        ),
    ],
)
def test_each_nat_kind_is_classified(
    mapping: str, filtering: str, expected: tuple[str, str, str]
) -> None:
    result, elapsed, _ = discover(SimulatedNetwork(mapping, filtering))
    assert (result.mapping, result.filtering, result.nat_class) == expected
    assert elapsed <= NatDiscoveryConfig().longest_discovery


def test_filtering_tests_use_a_socket_the_mapping_tests_never_used() -> None:
    # If the filtering tests shared the mapping socket, mapping test III (to the other
    # address and port) would have opened the NAT and filtering would look open.
    network = SimulatedNetwork("address_and_port", "address_and_port")
    discover(network)
    assert network.sent[ProbeSocket.FILTERING] == {PRIMARY}
    assert OTHER in network.sent[ProbeSocket.MAPPING]


def test_an_unreachable_server_gives_unknown_within_the_bound_and_retransmits() -> None:
    config = NatDiscoveryConfig()
    result, elapsed, sent = discover(
        SimulatedNetwork("independent", "independent", drops_everything=True)
    )
    assert result.nat_class is NatClass.UNKNOWN
    assert result.mapping is MappingBehaviour.UNKNOWN
    assert result.filtering is FilteringBehaviour.UNKNOWN
    assert elapsed == config.request_timeout
    per_request = round(config.request_timeout / config.retransmit_interval)
    assert sent == 2 * per_request  # both test-I requests, each resent until its timeout


def test_a_server_without_other_address_cannot_run_the_tests() -> None:
    result, _, _ = discover(
        SimulatedNetwork("independent", "independent", sends_other_address=False)
    )
    assert result.mapping is MappingBehaviour.UNKNOWN
    assert result.filtering is FilteringBehaviour.UNKNOWN
    assert result.nat_class is NatClass.UNKNOWN


def test_a_server_ignoring_change_request_leaves_filtering_unknown_not_open() -> None:
    result, _, _ = discover(
        SimulatedNetwork("independent", "independent", honours_change_request=False)
    )
    assert result.mapping is MappingBehaviour.ENDPOINT_INDEPENDENT
    assert result.filtering is FilteringBehaviour.UNKNOWN


def test_resends_keep_the_transaction_id_and_stale_answers_are_ignored() -> None:
    discovery = NatBehaviourDiscovery(
        PRIMARY, LOCAL[ProbeSocket.MAPPING], 0.0, transaction_ids=_counter_ids()
    )
    first = discovery.requests_to_send(0.0)
    assert [request.socket for request in first] == [ProbeSocket.MAPPING, ProbeSocket.FILTERING]
    assert discovery.requests_to_send(0.1) == []
    assert discovery.get_timer() == pytest.approx(0.5)
    discovery.handle_timer(0.5)
    assert discovery.requests_to_send(0.5) == first
    stale = BindingResponse(
        transaction_id=b"\xff" * 12,
        socket=ProbeSocket.MAPPING,
        received_from=PRIMARY,
        mapped_address=("198.18.0.254", 1),
        other_address=OTHER,
    )
    discovery.receive_response(stale, 0.6)
    assert discovery.requests_to_send(0.6) == []
    assert discovery.result is None
    assert discovery.get_timer() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("stun:stun.example.test", StunServer("stun.example.test", 3478)),
        ("stun:198.18.0.1:3479", StunServer("198.18.0.1", 3479)),
        ("stun:[::1]:5000", StunServer("::1", 5000)),
        ("stun:[::1]", StunServer("::1", 3478)),
    ],
)
def test_stun_urls_parse(url: str, expected: StunServer) -> None:
    assert parse_stun_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "turn:host:3478",
        "stun:",
        "stun:host:0",
        "stun:host:99999",
        "stun:host:x",
        "stun:host:",
        "stun:[::1",
        "stun://host/",
    ],
)
def test_bad_stun_urls_are_refused_naming_the_flag(url: str) -> None:
    with pytest.raises(ConfigError, match="--stun"):
        parse_stun_url(url)


def test_the_config_refuses_nonsense_timings() -> None:
    with pytest.raises(ConfigError):
        NatDiscoveryConfig(retransmit_interval=0)
    with pytest.raises(ConfigError):
        NatDiscoveryConfig(retransmit_interval=1.0, request_timeout=0.5)
    with pytest.raises(ConfigError):
        NatDiscoveryConfig(rediscovery_interval=-1)
