"""One HTTP exchange with the broker, shared by the client's rendezvous and the volunteer.

Sends an optional JSON message, reads at most ``max_response_bytes`` of the answer, and turns
every transport failure into a :class:`~ferry.errors.BrokerError` with a plain sentence
(never the broker's address). Interpreting the status and body is the caller's business.
A ``host_header`` different from the URL's host is how a request is domain-fronted.
:class:`RetryAfterReader` reads how long a refusing broker asked us to wait
(``docs/protocol.md`` §2.8).
"""

from __future__ import annotations

import ipaddress
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from ferry.core.broker_messages import BrokerMessage, encode
from ferry.core.retry_after import RetryAfterError, parse_retry_after
from ferry.errors import BrokerError
from ferry.logs import get_logger

log = get_logger(__name__)

RETRY_AFTER_STATUSES = frozenset({429, 503})
"""Refusals whose ``Retry-After`` header is honoured."""


@dataclass(frozen=True, slots=True)
class BrokerResponse:
    """What the broker answered to one request."""

    status: int
    """The HTTP status."""
    body: bytes
    """The body (at most the request's ``max_response_bytes``)."""
    retry_after: str | None = None
    """The ``Retry-After`` header as sent, or ``None`` without one."""


class RetryAfterReader:
    """Reads the wait a broker asks for with a 429 or 503; counts and logs malformed ones.

    A malformed header counts in ``{role}_broker_retry_after_malformed_total`` on
    ``registry`` and is logged once per reader (never with an address): the caller then keeps
    its own backoff. ``clock`` gives Unix time, for headers that are dates.
    """

    def __init__(
        self,
        role: str,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._logged = False
        self.malformed = Counter(
            f"{role}_broker_retry_after_malformed",
            "Broker refusals (429/503) whose Retry-After header was neither seconds nor a date",
            registry=registry,
        )

    def seconds(self, response: BrokerResponse) -> float | None:
        """Seconds the broker asked to wait, or ``None`` (not a 429/503, no or bad header)."""
        if response.status not in RETRY_AFTER_STATUSES or response.retry_after is None:
            return None
        try:
            return parse_retry_after(response.retry_after, self._clock())
        except RetryAfterError as exc:
            self.malformed.inc()
            if not self._logged:
                self._logged = True
                log.warning("%s; keeping the usual backoff (said once)", exc)
            return None


async def exchange_with_broker(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    message: BrokerMessage | None,
    *,
    timeout: float,
    max_response_bytes: int,
    host_header: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> BrokerResponse:
    """The status, body and ``Retry-After`` header of one request; :class:`BrokerError` if it
    could not be made.

    ``host_header`` replaces the HTTP ``Host`` (the connection still goes to ``url``'s host);
    ``ssl_context`` replaces the default certificate checks (e.g. a private CA).
    """
    headers: dict[str, str] = {}
    if message is not None:
        headers["Content-Type"] = "application/json"
    if host_header is not None:
        headers["Host"] = host_header
    try:
        async with session.request(
            method,
            url,
            data=None if message is None else encode(message),
            headers=headers or None,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
            ssl=ssl_context if ssl_context is not None else True,
        ) as response:
            body = bytearray()
            async for chunk in response.content.iter_chunked(16384):
                body += chunk
                if len(body) > max_response_bytes:
                    raise BrokerError(
                        f"the broker's response is larger than {max_response_bytes} bytes"
                    )
            return BrokerResponse(response.status, bytes(body), response.headers.get("Retry-After"))
    except TimeoutError as exc:
        raise BrokerError(f"the broker did not answer within {timeout:g} seconds") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise BrokerError(
            "could not reach the broker; check the broker URL and the network"
        ) from exc


def plain_http_warning(broker_url: str) -> str | None:
    """A warning for the log when ``broker_url`` is ``http://`` to a host other than this
    machine's loopback, else ``None``.

    Without TLS, everyone on the path reads and changes what the broker and this peer say:
    the SDP (addresses), the pairing code, the egress a volunteer is sent to. ``http://`` is
    expected only on loopback (tests, ``ferry demo``).
    """
    parts = urlsplit(broker_url)
    if parts.scheme != "http":
        return None
    host = (parts.hostname or "").rstrip(".").lower()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if loopback:
        return None
    return (
        f"the broker URL {broker_url} is plain http://: anyone on the path can read and change "
        "the messages (addresses in the WebRTC offers and answers, pairing codes, the egress "
        "named); use https:// (http:// is meant for loopback tests only)"
    )
