"""The client's local page: status, speed chart, reconnect, a new bridge line, the self-check.

Served by the client on a loopback port of its own (``--ui-listen``, next to the proxy
port) with aiohttp. Everything it needs is served from here (the page, its script and
style sheet); the page polls ``GET /v1/status`` once a second.

Routes (``docs/client.md``):

* ``GET /`` — the page, in the client's language or ``?lang=CODE``; it embeds the catalogue
  and a per-run token.
* ``GET /page.js``, ``GET /page.css`` — its script and style sheet.
* ``GET /proxy.pac`` — a proxy auto-configuration file sending browsers through the proxy.
* ``GET /v1/status`` — :class:`PageStatus` as JSON.
* ``POST /v1/reconnect``, ``POST /v1/bridge`` (``{"bridge": LINE}``), ``POST /v1/check`` —
  state-changing, so they need the header ``X-Ferry-Token`` with the page's token.

Protection against other web pages (DNS rebinding and cross-site requests): a request is
refused with 403 unless its ``Host`` is ``127.0.0.1:PORT``, ``localhost:PORT`` or
``[::1]:PORT``, its ``Origin`` (when sent) is ``http://`` one of those, and it is not marked
``Sec-Fetch-Site: cross-site``; every refusal is counted in
``ferry_client_page_refused_total{reason}``.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from ferry.client.messages import LANGUAGES, Catalogue, catalogue, choose_language
from ferry.client.self_check import SelfCheck, StepResult
from ferry.client.session import TunnelStatus
from ferry.core.bridge_line import BridgeLine, BridgeLineDamagedError, parse_bridge_line
from ferry.core.path_policy import PathRole
from ferry.errors import (
    BrokerError,
    BrokerRateLimitedError,
    ConfigError,
    EgressIdentityError,
    FerryError,
    LocalError,
    NoVolunteerError,
)
from ferry.logs import get_logger, scrub_library_loggers
from ferry.tasks import TaskOwner

__all__ = [
    "BrowserSetup",
    "ClientControl",
    "LocalPage",
    "LocalPageConfig",
    "PageStatus",
    "browser_setup",
    "format_browser_setup",
    "proxy_auto_config",
]

log = get_logger(__name__)

WEB = Path(__file__).parent.parent / "web"
TOKEN_HEADER = "X-Ferry-Token"
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class LocalPageConfig:
    """Settings of the local page."""

    host: str = "127.0.0.1"
    """Loopback address to listen on (anything else is refused)."""
    port: int = 1081
    """TCP port; 0 picks any free port."""
    language: str = "en"
    """Language of the page unless the address asks for another (``?lang=``)."""
    sample_interval: float = 1.0
    """Seconds between speed samples."""
    history_samples: int = 60
    """Speed samples kept for the chart."""
    max_body_bytes: int = 8192
    """Largest request body accepted (a bridge line is far smaller)."""
    shutdown_timeout: float = 2.0
    """Seconds :meth:`LocalPage.close` lets requests in progress (a self-check) finish
    before cancelling them."""

    def __post_init__(self) -> None:
        if self.host != "localhost":
            try:
                loopback = ipaddress.ip_address(self.host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ConfigError(
                    f"the status page must listen on a loopback address, not {self.host}"
                )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"status page port {self.port} is outside 0..65535")
        if self.language not in LANGUAGES:
            raise ConfigError(f"no such language: {self.language}")
        if not self.shutdown_timeout >= 0:
            raise ConfigError("shutdown_timeout must not be negative")
        if not self.sample_interval > 0:
            raise ConfigError("sample_interval must be a positive number of seconds")
        if self.history_samples < 2 or self.max_body_bytes < 256:
            raise ConfigError("history_samples must be at least 2, max_body_bytes 256")


class ClientControl(Protocol):
    """What the page needs from the running client (:class:`~ferry.client.app.ClientApp`)."""

    proxy_address: tuple[str, int]
    """The local proxy's address."""

    @property
    def bridge(self) -> BridgeLine:
        """The bridge line in use."""
        ...

    def tunnel_status(self) -> TunnelStatus | None:
        """The tunnel's status, ``None`` before it started."""
        ...

    def traffic_totals(self) -> tuple[int, int]:
        """Bytes sent and received through volunteers since the client started."""
        ...

    def problem(self) -> FerryError | None:
        """Why the client is not connected (the last failure), if known."""
        ...

    async def reconnect(self, bridge: BridgeLine | None = None) -> None:
        """Drop the session and volunteers and start again, with ``bridge`` if given."""
        ...

    def self_check(self) -> SelfCheck:
        """A self-check of the current configuration."""
        ...


