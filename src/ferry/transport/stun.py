"""The asyncio side of NAT discovery: two UDP sockets around the sans-IO test sequence.

:func:`discover_nat_behaviour` runs :class:`~ferry.core.nat_behaviour.NatBehaviourDiscovery`
against one STUN server; :func:`discover_with_servers` tries several in turn, as Snowflake
does, until one can run the tests; :class:`NatBehaviourMonitor` repeats that when a role
starts and then every ``rediscovery_interval`` seconds, in its own task, off the data path.

STUN messages are encoded and decoded with aioice's codec (``aioice.stun``, which ships with
aiortc and knows CHANGE-REQUEST, OTHER-ADDRESS, RESPONSE-ORIGIN and XOR-MAPPED-ADDRESS), so
ferry carries no STUN parser of its own. aioice's ``Transaction`` class is not used: the
retransmission schedule belongs to the sans-IO core, where it is tested without a clock.

Replies that cannot be used (not STUN, not a Binding success response, a transaction ID no
request waits for, a missing XOR-MAPPED-ADDRESS or OTHER-ADDRESS) are counted by reason in
:class:`RefusedStunReplies` (``ferry_ROLE_stun_replies_refused_total{reason}``, on the role's
registry) and each reason is logged once per run, without the address it came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
from collections.abc import Awaitable, Callable

from aioice import stun
from prometheus_client import CollectorRegistry, Counter

from ferry.core.nat_behaviour import (
    UNKNOWN_BEHAVIOUR,
    Address,
    BindingRequest,
    BindingResponse,
    MappingBehaviour,
    NatBehaviour,
    NatBehaviourDiscovery,
    NatClass,
    NatDiscoveryConfig,
    ProbeSocket,
    RefusedReply,
    StunServer,
)
from ferry.errors import FerryError
from ferry.logs import get_logger
from ferry.tasks import TaskOwner

log = get_logger(__name__)

_CHANGE_IP = 0x4
_CHANGE_PORT = 0x2
_MAX_QUEUED_DATAGRAMS = 64


def encode_binding_request(request: BindingRequest) -> bytes:
    """The bytes of ``request`` (a Binding request, with CHANGE-REQUEST if it asks a change)."""
    message = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.REQUEST,
        transaction_id=request.transaction_id,
    )
    flags = (_CHANGE_IP if request.change_ip else 0) | (_CHANGE_PORT if request.change_port else 0)
    if flags:
        message.attributes["CHANGE-REQUEST"] = flags
    return bytes(message)


def _address_attribute(message: stun.Message, *names: str) -> Address | None:
    for name in names:
        value = message.attributes.get(name)
        if isinstance(value, tuple) and len(value) == 2:
            host, port = value
            if isinstance(host, str) and isinstance(port, int):
                return host, port
    return None


def decode_binding_response(
    data: bytes, received_from: Address, probe_socket: ProbeSocket
) -> BindingResponse | RefusedReply:
    """``data`` as a Binding success response, or why it is not one."""
    try:
        message = stun.parse_message(data)
    except (ValueError, KeyError, IndexError, struct.error):
        # aioice raises ValueError for most defects, struct.error for a truncated number
        return RefusedReply.UNPARSEABLE
    if message.message_method != stun.Method.BINDING or (
        message.message_class != stun.Class.RESPONSE
    ):
        return RefusedReply.NOT_BINDING_SUCCESS
    return BindingResponse(
        transaction_id=message.transaction_id,
        socket=probe_socket,
        received_from=received_from,
        mapped_address=_address_attribute(message, "XOR-MAPPED-ADDRESS", "MAPPED-ADDRESS"),
        other_address=_address_attribute(message, "OTHER-ADDRESS", "CHANGED-ADDRESS"),
    )


class RefusedStunReplies:
    """Counts the STUN replies NAT discovery could not use, by :class:`RefusedReply` reason,
    in ``ferry_ROLE_stun_replies_refused_total{reason}`` on ``registry``, and logs the first
    of each reason (one INFO line naming the reason, never an address)."""

    def __init__(self, registry: CollectorRegistry, *, role: str) -> None:
        self.role = role
        """The role in the metric's name and the log line (``client``, ``volunteer``, ``nat``)."""
        self.refused = Counter(
            f"ferry_{role}_stun_replies_refused",
            "STUN replies NAT discovery could not use, by reason",
            ["reason"],
            registry=registry,
        )
        """The counter (every reason is exported, from 0)."""
        for reason in RefusedReply:
            self.refused.labels(reason=reason.value)
        self._logged: set[RefusedReply] = set()

    def count(self, reason: RefusedReply) -> None:
        """Count one refused reply; log it if it is the first with this reason."""
        self.refused.labels(reason=reason.value).inc()
        if reason not in self._logged:
            self._logged.add(reason)
            log.info(
                "%s NAT discovery refused a STUN reply (%s): %s; further ones are only counted",
                self.role,
                reason.value,
                reason.description,
            )


