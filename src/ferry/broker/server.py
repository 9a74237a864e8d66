"""The broker's HTTP service: thin aiohttp handlers over the sans-IO matchmaker.

Routes (``docs/protocol.md`` §2)::

    POST /v1/client/offer      a client's offer; held until a volunteer answers (or 503)
    POST /v1/volunteer/poll    a volunteer's long poll; held until a client comes (or null)
    POST /v1/volunteer/answer  a volunteer's answer to a match (404 if the match is gone)
    GET  /v1/egresses          the egress URLs volunteers may be sent to
    GET  /v1/stats             the network's live state, counts rounded up to multiples of 8
    GET  /healthz              liveness
    GET  /metrics              Prometheus text from the broker's registry
    GET  /widget.js            the browser volunteer widget (src/ferry/web/widget.js)
    GET  /                     a page showing the widget and the live state (web/index.html)

The volunteer endpoints, ``/v1/egresses`` and ``/v1/stats`` allow cross-origin requests from
any origin, without credentials (``docs/protocol.md`` §2.7), so the widget works embedded in
any website; ``OPTIONS`` on them answers the CORS preflight.

Every refusal is a JSON :class:`~ferry.core.broker_messages.ErrorBody` and is counted in
``ferry_broker_rejected_total{endpoint,reason}``. Waits are bounded by the matchmaker's
deadlines, which one timer owned by the :class:`Broker` enforces. The broker never logs a
peer's address (aiohttp's access log is off).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from ferry.core.broker_messages import (
    MAX_BODY_BYTES,
    AnswerAccepted,
    BrokerMessage,
    ClientAnswer,
    EgressList,
    ErrorBody,
    MatchOffer,
    MessageError,
    NetworkStatsResponse,
    PollResponse,
    check_egress_url,
    decode_client_offer,
    decode_volunteer_answer,
    decode_volunteer_poll,
    encode,
)
from ferry.core.matchmaking import (
    ClientAnswered,
    ClientTicket,
    ClientTimedOut,
    Matchmaker,
    MatchmakerConfig,
    PollEnded,
    PollMatched,
    PollTicket,
)
from ferry.core.network_stats import NetworkActivity
from ferry.errors import BrokerError, ConfigError, LocalError
from ferry.logs import get_logger

logger = get_logger(__name__)

_JSON = "application/json"

_ENDPOINT_BY_PATH = {
    "/v1/client/offer": "client_offer",
    "/v1/volunteer/poll": "volunteer_poll",
    "/v1/volunteer/answer": "volunteer_answer",
    "/v1/egresses": "egresses",
    "/v1/stats": "stats",
    "/healthz": "healthz",
    "/metrics": "metrics",
}
"""Metrics label of each route; any other path is labelled ``unknown`` (bounded cardinality)."""

_CROSS_ORIGIN_PATHS = ("/v1/volunteer/poll", "/v1/volunteer/answer", "/v1/egresses", "/v1/stats")
"""Paths any website's widget may call (CORS, no credentials)."""

_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "600",
}
"""Sent with every response on :data:`_CROSS_ORIGIN_PATHS` and to their preflights."""


def _web_file(name: str) -> bytes:
    """A file of ``ferry/web/`` (the widget and the broker's page), read once at start."""
    return resources.files("ferry").joinpath("web", name).read_bytes()