@dataclass(frozen=True, slots=True)
class SpeedSample:
    """Speeds over one sample interval."""

    up: float
    """Bytes per second sent."""
    down: float
    """Bytes per second received."""


@dataclass(frozen=True, slots=True)
class PageStatus:
    """What ``GET /v1/status`` returns (as JSON with these keys)."""

    connected: bool
    """A session to the egress is up."""
    state: str
    """Why: ``connected``, ``looking``, ``broker``, ``rate_limited`` (the broker said "too
    many requests"), ``no_volunteer``, ``identity`` or ``egress``; the page shows message
    ``state.<state>``."""
    detail: str
    """The last problem in English (technical), or empty."""
    volunteers: int
    """Volunteer paths carrying the session."""
    standby: int
    """Volunteer paths connected and standing by."""
    session_seconds: float
    """Seconds the current session has been up."""
    bytes_sent: int
    """Bytes sent through volunteers since the client started."""
    bytes_received: int
    """Bytes received through volunteers since the client started."""
    history: tuple[SpeedSample, ...]
    """The last speed samples, oldest first."""
    bridge: str
    """The bridge line in use."""

    def to_json(self) -> dict[str, object]:
        """The JSON object of ``GET /v1/status``."""
        return {
            "connected": self.connected,
            "state": self.state,
            "detail": self.detail,
            "volunteers": self.volunteers,
            "standby": self.standby,
            "sessionSeconds": round(self.session_seconds, 1),
            "bytesSent": self.bytes_sent,
            "bytesReceived": self.bytes_received,
            "history": [{"up": round(s.up), "down": round(s.down)} for s in self.history],
            "bridge": self.bridge,
        }


def problem_state(problem: FerryError | None) -> str:
    """The page's ``state`` for a client that is not connected, from its last failure."""
    if problem is None:
        return "looking"
    if isinstance(problem, EgressIdentityError):
        return "identity"
    if isinstance(problem, BrokerRateLimitedError):
        return "rate_limited"
    if isinstance(problem, NoVolunteerError):
        return "no_volunteer"
    if isinstance(problem, BrokerError):
        return "broker"
    return "egress"


@dataclass(frozen=True, slots=True)
class BrowserSetup:
    """The values to enter in browsers and the operating system."""

    pac_url: str
    """The proxy auto-configuration URL (``/proxy.pac``)."""
    socks_host: str
    """The SOCKS5 proxy's host."""
    socks_port: int
    """The SOCKS5 proxy's port."""

    @property
    def chromium_command(self) -> str:
        """How to start Chromium or Chrome through ferry."""
        return (
            f"chromium --proxy-pac-url={self.pac_url} "
            "--webrtc-ip-handling-policy=disable_non_proxied_udp"
        )


def browser_setup(proxy: tuple[str, int], page_url: str) -> BrowserSetup:
    """The setup values for a proxy address and the page's base URL."""
    return BrowserSetup(page_url.rstrip("/") + "/proxy.pac", proxy[0], proxy[1])


def format_browser_setup(setup: BrowserSetup, words: Catalogue) -> str:
    """``--print-browser-setup``: the same words and values as the page."""
    return "\n".join(
        [
            words.text("setup.heading"),
            "",
            words.text("setup.firefox"),
            f"    {setup.pac_url}",
            words.text("setup.firefox_manual", host=setup.socks_host, port=setup.socks_port),
            "",
            words.text("setup.chromium"),
            f"    {setup.chromium_command}",
            "",
            words.text("setup.system"),
            f"    {setup.pac_url}",
            "",
            words.text("setup.no_direct"),
            "",
            words.text("setup.webrtc_leak"),
        ]
    )


