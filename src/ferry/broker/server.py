"""The broker's HTTP service: thin aiohttp handlers over the sans-IO matchmaker.

Routes (``docs/protocol.md`` §2)::

    POST /v1/client/offer      a client's offer; held until a volunteer answers (or 503)
    POST /v1/volunteer/poll    a volunteer's long poll; held until a client comes (or null)
    POST /v1/volunteer/answer  a volunteer's answer to a match (404 if the match is gone)
    POST /v1/ice-servers       the STUN/TURN servers a peer should gather with (TURN
                               credentials minted per request)
    GET  /v1/egresses          the egress URLs volunteers may be sent to
    GET  /v1/stats             the network's live state, counts rounded up to multiples of 8
    GET  /healthz              liveness
    GET  /metrics              Prometheus text from the broker's registry
    GET  /status               an HTML page of the same figures and the last hour (no script)
    GET  /openapi.json         the OpenAPI 3.1 description of this API (broker/openapi.py)
    GET  /widget.js            the browser volunteer widget (src/ferry/web/widget.js)
    GET  /                     a page showing the widget and the live state (web/index.html)

The volunteer endpoints, ``/v1/egresses`` and ``/v1/stats`` allow cross-origin requests from
any origin, without credentials (``docs/protocol.md`` §2.7), so the widget works embedded in
any website; ``OPTIONS`` on them answers the CORS preflight.

Every refusal is a JSON :class:`~ferry.core.broker_messages.ErrorBody` and is counted in
``ferry_broker_rejected_total{endpoint,reason}``. Waits are bounded by the matchmaker's
deadlines, enforced by the broker's :class:`~ferry.broker.store.MatchStore` (in memory, or in
Redis shared by several instances). Client offers and volunteer polls are rate-limited per
source (the peer address, or a configured trusted header's value behind a front): over the
limit is ``429`` with ``Retry-After``. The broker never logs a peer's address (aiohttp's
access log is off) and never keeps one: rate-limit buckets are keyed by a salted hash.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ferry.broker.openapi import openapi_document
from ferry.broker.status import render_status_page
from ferry.broker.store import (
    MatchStore,
    MemoryMatchStore,
    RateLimitedError,
    RateLimits,
    StoreUnavailableError,
    hash_source,
)
from ferry.core.addresses import is_loopback_host
from ferry.core.broker_messages import (
    MAX_BODY_BYTES,
    NAT_TYPES,
    VOLUNTEER_KINDS,
    AnswerAccepted,
    BrokerMessage,
    ClientAnswer,
    EgressList,
    ErrorBody,
    IceServersResponse,
    MessageError,
    NetworkStatsResponse,
    PollResponse,
    check_egress_url,
    decode_client_offer,
    decode_ice_servers_request,
    decode_volunteer_answer,
    decode_volunteer_poll,
    encode,
)
from ferry.core.ice_servers import IceServer, IceServerPlan
from ferry.core.matchmaking import MatchmakerConfig
from ferry.core.minute_series import MinuteSeries
from ferry.core.network_stats import NetworkActivity, round_up_for_privacy
from ferry.core.rate_limit import RateLimit, TokenBuckets, source_key
from ferry.errors import BrokerError, ConfigError, LocalError
from ferry.logs import get_logger, scrub_library_loggers

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
    "/status": "status",
    "/openapi.json": "openapi",
}
"""Metrics label of each route; any other path is labelled ``unknown`` (bounded cardinality)."""

_CROSS_ORIGIN_PATHS = ("/v1/volunteer/poll", "/v1/volunteer/answer", "/v1/egresses", "/v1/stats")
"""Paths any website's widget may call (CORS, no credentials)."""

_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "600",
    "Access-Control-Expose-Headers": "Retry-After",
}
"""Sent with every response on :data:`_CROSS_ORIGIN_PATHS` and to their preflights
(``Retry-After`` is not a CORS-safelisted response header: without the expose the widget
could not read the wait a 429 asks for)."""


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