def _page_security_policy(page: bytes) -> str:
    """The Content-Security-Policy of the broker's page: its own inline script (by hash) and
    files from the broker itself; WebSockets to any egress the broker names."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode("ascii") + "'"
        for script in re.findall(rb"<script>(.*?)</script>", page, flags=re.DOTALL)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'none'"
    )


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything a broker needs to know, with the defaults of ``docs/protocol.md`` §2."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8080
    """TCP port to listen on; 0 picks a free one (see :meth:`Broker.start`'s result)."""
    allowed_egresses: tuple[str, ...] = ()
    """The egress URLs (``ws://``/``wss://``) clients may ask for and volunteers are sent to."""
    client_timeout: float = 10.0
    """Longest, in seconds, a client's offer is held waiting for a volunteer's answer."""
    poll_timeout: float = 10.0
    """Longest, in seconds, a volunteer's poll is held waiting for a client."""
    answer_timeout: float = 10.0
    """Longest, in seconds, a matched volunteer may take to post its answer."""
    max_body_bytes: int = MAX_BODY_BYTES
    """Largest request body accepted, in bytes; larger gets 413. At most 64 KiB."""
    max_waiting_clients: int = 1000
    """Most clients held at once; more get 503."""
    max_waiting_volunteers: int = 10000
    """Most volunteer polls held at once; more get 503."""
    shutdown_timeout: float = 2.0
    """Longest, in seconds, :meth:`Broker.close` waits for in-flight requests to finish."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"broker port {self.port} is outside 0..65535")
        if not 1 <= self.max_body_bytes <= MAX_BODY_BYTES:
            raise ConfigError(f"max_body_bytes must be within 1..{MAX_BODY_BYTES}")
        if not self.shutdown_timeout >= 0:
            raise ConfigError("shutdown_timeout must not be negative")
        for url in self.allowed_egresses:
            try:
                check_egress_url(url, "egress")
            except MessageError as exc:
                raise ConfigError(f"allowed egress {url!r}: {exc}") from exc
        self.matchmaker_config()  # validates the timeouts and bounds

    def matchmaker_config(self) -> MatchmakerConfig:
        """The matchmaker's share of this configuration."""
        return MatchmakerConfig(
            client_timeout=self.client_timeout,
            poll_timeout=self.poll_timeout,
            answer_timeout=self.answer_timeout,
            max_waiting_clients=self.max_waiting_clients,
            max_waiting_volunteers=self.max_waiting_volunteers,
        )


def _json_response(message: BrokerMessage, status: int = 200) -> web.Response:
    return web.Response(status=status, body=encode(message), content_type=_JSON)


class Broker:
    """The broker service. ``start()`` it, then ``close()`` it; metrics go to ``registry``."""

    def __init__(self, config: BrokerConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self._matchmaker = Matchmaker(config.matchmaker_config())
        self._activity = NetworkActivity()
        self._widget_js = _web_file("widget.js")
        self._index_html = _web_file("index.html")
        self._index_policy = _page_security_policy(self._index_html)
        self._client_waiters: dict[ClientTicket, asyncio.Future[str | None]] = {}
        self._poll_waiters: dict[PollTicket, asyncio.Future[MatchOffer | None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._base_url: str | None = None

        self._rejected = Counter(
            "ferry_broker_rejected",
            "Requests the broker refused, by endpoint and reason.",
            ("endpoint", "reason"),
            registry=self.registry,
        )
        self._matches = Counter(
            "ferry_broker_matches",
            "Client offers handed to a volunteer.",
            registry=self.registry,
        )
        self._client_outcomes = Counter(
            "ferry_broker_clients",
            "Client offers that ended, by outcome (answered, no_volunteer, gave_up).",
            ("outcome",),
            registry=self.registry,
        )
        waiting_clients = Gauge(
            "ferry_broker_waiting_clients",
            "Clients held waiting for a volunteer or an answer.",
            registry=self.registry,
        )
        waiting_clients.set_function(lambda: self._matchmaker.waiting_clients)
        waiting_volunteers = Gauge(
            "ferry_broker_waiting_volunteers",
            "Volunteer polls held waiting for a client.",
            registry=self.registry,
        )
        waiting_volunteers.set_function(lambda: self._matchmaker.waiting_volunteers)

        self.app = web.Application(
            client_max_size=config.max_body_bytes,
            middlewares=[self._cors_middleware, self._error_middleware],
        )
        self.app.router.add_post("/v1/client/offer", self._handle_client_offer)
        self.app.router.add_post("/v1/volunteer/poll", self._handle_volunteer_poll)
        self.app.router.add_post("/v1/volunteer/answer", self._handle_volunteer_answer)
        self.app.router.add_get("/v1/egresses", self._handle_egresses)
        self.app.router.add_get("/v1/stats", self._handle_stats)
        self.app.router.add_get("/widget.js", self._handle_widget)
        self.app.router.add_get("/", self._handle_index)
        for path in _CROSS_ORIGIN_PATHS:
            self.app.router.add_route("OPTIONS", path, self._handle_preflight)
        self.app.router.add_get("/healthz", self._handle_health)
        self.app.router.add_get("/metrics", self._handle_metrics)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen; return the base URL (``http://HOST:PORT``, with the real port if 0)."""
        if self._runner is not None:
            raise LocalError("the broker is already started")
        self._loop = asyncio.get_running_loop()
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=self.config.shutdown_timeout,
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await self.close()
            raise ConfigError(
                f"the broker cannot listen on port {self.config.port} ({exc.strerror}); "
                "choose another port"
            ) from exc
        port = int(runner.addresses[0][1])
        host = self.config.host
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        self._base_url = f"http://{host}:{port}"
        logger.info("broker listening on port %d", port)
        return self._base_url

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the started broker (what :meth:`start` returned)."""
        if self._base_url is None:
            raise LocalError("the broker is not started")
        return self._base_url

    async def close(self) -> None:
        """Answer every held request (clients: 503, polls: no match) and stop listening."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for client_future in self._client_waiters.values():
            if not client_future.done():
                client_future.set_result(None)
        for poll_future in self._poll_waiters.values():
            if not poll_future.done():
                poll_future.set_result(None)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- matchmaker plumbing -----------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _after_matchmaking(self) -> None:
        """Deliver the matchmaker's events to the waiting handlers and re-arm the timer."""
        while (event := self._matchmaker.next_event()) is not None:
            match event:
                case PollMatched(poll=poll, match=match):
                    poll_future = self._poll_waiters.get(poll)
                    if poll_future is None or poll_future.done():
                        self._matchmaker.abandon_match(match.id, self._now())
                    else:
                        self._matches.inc()
                        poll_future.set_result(match)
                case PollEnded(poll=poll):
                    poll_future = self._poll_waiters.get(poll)
                    if poll_future is not None and not poll_future.done():
                        poll_future.set_result(None)
                case ClientAnswered(client=client, answer=answer):
                    client_future = self._client_waiters.get(client)
                    if client_future is not None and not client_future.done():
                        self._activity.client_helped(self._now())
                        client_future.set_result(answer)
                case ClientTimedOut(client=client):
                    client_future = self._client_waiters.get(client)
                    if client_future is not None and not client_future.done():
                        client_future.set_result(None)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = None if self._closing else self._matchmaker.next_deadline()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        assert self._timer_deadline is not None
        # call_at may fire up to one clock tick early; the deadline is what was due.
        now = max(self._now(), self._timer_deadline)
        self._timer = None
        self._timer_deadline = None
        self._matchmaker.expire(now)
        self._after_matchmaking()

    # --- request helpers ---------------------------------------------------------------------

    def _refuse(
        self, endpoint: str, status: int, reason: str, message: str, field: str | None
    ) -> web.Response:
        self._rejected.labels(endpoint=endpoint, reason=reason).inc()
        return _json_response(ErrorBody(error=message, field=field), status)

    def _refuse_message(self, endpoint: str, error: MessageError) -> web.Response:
        status = 413 if error.reason == "too_large" else 400
        return self._refuse(endpoint, status, error.reason, str(error), error.field)

    async def _read_body(self, request: web.Request, endpoint: str) -> bytes | web.Response:
        """The request's body, or the refusal to send when it is not an acceptable one."""
        if request.content_type != _JSON:
            return self._refuse(
                endpoint,
                415,
                "wrong_content_type",
                f"the body must be JSON sent with Content-Type: {_JSON}",
                None,
            )
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._refuse(
                endpoint, 413, "too_large", f"the body is larger than {limit} bytes", None
            )
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(
                endpoint, 413, "too_large", f"the body is larger than {limit} bytes", None
            )

    # --- handlers ----------------------------------------------------------------------------

    async def _handle_client_offer(self, request: web.Request) -> web.Response:
        endpoint = "client_offer"
        body = await self._read_body(request, endpoint)
        if isinstance(body, web.Response):
            return body
        try:
            offer = decode_client_offer(body)
        except MessageError as exc:
            return self._refuse_message(endpoint, exc)
        if offer.egress not in self.config.allowed_egresses:
            return self._refuse(
                endpoint,
                400,
                "egress_not_allowed",
                "egress is not one of this broker's egresses (see GET /v1/egresses)",
                "egress",
            )
        if self._closing:
            return self._refuse(endpoint, 503, "closing", "the broker is shutting down", None)
        try:
            ticket = self._matchmaker.client_offer(
                offer.offer, offer.egress, self._now(), pairing=offer.pairing
            )
        except BrokerError as exc:
            self._after_matchmaking()
            return self._refuse(endpoint, 503, "busy", str(exc), None)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._client_waiters[ticket] = future
        try:
            self._after_matchmaking()
            answer = await future
        except asyncio.CancelledError:
            self._client_outcomes.labels(outcome="gave_up").inc()
            self._matchmaker.cancel_client(ticket)
            self._after_matchmaking()
            raise
        finally:
            del self._client_waiters[ticket]
        if answer is None:
            self._client_outcomes.labels(outcome="no_volunteer").inc()
            return _json_response(
                ErrorBody(
                    error="no volunteer answered in time; try again in a few seconds",
                    field=None,
                ),
                503,
            )
        self._client_outcomes.labels(outcome="answered").inc()
        return _json_response(ClientAnswer(answer=answer))

    async def _handle_volunteer_poll(self, request: web.Request) -> web.Response:
        endpoint = "volunteer_poll"
        body = await self._read_body(request, endpoint)
        if isinstance(body, web.Response):
            return body
        try:
            poll = decode_volunteer_poll(body)
        except MessageError as exc:
            return self._refuse_message(endpoint, exc)
        if self._closing:
            return _json_response(PollResponse(match=None))
        self._activity.volunteer_polled(poll.volunteer_id, self._now())
        try:
            ticket = self._matchmaker.volunteer_poll(
                poll.volunteer_id, poll.capacity, self._now(), pairing=poll.pairing
            )
        except BrokerError as exc:
            self._after_matchmaking()
            return self._refuse(endpoint, 503, "busy", str(exc), None)
        future: asyncio.Future[MatchOffer | None] = asyncio.get_running_loop().create_future()
        self._poll_waiters[ticket] = future
        try:
            self._after_matchmaking()
            match = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result() is not None:
                match = future.result()
                assert match is not None
                self._matchmaker.abandon_match(match.id, self._now())
            else:
                self._matchmaker.cancel_poll(ticket)
            self._after_matchmaking()
            raise
        finally:
            del self._poll_waiters[ticket]
        return _json_response(PollResponse(match=match))

    async def _handle_volunteer_answer(self, request: web.Request) -> web.Response:
        endpoint = "volunteer_answer"
        body = await self._read_body(request, endpoint)
        if isinstance(body, web.Response):
            return body
        try:
            answer = decode_volunteer_answer(body)
        except MessageError as exc:
            return self._refuse_message(endpoint, exc)
        delivered = self._matchmaker.volunteer_answer(answer.match_id, answer.answer, self._now())
        self._after_matchmaking()
        if not delivered:
            return self._refuse(
                endpoint,
                404,
                "unknown_match",
                "match_id is unknown or expired: the client is no longer waiting",
                "match_id",
            )
        return _json_response(AnswerAccepted())

    async def _handle_egresses(self, request: web.Request) -> web.Response:
        return _json_response(EgressList(egresses=self.config.allowed_egresses))

    async def _handle_stats(self, request: web.Request) -> web.Response:
        stats = self._activity.snapshot(self._now())
        return _json_response(
            NetworkStatsResponse(
                volunteers_online=stats.volunteers_online,
                clients_helped_last_hour=stats.clients_helped_last_hour,
            )
        )

    async def _handle_widget(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._widget_js,
            content_type="text/javascript",
            charset="utf-8",
            headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    async def _handle_index(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._index_html,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": self._index_policy,
            },
        )

    async def _handle_preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @web.middleware
    async def _cors_middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Add the CORS headers to every response on the widget's endpoints (errors too)."""
        response = await handler(request)
        if request.path in _CROSS_ORIGIN_PATHS:
            response.headers.update(_CORS_HEADERS)
        return response

    @web.middleware
    async def _error_middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Turn aiohttp's own refusals (404, 405, ...) and surprises into JSON errors."""
        endpoint = _ENDPOINT_BY_PATH.get(request.path, "unknown")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reason = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
                exc.status, "http_error"
            )
            message = {
                404: "there is no such endpoint",
                405: f"{request.method} is not allowed here",
                413: f"the body is larger than {self.config.max_body_bytes} bytes",
            }.get(exc.status, exc.reason)
            response = self._refuse(endpoint, exc.status, reason, message, None)
            if exc.status == 405 and "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception:
            logger.exception("broker handler for %s failed", endpoint)
            return self._refuse(endpoint, 500, "internal", "the broker failed internally", None)
