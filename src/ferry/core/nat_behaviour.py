"""NAT behaviour discovery (RFC 5780 §4.3 mapping and §4.4 filtering tests), sans-IO.

:class:`NatBehaviourDiscovery` runs the test sequence against one STUN server that supports
RFC 5780 (it answers from two IP addresses and two ports, and names the other pair in
OTHER-ADDRESS). It never touches a socket: the asyncio driver
(:mod:`ferry.transport.stun`) sends the :class:`BindingRequest` values it hands out, feeds
back each decoded :class:`BindingResponse` and calls :meth:`~NatBehaviourDiscovery.handle_timer`
at :meth:`~NatBehaviourDiscovery.get_timer`; ``now`` is always an argument.

Two sequences run side by side, each on its own local UDP socket, because the filtering
tests are "sensitive to prior state on the NAT" (RFC 5780 §4.4): the mapping tests send to
the server's other address, which would open the NAT to it and make filtering look
endpoint-independent if both shared a socket.

Mapping (socket :attr:`ProbeSocket.MAPPING`):

1. Test I: a Binding request to the server. No answer → unknown. No OTHER-ADDRESS → the
   server cannot run these tests → unknown. XOR-MAPPED-ADDRESS equal to the socket's own
   address → no NAT (endpoint-independent by definition).
2. Test II: to the other IP address, primary port. Same mapped address as test I →
   endpoint-independent.
3. Test III: to the other IP address and other port. Same as test II →
   address-dependent; otherwise address-and-port-dependent.

Filtering (socket :attr:`ProbeSocket.FILTERING`):

1. Test I: a Binding request to the server, to open a mapping. No answer → unknown.
2. Test II: CHANGE-REQUEST "change IP and port". An answer (from the other IP and port) →
   endpoint-independent.
3. Test III: CHANGE-REQUEST "change port". An answer (from the primary IP, other port) →
   address-dependent; none → address-and-port-dependent.

An answer to tests II/III of filtering that does not come from the address the change asked
for means the server ignores CHANGE-REQUEST: filtering is then unknown rather than wrongly
"open".

A reply the sequence cannot use is refused with a :class:`RefusedReply` reason (the driver
counts them): :meth:`~NatBehaviourDiscovery.receive_response` returns it for a transaction ID
no request is waiting for, or an answer without the attribute its test needs; the driver's
decoder gives the other two (not STUN at all; STUN but not a Binding success response). A
late duplicate of an answer already used (a retransmitted request answered twice) is not
refused: it is ordinary UDP.

The class reported to the broker follows Snowflake (``common/nat/nat.go``: a client's NAT
type "is determined only by their mapping type"): the NAT is **restricted** when its
mapping depends on the destination (address- or address-and-port-dependent: the classic
"symmetric" NAT), because then the port a peer learns through ICE is not the one a packet to
it will use, and two such peers can never punch through to each other; it is
**unrestricted** when the mapping is endpoint-independent (or there is no NAT), whatever the
filtering, because ICE's simultaneous checks open an address-and-port-dependent filter from
both sides. **unknown** when the mapping could not be measured. Filtering is measured and
shown (``ferry nat``) but does not change the class.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ferry.errors import ConfigError

STUN_DEFAULT_PORT = 3478
"""The port of a ``stun:HOST`` URL that names none (RFC 7064)."""

TRANSACTION_ID_BYTES = 12
"""Length of a STUN transaction ID (RFC 5389 §6)."""

Address = tuple[str, int]
"""An IP address (text) and a UDP port."""


class NatClass(enum.StrEnum):
    """What the broker is told (``"nat"`` in offers and polls, docs/protocol.md §2.1/§2.2)."""

    RESTRICTED = "restricted"
    """The mapping depends on the destination: pair only with an unrestricted peer."""
    UNRESTRICTED = "unrestricted"
    """Endpoint-independent mapping or no NAT: can reach a restricted peer."""
    UNKNOWN = "unknown"
    """Not measured (no ``--stun`` server, or none answered the tests)."""


class MappingBehaviour(enum.StrEnum):
    """RFC 4787/5780 mapping behaviour."""

    NO_NAT = "no NAT"
    """The server saw the socket's own address."""
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    """One public address and port for every destination."""
    ADDRESS_DEPENDENT = "address-dependent"
    """A new public address/port for each destination IP address."""
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    """A new public address/port for each destination IP address and port."""
    UNKNOWN = "unknown"
    """Could not be measured."""


