"""``ferry client --check``: test each link of the chain in order and say which one fails.

The steps (:class:`CheckStep`), each bounded by its own timeout in :class:`SelfCheckConfig`
(together at most :data:`MAX_TOTAL_SECONDS`):

1. **broker** — ``GET {broker}/healthz`` directly (with a front configured, a failure here
   is reported as bypassed and the check goes on: the front step decides);
2. **front** — the broker through a fronting domain (a :class:`ReachabilityProbe`; skipped
   when none is configured);
3. **stun** — a STUN server and the NAT type (a :class:`ReachabilityProbe`; skipped when none
   is configured);
4. **volunteer** — a rendezvous: the broker passes our WebRTC offer to a volunteer, who
   answers;
5. **channel** — the WebRTC data channel to that volunteer opens;
6. **identity** — a QUIC handshake with the egress over that channel, and the egress's
   certificate matches the bridge line's fingerprint;
7. **fetch** — one stream through the whole chain: to ``--check-url`` if given (an HTTP
   ``GET``, success when a status line comes back), else to the egress's self-check target
   (:mod:`ferry.core.self_check_target`), which never leaves the egress.

The first failure stops the check; later steps are reported as not run. Results carry
message ids of :mod:`ferry.client.messages`, so the terminal and the page say the same thing
in the user's language. The check uses its own WebRTC connection and QUIC session: a running
client's tunnel is not disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from ferry.client.messages import Catalogue
from ferry.client.rendezvous import Rendezvous
from ferry.client.session import read_stream_reply
from ferry.core.addresses import Target
from ferry.core.bridge_line import BridgeLine
from ferry.core.codes import DEFAULT_MESSAGE, ReplyCode
from ferry.core.self_check_target import SELF_CHECK_ANSWER, SELF_CHECK_TARGET
from ferry.core.stream_header import encode_request
from ferry.errors import (
    BrokerError,
    BrokerRateLimitedError,
    ConfigError,
    FerryError,
    NoVolunteerError,
    RemoteError,
)
from ferry.transport.broker_http import exchange_with_broker
from ferry.transport.ice_probe import IceServerProbe
from ferry.transport.quic import QuicSession, QuicSettings, peer_certificate_fingerprint
from ferry.transport.webrtc import DataChannelDatagramChannel, OfferingPeer, WebRtcConfig

__all__ = [
    "MAX_TOTAL_SECONDS",
    "SELF_CHECK_FETCH",
    "CheckStep",
    "FetchTarget",
    "ReachabilityProbe",
    "SelfCheck",
    "SelfCheckConfig",
    "StepOutcome",
    "StepResult",
    "format_result",
    "format_summary",
    "parse_check_url",
]

MAX_TOTAL_SECONDS = 60.0
"""The whole check never takes longer than this."""

_MAX_ANSWER_BYTES = 4096


class CheckStep(enum.Enum):
    """The steps, in the order they run."""

    BROKER = "broker"
    FRONT = "front"
    STUN = "stun"
    VOLUNTEER = "volunteer"
    CHANNEL = "channel"
    IDENTITY = "identity"
    FETCH = "fetch"


class StepOutcome(enum.Enum):
    """How a step ended."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not configured (no front, no STUN server): neither passed nor failed."""
    BYPASSED = "bypassed"
    """The broker is not reachable directly, but a front is configured: the check goes on
    through the front (step 2 decides)."""
    NOT_RUN = "not_run"
    """An earlier step failed."""


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one step, in words the catalogue can translate."""

    step: CheckStep
    """Which step."""
    outcome: StepOutcome
    """Passed, failed, skipped or not run."""
    explanation: str
    """Message id of the plain-words explanation (``check.<step>.<outcome or kind>``)."""
    advice: str = ""
    """Message id of what to try (failures only; empty otherwise)."""
    detail: str = ""
    """Technical detail in English (an error message, a NAT type, an HTTP status); may be
    empty. Shown after the explanation, never translated."""
    seconds: float = 0.0
    """How long the step took."""


@dataclass(frozen=True, slots=True)
class SelfCheckConfig:
    """Per-step time limits of the self-check, in seconds (at most 60 in all)."""

    broker_timeout: float = 5.0
    """Reaching the broker directly."""
    front_timeout: float = 5.0
    """Reaching the broker through the front."""
    stun_timeout: float = 8.0
    """Asking the STUN server and working out the NAT type (RFC 5780 discovery against one
    server takes up to 6 s when the NAT drops the filtering tests' packets)."""
    volunteer_timeout: float = 12.0
    """The rendezvous (the broker waits up to 10 s for a volunteer by default)."""
    channel_timeout: float = 10.0
    """The WebRTC data channel opening (ICE and DTLS)."""
    identity_timeout: float = 10.0
    """The QUIC handshake with the egress."""
    fetch_timeout: float = 10.0
    """The test fetch: reply and first answer bytes."""

    def __post_init__(self) -> None:
        timeouts = (
            self.broker_timeout,
            self.front_timeout,
            self.stun_timeout,
            self.volunteer_timeout,
            self.channel_timeout,
            self.identity_timeout,
            self.fetch_timeout,
        )
        if any(not value > 0 for value in timeouts):
            raise ConfigError("every self-check timeout must be a positive number of seconds")
        if sum(timeouts) > MAX_TOTAL_SECONDS:
            raise ConfigError(
                f"the self-check timeouts add up to {sum(timeouts):g} s; at most "
                f"{MAX_TOTAL_SECONDS:g} s are allowed"
            )


class ReachabilityProbe(Protocol):
    """One optional step (the front, STUN): returns a short detail or raises FerryError."""

    async def probe(self) -> str:
        """Run the probe; return a detail for the user (e.g. the NAT type).

        Raises :class:`~ferry.errors.FerryError` with a plain sentence when it fails.
        """
        ...


@dataclass(frozen=True, slots=True)
class FetchTarget:
    """What the last step fetches through the chain."""

    target: Target
    """The stream target asked of the egress."""
    http_request: bytes = b""
    """An HTTP request sent on the stream (empty for the self-check target)."""

    @property
    def is_self_check(self) -> bool:
        """Whether this is the egress's own self-check target."""
        return self.target == SELF_CHECK_TARGET


SELF_CHECK_FETCH = FetchTarget(SELF_CHECK_TARGET)
"""The default fetch: answered by the egress itself."""


def parse_check_url(url: str | None) -> FetchTarget:
    """``--check-url``: ``http://HOST[:PORT]/PATH`` → an HTTP GET through the chain.

    ``None`` or empty: the egress's self-check target. Raises
    :class:`~ferry.errors.ConfigError` for anything else.
    """
    if not url:
        return SELF_CHECK_FETCH
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"--check-url {url!r} is not a valid URL") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError("--check-url must be an http:// URL with a host")
    port = port or 80
    host_header = parts.netloc.rpartition("@")[2]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: ferry-check\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii", errors="strict")
    try:
        return FetchTarget(Target(parts.hostname, port), request)
    except ValueError as exc:
        raise ConfigError(f"--check-url {url!r}: {exc}") from None


