"""The Python volunteer: polls the broker, answers clients' offers, relays blindly.

For each match the volunteer answers the client's WebRTC offer, opens one WebSocket to the
egress the broker named, and copies datagrams between the two until either closes. It never
parses a datagram: they are QUIC packets encrypted end to end between client and egress.
An optional ``tap`` sees every relayed datagram (tests use it to prove the volunteer sees
only ciphertext).

The volunteer's limits (:mod:`ferry.core.volunteer_limits`) cover all its clients together:
``capacity`` clients at once, ``max_rate`` bytes per second over both directions (a datagram
over the rate waits up to ``rate_queue_delay`` for its turn, then is dropped) and a daily
``quota``, after which every relay ends
and the volunteer stops polling until the next UTC midnight. A test-only
:class:`~ferry.volunteer.impairment.RelayImpairment` can inject loss, duplication,
reordering and corruption into what it relays.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from aiohappyeyeballs import AddrInfoType
from prometheus_client import CollectorRegistry, Counter, Gauge

from ferry.core.broker_messages import (
    MatchOffer,
    MessageError,
    PollResponse,
    VolunteerKind,
    check_pairing,
)
from ferry.core.ice_servers import IceServer, nat_discovery_servers, without_internal
from ferry.core.nat_behaviour import NatDiscoveryConfig, StunServer
from ferry.core.pacer import PaceDecision, Pacer
from ferry.core.retry_after import retry_delay
from ferry.core.route_key import relay_url_with_route, route_key_of
from ferry.core.volunteer_egress import EgressChoice, EgressRefusal
from ferry.core.volunteer_limits import Admission, VolunteerLimits, VolunteerLimitsConfig
from ferry.errors import BrokerError, ConfigError, FerryError, ProtocolError
from ferry.logs import get_logger, scrub_library_loggers
from ferry.tasks import TaskOwner
from ferry.transport.broker_http import plain_http_warning
from ferry.transport.datagram import DatagramChannel
from ferry.transport.stun import NatBehaviourMonitor
from ferry.transport.webrtc import PeerFactory, PythonPeers, WebRtcConfig
from ferry.transport.websocket import connect_websocket_channel
from ferry.volunteer.broker_client import BrokerClient, new_volunteer_id
from ferry.volunteer.impairment import ImpairedSender, RelayImpairment

log = get_logger(__name__)

RelayTap = Callable[[str, bytes], None]
"""Sees each relayed datagram: ``("to_egress" | "to_client", datagram)``."""

Clock = Callable[[], float]
"""Seconds since the Unix epoch (``time.time``): the limits' ``now``."""


