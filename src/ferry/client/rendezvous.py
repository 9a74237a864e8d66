"""How a client trades its WebRTC offer for a volunteer's answer.

:class:`Rendezvous` is one method, so direct HTTP(S), domain fronting or any other channel to
the broker are interchangeable (and tests can pass a fake). New channels (an AMP cache, a
message through e-mail or a chat service, ...) are new classes with that one method; nothing
else in the client changes. :class:`HttpRendezvous` talks HTTP(S) with the messages of
``docs/protocol.md`` §2.1, either directly or through a front (``front=``): the TCP and TLS
connection, and so the SNI a censor sees, go to the front, while the HTTP ``Host`` header,
inside TLS, names the broker, and the front (a CDN or reverse proxy) routes by it.

Before an offer the client asks, over the same channel, which STUN and TURN servers to gather
with (``POST /v1/ice-servers``, §2.10): :meth:`Rendezvous.ice_servers`. The list is kept for
the ``ttl`` the broker gives (its TURN credentials stay valid at least that long) and asked
for again after a connection failed, so that the next attempt draws a new random subset.
Servers on internal addresses (loopback, private, link-local) are dropped and counted: a
broker, which may be the censor's, must not point a client's packets into its own network.

A refusal carries the wait the broker asked for (``Retry-After`` with a 429 or 503) in the
error's ``retry_after``; a 429 is a :class:`~ferry.errors.BrokerRateLimitedError`. Honouring
it (and capping it) is the caller's business: :class:`~ferry.client.session.PathPool`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from ferry.core.broker_messages import (
    MAX_BODY_BYTES,
    ClientOffer,
    IceServersRequest,
    MessageError,
    check_pairing,
    decode_client_answer,
    decode_error_body,
    decode_ice_servers_response,
    nat_type,
)
from ferry.core.ice_servers import IceServer, without_internal
from ferry.core.nat_behaviour import NatClass
from ferry.errors import BrokerError, BrokerRateLimitedError, ConfigError, NoVolunteerError
from ferry.logs import get_logger
from ferry.transport.broker_http import RetryAfterReader, exchange_with_broker

log = get_logger(__name__)


class Rendezvous(Protocol):
    """Gets a volunteer's SDP answer for a client's SDP offer."""

    async def exchange(self, offer_sdp: str, egress_url: str) -> str:
        """Send ``offer_sdp`` for the egress at ``egress_url``; return the volunteer's answer.

        Raises :class:`~ferry.errors.NoVolunteerError` when no volunteer answered within the
        broker's wait, and :class:`~ferry.errors.BrokerError` when the broker refused the
        offer (its message says why) or could not be reached; its ``retry_after`` is the wait
        the broker asked for, if it did (:class:`~ferry.errors.BrokerRateLimitedError` for
        "too many requests").
        """
        ...

    async def ice_servers(self) -> tuple[IceServer, ...]:
        """The STUN and TURN servers to gather the next offer with (empty: none). Raises
        :class:`~ferry.errors.BrokerError` as :meth:`exchange` does."""
        ...

    def forget_ice_servers(self) -> None:
        """A connection made with the last list failed: ask again before the next offer."""
        ...


@dataclass(frozen=True, slots=True)
class HttpRendezvousConfig:
    """Limits of :class:`HttpRendezvous`."""

    timeout: float = 20.0
    """Longest, in seconds, one exchange may take in all (the broker holds an offer up to
    its ``client_timeout``, 10 s by default, so keep this above it)."""
    max_response_bytes: int = MAX_BODY_BYTES
    """Largest broker response read, in bytes; a larger one is a :class:`BrokerError`."""
    ask_ice_servers: bool = True
    """Ask the broker for STUN and TURN servers before offering (``--no-broker-ice-servers``
    turns it off, and only the user's own ``--ice-server`` ones are used)."""
    allow_internal_ice_servers: bool = False
    """Accept broker-given ICE servers on loopback, private and link-local addresses (tests
    and private networks only: ``--unsafe-allow-internal-ice-servers``)."""
    ice_timeout: float = 5.0
    """Longest, in seconds, asking the broker for ICE servers may take; on failure the offer
    goes out without them (host candidates only)."""

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ConfigError("the rendezvous timeout must be a positive number of seconds")
        if self.max_response_bytes < 1:
            raise ConfigError("max_response_bytes must be at least 1")


@dataclass(frozen=True, slots=True)
class FrontedUrl:
    """Where a fronted request connects, and the ``Host`` header it carries."""

    connect_url: str
    """The URL with the front's host (and port) in place of the broker's: TCP, TLS and SNI
    go there."""
    host_header: str
    """The broker's host (and port, if its URL names one), sent as the HTTP ``Host``."""


def fronted_url(url: str, front: str) -> FrontedUrl:
    """``url`` reached through ``front`` (``HOST``, ``HOST:PORT`` or ``[V6]:PORT``).

    Without a port the front is reached on the broker URL's port (or the scheme's default).
    :class:`ConfigError` naming ``--front`` if ``front`` is not a host.
    """
    text = front.strip()
    if not text or any(character in text for character in "/?#@ "):
        raise ConfigError(f"--front {front!r}: give a host name or HOST:PORT, not a URL")
    try:
        front_parts = urlsplit(f"//{text}")
        front_port = front_parts.port
    except ValueError as exc:
        raise ConfigError(f"--front {front!r}: not a valid HOST:PORT ({exc})") from None
    if not front_parts.hostname:
        raise ConfigError(f"--front {front!r}: the host is empty")
    parts = urlsplit(url)
    port = front_port if front_port is not None else parts.port
    host = front_parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return FrontedUrl(
        connect_url=urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")),
        host_header=parts.netloc,
    )


class HttpRendezvous:
    """:class:`Rendezvous` by HTTP(S) ``POST {broker_url}/v1/client/offer``.

    Uses ``session`` if given (the caller closes it); otherwise creates one on first use and
    closes it in :meth:`close`. With a ``pairing`` code every offer carries it, so only
    volunteers holding the same code answer (docs/protocol.md §2.1). ``nat_class`` is asked
    for the client's current NAT class at each exchange (unknown if not given). With
    ``front`` the request goes through that front (see the module docstring);
    ``ssl_context`` replaces the system's trust (e.g. ``--broker-ca``). Malformed
    ``Retry-After`` headers are counted on ``registry``
    (``ferry_client_broker_retry_after_malformed_total``).
    """

    def __init__(
        self,
        broker_url: str,
        session: aiohttp.ClientSession | None = None,
        *,
        config: HttpRendezvousConfig | None = None,
        pairing: str | None = None,
        nat_class: Callable[[], NatClass] | None = None,
        front: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not broker_url.startswith(("http://", "https://")):
            raise ConfigError(f"the broker URL must start with http:// or https://: {broker_url}")
        self._offer_url = broker_url.rstrip("/") + "/v1/client/offer"
        self._ice_url = broker_url.rstrip("/") + "/v1/ice-servers"
        self._host_header: str | None = None
        if front is not None:
            fronted = fronted_url(self._offer_url, front)
            self._offer_url = fronted.connect_url
            self._host_header = fronted.host_header
            self._ice_url = fronted_url(self._ice_url, front).connect_url
        self._nat_class = nat_class
        self._ssl_context = ssl_context
        self._session = session
        self._owns_session = session is None
        self.config = config if config is not None else HttpRendezvousConfig()
        if pairing is not None:
            try:
                check_pairing(pairing, "pairing")
            except MessageError as exc:
                raise ConfigError(f"the pairing code is not valid: {exc}") from exc
        self._pairing = pairing
        registry = registry if registry is not None else CollectorRegistry()
        self._retry_after = RetryAfterReader("ferry_client", registry)
        self._ice_refused = Counter(
            "ferry_client_ice_servers_refused",
            "ICE servers from the broker the client would not use, by reason "
            "(internal_address, malformed).",
            ("reason",),
            registry=registry,
        )
        self._ice_servers: tuple[IceServer, ...] = ()
        self._ice_servers_until = 0.0
        self._ice_lock = asyncio.Lock()
        self._ice_failures_logged: set[str] = set()

    async def ice_servers(self) -> tuple[IceServer, ...]:
        """See :meth:`Rendezvous.ice_servers`. A broker that cannot say (an older one that
        answers 404, a malformed answer, a time-out) costs only the STUN and TURN servers:
        the offer still goes out, with host candidates, and the failure is logged once."""
        if not self.config.ask_ice_servers:
            return ()
        async with self._ice_lock:  # paths opening together share one request
            if time.monotonic() < self._ice_servers_until:
                return self._ice_servers
            return await self._fetch_ice_servers()

    async def _fetch_ice_servers(self) -> tuple[IceServer, ...]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        response = await exchange_with_broker(
            self._session,
            "POST",
            self._ice_url,
            IceServersRequest(),
            timeout=self.config.ice_timeout,
            max_response_bytes=self.config.max_response_bytes,
            host_header=self._host_header,
            ssl_context=self._ssl_context,
        )
        if response.status == 429:
            raise BrokerRateLimitedError(
                "the broker says too many requests (HTTP 429) for ICE servers",
                retry_after=self._retry_after.seconds(response),
            )
        if response.status != 200:
            self._ice_unavailable(f"the broker answered HTTP {response.status}")
            return ()
        try:
            decoded = decode_ice_servers_response(response.body)
        except MessageError as exc:
            self._ice_refused.labels("malformed").inc()
            self._ice_unavailable(f"its answer is malformed: {exc}")
            return ()
        kept, refused = without_internal(
            decoded.ice_servers, allow_internal=self.config.allow_internal_ice_servers
        )
        for server in refused:
            self._ice_refused.labels("internal_address").inc()
            log.warning(
                "the broker named the %s server %s on an internal address; it is not used "
                "(a broker may not send a client's packets into its own network)",
                "TURN" if server.is_turn else "STUN",
                server.url,
            )
        self._ice_servers = kept
        self._ice_servers_until = time.monotonic() + decoded.ttl
        return self._ice_servers

    def _ice_unavailable(self, why: str) -> None:
        if why not in self._ice_failures_logged and len(self._ice_failures_logged) < 16:
            self._ice_failures_logged.add(why)
            log.warning("no STUN or TURN servers from the broker (%s); offering without", why)

    def forget_ice_servers(self) -> None:
        """See :meth:`Rendezvous.forget_ice_servers`."""
        self._ice_servers_until = 0.0

    async def exchange(self, offer_sdp: str, egress_url: str) -> str:
        """See :meth:`Rendezvous.exchange`."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        response = await exchange_with_broker(
            self._session,
            "POST",
            self._offer_url,
            ClientOffer(
                offer=offer_sdp,
                egress=egress_url,
                pairing=self._pairing,
                nat=nat_type(self._nat_class()) if self._nat_class is not None else "unknown",
            ),
            timeout=self.config.timeout,
            max_response_bytes=self.config.max_response_bytes,
            host_header=self._host_header,
            ssl_context=self._ssl_context,
        )
        status, payload = response.status, response.body
        if status == 200:
            try:
                return decode_client_answer(payload).answer
            except MessageError as exc:
                raise BrokerError(f"the broker sent a malformed answer: {exc}") from exc
        try:
            reason = decode_error_body(payload).error
        except MessageError:
            reason = f"HTTP status {status}"
        retry_after = self._retry_after.seconds(response)
        if status == 429:
            raise BrokerRateLimitedError(
                f"the broker says too many requests (HTTP 429): {reason}", retry_after=retry_after
            )
        if status == 503:
            raise NoVolunteerError(f"no volunteer is available: {reason}", retry_after=retry_after)
        raise BrokerError(f"the broker refused the offer (HTTP {status}): {reason}")

    async def close(self) -> None:
        """Close the HTTP session if this object created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None