class _ProbeProtocol(asyncio.DatagramProtocol):
    def __init__(
        self,
        probe_socket: ProbeSocket,
        queue: asyncio.Queue[tuple[ProbeSocket, bytes, Address]],
    ) -> None:
        self._socket = probe_socket
        self._queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        host, port = addr[0], addr[1]
        if isinstance(host, str) and isinstance(port, int):
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait((self._socket, data, (host, port)))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors (port unreachable) mean "no answer", which the timeouts cover


def _local_address_towards(family: int, server: Address) -> str:
    """The local IP address the system would use to reach ``server`` (no packet is sent)."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(server)
        return str(probe.getsockname()[0])


async def discover_nat_behaviour(
    server: StunServer,
    config: NatDiscoveryConfig | None = None,
    refused: RefusedStunReplies | None = None,
) -> NatBehaviour:
    """Run the RFC 5780 mapping and filtering tests against ``server``.

    Takes at most ``config.longest_discovery`` seconds (plus name resolution). A server that
    cannot be resolved or reached gives :data:`~ferry.core.nat_behaviour.UNKNOWN_BEHAVIOUR`.
    Replies that cannot be used are counted in ``refused`` (a private one if ``None``).
    """
    config = config if config is not None else NatDiscoveryConfig()
    refused = (
        refused if refused is not None else RefusedStunReplies(CollectorRegistry(), role="nat")
    )
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(server.host, server.port, type=socket.SOCK_DGRAM),
            config.request_timeout,
        )
        family, _, _, _, sockaddr = infos[0]
        server_address: Address = (str(sockaddr[0]), int(sockaddr[1]))
        local_ip = _local_address_towards(family, server_address)
    except (OSError, TimeoutError, IndexError):
        return UNKNOWN_BEHAVIOUR
    queue: asyncio.Queue[tuple[ProbeSocket, bytes, Address]] = asyncio.Queue(_MAX_QUEUED_DATAGRAMS)
    transports: dict[ProbeSocket, asyncio.DatagramTransport] = {}
    try:
        for probe_socket in ProbeSocket:
            transport, _ = await loop.create_datagram_endpoint(
                functools.partial(_ProbeProtocol, probe_socket, queue),
                local_addr=(local_ip, 0),
                family=family,
            )
            transports[probe_socket] = transport
        sockname = transports[ProbeSocket.MAPPING].get_extra_info("sockname")
        local_address: Address = (str(sockname[0]), int(sockname[1]))
        return await _run_discovery(
            NatBehaviourDiscovery(server_address, local_address, loop.time(), config=config),
            transports,
            queue,
            loop.time() + config.longest_discovery,
            refused,
        )
    except OSError:
        return UNKNOWN_BEHAVIOUR
    finally:
        for transport in transports.values():
            transport.close()


async def _run_discovery(
    discovery: NatBehaviourDiscovery,
    transports: dict[ProbeSocket, asyncio.DatagramTransport],
    queue: asyncio.Queue[tuple[ProbeSocket, bytes, Address]],
    deadline: float,
    refused: RefusedStunReplies,
) -> NatBehaviour:
    loop = asyncio.get_running_loop()
    while (result := discovery.result) is None:
        now = loop.time()
        if now >= deadline:  # the core's timeouts end it first; this is a second bound
            return UNKNOWN_BEHAVIOUR
        for request in discovery.requests_to_send(now):
            transports[request.socket].sendto(encode_binding_request(request), request.destination)
        timer = discovery.get_timer()
        wait = max(0.0, min(deadline, timer if timer is not None else deadline) - loop.time())
        try:
            probe_socket, data, sender = await asyncio.wait_for(queue.get(), wait)
        except TimeoutError:
            discovery.handle_timer(loop.time())
            continue
        response = decode_binding_response(data, sender, probe_socket)
        refusal = (
            response
            if isinstance(response, RefusedReply)
            else discovery.receive_response(response, loop.time())
        )
        if refusal is not None:
            refused.count(refusal)
        discovery.handle_timer(loop.time())
    return result


async def discover_with_servers(
    servers: tuple[StunServer, ...],
    config: NatDiscoveryConfig | None = None,
    refused: RefusedStunReplies | None = None,
) -> NatBehaviour:
    """The first behaviour with a known mapping among ``servers``, tried in order (as
    Snowflake does); unknown if none could run the tests or ``servers`` is empty. Replies
    that cannot be used are counted in ``refused`` (a private one if ``None``)."""
    refused = (
        refused if refused is not None else RefusedStunReplies(CollectorRegistry(), role="nat")
    )
    fallback = UNKNOWN_BEHAVIOUR
    for server in servers:
        behaviour = await discover_nat_behaviour(server, config, refused)
        if behaviour.mapping is not MappingBehaviour.UNKNOWN:
            return behaviour
        if behaviour.filtering is not fallback.filtering:
            fallback = behaviour
    return fallback


class NatBehaviourMonitor:
    """Keeps a role's NAT behaviour current: discovers it at :meth:`start` and then every
    ``config.rediscovery_interval`` seconds, in a task of its own (never on the data path).

    Without servers it does nothing and the class stays ``unknown``. Each discovery whose
    result differs from the last logs one INFO line naming the class and behaviours (never an
    address). Replies it cannot use are counted in :attr:`refused`, on ``registry`` (the
    role's; a private one if ``None``).
    """

    def __init__(
        self,
        servers: tuple[StunServer, ...],
        config: NatDiscoveryConfig | None = None,
        *,
        role: str,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.servers = servers
        self.config = config if config is not None else NatDiscoveryConfig()
        self.behaviour: NatBehaviour = UNKNOWN_BEHAVIOUR
        """The latest result (unknown until the first discovery ends)."""
        self.discoveries = 0
        """Discoveries finished so far."""
        self.discovered = asyncio.Event()
        """Set once the first discovery has finished."""
        self.refused = RefusedStunReplies(
            registry if registry is not None else CollectorRegistry(), role=role
        )
        """STUN replies refused in every discovery of this run, by reason."""
        self._role = role
        self._tasks = TaskOwner(f"{role}-nat-discovery")

    @property
    def nat_class(self) -> NatClass:
        """The class to report to the broker now."""
        return self.behaviour.nat_class

    def start(self) -> None:
        """Start discovering (no-op without servers)."""
        if self.servers:
            self._tasks.spawn(self._run(), name="discover")

    def start_when_known(self, servers: Callable[[], Awaitable[tuple[StunServer, ...]]]) -> None:
        """Without servers of its own: ask ``servers`` (the broker's STUN servers, which often
        answer RFC 5780 tests too) once, in the background, and start with what it gives. A
        server without RFC 5780 support leaves the class ``unknown``."""
        if self.servers:
            self.start()
            return
        self._tasks.spawn(self._run_with(servers), name="discover")

    async def _run_with(self, servers: Callable[[], Awaitable[tuple[StunServer, ...]]]) -> None:
        try:
            self.servers = await servers()
        except FerryError as error:
            log.info("%s NAT: not measured (no STUN server: %s)", self._role, error)
            return
        if self.servers:
            await self._run()

    async def _run(self) -> None:
        while True:
            behaviour = await discover_with_servers(self.servers, self.config, self.refused)
            if behaviour != self.behaviour or self.discoveries == 0:
                log.info(
                    "%s NAT: %s (mapping %s, filtering %s)",
                    self._role,
                    behaviour.nat_class.value,
                    behaviour.mapping.value,
                    behaviour.filtering.value,
                )
            self.behaviour = behaviour
            self.discoveries += 1
            self.discovered.set()
            await asyncio.sleep(self.config.rediscovery_interval)

    async def close(self) -> None:
        """Stop discovering."""
        await self._tasks.close()