@dataclass(frozen=True, slots=True)
class VolunteerConfig:
    """Settings of a Python volunteer."""

    broker_url: str
    """The broker's base URL, e.g. ``https://broker.example``."""
    capacity: int = 5
    """Clients relayed at once."""
    max_rate: int = 0
    """Bytes per second relayed over all clients and both directions; 0 means unlimited."""
    rate_burst: int = 0
    """Token bucket size in bytes for ``max_rate`` (at least 65,536); 0 means a quarter of a
    second at ``max_rate``, at least 65,536 bytes."""
    rate_queue_delay: float = 0.2
    """Longest a datagram over ``max_rate`` waits for the bucket before it is dropped
    (seconds); 0 drops at once. Waiting (shaping) lets the client see the cap as delay and
    share its traffic across volunteers by it; dropping (policing) only shows up as loss."""
    quota: int = 0
    """Bytes relayed per UTC calendar day over all clients; 0 means unlimited. Once reached,
    every relay ends and polling stops until the next UTC midnight."""
    quota_recheck_interval: float = 60.0
    """Longest sleep, in seconds, between checks of the clock while the quota is used up (so a
    clock that is set forward is noticed)."""
    impairment: RelayImpairment | None = None
    """TESTING ONLY: faults injected into every relayed datagram (``None``: relay faithfully)."""
    poll_backoff_initial: float = 1.0
    """Seconds before polling again after the broker failed; doubles on each failure."""
    poll_backoff_max: float = 30.0
    """Cap on the poll retry delay."""
    retry_after_max: float = 300.0
    """Longest wait, in seconds, taken from a broker's ``Retry-After`` (429 or 503): the next
    poll waits for what the broker asked (and at least the backoff), up to this."""
    pairing: str | None = None
    """A private pairing code (16..64 of ``[A-Za-z0-9_-]``): serve only clients started with
    the same code, and no one else. ``None``: serve any client without a code."""
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    """WebRTC tunables."""
    stun_servers: tuple[StunServer, ...] = ()
    """RFC 5780 STUN servers for NAT discovery (``--nat-stun``), tried in order; none: the
    broker's STUN servers are tried (unless ``broker_ice_servers`` is off), and without any
    the NAT class sent to the broker stays ``unknown``."""
    broker_ice_servers: bool = True
    """Answer with the STUN and TURN servers the broker sends with each match
    (``--no-broker-ice-servers`` turns it off; the own ``--ice-server`` ones are always
    used)."""
    allow_internal_ice_servers: bool = False
    """Accept broker-given ICE servers on loopback, private or link-local addresses (tests and
    private networks: ``--unsafe-allow-internal-ice-servers``)."""
    nat_discovery: NatDiscoveryConfig = field(default_factory=NatDiscoveryConfig)
    """Timing of NAT discovery (including how often it runs again)."""
    egress_allow: tuple[str, ...] = ()
    """The only egresses this volunteer relays to (``--egress-allow``), each a full URL
    (``wss://egress.example/v1/relay``) or a host (``egress.example``); empty: any egress the
    broker names that is not on an internal address (:mod:`ferry.core.volunteer_egress`)."""
    allow_internal_egress: bool = False
    """Relay to egresses on loopback, private, link-local and other internal addresses
    (``--unsafe-allow-internal-egress``: tests, ``ferry demo`` and private networks; a
    hostile broker could otherwise send this volunteer into its own network)."""
    egress_resolve_timeout: float = 5.0
    """Longest wait, in seconds, for the egress's name to resolve before it is checked (a
    name that does not resolve in time is left to the connection, which checks again)."""

    def __post_init__(self) -> None:
        _ = self.limits  # building the limits' config validates them: fail here, not later
        _ = self.egress_choice
        if not self.egress_resolve_timeout > 0:
            raise ConfigError("egress_resolve_timeout must be a positive number of seconds")
        if not self.quota_recheck_interval > 0:
            raise ConfigError("quota_recheck_interval must be a positive number of seconds")
        if not self.retry_after_max >= 0:
            raise ConfigError("retry_after_max must not be negative")
        if self.pairing is not None:
            try:
                check_pairing(self.pairing, "pairing")
            except MessageError as exc:
                raise ConfigError(f"the pairing code is not valid: {exc}") from exc

    @property
    def egress_choice(self) -> EgressChoice:
        """The egress rules in the form the sans-IO check takes."""
        return EgressChoice(allowed=self.egress_allow, allow_internal=self.allow_internal_egress)

    @property
    def limits(self) -> VolunteerLimitsConfig:
        """The limits in the form the sans-IO policy takes."""
        return VolunteerLimitsConfig(
            capacity=self.capacity,
            max_rate=self.max_rate,
            burst=self.rate_burst,
            quota=self.quota,
            queue_delay=self.rate_queue_delay,
        )


