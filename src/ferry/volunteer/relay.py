"""The Python volunteer: polls the broker, answers clients' offers, relays blindly.

For each match the volunteer answers the client's WebRTC offer, opens one WebSocket to the
egress the broker named, and copies datagrams between the two until either closes. It never
parses a datagram: they are QUIC packets encrypted end to end between client and egress.
An optional ``tap`` sees every relayed datagram (tests use it to prove the volunteer sees
only ciphertext).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from ferry.core.broker_messages import MatchOffer
from ferry.errors import FerryError, ProtocolError
from ferry.logs import get_logger
from ferry.tasks import TaskOwner
from ferry.transport.datagram import DatagramChannel
from ferry.transport.webrtc import AnsweringPeer, WebRtcConfig
from ferry.transport.websocket import connect_websocket_channel
from ferry.volunteer.broker_client import BrokerClient, new_volunteer_id

log = get_logger(__name__)

RelayTap = Callable[[str, bytes], None]
"""Sees each relayed datagram: ``("to_egress" | "to_client", datagram)``."""


@dataclass(frozen=True, slots=True)
class VolunteerConfig:
    """Settings of a Python volunteer."""

    broker_url: str
    """The broker's base URL, e.g. ``https://broker.example``."""
    capacity: int = 5
    """Clients relayed at once."""
    poll_backoff_initial: float = 1.0
    """Seconds before polling again after the broker failed; doubles on each failure."""
    poll_backoff_max: float = 30.0
    """Cap on the poll retry delay."""
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    """WebRTC tunables."""


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


class Volunteer:
    """A running volunteer."""

    def __init__(
        self,
        config: VolunteerConfig,
        *,
        tap: RelayTap | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.metrics = VolunteerMetrics(registry or CollectorRegistry())
        self.volunteer_id = new_volunteer_id()
        self._tap = tap
        self._tasks = TaskOwner("volunteer")
        self._http: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(config.capacity)
        self.active = 0
        self.clients_served = 0
        self.bytes_relayed = 0
        self.last_error = ""

    def start(self) -> None:
        """Start polling the broker."""
        self._http = aiohttp.ClientSession()
        self._tasks.spawn(self._poll_loop(), name="poll")

    async def _poll_loop(self) -> None:
        assert self._http is not None
        broker = BrokerClient(self.config.broker_url, self._http)
        delay = self.config.poll_backoff_initial
        while True:
            await self._slots.acquire()
            try:
                match = await broker.poll(self.volunteer_id, self.config.capacity - self.active)
            except FerryError as exc:
                self._slots.release()
                self.last_error = str(exc)
                log.warning("broker poll failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.poll_backoff_max)
                continue
            except BaseException:
                self._slots.release()
                raise
            delay = self.config.poll_backoff_initial
            if match is None:
                self._slots.release()
                continue
            self._tasks.spawn(self._serve(broker, match), name="relay")

    async def _serve(self, broker: BrokerClient, match: MatchOffer) -> None:
        self.active += 1
        peer = AnsweringPeer(self.config.webrtc)
        egress: DatagramChannel | None = None
        try:
            answer = await peer.accept_offer(match.offer)
            if not await broker.answer(match.id, answer):
                log.info("the client gave up before our answer arrived")
                return
            assert self._http is not None
            # The data channel and the WebSocket open side by side; datagrams the client sends
            # meanwhile are held by the channel until the relay starts.
            try:
                async with asyncio.TaskGroup() as group:
                    client_task = group.create_task(peer.wait_channel())
                    egress_task = group.create_task(
                        connect_websocket_channel(match.egress, self._http)
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
        """Copy datagrams both ways until either side closes."""
        done = asyncio.Event()
        tap = self._tap

        to_egress_bytes = self.metrics.relayed_bytes.labels("to_egress")
        to_client_bytes = self.metrics.relayed_bytes.labels("to_client")

        def to_egress(datagram: bytes) -> None:
            self.bytes_relayed += len(datagram)
            to_egress_bytes.inc(len(datagram))
            if tap is not None:
                tap("to_egress", datagram)
            egress.send(datagram)

        def to_client(datagram: bytes) -> None:
            self.bytes_relayed += len(datagram)
            to_client_bytes.inc(len(datagram))
            if tap is not None:
                tap("to_client", datagram)
            client.send(datagram)

        egress.start(to_client, done.set)
        client.start(to_egress, done.set)
        log.info("relaying for a client (%d active)", self.active)
        await done.wait()
        self.metrics.relays.labels("ended").inc()
        log.info("stopped relaying for a client")

    async def close(self) -> None:
        """Stop polling and close every relay."""
        await self._tasks.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