class FilteringBehaviour(enum.StrEnum):
    """RFC 4787/5780 filtering behaviour."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    """Packets from any address reach the mapping."""
    ADDRESS_DEPENDENT = "address-dependent"
    """Only packets from an IP address the socket sent to."""
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    """Only packets from an IP address and port the socket sent to."""
    UNKNOWN = "unknown"
    """Could not be measured."""


class ProbeSocket(enum.Enum):
    """Which of the driver's two local UDP sockets a request goes out on."""

    MAPPING = "mapping"
    """The socket of the mapping tests."""
    FILTERING = "filtering"
    """The socket of the filtering tests (fresh, so the mapping tests leave no holes)."""


class RefusedReply(enum.StrEnum):
    """Why a STUN reply was not used (the ``reason`` label of the refused-replies counter)."""

    UNPARSEABLE = "unparseable"
    """Not a STUN message (too short, wrong length, a truncated or invalid attribute)."""
    NOT_BINDING_SUCCESS = "not_binding_success"
    """A STUN message, but not a Binding success response (an error response, a request)."""
    WRONG_TRANSACTION_ID = "wrong_transaction_id"
    """Its transaction ID is not that of the request waiting on the socket it arrived on."""
    NO_MAPPED_ADDRESS = "no_mapped_address"
    """A mapping test's answer without XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS)."""
    NO_OTHER_ADDRESS = "no_other_address"
    """A first answer without OTHER-ADDRESS: the server cannot run the RFC 5780 tests."""

    @property
    def description(self) -> str:
        """One sentence for the log, naming what was wrong (never an address)."""
        return _REFUSAL_DESCRIPTIONS[self]


_REFUSAL_DESCRIPTIONS = {
    RefusedReply.UNPARSEABLE: "the reply is not a STUN message",
    RefusedReply.NOT_BINDING_SUCCESS: "the reply is not a STUN Binding success response",
    RefusedReply.WRONG_TRANSACTION_ID: "the reply's transaction ID matches no request sent",
    RefusedReply.NO_MAPPED_ADDRESS: "the reply has no XOR-MAPPED-ADDRESS attribute",
    RefusedReply.NO_OTHER_ADDRESS: (
        "the reply has no OTHER-ADDRESS attribute (the server does not support RFC 5780)"
    ),
}


@dataclass(frozen=True, slots=True)
class NatBehaviour:
    """The outcome of one discovery."""

    mapping: MappingBehaviour
    """How the NAT maps the socket to a public address."""
    filtering: FilteringBehaviour
    """Which incoming packets the NAT lets through to a mapping."""

    @property
    def nat_class(self) -> NatClass:
        """The class the broker matches on (see the module docstring)."""
        if self.mapping in (MappingBehaviour.NO_NAT, MappingBehaviour.ENDPOINT_INDEPENDENT):
            return NatClass.UNRESTRICTED
        if self.mapping is MappingBehaviour.UNKNOWN:
            return NatClass.UNKNOWN
        return NatClass.RESTRICTED


UNKNOWN_BEHAVIOUR = NatBehaviour(
    mapping=MappingBehaviour.UNKNOWN, filtering=FilteringBehaviour.UNKNOWN
)
"""The behaviour before (or without) a discovery."""