DEFAULT_METRICS_ALLOW = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)
"""Where ``GET /metrics`` is answered by default: this machine and private networks."""


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
    max_held_polls: int = 20000
    """Most volunteer polls this instance holds open at once (with Redis, ``max_waiting_*``
    bound all instances together, this bounds one); more get 503."""
    max_held_offers: int = 2000
    """Most client offers this instance holds open at once; more get 503."""
    offer_rate: float = 1.0
    """Client offers per second one source may make, sustained (a client starts with three
    and replaces a lost volunteer now and then)."""
    offer_burst: int = 20
    """Client offers one source may make at once after a quiet spell."""
    poll_rate: float = 5.0
    """Volunteer polls per second one source may make, sustained (a volunteer polls once per
    ``poll_timeout`` when idle; several volunteers may share one address)."""
    poll_burst: int = 50
    """Volunteer polls one source may make at once after a quiet spell."""
    trusted_source_header: str | None = None
    """When the broker sits behind a front (a reverse proxy or CDN), the request header that
    front sets to the client's address (``X-Forwarded-For``: its last entry is used, the one
    the front added). ``None``: the source is the peer address. Only set it when every
    request comes through the front, or clients can choose their source."""
    metrics_allow: tuple[str, ...] = DEFAULT_METRICS_ALLOW
    """Networks whose requests ``GET /metrics`` answers (the operator's Prometheus: this
    machine and private networks by default). Requests that came through the front (they
    carry ``trusted_source_header``) get 404 wherever they come from: the counters are exact,
    and a series of reads would show each client's arrival."""
    quiet_about_loopback_peers: bool = False
    """Do not warn when requests come from loopback without ``trusted_source_header`` (the
    in-process ``ferry demo`` and test networks, where loopback peers are the real peers)."""
    busy_retry_after: float = 5.0
    """Seconds a ``503`` for a full, closing or store-less broker asks the caller to wait
    (``Retry-After``, rounded up to whole seconds); ferry's clients and volunteers wait at
    least that long. The ``503`` for "no volunteer answered in time" carries none: trying
    again soon is right there."""
    ice_servers: tuple[IceServer, ...] = ()
    """STUN and TURN servers handed to peers for ICE (``--ice-server``; ``docs/protocol.md``
    §2.10). TURN servers carry no credentials when :attr:`turn_secret` is set. Empty: peers
    gather host candidates only, which connects on one machine or network but not between
    two home routers."""
    ice_servers_per_peer: int = 2
    """At most this many STUN and this many TURN servers go to one peer, chosen at random
    from :attr:`ice_servers` for every request, so that a censor who blocks one server, or
    learns the list from one request, does not stop everyone."""
    turn_secret: bytes | None = field(default=None, repr=False)
    """The TURN REST shared secret (``--turn-secret-file``; coturn's ``static-auth-secret``):
    TURN credentials are minted from it per request. Never logged, printed or sent."""
    turn_credential_ttl: float = 3600.0
    """Seconds a minted TURN credential stays valid. coturn checks it on every authenticated
    request, so a relayed path lasts about this long at most (the client's session then moves
    to another volunteer)."""
    ice_rate: float = 1.0
    """``POST /v1/ice-servers`` requests per second one source may make, sustained (a client
    asks once per list lifetime, and again after a failed connection). Kept per instance."""
    ice_burst: int = 20
    """``POST /v1/ice-servers`` requests one source may make at once after a quiet spell."""
    redis_url: str | None = None
    """``redis://HOST:PORT/DB``: keep the state in Redis, shared with other instances;
    ``None`` keeps it in this process."""
    redis_prefix: str = "ferry:"
    """Prefix of every Redis key this broker uses (instances sharing state use the same)."""
    listen_backlog: int = 4096
    """Connections the kernel queues before the broker accepts them (capped by the system's
    ``net.core.somaxconn``): thousands of volunteers reconnecting at once must not be
    dropped."""
    shutdown_timeout: float = 2.0
    """Longest, in seconds, :meth:`Broker.close` waits for in-flight requests to finish."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"broker port {self.port} is outside 0..65535")
        if not 1 <= self.max_body_bytes <= MAX_BODY_BYTES:
            raise ConfigError(f"max_body_bytes must be within 1..{MAX_BODY_BYTES}")
        if not self.shutdown_timeout >= 0:
            raise ConfigError("shutdown_timeout must not be negative")
        if not 0 < self.busy_retry_after <= 3600:
            raise ConfigError("busy_retry_after must be > 0 and ≤ 3600 seconds")
        for name in ("max_held_polls", "max_held_offers", "listen_backlog"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.trusted_source_header is not None and not re.fullmatch(
            r"[A-Za-z0-9-]{1,64}", self.trusted_source_header
        ):
            raise ConfigError("trusted_source_header must be a header name such as X-Forwarded-For")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError("the Redis URL must start with redis://, rediss:// or unix://")
        self.rate_limits()  # validates the rates and bursts
        for url in self.allowed_egresses:
            try:
                check_egress_url(url, "egress")
            except MessageError as exc:
                raise ConfigError(f"allowed egress {url!r}: {exc}") from exc
        self.matchmaker_config()  # validates the timeouts and bounds
        self.ice_server_plan()  # validates the ICE servers and the TURN settings
        self.metrics_networks()
        RateLimit(self.ice_rate, self.ice_burst)

    def metrics_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """:attr:`metrics_allow` parsed; :class:`ConfigError` naming a bad entry."""
        networks = []
        for entry in self.metrics_allow:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ConfigError(
                    f"metrics_allow: {entry!r} is not a network such as 10.0.0.0/8"
                ) from None
        return tuple(networks)

    def ice_server_plan(self) -> IceServerPlan:
        """How this broker chooses ICE servers and mints TURN credentials."""
        return IceServerPlan(
            servers=self.ice_servers,
            per_peer=self.ice_servers_per_peer,
            turn_secret=self.turn_secret,
            credential_lifetime=self.turn_credential_ttl,
        )

    def matchmaker_config(self) -> MatchmakerConfig:
        """The matchmaker's share of this configuration."""
        return MatchmakerConfig(
            client_timeout=self.client_timeout,
            poll_timeout=self.poll_timeout,
            answer_timeout=self.answer_timeout,
            max_waiting_clients=self.max_waiting_clients,
            max_waiting_volunteers=self.max_waiting_volunteers,
        )

    def rate_limits(self) -> RateLimits:
        """The per-source rate limits of this configuration."""
        return RateLimits(
            client_offer=RateLimit(self.offer_rate, self.offer_burst),
            volunteer_poll=RateLimit(self.poll_rate, self.poll_burst),
        )

    def new_store(self) -> MatchStore:
        """The store this configuration asks for (memory, or Redis at ``redis_url``)."""
        if self.redis_url is None:
            return MemoryMatchStore(self.matchmaker_config(), self.rate_limits())
        from ferry.broker.redis_store import RedisMatchStore

        return RedisMatchStore(
            self.redis_url, self.matchmaker_config(), self.rate_limits(), prefix=self.redis_prefix
        )