def proxy_auto_config(proxy: tuple[str, int]) -> str:
    """The PAC file: loopback stays direct, everything else goes to the SOCKS5 proxy.

    There is no ``DIRECT`` fallback: if the client is down, browsing fails rather than going
    out unprotected where the censor can see it.
    """
    host, port = proxy
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (
        "// ferry: send the browser's traffic through the local ferry client.\n"
        "function FindProxyForURL(url, host) {\n"
        '  if (host === "localhost" || host === "::1" || host === "[::1]" ||\n'
        '      shExpMatch(host, "127.*") || shExpMatch(host, "*.localhost")) {\n'
        '    return "DIRECT";\n'
        "  }\n"
        f'  return "SOCKS5 {address}";\n'
        "}\n"
    )


class LocalPage:
    """The page's HTTP server; see the module docstring."""

    def __init__(
        self, client: ClientControl, config: LocalPageConfig, registry: CollectorRegistry
    ) -> None:
        self._client = client
        self.config = config
        self.token = secrets.token_urlsafe(24)
        self._runner: web.AppRunner | None = None
        self._tasks = TaskOwner("client-page")
        self._history: deque[SpeedSample] = deque(maxlen=config.history_samples)
        self._check_lock = asyncio.Lock()
        self._allowed_hosts: frozenset[str] = frozenset()
        self._allowed_origins: frozenset[str] = frozenset()
        self.url = ""
        self._refused = Counter(
            "ferry_client_page_refused",
            "Requests to the local page refused, by reason (host, origin, cross_site, token).",
            ["reason"],
            registry=registry,
        )
        self._bad_requests = Counter(
            "ferry_client_page_bad_requests",
            "Malformed requests to the local page, by reason.",
            ["reason"],
            registry=registry,
        )
        self._bridge_refused = Counter(
            "ferry_client_page_bridge_lines_refused",
            "Bridge lines pasted on the page and refused, by reason (damaged, invalid).",
            ["reason"],
            registry=registry,
        )

    async def start(self) -> str:
        """Listen; returns the page's URL (``http://127.0.0.1:PORT/``)."""
        if self._runner is not None:
            raise LocalError("LocalPage.start() may be called once")
        scrub_library_loggers()
        app = web.Application(middlewares=[self._guard], client_max_size=self.config.max_body_bytes)
        app.router.add_get("/", self._index)
        app.router.add_get("/page.js", self._script)
        app.router.add_get("/page.css", self._style)
        app.router.add_get("/proxy.pac", self._pac)
        app.router.add_get("/v1/status", self._status)
        app.router.add_post("/v1/reconnect", self._reconnect)
        app.router.add_post("/v1/bridge", self._bridge)
        app.router.add_post("/v1/check", self._check)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
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
                f"the status page cannot listen on port {self.config.port} ({exc.strerror}); "
                "choose another --ui-listen port"
            ) from exc
        port = int(runner.addresses[0][1])
        self._allowed_hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})
        self._allowed_origins = frozenset(f"http://{host}" for host in self._allowed_hosts)
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        self.url = f"http://{host}:{port}/"
        self._tasks.spawn(self._sample_speed(), name="speed-sampler")
        log.info("status page on port %d", port)
        return self.url

    async def close(self) -> None:
        """Stop the sampler and the server."""
        await self._tasks.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- state --------------------------------------------------------------------------------

    async def _sample_speed(self) -> None:
        loop = asyncio.get_running_loop()
        last_time = loop.time()
        last_sent, last_received = self._client.traffic_totals()
        while True:
            await asyncio.sleep(self.config.sample_interval)
            now = loop.time()
            sent, received = self._client.traffic_totals()
            elapsed = max(now - last_time, 1e-3)
            self._history.append(
                SpeedSample(
                    up=max(0, sent - last_sent) / elapsed,
                    down=max(0, received - last_received) / elapsed,
                )
            )
            last_time, last_sent, last_received = now, sent, received

    def status(self) -> PageStatus:
        """The page's status now."""
        tunnel = self._client.tunnel_status()
        sent, received = self._client.traffic_totals()
        connected = tunnel is not None and tunnel.connected
        paths = tunnel.paths if tunnel is not None else ()
        problem = None if connected else self._client.problem()
        return PageStatus(
            connected=connected,
            state="connected" if connected else problem_state(problem),
            detail="" if problem is None else str(problem),
            volunteers=sum(1 for path in paths if path.role is PathRole.ACTIVE),
            standby=sum(1 for path in paths if path.role is not PathRole.ACTIVE),
            session_seconds=tunnel.session_age if tunnel is not None else 0.0,
            bytes_sent=sent,
            bytes_received=received,
            history=tuple(self._history),
            bridge=str(self._client.bridge),
        )

    # -- protection ---------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        reason = ""
        origin = request.headers.get("Origin")
        if request.headers.get("Host", "") not in self._allowed_hosts:
            reason = "host"
        elif origin is not None and origin not in self._allowed_origins:
            reason = "origin"
        elif request.headers.get("Sec-Fetch-Site") == "cross-site":
            reason = "cross_site"
        elif request.method == "POST" and not secrets.compare_digest(
            request.headers.get(TOKEN_HEADER, "").encode("utf-8", "replace"),
            self.token.encode("ascii"),
        ):
            reason = "token"
        if reason:
            self._refused.labels(reason).inc()
            log.info("refused a request to the status page (%s)", reason)
            return web.Response(
                status=403,
                text="ferry: this page answers only to itself on this computer\n",
                headers=_SECURITY_HEADERS,
            )
        response = await handler(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    # -- pages --------------------------------------------------------------------------------

    def _words(self, request: web.Request) -> Catalogue:
        requested = request.query.get("lang")
        if requested:
            try:
                return catalogue(choose_language(requested, {}))
            except ConfigError:
                self._bad_requests.labels("language").inc()
        return catalogue(self.config.language)

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=self._render(self._words(request)), content_type="text/html")

    def _render(self, words: Catalogue) -> str:
        setup = browser_setup(self._client.proxy_address, self.url)

        def t(message_id: str, **values: object) -> str:
            return html.escape(words.text(message_id, **values))

        languages = " · ".join(
            f'<a href="/?lang={code}" lang="{code.replace("_", "-")}"'
            f"{' aria-current=page' if code == words.language else ''}>{html.escape(name)}</a>"
            for code, name in LANGUAGES.items()
        )
        data = json.dumps(
            {"token": self.token, "messages": dict(words.messages)}, ensure_ascii=False
        ).replace("</", "<\\/")
        direction = "rtl" if words.right_to_left else "ltr"
        return f"""<!doctype html>
<html lang="{words.language.replace("_", "-")}" dir="{direction}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t("page.title")}</title><link rel="stylesheet" href="/page.css"></head>
<body>
<header><h1>{t("page.title")}</h1><nav aria-label="{t("page.language")}">{languages}</nav></header>
<main>
<section id="state" class="card" aria-live="polite">
  <p class="headline"><span id="dot" class="dot"></span><span id="headline">…</span></p>
  <p id="reason"></p><p id="detail" class="detail"></p>
  <button id="reconnect" type="button">{t("page.reconnect")}</button>
</section>
<section class="card grid">
  <div><h2>{t("page.volunteers")}</h2><p class="big" id="volunteers">0</p></div>
  <div><h2>{t("page.speed_down")}</h2><p class="big" id="down" dir="ltr">0 B/s</p></div>
  <div><h2>{t("page.speed_up")}</h2><p class="big" id="up" dir="ltr">0 B/s</p></div>
  <div><h2>{t("page.used")}</h2><p class="big" id="used">0 B</p></div>
</section>
<section class="card"><h2>{t("page.chart")}</h2>
  <svg id="chart" viewBox="0 0 300 80" preserveAspectRatio="none" role="img"
       aria-label="{t("page.chart")}"><polyline id="line-down" points=""/>
       <polyline id="line-up" points=""/></svg>
  <p class="legend"><span class="key down"></span>{t("page.speed_down")}
  <span class="key up"></span>{t("page.speed_up")}</p>
</section>
<section class="card"><h2>{t("page.bridge")}</h2>
  <p><code id="bridge" dir="ltr"></code></p>
  <label for="new-bridge">{t("page.new_bridge")}</label>
  <textarea id="new-bridge" rows="3" dir="ltr" spellcheck="false"
            placeholder="ferry1 wss://… sha256=… check=…"></textarea>
  <button id="apply-bridge" type="button">{t("page.apply_bridge")}</button>
  <p id="bridge-result" role="status"></p>
</section>
<section class="card"><h2>{t("page.check")}</h2>
  <button id="run-check" type="button">{t("page.run_check")}</button>
  <ul id="check-results"></ul><p id="check-summary" role="status"></p>
</section>
<section class="card"><h2>{t("setup.heading")}</h2>
  <p>{t("setup.firefox")}</p><p><code dir="ltr">{html.escape(setup.pac_url)}</code></p>
  <p>{t("setup.firefox_manual", host=setup.socks_host, port=setup.socks_port)}</p>
  <p>{t("setup.chromium")}</p><p><code dir="ltr">{html.escape(setup.chromium_command)}</code></p>
  <p>{t("setup.system")}</p><p><code dir="ltr">{html.escape(setup.pac_url)}</code></p>
  <p>{t("setup.no_direct")}</p>
  <p>{t("setup.webrtc_leak")}</p>
</section>
</main>
<script type="application/json" id="ferry-data">{data}</script>
<script src="/page.js"></script>
</body></html>
"""

    async def _script(self, request: web.Request) -> web.Response:
        return web.Response(
            body=(WEB / "client-page.js").read_bytes(), content_type="text/javascript"
        )

    async def _style(self, request: web.Request) -> web.Response:
        return web.Response(body=(WEB / "client-page.css").read_bytes(), content_type="text/css")

    async def _pac(self, request: web.Request) -> web.Response:
        return web.Response(
            text=proxy_auto_config(self._client.proxy_address),
            content_type="application/x-ns-proxy-autoconfig",
        )

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status().to_json())

    async def _reconnect(self, request: web.Request) -> web.Response:
        await self._client.reconnect()
        return web.json_response({"ok": True})

    async def _bridge(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            self._bad_requests.labels("too_large").inc()
            return web.json_response({"ok": False, "error": "bad_request"}, status=413)
        except (ValueError, UnicodeDecodeError):
            self._bad_requests.labels("json").inc()
            return web.json_response({"ok": False, "error": "bad_request"}, status=400)
        text = body.get("bridge") if isinstance(body, dict) else None
        if not isinstance(text, str):
            self._bad_requests.labels("no_bridge").inc()
            return web.json_response({"ok": False, "error": "bad_request"}, status=400)
        try:
            bridge = parse_bridge_line(text)
        except BridgeLineDamagedError as exc:
            self._bridge_refused.labels("damaged").inc()
            return web.json_response(
                {"ok": False, "error": "bridge.damaged", "detail": str(exc)}, status=400
            )
        except ConfigError as exc:
            self._bridge_refused.labels("invalid").inc()
            return web.json_response(
                {"ok": False, "error": "bridge.invalid", "detail": str(exc)}, status=400
            )
        await self._client.reconnect(bridge)
        return web.json_response({"ok": True, "bridge": str(bridge)})

    async def _check(self, request: web.Request) -> web.Response:
        if self._check_lock.locked():
            return web.json_response({"ok": False, "error": "check.busy"}, status=409)
        async with self._check_lock:
            results = await self._client.self_check().run()
        return web.json_response({"ok": True, "results": [_result_json(r) for r in results]})


def _result_json(result: StepResult) -> dict[str, object]:
    return {
        "step": result.step.value,
        "outcome": result.outcome.value,
        "explanation": result.explanation,
        "advice": result.advice,
        "detail": result.detail,
        "seconds": round(result.seconds, 2),
    }