class VolunteerMetrics:
    """Prometheus metrics of one volunteer, on their own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.relays = Counter(
            "ferry_volunteer_relays", "Clients relayed, by outcome", ["outcome"], registry=registry
        )
        self.rejected = Counter(
            "ferry_volunteer_rejected",
            "Matches refused because the client's offer or the path was bad, by reason",
            ["reason"],
            registry=registry,
        )
        self.relayed_bytes = Counter(
            "ferry_volunteer_relayed_bytes",
            "Bytes relayed, by direction",
            ["direction"],
            registry=registry,
        )
        self.dropped = Counter(
            "ferry_volunteer_datagrams_dropped",
            "Datagrams not relayed because of the volunteer's limits, by reason (rate, quota)",
            ["reason"],
            registry=registry,
        )
        self.polls = Counter("ferry_volunteer_polls", "Polls sent to the broker", registry=registry)
        self.quota_exhausted = Gauge(
            "ferry_volunteer_quota_exhausted",
            "1 while today's (UTC) quota is used up and the volunteer does not poll, else 0",
            registry=registry,
        )
        self.quota_used = Gauge(
            "ferry_volunteer_quota_used_bytes",
            "Bytes counted towards today's (UTC) quota (0 when there is no quota)",
            registry=registry,
        )
        self.ice_servers_refused = Counter(
            "ferry_volunteer_ice_servers_refused",
            "ICE servers from the broker the volunteer would not use, by reason (internal_address)",
            ["reason"],
            registry=registry,
        )
        self.impaired = Counter(
            "ferry_volunteer_impaired_datagrams",
            "TESTING ONLY: datagrams hit by an injected fault, by fault",
            ["fault"],
            registry=registry,
        )


class _PacedSender:
    """One direction of a relay: ``send`` behind a :class:`~ferry.core.pacer.Pacer`, driven
    by the loop's clock and one timer armed at the pacer's deadline."""

    def __init__(
        self,
        send: Callable[[bytes], object],
        loop: asyncio.AbstractEventLoop,
        on_full: Callable[[], object],
    ) -> None:
        self._send = send
        self._loop = loop
        self._on_full = on_full
        self._pacer = Pacer()
        self._timer: asyncio.TimerHandle | None = None

    def send(self, datagram: bytes, delay: float) -> None:
        """Send ``datagram`` ``delay`` seconds from now, after every datagram held before it."""
        decision = self._pacer.push(datagram, delay, self._loop.time())
        if decision is PaceDecision.SEND_NOW:
            self._send(datagram)
        elif decision is PaceDecision.HELD:
            self._arm()
        else:
            self._on_full()

    def _arm(self) -> None:
        deadline = self._pacer.deadline()
        if self._timer is None and deadline is not None:
            self._timer = self._loop.call_at(deadline, self._release)

    def _release(self) -> None:
        self._timer = None
        for datagram in self._pacer.release(self._loop.time()):
            self._send(datagram)
        self._arm()

    def close(self) -> None:
        """Cancel the timer and forget what is held (the relay ended)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pacer.clear()