def _json_response(message: BrokerMessage, status: int = 200) -> web.Response:
    return web.Response(status=status, body=encode(message), content_type=_JSON)


class _PresenceCollector(Collector):
    """The gauges of people present now, rounded up to multiples of 8 (``docs/protocol.md``
    §2.5): exact values would let anyone who reads them watch one volunteer or one client
    come and go."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def collect(self) -> list[Metric]:
        store = self._broker.store
        available = GaugeMetricFamily(
            "ferry_broker_volunteers_available",
            "Volunteer polls held waiting for a client, by NAT type and kind "
            "(rounded up to a multiple of 8).",
            labels=("nat", "kind"),
        )
        counts = {(a.nat, a.kind): a.count for a in store.available_volunteers()}
        for nat in NAT_TYPES:
            for kind in VOLUNTEER_KINDS:
                count = round_up_for_privacy(counts.get((nat, kind), 0))
                available.add_metric((nat, kind), count)
        waiting_volunteers = GaugeMetricFamily(
            "ferry_broker_waiting_volunteers",
            "Volunteer polls held waiting for a client (rounded up to a multiple of 8).",
            value=round_up_for_privacy(sum(counts.values())),
        )
        waiting_clients = GaugeMetricFamily(
            "ferry_broker_waiting_clients",
            "Clients held waiting for a volunteer or an answer (rounded up to a multiple of 8).",
            value=round_up_for_privacy(store.waiting_clients()),
        )
        return [available, waiting_volunteers, waiting_clients]


class Broker:
    """The broker service. ``start()`` it, then ``close()`` it; metrics go to ``registry``."""

    def __init__(
        self,
        config: BrokerConfig,
        registry: CollectorRegistry | None = None,
        *,
        store: MatchStore | None = None,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.store = store if store is not None else config.new_store()
        self._activity = NetworkActivity()
        self._last_hour = MinuteSeries()
        self._widget_js = _web_file("widget.js")
        self._index_html = _web_file("index.html")
        self._index_policy = _page_security_policy(self._index_html)
        self._openapi = json.dumps(openapi_document(), indent=1).encode("utf-8")
        self._held_polls = 0
        self._held_offers = 0
        self._warned_loopback_peer = config.quiet_about_loopback_peers
        self._ice_plan = config.ice_server_plan()
        self._metrics_networks = config.metrics_networks()
        self._ice_chooser = random.SystemRandom()
        self._ice_buckets = TokenBuckets(RateLimit(config.ice_rate, config.ice_burst))
        self._ice_salt = random.SystemRandom().randbytes(16)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._base_url: str | None = None
        self._register_metrics()
        self.registry.register(_PresenceCollector(self))
        self.app = web.Application(
            client_max_size=config.max_body_bytes,
            middlewares=[self._cors_middleware, self._error_middleware],
        )
        self._add_routes()

    def _register_metrics(self) -> None:
        """The broker's counters and histogram, in ``registry``."""
        self._rejected = Counter(
            "ferry_broker_rejected",
            "Requests the broker refused, by endpoint and reason.",
            ("endpoint", "reason"),
            registry=self.registry,
        )
        self._offers = Counter(
            "ferry_broker_offers",
            "Client offers accepted for matching.",
            registry=self.registry,
        )
        self._polls = Counter(
            "ferry_broker_polls",
            "Volunteer polls accepted for matching.",
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
        self._timeouts = Counter(
            "ferry_broker_timeouts",
            "Waits that ran out, by what waited (client: no answer in time; poll: no client).",
            ("waiter",),
            registry=self.registry,
        )
        self._ice_lists = Counter(
            "ferry_broker_ice_server_lists",
            "ICE server lists handed out, by endpoint (ice_servers, volunteer_poll).",
            ("endpoint",),
            registry=self.registry,
        )
        self._turn_credentials = Counter(
            "ferry_broker_turn_credentials",
            "TURN credentials minted from the shared secret.",
            registry=self.registry,
        )
        self._match_latency = Histogram(
            "ferry_broker_match_latency_seconds",
            "Seconds from a client's offer to its match with a volunteer's poll.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def _add_routes(self) -> None:
        """Every endpoint of the broker (docs/protocol.md §2; ``/openapi.json``)."""
        self.app.router.add_post("/v1/client/offer", self._handle_client_offer)
        self.app.router.add_post("/v1/volunteer/poll", self._handle_volunteer_poll)
        self.app.router.add_post("/v1/volunteer/answer", self._handle_volunteer_answer)
        self.app.router.add_post("/v1/ice-servers", self._handle_ice_servers)
        self.app.router.add_get("/v1/egresses", self._handle_egresses)
        self.app.router.add_get("/v1/stats", self._handle_stats)
        self.app.router.add_get("/widget.js", self._handle_widget)
        self.app.router.add_get("/", self._handle_index)
        for path in _CROSS_ORIGIN_PATHS:
            self.app.router.add_route("OPTIONS", path, self._handle_preflight)
        self.app.router.add_get("/healthz", self._handle_health)
        self.app.router.add_get("/metrics", self._handle_metrics)
        self.app.router.add_get("/status", self._handle_status)
        self.app.router.add_get("/openapi.json", self._handle_openapi)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen; return the base URL (``http://HOST:PORT``, with the real port if 0)."""
        if self._runner is not None:
            raise LocalError("the broker is already started")
        scrub_library_loggers()
        self._loop = asyncio.get_running_loop()
        await self.store.start()
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=self.config.shutdown_timeout,
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(
            runner, self.config.host, self.config.port, backlog=self.config.listen_backlog
        )
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
        self.store.end_waits()
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                await runner.cleanup()
        finally:
            await self.store.close()

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _now(self) -> float:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    # --- request helpers ---------------------------------------------------------------------

    def _refuse(
        self, endpoint: str, status: int, reason: str, message: str, field: str | None
    ) -> web.Response:
        self._rejected.labels(endpoint=endpoint, reason=reason).inc()
        if self._loop is not None:
            self._last_hour.count(self._now(), refusals=1)
        response = _json_response(ErrorBody(error=message, field=field), status)
        if status == 503:  # busy, closing, store unavailable: come back later, not at once
            response.headers["Retry-After"] = str(math.ceil(self.config.busy_retry_after))
        return response

    def _refuse_message(self, endpoint: str, error: MessageError) -> web.Response:
        status = 413 if error.reason == "too_large" else 400
        return self._refuse(endpoint, status, error.reason, str(error), error.field)

    def _source(self, request: web.Request) -> str:
        """Whom a request counts against: the trusted header's last entry, or the peer; an
        IPv6 source by its /64 (:func:`~ferry.core.rate_limit.source_key`)."""
        header = self.config.trusted_source_header
        if header is not None:
            value = request.headers.get(header, "").rsplit(",", 1)[-1].strip()
            if value:
                return source_key(value)
        peer = request.remote or "unknown"
        if header is None and not self._warned_loopback_peer and is_loopback_host(peer):
            self._warned_loopback_peer = True
            logger.warning(
                "a request came from this machine's loopback: if a reverse proxy or CDN front "
                "forwards to this broker, every client counts as one source for the rate "
                "limits; set --trusted-source-header (e.g. X-Forwarded-For) and have the front "
                "set it (docs/operating.md §4)"
            )
        return source_key(peer)

    def _too_many(self, endpoint: str, error: RateLimitedError) -> web.Response:
        """The 429 for a source over its limit, with the seconds until its next token."""
        response = self._refuse(
            endpoint,
            429,
            "rate_limited",
            "too many requests from your address; wait as Retry-After says",
            None,
        )
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        return response

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

    def _observe_levels(self) -> None:
        self._last_hour.observe(
            self._now(),
            volunteers_available=sum(a.count for a in self.store.available_volunteers()),
            clients_waiting=self.store.waiting_clients(),
        )

    def _offer_held(self) -> None:
        """A client offer passed the rate limit and is held: count it."""
        self._offers.inc()
        self._last_hour.count(self._now(), offers=1)
        self._observe_levels()

    def _poll_held(self, volunteer_id: str) -> None:
        """A volunteer poll passed the rate limit and is held: count it."""
        self._activity.volunteer_polled(volunteer_id, self._now())
        self._polls.inc()

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
        if self._held_offers >= self.config.max_held_offers:
            return self._refuse(
                endpoint, 503, "busy", "the broker holds too many clients; try again later", None
            )
        self._held_offers += 1
        try:
            try:
                answer = await self.store.wait_for_volunteer(
                    offer, self._source(request), on_held=self._offer_held
                )
            except RateLimitedError as exc:
                return self._too_many(endpoint, exc)
            except StoreUnavailableError as exc:
                return self._refuse(endpoint, 503, "store_unavailable", str(exc), None)
            except BrokerError as exc:
                return self._refuse(endpoint, 503, "busy", str(exc), None)
            except asyncio.CancelledError:
                self._client_outcomes.labels(outcome="gave_up").inc()
                raise
        finally:
            self._held_offers -= 1
        if answer is None:
            self._client_outcomes.labels(outcome="no_volunteer").inc()
            if not self._closing:
                self._timeouts.labels(waiter="client").inc()
            return _json_response(
                ErrorBody(
                    error="no volunteer answered in time; try again in a few seconds",
                    field=None,
                ),
                503,
            )
        self._activity.client_helped(self._now())
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
        if self._held_polls >= self.config.max_held_polls:
            return self._refuse(
                endpoint, 503, "busy", "the broker holds too many polls; poll again later", None
            )
        self._held_polls += 1
        try:
            outcome = await self.store.wait_for_client(
                poll, self._source(request), on_held=lambda: self._poll_held(poll.volunteer_id)
            )
        except RateLimitedError as exc:
            return self._too_many(endpoint, exc)
        except StoreUnavailableError as exc:
            return self._refuse(endpoint, 503, "store_unavailable", str(exc), None)
        except BrokerError as exc:
            return self._refuse(endpoint, 503, "busy", str(exc), None)
        finally:
            self._held_polls -= 1
        if outcome.match is None:
            if not self._closing:
                self._timeouts.labels(waiter="poll").inc()
        else:
            self._matches.inc()
            self._last_hour.count(self._now(), matches=1)
            if outcome.client_waited is not None:
                self._match_latency.observe(max(0.0, outcome.client_waited))
        self._observe_levels()
        if outcome.match is None:
            return _json_response(PollResponse(match=None))
        return _json_response(
            PollResponse(match=outcome.match, ice_servers=self._ice_servers_for("volunteer_poll"))
        )

    def _ice_servers_for(self, endpoint: str) -> tuple[IceServer, ...]:
        """One peer's ICE servers: a fresh random subset, with freshly minted TURN
        credentials."""
        servers = self._ice_plan.for_peer(time.time(), self._ice_chooser)
        if servers:
            self._ice_lists.labels(endpoint=endpoint).inc()
        minted = sum(1 for server in servers if server.is_turn) if self._ice_plan.turn_secret else 0
        if minted:
            self._turn_credentials.inc(minted)
        return servers

    async def _handle_ice_servers(self, request: web.Request) -> web.Response:
        endpoint = "ice_servers"
        body = await self._read_body(request, endpoint)
        if isinstance(body, web.Response):
            return body
        try:
            decode_ice_servers_request(body)
        except MessageError as exc:
            return self._refuse_message(endpoint, exc)
        source = hash_source(self._ice_salt, self._source(request))
        decision = self._ice_buckets.take(source, self._now())
        if not decision.allowed:
            return self._too_many(endpoint, RateLimitedError(decision.retry_after))
        ttl = max(1, int(self.config.turn_credential_ttl // 2))
        return _json_response(
            IceServersResponse(ice_servers=self._ice_servers_for(endpoint), ttl=ttl)
        )

    async def _handle_volunteer_answer(self, request: web.Request) -> web.Response:
        endpoint = "volunteer_answer"
        body = await self._read_body(request, endpoint)
        if isinstance(body, web.Response):
            return body
        try:
            answer = decode_volunteer_answer(body)
        except MessageError as exc:
            return self._refuse_message(endpoint, exc)
        try:
            delivered = await self.store.deliver_answer(answer)
        except StoreUnavailableError as exc:
            return self._refuse(endpoint, 503, "store_unavailable", str(exc), None)
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

    def _metrics_peer(self, remote: str) -> bool:
        try:
            address = ipaddress.ip_address(remote.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._metrics_networks)

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        """Prometheus text, for the operator only: its counters are exact, so a series of
        reads would show each client's arrival. Answered to requests from ``metrics_allow``
        that did not come through the front (which sets ``trusted_source_header``); anyone
        else gets 404, as if there were no such page."""
        header = self.config.trusted_source_header
        through_front = header is not None and header in request.headers
        if through_front or not self._metrics_peer(request.remote or ""):
            self._rejected.labels(endpoint="metrics", reason="not_local").inc()
            raise web.HTTPNotFound(text="404: Not Found")
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _handle_status(self, request: web.Request) -> web.Response:
        now = self._now()
        self._observe_levels()
        page = render_status_page(
            stats=self._activity.snapshot(now),
            available=self.store.available_volunteers(),
            clients_waiting=self.store.waiting_clients(),
            last_hour=self._last_hour.last(now),
            shared=self.config.redis_url is not None,
        )
        return web.Response(
            text=page,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                "img-src data:; base-uri 'none'; form-action 'none'",
                "Refresh": "60",
            },
        )

    async def _handle_openapi(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._openapi,
            content_type=_JSON,
            headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=300"},
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
