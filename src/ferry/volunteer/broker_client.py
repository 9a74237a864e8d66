"""The volunteer's side of the broker (``docs/protocol.md`` §2.2–2.4).

A volunteer long-polls ``POST /v1/volunteer/poll`` for a client, answers the client's offer
with ``POST /v1/volunteer/answer``, and learns where it may relay from ``GET /v1/egresses``.
Every failure is translated into :class:`~ferry.errors.BrokerError`; a refusal carries the
wait the broker asked for (``Retry-After`` with a 429 or 503) in its ``retry_after``, and a
429 is a :class:`~ferry.errors.BrokerRateLimitedError`. The poll loop
(:class:`~ferry.volunteer.relay.Volunteer`) honours it, capped.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry

from ferry.core.broker_messages import (
    MAX_BODY_BYTES,
    BrokerMessage,
    IceServersRequest,
    MatchOffer,
    MessageError,
    PollResponse,
    VolunteerAnswer,
    VolunteerKind,
    VolunteerPoll,
    decode_answer_accepted,
    decode_egress_list,
    decode_error_body,
    decode_ice_servers_response,
    decode_poll_response,
    nat_type,
)
from ferry.core.ice_servers import IceServer
from ferry.core.nat_behaviour import NatClass
from ferry.errors import BrokerError, BrokerRateLimitedError, ConfigError
from ferry.transport.broker_http import BrokerResponse, RetryAfterReader, exchange_with_broker


def new_volunteer_id() -> str:
    """A fresh random volunteer identifier (32 characters of ``[A-Za-z0-9_-]``)."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class BrokerClientConfig:
    """Limits of :class:`BrokerClient`."""

    timeout: float = 20.0
    """Longest, in seconds, one request may take in all (the broker holds a poll up to its
    ``poll_timeout``, 10 s by default, so keep this above it)."""
    max_response_bytes: int = MAX_BODY_BYTES
    """Largest broker response read, in bytes; a larger one is a :class:`BrokerError`."""

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ConfigError("the broker client timeout must be a positive number of seconds")
        if self.max_response_bytes < 1:
            raise ConfigError("max_response_bytes must be at least 1")


class BrokerClient:
    """Talks to the broker at ``broker_url`` through ``session`` (which the caller owns).

    Malformed ``Retry-After`` headers are counted on ``registry``
    (``ferry_volunteer_broker_retry_after_malformed_total``).
    """

    def __init__(
        self,
        broker_url: str,
        session: aiohttp.ClientSession,
        *,
        config: BrokerClientConfig | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not broker_url.startswith(("http://", "https://")):
            raise ConfigError(f"the broker URL must start with http:// or https://: {broker_url}")
        self._base_url = broker_url.rstrip("/")
        self._session = session
        self.config = config if config is not None else BrokerClientConfig()
        self._retry_after = RetryAfterReader(
            "ferry_volunteer", registry if registry is not None else CollectorRegistry()
        )
        self._broker_knows_engine_kind = True

    async def poll(
        self,
        volunteer_id: str,
        capacity: int,
        *,
        pairing: str | None = None,
        nat: NatClass = NatClass.UNKNOWN,
    ) -> MatchOffer | None:
        """Wait (up to the broker's poll timeout) for a client; ``None`` if none came.

        With a ``pairing`` code only clients offering with the same code are matched. ``nat``
        is the volunteer's NAT class, for the broker's matching.
        """
        response = await self.poll_response(volunteer_id, capacity, pairing=pairing, nat=nat)
        return response.match

    async def poll_response(
        self,
        volunteer_id: str,
        capacity: int,
        *,
        pairing: str | None = None,
        nat: NatClass = NatClass.UNKNOWN,
        kind: VolunteerKind = "python",
    ) -> PollResponse:
        """:meth:`poll`, with the ICE servers the broker gave for the match.

        ``kind`` is the stack the volunteer's WebRTC runs on now. A broker that predates
        ``python-browser-engine`` refuses it (400, field ``kind``): the poll is sent again as
        ``python``, and so is every later one."""
        if kind == "python-browser-engine" and not self._broker_knows_engine_kind:
            kind = "python"
        poll = VolunteerPoll(volunteer_id, capacity, pairing, nat=nat_type(nat), kind=kind)
        response = await self._request("POST", "/v1/volunteer/poll", poll)
        if kind == "python-browser-engine" and self._refused_field(response) == "kind":
            self._broker_knows_engine_kind = False
            poll = VolunteerPoll(volunteer_id, capacity, pairing, nat=nat_type(nat), kind="python")
            response = await self._request("POST", "/v1/volunteer/poll", poll)
        if response.status != 200:
            raise self._refusal("poll", response)
        try:
            return decode_poll_response(response.body)
        except MessageError as exc:
            raise BrokerError(f"the broker sent a malformed poll response: {exc}") from exc

    async def ice_servers(self) -> tuple[IceServer, ...]:
        """The broker's STUN and TURN servers for this volunteer (``POST /v1/ice-servers``)."""
        response = await self._request("POST", "/v1/ice-servers", IceServersRequest())
        if response.status != 200:
            raise self._refusal("ICE server request", response)
        try:
            return decode_ice_servers_response(response.body).ice_servers
        except MessageError as exc:
            raise BrokerError(f"the broker sent a malformed ICE server list: {exc}") from exc

    async def answer(self, match_id: str, answer_sdp: str) -> bool:
        """Send the answer to a match; ``False`` if the client is no longer waiting (404)."""
        response = await self._request(
            "POST", "/v1/volunteer/answer", VolunteerAnswer(match_id, answer_sdp)
        )
        if response.status == 404:
            return False
        if response.status != 200:
            raise self._refusal("answer", response)
        try:
            decode_answer_accepted(response.body)
        except MessageError as exc:
            raise BrokerError(f"the broker sent a malformed answer response: {exc}") from exc
        return True

    async def egresses(self) -> tuple[str, ...]:
        """The egress URLs this broker sends volunteers to."""
        response = await self._request("GET", "/v1/egresses", None)
        if response.status != 200:
            raise self._refusal("egress list request", response)
        try:
            return decode_egress_list(response.body).egresses
        except MessageError as exc:
            raise BrokerError(f"the broker sent a malformed egress list: {exc}") from exc

    async def _request(
        self, method: str, path: str, message: BrokerMessage | None
    ) -> BrokerResponse:
        return await exchange_with_broker(
            self._session,
            method,
            self._base_url + path,
            message,
            timeout=self.config.timeout,
            max_response_bytes=self.config.max_response_bytes,
        )

    @staticmethod
    def _refused_field(response: BrokerResponse) -> str | None:
        """The field a 400 response names, if any."""
        if response.status != 400:
            return None
        try:
            return decode_error_body(response.body).field
        except MessageError:
            return None

    def _refusal(self, what: str, response: BrokerResponse) -> BrokerError:
        status = response.status
        try:
            reason = decode_error_body(response.body).error
        except MessageError:
            reason = f"HTTP status {status}"
        retry_after = self._retry_after.seconds(response)
        if status == 429:
            return BrokerRateLimitedError(
                f"the broker says too many requests for the {what} (HTTP 429): {reason}",
                retry_after=retry_after,
            )
        return BrokerError(
            f"the broker refused the {what} (HTTP {status}): {reason}", retry_after=retry_after
        )