class Volunteer:
    """A running volunteer."""

    def __init__(
        self,
        config: VolunteerConfig,
        *,
        tap: RelayTap | None = None,
        registry: CollectorRegistry | None = None,
        clock: Clock = time.time,
        peers: PeerFactory | None = None,
    ) -> None:
        self.config = config
        self.peers: PeerFactory = peers or PythonPeers(config.webrtc)
        """Makes the WebRTC peers: aiortc's, or a browser engine's (``--webrtc browser``)."""
        self.limits = VolunteerLimits(config.limits)
        self.metrics = VolunteerMetrics(registry or CollectorRegistry())
        self._dropped_for_rate = self.metrics.dropped.labels(Admission.OVER_RATE.value)
        self._dropped_for_quota = self.metrics.dropped.labels(Admission.OVER_QUOTA.value)
        self.volunteer_id = new_volunteer_id()
        self._tap = tap
        self._clock = clock
        self._quota_reached = asyncio.Event()
        self._relay_stops: set[asyncio.Event] = set()
        self._relays_started = 0
        self.metrics.quota_used.set_function(lambda: self.limits.quota_used(self._clock()))
        self._tasks = TaskOwner("volunteer")
        self._refused_ice_servers: set[str] = set()
        self.nat = NatBehaviourMonitor(
            config.stun_servers,
            config.nat_discovery,
            role="volunteer",
            registry=self.metrics.registry,
        )
        """The volunteer's NAT behaviour, rediscovered periodically; sent in every poll."""
        self._http: aiohttp.ClientSession | None = None
        self._egress_http: aiohttp.ClientSession | None = None
        self._egress_choice = config.egress_choice
        self._refused_egresses: set[str] = set()
        self._broker: BrokerClient | None = None
        self._slots = asyncio.Semaphore(config.capacity)
        self.active = 0
        self.clients_served = 0
        self.bytes_relayed = 0
        self.last_error = ""

    @property
    def kind(self) -> VolunteerKind:
        """The kind each poll reports: ``python-browser-engine`` while the WebRTC stack in use
        is the browser engine, ``python`` while it is aiortc (so it follows a fallback)."""
        return "python-browser-engine" if self.peers.stack_status().stack == "browser" else "python"

    def start(self) -> None:
        """Start polling the broker."""
        scrub_library_loggers()
        warning = plain_http_warning(self.config.broker_url)
        if warning is not None:
            log.warning("%s", warning)
        self._http = aiohttp.ClientSession()
        # Egress WebSockets get their own session: every socket it opens is checked against
        # the egress rules at the address it connects to (names, DNS rebinding, redirects).
        self._egress_http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=self._egress_socket)
        )
        self._broker = BrokerClient(
            self.config.broker_url, self._http, registry=self.metrics.registry
        )
        if self.config.broker_ice_servers:
            self.nat.start_when_known(self._broker_stun_servers)
        else:
            self.nat.start()
        self._tasks.spawn(self._poll_loop(), name="poll")

    async def _broker_stun_servers(self) -> tuple[StunServer, ...]:
        """The broker's STUN servers (``stun:`` over UDP), for NAT discovery."""
        assert self._broker is not None
        return nat_discovery_servers(self._usable_ice_servers(await self._broker.ice_servers()))

    def _usable_ice_servers(self, servers: tuple[IceServer, ...]) -> tuple[IceServer, ...]:
        """The broker's ICE servers this volunteer may use: none with
        ``broker_ice_servers`` off, and none on internal addresses (counted, logged once)."""
        if not self.config.broker_ice_servers:
            return ()
        kept, refused = without_internal(
            servers, allow_internal=self.config.allow_internal_ice_servers
        )
        for server in refused:
            self.metrics.ice_servers_refused.labels("internal_address").inc()
            if server.url not in self._refused_ice_servers:
                self._refused_ice_servers.add(server.url)
                log.warning(
                    "the broker named the ICE server %s on an internal address; it is not "
                    "used (a broker may not send a volunteer's packets into its network)",
                    server.url,
                )
        return kept

    def _refused_egress(self, refusal: EgressRefusal, url: str) -> None:
        """Count a refused egress; log it once per URL."""
        self.metrics.rejected.labels(refusal.reason).inc()
        self.last_error = refusal.message
        if url not in self._refused_egresses:
            self._refused_egresses.add(url)
            log.warning("%s", refusal.message)

    async def _egress_refusal(self, url: str) -> EgressRefusal | None:
        """Why the egress ``url`` is refused, checking what its name resolves to; ``None``
        when it may be connected to (the socket is checked again, see ``_egress_socket``)."""
        choice = self._egress_choice
        refusal = choice.refuse_url(url)
        if refusal is not None or choice.allow_internal:
            return refusal
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
            return None  # an address: refuse_url judged it
        except ValueError:
            pass
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.egress_resolve_timeout):
                found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            return None  # the connection will fail and say so
        for *_, address in found:
            refusal = choice.refuse_address(url, ipaddress.ip_address(address[0]))
            if refusal is not None:
                return refusal
        return None

    def _egress_socket(self, addr_info: AddrInfoType) -> socket.socket:
        """The socket for one egress connection, refused (``OSError``) when its address is
        internal: the last check, on the address actually connected to."""
        family, kind, protocol, _, address = addr_info
        refusal = self._egress_choice.refuse_address(
            "(the address it resolved or redirected to)", ipaddress.ip_address(address[0])
        )
        if refusal is not None:
            self.metrics.rejected.labels(refusal.reason).inc()
            raise OSError(errno.EACCES, refusal.message)
        return socket.socket(family, kind, protocol)

    async def _poll_loop(self) -> None:
        assert self._broker is not None
        broker = self._broker
        delay = self.config.poll_backoff_initial
        while True:
            quota_wait = self.limits.next_poll_delay(self._clock())
            if quota_wait > 0:
                self._quota_used_up(quota_wait)
                await asyncio.sleep(min(quota_wait, self.config.quota_recheck_interval))
                continue
            self._quota_renewed()
            await self._slots.acquire()
            try:
                response = await self._poll_unless_quota_reached(broker)
            except FerryError as exc:
                self._slots.release()
                self.last_error = str(exc)
                asked = exc.retry_after if isinstance(exc, BrokerError) else None
                wait = retry_delay(delay, asked, self.config.retry_after_max)
                log.warning("broker poll failed (%s); retrying in %.1f s", exc, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.config.poll_backoff_max)
                continue
            except BaseException:
                self._slots.release()
                raise
            delay = self.config.poll_backoff_initial
            match = response.match if response is not None else None
            if response is None or match is None:
                self._slots.release()
                continue
            if not self.limits.can_take_client(self.active, self._clock()):
                # The quota ran out while the poll was on its way back: the broker gives the
                # client to another volunteer once its answer_timeout passes.
                self._slots.release()
                log.info("declined a client: today's quota is used up")
                continue
            # Count the client before polling again: the next poll must already report one
            # slot fewer, or the broker would hand this volunteer a second path of the same
            # client (seen in benchmarks/churn.py: one kill then took out two paths).
            self.active += 1
            ice_servers = self._usable_ice_servers(response.ice_servers)
            self._tasks.spawn(self._serve(broker, match, ice_servers), name="relay")

    async def _poll_unless_quota_reached(self, broker: BrokerClient) -> PollResponse | None:
        """One poll, abandoned (``None``) if the quota runs out while the broker holds it."""
        self.metrics.polls.inc()
        free = self.limits.free_capacity(self.active)
        poll = asyncio.create_task(
            broker.poll_response(
                self.volunteer_id,
                free,
                pairing=self.config.pairing,
                nat=self.nat.nat_class,
                kind=self.kind,
            ),
            name="volunteer:poll",
        )
        quota = asyncio.create_task(self._quota_reached.wait(), name="volunteer:quota")
        try:
            await asyncio.wait({poll, quota}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            poll.cancel()
            quota.cancel()
            await asyncio.gather(poll, quota, return_exceptions=True)
        if poll.cancelled():
            return None
        return poll.result()

    def _quota_used_up(self, wait: float) -> None:
        """End every relay and stop polling; said once per day."""
        if self._quota_reached.is_set():
            return
        self._quota_reached.set()
        for stop in self._relay_stops:
            stop.set()
        self.metrics.quota_exhausted.set(1)
        log.warning(
            "today's quota of %d bytes is used up: relays ended, no more clients until "
            "00:00 UTC (in %.0f s)",
            self.config.quota,
            wait,
        )

    def _quota_renewed(self) -> None:
        if self._quota_reached.is_set():
            self._quota_reached.clear()
            self.metrics.quota_exhausted.set(0)
            log.info("a new UTC day: the quota is renewed, polling for clients again")

    async def _serve(
        self, broker: BrokerClient, match: MatchOffer, ice_servers: tuple[IceServer, ...]
    ) -> None:
        """Relay for one matched client; ``active`` was counted up by the caller."""
        try:
            refusal = await self._egress_refusal(match.egress)
        except BaseException:
            self.active -= 1
            self._slots.release()
            raise
        if refusal is not None:
            # Not answered: the broker gives the client to another volunteer once its
            # answer timeout passes.
            self._refused_egress(refusal, match.egress)
            self.active -= 1
            self._slots.release()
            return
        peer = self.peers.answering_peer(ice_servers)
        egress: DatagramChannel | None = None
        try:
            # The client's routing key keeps all its paths on one egress process behind a
            # balancer (core/route_key.py); a malformed one refuses the client (ProtocolError).
            egress_url = relay_url_with_route(match.egress, route_key_of(match.offer))
            answer = await peer.accept_offer(match.offer)
            if not await broker.answer(match.id, answer):
                log.info("the client gave up before our answer arrived")
                return
            assert self._egress_http is not None
            # The data channel and the WebSocket open side by side; datagrams the client sends
            # meanwhile are held by the channel until the relay starts.
            try:
                async with asyncio.TaskGroup() as group:
                    client_task = group.create_task(peer.wait_channel())
                    egress_task = group.create_task(
                        connect_websocket_channel(egress_url, self._egress_http)
                    )
            finally:
                if (
                    egress_task.done()
                    and not egress_task.cancelled()
                    and not egress_task.exception()
                ):
                    egress = egress_task.result()
            self.clients_served += 1
            await self._relay(client_task.result(), egress_task.result())
        except* ProtocolError as group:
            self.last_error = "; ".join(str(exc) for exc in group.exceptions)
            first = group.exceptions[0]
            reason = first.reason if isinstance(first, ProtocolError) else "malformed"
            self.metrics.rejected.labels(reason).inc()
            log.info("refused a client's offer: %s", self.last_error)
        except* FerryError as group:
            self.last_error = "; ".join(str(exc) for exc in group.exceptions)
            self.metrics.relays.labels("failed").inc()
            log.info("relay ended: %s", self.last_error)
        finally:
            if egress is not None:
                await egress.close()
            await peer.close()
            self.active -= 1
            self._slots.release()

    async def _relay(self, client: DatagramChannel, egress: DatagramChannel) -> None:
        """Copy datagrams both ways, within the limits, until either side closes."""
        done = asyncio.Event()
        self._relay_stops.add(done)
        self._relays_started += 1
        impairers = self._impairers(client, egress)
        send_to_egress, send_to_client = (
            (impairers[0].send, impairers[1].send) if impairers else (egress.send, client.send)
        )
        loop = asyncio.get_running_loop()
        paced_to_egress = _PacedSender(send_to_egress, loop, self._dropped_for_rate.inc)
        paced_to_client = _PacedSender(send_to_client, loop, self._dropped_for_rate.inc)
        try:
            if self._quota_reached.is_set():
                return
            egress.start(self._relay_direction("to_client", paced_to_client), done.set)
            client.start(self._relay_direction("to_egress", paced_to_egress), done.set)
            log.info("relaying for a client (%d active)", self.active)
            await done.wait()
        finally:
            self._relay_stops.discard(done)
            for impairer in impairers:
                impairer.close()
            paced_to_egress.close()
            paced_to_client.close()
        self.metrics.relays.labels("ended").inc()
        log.info("stopped relaying for a client")

    def _impairers(
        self, client: DatagramChannel, egress: DatagramChannel
    ) -> tuple[ImpairedSender, ...]:
        """TESTING ONLY: the senders that inject the configured faults (to egress, to client),
        or none when the relay is faithful."""
        impairment = self.config.impairment
        if impairment is None or not impairment.active:
            return ()
        stream = f"{self._relays_started}"
        impaired = self.metrics.impaired

        def count_fault(fault: str) -> None:
            impaired.labels(fault).inc()

        return (
            ImpairedSender(egress.send, impairment, f"{stream}/to_egress", on_fault=count_fault),
            ImpairedSender(client.send, impairment, f"{stream}/to_client", on_fault=count_fault),
        )

    def _relay_direction(self, direction: str, paced: _PacedSender) -> Callable[[bytes], None]:
        """What one side's receiver calls with each datagram: admit, count, tap, pace."""
        relayed = self.metrics.relayed_bytes.labels(direction)
        tap = self._tap

        def relay(datagram: bytes) -> None:
            delay = self._admitted(datagram)
            if delay is None:
                return
            relayed.inc(len(datagram))
            if tap is not None:
                tap(direction, datagram)
            paced.send(datagram, delay)

        return relay

    def _admitted(self, datagram: bytes) -> float | None:
        """Seconds to hold the datagram (0.0: send now), or None to drop it."""
        now = self._clock()
        delay = self.limits.reserve(len(datagram), now)
        if delay is not None:
            self.bytes_relayed += len(datagram)
            return delay
        if self.limits.quota_exhausted(now):
            self._dropped_for_quota.inc()
            self._quota_used_up(self.limits.next_poll_delay(now))
        else:
            self._dropped_for_rate.inc()
        return None

    async def close(self) -> None:
        """Stop polling and close every relay."""
        await self.nat.close()
        await self._tasks.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._egress_http is not None:
            await self._egress_http.close()
            self._egress_http = None
        impairment = self.config.impairment
        if impairment is not None and impairment.active:
            injected = {
                sample.labels["fault"]: int(sample.value)
                for metric in self.metrics.impaired.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            }
            summary = ", ".join(f"{fault} {count}" for fault, count in sorted(injected.items()))
            log.warning("TESTING ONLY: faults injected into relayed datagrams: %s", summary)