@dataclass(frozen=True, slots=True)
class StunServer:
    """A STUN server from a ``stun:HOST[:PORT]`` URL."""

    host: str
    """Host name or IP address (without brackets)."""
    port: int = STUN_DEFAULT_PORT
    """UDP port."""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"stun:{host}:{self.port}"


def parse_stun_url(url: str) -> StunServer:
    """``stun:HOST[:PORT]`` (IPv6 as ``[ADDRESS]``) → :class:`StunServer`; :class:`ConfigError`
    naming the URL if it is not one."""
    text = url.strip()
    if not text.startswith("stun:"):
        raise ConfigError(f"--stun {url!r}: a STUN server is written stun:HOST or stun:HOST:PORT")
    rest = text[len("stun:") :]
    port_text: str | None = None
    if rest.startswith("["):
        end = rest.find("]")
        after = rest[end + 1 :] if end >= 0 else ""
        if end < 0 or (after and not after.startswith(":")):
            raise ConfigError(f"--stun {url!r}: write an IPv6 address as [ADDRESS]:PORT")
        host, port_text = rest[1:end], after[1:] if after else None
    elif ":" in rest:
        host, _, port_text = rest.rpartition(":")
    else:
        host = rest
    if not host or any(character in host for character in "/?#@ "):
        raise ConfigError(f"--stun {url!r}: the host is missing or not a host name")
    port = STUN_DEFAULT_PORT
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(f"--stun {url!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return StunServer(host=host, port=port)


@dataclass(frozen=True, slots=True)
class NatDiscoveryConfig:
    """Timing of NAT discovery (the tests' and the roles' periodic runs)."""

    retransmit_interval: float = 0.5
    """Seconds between resends of a request still unanswered (UDP may lose it)."""
    request_timeout: float = 2.0
    """Seconds after its first send that an unanswered request counts as lost. A lost
    filtering test II or III is a result (the NAT filtered the answer), so this is also how
    long those tests take on a filtering NAT. One discovery takes at most 3 times this."""
    rediscovery_interval: float = 600.0
    """Seconds between discoveries while a role runs (a laptop changes networks; a NAT
    reboots). The first runs when the role starts."""

    def __post_init__(self) -> None:
        if not self.retransmit_interval > 0:
            raise ConfigError("retransmit_interval must be a positive number of seconds")
        if not self.request_timeout >= self.retransmit_interval:
            raise ConfigError("request_timeout must be at least retransmit_interval")
        if not self.rediscovery_interval > 0:
            raise ConfigError("rediscovery_interval must be a positive number of seconds")

    @property
    def longest_discovery(self) -> float:
        """Upper bound, in seconds, of one discovery against one server."""
        return 3 * self.request_timeout


@dataclass(frozen=True, slots=True)
class BindingRequest:
    """A STUN Binding request the driver must send (and resend, same ID, when told to)."""

    transaction_id: bytes
    """The 12-byte transaction ID."""
    socket: ProbeSocket
    """The local socket to send it from."""
    destination: Address
    """Where to send it."""
    change_ip: bool = False
    """Ask the server to answer from its other IP address (CHANGE-REQUEST flag 0x4)."""
    change_port: bool = False
    """Ask the server to answer from its other port (CHANGE-REQUEST flag 0x2)."""


@dataclass(frozen=True, slots=True)
class BindingResponse:
    """A decoded STUN Binding success response."""

    transaction_id: bytes
    """Its transaction ID."""
    socket: ProbeSocket
    """The local socket it arrived on."""
    received_from: Address
    """The address it came from."""
    mapped_address: Address | None
    """XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS), ``None`` if neither was present."""
    other_address: Address | None
    """OTHER-ADDRESS (or the RFC 3489 CHANGED-ADDRESS), ``None`` if absent."""


class _Step(enum.Enum):
    MAPPING_I = enum.auto()
    MAPPING_II = enum.auto()
    MAPPING_III = enum.auto()
    FILTERING_I = enum.auto()
    FILTERING_II = enum.auto()
    FILTERING_III = enum.auto()


@dataclass(slots=True)
class _Transaction:
    step: _Step
    request: BindingRequest
    expires_at: float
    resend_at: float
    due: bool = True


def _same_address(left: Address, right: Address) -> bool:
    return left[1] == right[1] and left[0].lower() == right[0].lower()


def _random_transaction_id() -> bytes:
    return os.urandom(TRANSACTION_ID_BYTES)


@dataclass(slots=True)
class _Progress:
    mapping: MappingBehaviour | None = None
    filtering: FilteringBehaviour | None = None
    other_address: Address | None = None
    first_mapped: Address | None = None
    second_mapped: Address | None = None
    pending: dict[ProbeSocket, _Transaction] = field(default_factory=dict)
    finished_ids: set[bytes] = field(default_factory=set)


class NatBehaviourDiscovery:
    """One discovery against one server (see the module docstring for the sequence).

    ``server`` is the server's resolved address; ``local_address`` the mapping socket's own
    address (to recognise "no NAT"). ``transaction_ids`` makes IDs (random by default; tests
    pass a counter).
    """

    def __init__(
        self,
        server: Address,
        local_address: Address,
        now: float,
        *,
        config: NatDiscoveryConfig | None = None,
        transaction_ids: Callable[[], bytes] = _random_transaction_id,
    ) -> None:
        self.config = config if config is not None else NatDiscoveryConfig()
        self._server = server
        self._local_address = local_address
        self._new_id = transaction_ids
        self._progress = _Progress()
        self._start(_Step.MAPPING_I, ProbeSocket.MAPPING, server, now)
        self._start(_Step.FILTERING_I, ProbeSocket.FILTERING, server, now)

    # --- API --------------------------------------------------------------------------------

    @property
    def result(self) -> NatBehaviour | None:
        """The behaviour once both sequences ended, else ``None``."""
        progress = self._progress
        if progress.mapping is None or progress.filtering is None:
            return None
        return NatBehaviour(mapping=progress.mapping, filtering=progress.filtering)

    def requests_to_send(self, now: float) -> list[BindingRequest]:
        """Requests (new or resent) to send now."""
        due: list[BindingRequest] = []
        for transaction in self._progress.pending.values():
            if transaction.due:
                transaction.due = False
                transaction.resend_at = now + self.config.retransmit_interval
                due.append(transaction.request)
        return due

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called; ``None`` once finished."""
        deadlines = [
            min(transaction.resend_at, transaction.expires_at)
            for transaction in self._progress.pending.values()
        ]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Mark requests for resending and give up on those past their timeout."""
        for socket, transaction in list(self._progress.pending.items()):
            if now >= transaction.expires_at:
                del self._progress.pending[socket]
                self._progress.finished_ids.add(transaction.request.transaction_id)
                self._on_timeout(transaction.step, now)
            elif now >= transaction.resend_at:
                transaction.due = True

    def receive_response(self, response: BindingResponse, now: float) -> RefusedReply | None:
        """Feed a decoded Binding success response. Returns why it was refused (an ID no
        request waits for; a missing attribute the test needs), or ``None`` if it was used or
        is a late duplicate of an answer already used (it is then ignored)."""
        progress = self._progress
        transaction = progress.pending.get(response.socket)
        if transaction is None or transaction.request.transaction_id != response.transaction_id:
            if response.transaction_id in progress.finished_ids:
                return None
            return RefusedReply.WRONG_TRANSACTION_ID
        del progress.pending[response.socket]
        progress.finished_ids.add(response.transaction_id)
        return self._on_response(transaction, response, now)

    # --- the sequences ----------------------------------------------------------------------

    def _start(
        self,
        step: _Step,
        socket: ProbeSocket,
        destination: Address,
        now: float,
        *,
        change_ip: bool = False,
        change_port: bool = False,
    ) -> None:
        request = BindingRequest(
            transaction_id=self._new_id(),
            socket=socket,
            destination=destination,
            change_ip=change_ip,
            change_port=change_port,
        )
        self._progress.pending[socket] = _Transaction(
            step=step, request=request, expires_at=now + self.config.request_timeout, resend_at=now
        )

    def _on_timeout(self, step: _Step, now: float) -> None:
        progress = self._progress
        if step in (_Step.MAPPING_I, _Step.MAPPING_II, _Step.MAPPING_III):
            progress.mapping = MappingBehaviour.UNKNOWN
        elif step is _Step.FILTERING_I:
            progress.filtering = FilteringBehaviour.UNKNOWN
        elif step is _Step.FILTERING_II:
            self._start(
                _Step.FILTERING_III,
                ProbeSocket.FILTERING,
                self._server,
                now,
                change_port=True,
            )
        else:
            progress.filtering = FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT

    def _on_response(
        self, transaction: _Transaction, response: BindingResponse, now: float
    ) -> RefusedReply | None:
        progress = self._progress
        step = transaction.step
        mapped = response.mapped_address
        other_address = response.other_address
        if step in (_Step.MAPPING_I, _Step.MAPPING_II, _Step.MAPPING_III) and mapped is None:
            progress.mapping = MappingBehaviour.UNKNOWN
            return RefusedReply.NO_MAPPED_ADDRESS
        if step is _Step.MAPPING_I and mapped is not None:
            if other_address is None:
                progress.mapping = MappingBehaviour.UNKNOWN
                return RefusedReply.NO_OTHER_ADDRESS
            progress.first_mapped = mapped
            progress.other_address = other_address
            if _same_address(mapped, self._local_address):
                progress.mapping = MappingBehaviour.NO_NAT
            else:
                self._start(
                    _Step.MAPPING_II, ProbeSocket.MAPPING, (other_address[0], self._server[1]), now
                )
        elif step is _Step.MAPPING_II and mapped is not None:
            if progress.first_mapped is None or progress.other_address is None:
                progress.mapping = MappingBehaviour.UNKNOWN
            elif _same_address(mapped, progress.first_mapped):
                progress.mapping = MappingBehaviour.ENDPOINT_INDEPENDENT
            else:
                progress.second_mapped = mapped
                self._start(_Step.MAPPING_III, ProbeSocket.MAPPING, progress.other_address, now)
        elif step is _Step.MAPPING_III and mapped is not None:
            if progress.second_mapped is None:
                progress.mapping = MappingBehaviour.UNKNOWN
            elif _same_address(mapped, progress.second_mapped):
                progress.mapping = MappingBehaviour.ADDRESS_DEPENDENT
            else:
                progress.mapping = MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT
        elif step is _Step.FILTERING_I:
            if other_address is None:
                progress.filtering = FilteringBehaviour.UNKNOWN
                return RefusedReply.NO_OTHER_ADDRESS
            progress.other_address = progress.other_address or other_address
            self._start(
                _Step.FILTERING_II,
                ProbeSocket.FILTERING,
                self._server,
                now,
                change_ip=True,
                change_port=True,
            )
        else:
            self._on_filtering_answer(step, response)
        return None

    def _on_filtering_answer(self, step: _Step, response: BindingResponse) -> None:
        progress = self._progress
        other = progress.other_address
        if other is None:  # pragma: no cover - FILTERING_I always sets it first
            progress.filtering = FilteringBehaviour.UNKNOWN
            return
        if step is _Step.FILTERING_II:
            expected_from = other
            behaviour = FilteringBehaviour.ENDPOINT_INDEPENDENT
        else:
            expected_from = (self._server[0], other[1])
            behaviour = FilteringBehaviour.ADDRESS_DEPENDENT
        if _same_address(response.received_from, expected_from):
            progress.filtering = behaviour
        else:
            progress.filtering = FilteringBehaviour.UNKNOWN  # the server ignored CHANGE-REQUEST