class _StepFailed(Exception):
    def __init__(self, explanation: str, advice: str, detail: str = "") -> None:
        super().__init__(explanation)
        self.explanation = explanation
        self.advice = advice
        self.detail = detail


@dataclass
class _Chain:
    """What the steps build up and the check closes at the end."""

    peer: OfferingPeer | None = None
    answer: str = ""
    channel: DataChannelDatagramChannel | None = None
    session: QuicSession | None = None
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class SelfCheck:
    """Runs the steps in order; see the module docstring."""

    def __init__(
        self,
        *,
        broker_url: str,
        bridge: BridgeLine,
        rendezvous: Rendezvous,
        http: aiohttp.ClientSession,
        webrtc: WebRtcConfig,
        quic: QuicSettings,
        fetch: FetchTarget = SELF_CHECK_FETCH,
        front_probe: ReachabilityProbe | None = None,
        nat_probe: ReachabilityProbe | None = None,
        config: SelfCheckConfig | None = None,
    ) -> None:
        self._health_url = broker_url.rstrip("/") + "/healthz"
        self._bridge = bridge
        self._rendezvous = rendezvous
        self._http = http
        self._webrtc = webrtc
        self._quic = quic
        self._fetch = fetch
        self._front_probe = front_probe
        self._nat_probe = nat_probe
        self.config = config if config is not None else SelfCheckConfig()

    async def run(
        self, on_result: Callable[[StepResult], None] | None = None
    ) -> tuple[StepResult, ...]:
        """Run every step; ``on_result`` hears each result as soon as it is known."""
        chain = _Chain()
        steps: list[tuple[CheckStep, float, Callable[[_Chain], Awaitable[StepResult]]]] = [
            (CheckStep.BROKER, self.config.broker_timeout, self._broker),
            (CheckStep.FRONT, self.config.front_timeout, self._front),
            (CheckStep.STUN, self.config.stun_timeout, self._stun),
            (CheckStep.VOLUNTEER, self.config.volunteer_timeout, self._volunteer),
            (CheckStep.CHANNEL, self.config.channel_timeout, self._channel),
            (CheckStep.IDENTITY, self.config.identity_timeout, self._identity),
            (CheckStep.FETCH, self.config.fetch_timeout, self._fetch_through),
        ]
        results: list[StepResult] = []
        failed = False
        try:
            for step, timeout, run_step in steps:
                if failed:
                    result = StepResult(step, StepOutcome.NOT_RUN, "check.not_run")
                else:
                    result = await self._timed(step, timeout, run_step, chain)
                    failed = result.outcome is StepOutcome.FAILED
                    if failed and step is CheckStep.BROKER and self._front_probe is not None:
                        # Blocked directly is what a front is for: go on, the front decides.
                        result = replace(
                            result,
                            outcome=StepOutcome.BYPASSED,
                            explanation="check.broker.bypassed",
                            advice="",
                        )
                        failed = False
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            await self._close(chain)
        return tuple(results)

    async def _timed(
        self,
        step: CheckStep,
        timeout: float,
        run_step: Callable[[_Chain], Awaitable[StepResult]],
        chain: _Chain,
    ) -> StepResult:
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                result = await run_step(chain)
        except _StepFailed as failure:
            result = StepResult(
                step, StepOutcome.FAILED, failure.explanation, failure.advice, failure.detail
            )
        except TimeoutError:
            result = StepResult(
                step,
                StepOutcome.FAILED,
                f"check.{step.value}.failed",
                f"check.{step.value}.advice",
                f"no answer within {timeout:g} s",
            )
        except (FerryError, OSError) as exc:
            result = StepResult(
                step,
                StepOutcome.FAILED,
                f"check.{step.value}.failed",
                f"check.{step.value}.advice",
                str(exc),
            )
        return StepResult(
            result.step,
            result.outcome,
            result.explanation,
            result.advice,
            result.detail,
            time.monotonic() - started,
        )

    async def _broker(self, chain: _Chain) -> StepResult:
        status = (
            await exchange_with_broker(
                self._http,
                "GET",
                self._health_url,
                None,
                timeout=self.config.broker_timeout,
                max_response_bytes=_MAX_ANSWER_BYTES,
            )
        ).status
        if status != 200:
            raise _StepFailed("check.broker.failed", "check.broker.advice", f"HTTP status {status}")
        return StepResult(CheckStep.BROKER, StepOutcome.OK, "check.broker.ok")

    async def _front(self, chain: _Chain) -> StepResult:
        if self._front_probe is None:
            return StepResult(CheckStep.FRONT, StepOutcome.SKIPPED, "check.front.skipped")
        detail = await self._front_probe.probe()
        return StepResult(CheckStep.FRONT, StepOutcome.OK, "check.front.ok", detail=detail)

    async def _stun(self, chain: _Chain) -> StepResult:
        if self._nat_probe is None:
            return StepResult(CheckStep.STUN, StepOutcome.SKIPPED, "check.stun.skipped")
        detail = await self._nat_probe.probe()
        return StepResult(CheckStep.STUN, StepOutcome.OK, "check.stun.ok", detail=detail)

    async def _volunteer(self, chain: _Chain) -> StepResult:
        try:
            ice_servers = await self._rendezvous.ice_servers()
        except BrokerError:
            ice_servers = ()  # the offer below reports the broker's refusal
        probe = IceServerProbe(self._webrtc.ice_probe)
        chain.cleanups.append(probe.close)
        peer = OfferingPeer(self._webrtc, ice_servers=ice_servers, probe=probe)
        chain.peer = peer
        chain.cleanups.append(peer.close)
        offer = await peer.create_offer()
        try:
            chain.answer = await self._rendezvous.exchange(offer, self._bridge.url)
        except NoVolunteerError as exc:
            raise _StepFailed(
                "check.volunteer.failed", "check.volunteer.advice", str(exc)
            ) from None
        except BrokerRateLimitedError as exc:
            raise _StepFailed(
                "check.volunteer.rate_limited", "check.volunteer.advice_rate_limited", str(exc)
            ) from None
        except BrokerError as exc:
            raise _StepFailed(
                "check.volunteer.refused", "check.volunteer.advice_refused", str(exc)
            ) from None
        return StepResult(CheckStep.VOLUNTEER, StepOutcome.OK, "check.volunteer.ok")

    async def _channel(self, chain: _Chain) -> StepResult:
        assert chain.peer is not None
        chain.channel = await chain.peer.accept_answer(chain.answer)
        return StepResult(CheckStep.CHANNEL, StepOutcome.OK, "check.channel.ok")

    async def _identity(self, chain: _Chain) -> StepResult:
        channel = chain.channel
        assert channel is not None
        connection = self._quic.new_connection(self._quic.configuration(is_client=True))

        def send(datagram: bytes) -> None:
            channel.send(datagram)

        session = QuicSession(connection, settings=self._quic, send=send)
        chain.session = session

        def on_datagram(datagram: bytes) -> None:
            session.receive_datagram(datagram)

        def on_close() -> None:
            session.close("the volunteer closed the channel")

        channel.start(on_datagram, on_close)
        session.connect()
        try:
            await session.wait_handshake(self.config.identity_timeout)
        except RemoteError as exc:
            raise _StepFailed(
                "check.identity.no_answer", "check.identity.advice_no_answer", str(exc)
            ) from None
        fingerprint = peer_certificate_fingerprint(connection)
        if fingerprint != self._bridge.fingerprint:
            raise _StepFailed(
                "check.identity.mismatch",
                "check.identity.advice_mismatch",
                f"expected sha256={self._bridge.fingerprint.hex()[:16]}..., the egress has "
                f"sha256={fingerprint.hex()[:16] if fingerprint else 'none'}...",
            )
        return StepResult(CheckStep.IDENTITY, StepOutcome.OK, "check.identity.ok")

    async def _fetch_through(self, chain: _Chain) -> StepResult:
        session = chain.session
        assert session is not None
        stream = session.open_stream()
        try:
            await stream.send_all(encode_request(self._fetch.target) + self._fetch.http_request)
            reply, after_reply = await read_stream_reply(stream)
            if reply.code != ReplyCode.SUCCEEDED:
                raise _StepFailed(
                    "check.fetch.refused",
                    "check.fetch.advice",
                    reply.message or DEFAULT_MESSAGE[reply.code],
                )
            answer = bytearray(after_reply)
            while len(answer) < _MAX_ANSWER_BYTES:
                if self._fetch.http_request and b"\r\n" in answer:
                    break
                data = await stream.receive_some()
                if not data:
                    break
                answer += data
        finally:
            stream.abort()
        if self._fetch.is_self_check:
            if bytes(answer) != SELF_CHECK_ANSWER:
                raise _StepFailed(
                    "check.fetch.failed", "check.fetch.advice", "unexpected answer from the egress"
                )
            return StepResult(CheckStep.FETCH, StepOutcome.OK, "check.fetch.ok_egress", detail="")
        status_line = bytes(answer).split(b"\r\n", 1)[0].decode("latin-1")
        if not status_line.startswith("HTTP/"):
            raise _StepFailed("check.fetch.failed", "check.fetch.advice", "the answer was not HTTP")
        return StepResult(CheckStep.FETCH, StepOutcome.OK, "check.fetch.ok", detail=status_line)

    async def _close(self, chain: _Chain) -> None:
        if chain.session is not None:
            chain.session.close("self-check finished")
        if chain.channel is not None:
            with contextlib.suppress(FerryError, OSError):
                await chain.channel.close()
        for cleanup in reversed(chain.cleanups):
            with contextlib.suppress(FerryError, OSError):
                await cleanup()


def format_result(result: StepResult, number: int, words: Catalogue) -> str:
    """One step for the terminal: ``1. NAME: ok — explanation`` plus what to try."""
    name = words.text(f"check.{result.step.value}.name")
    label = words.text(f"check.label.{result.outcome.value}")
    line = words.text(
        "check.line",
        number=number,
        name=name,
        label=label,
        explanation=words.text(result.explanation),
    )
    if result.detail:
        line += f" ({result.detail})"
    if result.advice:
        line += "\n   " + words.text("check.try", advice=words.text(result.advice))
    return line


def format_summary(results: tuple[StepResult, ...], words: Catalogue) -> str:
    """The last line: all passed, or which step failed."""
    for number, result in enumerate(results, start=1):
        if result.outcome is StepOutcome.FAILED:
            return words.text(
                "check.summary.failed",
                number=number,
                step=words.text(f"check.{result.step.value}.name"),
            )
    return words.text("check.summary.ok")
