"""The ``ferry`` command: one sub-command per role, plus ``ferry demo``.

Every flag can also be set through the environment variable named in its ``--help`` line
(``FERRY_<ROLE>_<FLAG>``). Each role writes its ``--ready-file`` (JSON) once it is usable, so
scripts and tests can wait for it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from ferry import __version__
from ferry.broker.turn_secret import read_turn_secret
from ferry.command_settings import (
    ConfigReloader,
    RoleCommand,
    config_option,
    print_config_option,
)
from ferry.core.addresses import is_loopback_host
from ferry.core.ice_servers import IceServer, IceServerError, parse_user_ice_server
from ferry.errors import ConfigError, FerryError, LocalError
from ferry.logs import configure as configure_logging

if TYPE_CHECKING:
    from ferry.broker.server import BrokerConfig
    from ferry.client.app import ClientConfig
    from ferry.client.messages import Catalogue
    from ferry.client.self_check import StepResult
    from ferry.core.nat_behaviour import StunServer
    from ferry.transport.browser_webrtc import WebRtcMode
    from ferry.transport.webrtc import WebRtcConfig

console = Console(stderr=True, highlight=False)
app = typer.Typer(
    name="ferry",
    help="ferry: reach the open internet through volunteers' browsers, end-to-end encrypted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


DEFAULT_EGRESS_ADMIN_PORT = 9464
"""The egress's admin port on 127.0.0.1 unless ``--admin-listen`` says otherwise."""


def parse_listen(
    value: str, *, default_host: str = "127.0.0.1", flag: str = "--listen"
) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` → (host, port); :class:`ConfigError` naming
    ``flag`` if bad."""
    text = value.strip()
    host, port_text = default_host, text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ConfigError(f"{flag} {value!r}: write an IPv6 address as [ADDRESS]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{flag} {value!r}: the port must be between 0 and 65535")
    if not host:
        raise ConfigError(f"{flag} {value!r}: the host is empty")
    return host, port


def write_ready_file(path: Path | None, content: dict[str, object]) -> None:
    """Write ``content`` as JSON to ``path`` atomically (rename), if a path was given."""
    if path is None:
        return
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(temporary, path)


class EventLoop(StrEnum):
    """Which asyncio event loop a role runs on (``--event-loop``)."""

    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


def new_event_loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory for ``choice``'s event loop; asyncio's own if uvloop is not installed.

    uvloop cut the CPU per MB of the client by about a quarter and of the volunteer by about
    a fifth, and did not cost the egress anything (BENCHMARKS.md, issue 8).
    """
    if choice is EventLoop.UVLOOP:
        try:
            import uvloop
        except ImportError:
            return asyncio.new_event_loop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def _event_loop_option(role: str) -> object:
    return typer.Option(
        "--event-loop",
        envvar=f"FERRY_{role}_EVENT_LOOP",
        help="The event loop: uvloop (faster; falls back to asyncio's own if uvloop is not "
        "installed) or asyncio.",
    )


def run_until_signal(
    main: Callable[[asyncio.Event], Awaitable[None]], event_loop: EventLoop = EventLoop.ASYNCIO
) -> None:
    """Run ``main(stop)`` until it returns; SIGINT/SIGTERM set ``stop``. Errors exit 1."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await main(stop)

    try:
        with asyncio.Runner(loop_factory=new_event_loop_factory(event_loop)) as asyncio_runner:
            asyncio_runner.run(runner())
    except FerryError as exc:
        console.print(f"[bold red]ferry:[/] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


def _logging(verbose: bool, unsafe_logging: bool) -> None:
    configure_logging(verbose=verbose, unsafe_logging=unsafe_logging)
    if unsafe_logging:
        console.print(
            "[yellow]--unsafe-logging is on: logs will contain addresses and destinations.[/]"
        )


def _webrtc_config(
    ice_addresses: list[str] | None,
    sctp_packets_per_ack: int | None = None,
    ice_servers: list[str] | None = None,
    offer_local_candidates: bool = False,
) -> WebRtcConfig:
    import dataclasses

    from ferry.transport.webrtc import WebRtcConfig

    config = WebRtcConfig(
        host_candidate_addresses=tuple(ice_addresses) if ice_addresses else None,
        ice_servers=tuple(_ice_server_values(ice_servers, "--ice-server", user=True)),
        offer_local_candidates=offer_local_candidates,
    )
    if sctp_packets_per_ack is None:
        return config
    return dataclasses.replace(config, sctp_packets_per_acknowledgement=sctp_packets_per_ack)


def _offer_local_candidates_option(role: str) -> object:
    return typer.Option(
        "--offer-local-candidates",
        envvar=f"FERRY_{role}_OFFER_LOCAL_CANDIDATES",
        help="Python WebRTC: announce this host's LAN, loopback and (client) IPv6 addresses "
        "in the SDP even when a STUN or TURN address is known (LAN-only networks). Default: "
        "left out, so the broker and the other peer do not learn them.",
    )


def _sctp_packets_per_ack_option(role: str) -> object:
    return typer.Option(
        "--sctp-packets-per-ack",
        envvar=f"FERRY_{role}_SCTP_PACKETS_PER_ACK",
        min=1,
        help="Python WebRTC: send one SCTP acknowledgement per this many received packets "
        "(default 2, RFC 4960's delayed acknowledgement; 1 = one per packet, as aiortc does).",
    )


def _ice_address_option(role: str) -> object:
    return typer.Option(
        envvar=f"FERRY_{role}_ICE_ADDRESS",
        help="Offer WebRTC host candidates only on this local address (repeatable; "
        "default: every interface).",
    )


def _webrtc_option(role: str) -> object:
    return typer.Option(
        "--webrtc",
        envvar=f"FERRY_{role}_WEBRTC",
        metavar="browser|python|auto",
        help="Which WebRTC stack runs the connections: 'browser' runs them in the installed "
        "Chromium/Chrome (headless), so a censor sees a browser's own handshake; 'python' "
        "uses aiortc, whose handshake is easier to spot; 'auto' uses a browser when one is "
        "found.",
    )


def _browser_option(role: str) -> object:
    return typer.Option(
        "--browser",
        envvar=f"FERRY_{role}_BROWSER",
        metavar="PATH",
        help="The Chromium or Chrome executable for --webrtc browser/auto (default: the first "
        "of /usr/bin/chromium, chromium-browser, google-chrome found).",
    )


def _webrtc_mode(value: str) -> WebRtcMode:
    from ferry.transport.browser_webrtc import WebRtcMode

    try:
        return WebRtcMode(value)
    except ValueError:
        raise ConfigError(f"--webrtc must be browser, python or auto, not {value!r}") from None


def _verbose_option(role: str) -> object:
    return typer.Option("--verbose", "-v", envvar=f"FERRY_{role}_VERBOSE", help="Log more detail.")


def _ready_file_option(role: str) -> object:
    return typer.Option(
        "--ready-file",
        envvar=f"FERRY_{role}_READY_FILE",
        help="Write JSON here once the role is usable (for scripts and tests).",
    )


def _unsafe_logging_option(role: str) -> object:
    return typer.Option(
        "--unsafe-logging",
        envvar=f"FERRY_{role}_UNSAFE_LOGGING",
        help="Log client addresses and destinations. For debugging only: it endangers users.",
    )


def _stun_option(role: str) -> object:
    return typer.Option(
        "--nat-stun",
        "--stun",
        envvar=f"FERRY_{role}_NAT_STUN",
        metavar="URL",
        help="NAT discovery only (not ICE; see --ice-server): an RFC 5780 STUN server, "
        "stun:HOST[:PORT], to learn this host's NAT behaviour from (repeatable; tried in "
        "order). The class (restricted, unrestricted, unknown) goes to the broker for "
        "matching. Default: the broker's STUN servers; without any, the class is unknown.",
    )


def _ice_server_option(role: str) -> object:
    return typer.Option(
        "--ice-server",
        envvar=f"FERRY_{role}_ICE_SERVER",
        metavar="URL",
        help="Your own STUN or TURN server for WebRTC's ICE, used beside the broker's: "
        "stun:HOST[:PORT] or turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp] "
        "(repeatable). With --no-broker-ice-servers only these are used.",
    )


def _broker_ice_servers_option(role: str) -> object:
    return typer.Option(
        "--broker-ice-servers/--no-broker-ice-servers",
        envvar=f"FERRY_{role}_BROKER_ICE_SERVERS",
        help="Use the STUN and TURN servers the broker hands out (default). Off: only "
        "--ice-server ones, which replace the broker's.",
    )


def _unsafe_internal_ice_servers_option(role: str) -> object:
    return typer.Option(
        "--unsafe-allow-internal-ice-servers",
        envvar=f"FERRY_{role}_UNSAFE_ALLOW_INTERNAL_ICE_SERVERS",
        help="Accept STUN/TURN servers from the broker on loopback, private and link-local "
        "addresses (tests and private networks only: a hostile broker could aim this "
        "host's packets into its own network).",
    )


def _stun_servers(urls: list[str] | None) -> tuple[StunServer, ...]:
    from ferry.core.nat_behaviour import parse_stun_url

    return tuple(parse_stun_url(url) for url in urls or ())


def _impair_option(fault: str, verb: str) -> object:
    return typer.Option(
        envvar=f"FERRY_VOLUNTEER_TEST_IMPAIR_{fault}",
        min=0.0,
        max=1.0,
        hidden=True,
        help=f"(testing only) Probability to {verb} each relayed datagram.",
    )


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(f"ferry {__version__}")
        raise typer.Exit()


@app.command(cls=RoleCommand)
def demo(
    config_file: Annotated[Path | None, config_option("DEMO")] = None,
    print_config: Annotated[bool, print_config_option("DEMO")] = False,
    port: Annotated[
        int, typer.Option(envvar="FERRY_DEMO_PORT", help="Client proxy port (0 = any free port).")
    ] = 1080,
    volunteers: Annotated[
        int, typer.Option(envvar="FERRY_DEMO_VOLUNTEERS", min=1, max=50, help="Volunteers to run.")
    ] = 2,
    ui_listen: Annotated[
        str,
        typer.Option(
            envvar="FERRY_DEMO_UI_LISTEN",
            help="Address of the client's local status page, HOST:PORT on loopback (0 = any "
            "free port); 'auto' = the proxy's port + 1 (any free port if the proxy's is 0; "
            "if it is taken, the demo runs without the page); 'off'.",
        ),
    ] = "auto",
    ready_file: Annotated[Path | None, _ready_file_option("DEMO")] = None,
    unsafe_allow_private_destinations: Annotated[
        bool,
        typer.Option(
            envvar="FERRY_DEMO_UNSAFE_ALLOW_PRIVATE_DESTINATIONS",
            help="Let the egress reach loopback and private addresses (local testing only).",
        ),
    ] = False,
    webrtc: Annotated[str, _webrtc_option("DEMO")] = "auto",
    unsafe_logging: Annotated[bool, _unsafe_logging_option("DEMO")] = False,
    verbose: Annotated[bool, _verbose_option("DEMO")] = False,
) -> None:
    """Run a whole ferry network on this machine: broker, egress, volunteers and a client."""
    from ferry.client.local_page import LocalPageConfig
    from ferry.client.messages import choose_language
    from ferry.demo import LoopbackNetwork, LoopbackNetworkConfig

    _logging(verbose, unsafe_logging)
    page_config: LocalPageConfig | None = None
    ui_choice = ui_listen.strip().lower()
    try:
        if ui_choice != "off":
            if ui_choice == "auto":
                ui_host, ui_port = "127.0.0.1", (port + 1 if 0 < port < 65535 else 0)
            else:
                ui_host, ui_port = parse_listen(ui_listen, flag="--ui-listen")
            language = choose_language(None, os.environ)
            page_config = LocalPageConfig(host=ui_host, port=ui_port, language=language)
        demo_webrtc = _webrtc_mode(webrtc)
    except ConfigError as exc:
        console.print(f"[bold red]ferry demo:[/] {exc}")
        raise typer.Exit(2) from None

    async def main(stop: asyncio.Event) -> None:
        network = LoopbackNetwork(
            LoopbackNetworkConfig(
                proxy_port=port,
                volunteers=volunteers,
                client_paths=min(2, volunteers),
                allow_private_destinations=unsafe_allow_private_destinations,
                page=page_config,
                page_optional=ui_choice == "auto",
                client_webrtc=demo_webrtc,
                volunteer_webrtc=demo_webrtc,
            )
        )
        try:
            await network.start()
            host, proxy_port = network.proxy
            console.print(f"[bold]ferry demo[/] {__version__}: a whole network on this machine")
            console.print(f"  broker     {network.broker_url}  (matches clients with volunteers)")
            console.print(f"  egress     {network.egress_url}  (exit to the internet)")
            stack = network.volunteer_stack.stack_status().stack if network.volunteer_stack else ""
            console.print(f"  volunteers {volunteers} volunteers relaying over WebRTC ({stack})")
            console.print(f"  client     SOCKS5 and HTTP proxy on {host}:{proxy_port}")
            if network.page_url:
                console.print(f"  page       {network.page_url}  (the client's status page)")
            elif page_config is not None:
                console.print(
                    f"  [yellow]page       not started: port {page_config.port} is taken "
                    "(choose another with --ui-listen)[/]"
                )
            console.print("Waiting for the client's encrypted session to the egress...")
            ready = asyncio.create_task(network.wait_ready())
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({ready, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                if not ready.done():
                    ready.cancel()
            if stop.is_set():
                return
            ready.result()
            write_ready_file(
                ready_file,
                {
                    "proxy": f"{host}:{proxy_port}",
                    "broker": network.broker_url,
                    "egress": network.egress_url,
                    **({"ui": network.page_url} if network.page_url else {}),
                },
            )
            console.print("[green]Ready.[/] Try it:")
            target = (
                "http://127.0.0.1:8000/"
                if unsafe_allow_private_destinations
                else ("https://example.com/")
            )
            console.print(f"  curl --socks5-hostname {host}:{proxy_port} {target}")
            console.print(f"  curl --proxytunnel -x http://{host}:{proxy_port} {target}")
            if not unsafe_allow_private_destinations:
                console.print(
                    "  (the egress refuses loopback and private addresses; to reach a server on "
                    "this machine, restart with --unsafe-allow-private-destinations)"
                )
            console.print("Press Ctrl-C to stop.")
            await stop.wait()
            console.print("Stopping...")
        finally:
            await network.close()

    run_until_signal(main)


@app.command(cls=RoleCommand)
def broker(
    config_file: Annotated[Path | None, config_option("BROKER")] = None,
    print_config: Annotated[bool, print_config_option("BROKER")] = False,
    listen: Annotated[
        str, typer.Option(envvar="FERRY_BROKER_LISTEN", help="Address to listen on, HOST:PORT.")
    ] = "127.0.0.1:8080",
    egress: Annotated[
        list[str] | None,
        typer.Option(
            envvar="FERRY_BROKER_EGRESS",
            help="An egress WebSocket URL volunteers may be sent to (repeat for several).",
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis",
            envvar="FERRY_BROKER_REDIS",
            help="Keep the state in Redis at this URL (redis://HOST:PORT/DB), shared with every "
            "broker instance given the same URL; default: in this process.",
        ),
    ] = None,
    trusted_source_header: Annotated[
        str | None,
        typer.Option(
            envvar="FERRY_BROKER_TRUSTED_SOURCE_HEADER",
            help="Behind a front (reverse proxy, CDN): rate-limit by the last entry of this "
            "header (e.g. X-Forwarded-For) instead of the peer address. Only when every "
            "request comes through the front.",
        ),
    ] = None,
    offer_rate: Annotated[
        float,
        typer.Option(envvar="FERRY_BROKER_OFFER_RATE", help="Client offers per second per source."),
    ] = 1.0,
    offer_burst: Annotated[
        int,
        typer.Option(envvar="FERRY_BROKER_OFFER_BURST", help="Client offers per source at once."),
    ] = 20,
    poll_rate: Annotated[
        float,
        typer.Option(
            envvar="FERRY_BROKER_POLL_RATE", help="Volunteer polls per second per source."
        ),
    ] = 5.0,
    poll_burst: Annotated[
        int,
        typer.Option(envvar="FERRY_BROKER_POLL_BURST", help="Volunteer polls per source at once."),
    ] = 50,
    poll_timeout: Annotated[
        float,
        typer.Option(
            envvar="FERRY_BROKER_POLL_TIMEOUT",
            help="Seconds a volunteer's poll is held before 'no client' (then it polls again).",
        ),
    ] = 10.0,
    client_timeout: Annotated[
        float,
        typer.Option(
            envvar="FERRY_BROKER_CLIENT_TIMEOUT",
            help="Seconds a client's offer is held waiting for a volunteer's answer.",
        ),
    ] = 10.0,
    max_waiting_volunteers: Annotated[
        int,
        typer.Option(
            envvar="FERRY_BROKER_MAX_WAITING_VOLUNTEERS",
            help="Most volunteer polls waiting at once (with --redis: over all instances).",
        ),
    ] = 10000,
    max_waiting_clients: Annotated[
        int,
        typer.Option(
            envvar="FERRY_BROKER_MAX_WAITING_CLIENTS",
            help="Most client offers waiting at once (with --redis: over all instances).",
        ),
    ] = 1000,
    max_held_polls: Annotated[
        int,
        typer.Option(
            envvar="FERRY_BROKER_MAX_HELD_POLLS",
            help="Most volunteer polls this instance holds open at once.",
        ),
    ] = 20000,
    max_held_offers: Annotated[
        int,
        typer.Option(
            envvar="FERRY_BROKER_MAX_HELD_OFFERS",
            help="Most client offers this instance holds open at once.",
        ),
    ] = 2000,
    busy_retry_after: Annotated[
        float,
        typer.Option(
            envvar="FERRY_BROKER_BUSY_RETRY_AFTER",
            help="Seconds a 503 from a full, closing or store-less broker asks callers to "
            "wait (Retry-After).",
        ),
    ] = 5.0,
    ice_server: Annotated[
        list[str] | None,
        typer.Option(
            envvar="FERRY_BROKER_ICE_SERVER",
            help="A STUN or TURN server handed to clients and volunteers for ICE: "
            "stun:HOST[:PORT] or turn:HOST[:PORT][?transport=udp|tcp] (turns: for TLS); "
            "repeat for several. TURN needs --turn-secret-file.",
        ),
    ] = None,
    ice_servers_per_peer: Annotated[
        int,
        typer.Option(
            envvar="FERRY_BROKER_ICE_SERVERS_PER_PEER",
            help="At most this many STUN and this many TURN servers go to each peer, chosen "
            "at random per request (so one blocked server does not stop everyone).",
        ),
    ] = 2,
    turn_secret_file: Annotated[
        Path | None,
        typer.Option(
            envvar="FERRY_BROKER_TURN_SECRET_FILE",
            help="A file holding the TURN REST shared secret (coturn's static-auth-secret); "
            "short-lived TURN credentials are minted from it per peer. Keep it readable by "
            "the broker's user only.",
        ),
    ] = None,
    turn_credential_ttl: Annotated[
        float,
        typer.Option(
            envvar="FERRY_BROKER_TURN_CREDENTIAL_TTL",
            help="Seconds a minted TURN credential stays valid (60..86400).",
        ),
    ] = 3600.0,
    metrics_allow: Annotated[
        list[str] | None,
        typer.Option(
            envvar="FERRY_BROKER_METRICS_ALLOW",
            metavar="NETWORK",
            help="A network (CIDR) whose requests GET /metrics answers (repeatable; default: "
            "loopback and private networks). Requests through the front never get it.",
        ),
    ] = None,
    ready_file: Annotated[Path | None, _ready_file_option("BROKER")] = None,
    unsafe_logging: Annotated[bool, _unsafe_logging_option("BROKER")] = False,
    verbose: Annotated[bool, _verbose_option("BROKER")] = False,
) -> None:
    """Run a broker: matches clients with volunteers."""
    from prometheus_client import CollectorRegistry

    from ferry.broker.server import DEFAULT_METRICS_ALLOW, Broker, BrokerConfig

    _logging(verbose, unsafe_logging)
    if not egress:
        console.print("[bold red]ferry broker:[/] give at least one --egress URL")
        raise typer.Exit(2)
    try:
        host, port = parse_listen(listen)
        config = BrokerConfig(
            host=host,
            port=port,
            allowed_egresses=tuple(egress),
            redis_url=redis_url,
            trusted_source_header=trusted_source_header,
            offer_rate=offer_rate,
            offer_burst=offer_burst,
            poll_rate=poll_rate,
            poll_burst=poll_burst,
            poll_timeout=poll_timeout,
            client_timeout=client_timeout,
            max_waiting_volunteers=max_waiting_volunteers,
            max_waiting_clients=max_waiting_clients,
            max_held_polls=max_held_polls,
            max_held_offers=max_held_offers,
            busy_retry_after=busy_retry_after,
            ice_servers=tuple(_ice_server_values(ice_server, "--ice-server", user=False)),
            ice_servers_per_peer=ice_servers_per_peer,
            turn_secret=read_turn_secret(turn_secret_file) if turn_secret_file else None,
            turn_credential_ttl=turn_credential_ttl,
            metrics_allow=tuple(metrics_allow) if metrics_allow else DEFAULT_METRICS_ALLOW,
        )
    except ConfigError as exc:
        console.print(f"[bold red]ferry broker:[/] {exc}")
        raise typer.Exit(2) from None

    if trusted_source_header is None and is_loopback_host(host):
        console.print(
            "[yellow]The broker listens on loopback: if a reverse proxy or CDN front forwards "
            "to it, set --trusted-source-header X-Forwarded-For (and have the front set it), or "
            "every client shares one rate limit.[/]"
        )

    async def main(stop: asyncio.Event) -> None:
        server = Broker(config, registry=CollectorRegistry())
        url = await server.start()
        try:
            console.print(f"ferry broker listening on {url}, sending volunteers to:")
            for url_ in egress:
                console.print(f"  {url_}")
            console.print(_ice_summary(config))
            write_ready_file(ready_file, {"broker": url})
            await stop.wait()
        finally:
            await server.close()

    run_until_signal(main)


def _ice_summary(config: BrokerConfig) -> str:
    """One line on the ICE servers a broker hands out (never the TURN secret)."""
    stun = sum(1 for server in config.ice_servers if not server.is_turn)
    turn = len(config.ice_servers) - stun
    if not config.ice_servers:
        return (
            "ICE servers: none (peers gather host candidates only; peers behind two home "
            "routers will not connect: see --ice-server)"
        )
    credentials = (
        ""
        if not turn
        else f" (credentials valid {config.turn_credential_ttl:g} s, minted per peer)"
        if config.turn_secret is not None
        else " (with their configured credentials)"
    )
    return (
        f"ICE servers: {stun} STUN, {turn} TURN{credentials}; at most "
        f"{config.ice_servers_per_peer} of each kind per peer, chosen at random"
    )


def _ice_server_values(values: list[str] | None, flag: str, *, user: bool) -> list[IceServer]:
    """``--ice-server`` values as ICE servers; :class:`ConfigError` naming the flag. A user's
    own TURN server (client, volunteer) may carry ``USER:PASSWORD@``; the broker's may not."""
    servers = []
    for value in values or ():
        try:
            servers.append(parse_user_ice_server(value) if user else IceServer(value))
        except IceServerError as exc:
            raise ConfigError(f"{flag} {value.split('@')[-1]!r}: {exc}") from None
    return servers


@app.command("egress", cls=RoleCommand)
def egress_command(
    ctx: typer.Context,
    config_file: Annotated[Path | None, config_option("EGRESS")] = None,
    print_config: Annotated[bool, print_config_option("EGRESS")] = False,
    listen: Annotated[
        str, typer.Option(envvar="FERRY_EGRESS_LISTEN", help="Address to listen on, HOST:PORT.")
    ] = "127.0.0.1:8443",
    state_dir: Annotated[
        Path,
        typer.Option(
            envvar="FERRY_EGRESS_STATE_DIR", help="Folder for the egress's key and certificate."
        ),
    ] = Path("ferry-egress"),
    public_url: Annotated[
        str | None,
        typer.Option(
            envvar="FERRY_EGRESS_PUBLIC_URL",
            help="The ws:// or wss:// URL volunteers reach this egress at "
            "(default: built from --listen).",
        ),
    ] = None,
    unsafe_allow_private_destinations: Annotated[
        bool,
        typer.Option(
            envvar="FERRY_EGRESS_UNSAFE_ALLOW_PRIVATE_DESTINATIONS",
            help="Let clients reach loopback and private addresses (local testing only).",
        ),
    ] = False,
    allow_destination: Annotated[
        list[str] | None,
        typer.Option(
            envvar="FERRY_EGRESS_ALLOW_DESTINATION",
            metavar="RULE",
            help="Allow a network (and ports) that the policy would refuse, e.g. "
            "10.1.2.0/24:443 (repeatable). See docs/operating.md for the rule syntax.",
        ),
    ] = None,
    deny_destination: Annotated[
        list[str] | None,
        typer.Option(
            envvar="FERRY_EGRESS_DENY_DESTINATION",
            metavar="RULE",
            help="Refuse a network (and ports), e.g. 203.0.113.0/24 or *:6881-6999 "
            "(repeatable; deny rules win over allow rules).",
        ),
    ] = None,
    deny_ports: Annotated[
        str,
        typer.Option(
            envvar="FERRY_EGRESS_DENY_PORTS",
            help="Ports refused on every address unless an allow rule names them.",
        ),
    ] = "25,119,135-139,445,563",
    nat64_prefix: Annotated[
        list[str] | None,
        typer.Option(
            envvar="FERRY_EGRESS_NAT64_PREFIX",
            metavar="PREFIX",
            help="A NAT64 prefix of this site besides 64:ff9b::/96, e.g. 2001:db8:64::/96 "
            "(repeatable): its addresses are judged by the IPv4 address they embed.",
        ),
    ] = None,
    event_loop: Annotated[EventLoop, _event_loop_option("EGRESS")] = EventLoop.UVLOOP,
    max_sessions: Annotated[
        int,
        typer.Option(
            envvar="FERRY_EGRESS_MAX_SESSIONS",
            min=1,
            help='Client sessions at once; a new one beyond it is refused ("egress full").',
        ),
    ] = 10000,
    max_handshakes: Annotated[
        int,
        typer.Option(
            envvar="FERRY_EGRESS_MAX_HANDSHAKES",
            min=1,
            help="New sessions in their handshake at once (they count toward --max-sessions "
            "only once it completes); further new sessions wait.",
        ),
    ] = 256,
    handshake_timeout: Annotated[
        float,
        typer.Option(
            envvar="FERRY_EGRESS_HANDSHAKE_TIMEOUT",
            min=0.001,
            help="Seconds a new session has to complete its handshake before it is dropped.",
        ),
    ] = 10.0,
    handshakes_per_relay_burst: Annotated[
        int,
        typer.Option(
            envvar="FERRY_EGRESS_HANDSHAKES_PER_RELAY_BURST",
            min=1,
            help="New sessions one volunteer's relay WebSocket may start at once.",
        ),
    ] = 4,
    handshakes_per_relay_per_second: Annotated[
        float,
        typer.Option(
            envvar="FERRY_EGRESS_HANDSHAKES_PER_RELAY_PER_SECOND",
            min=0.001,
            help="New sessions one relay WebSocket may start per second after its burst.",
        ),
    ] = 0.5,
    max_streams_per_session: Annotated[
        int,
        typer.Option(
            envvar="FERRY_EGRESS_MAX_STREAMS_PER_SESSION",
            min=1,
            help="Streams (TCP connections) one session may have open at once.",
        ),
    ] = 256,
    session_buffer_bytes: Annotated[
        int,
        typer.Option(
            envvar="FERRY_EGRESS_SESSION_BUFFER_BYTES",
            min=65536,
            help="Bytes one session may hold in the egress in each direction.",
        ),
    ] = 8 * 1024 * 1024,
    buffer_budget_bytes: Annotated[
        int,
        typer.Option(
            envvar="FERRY_EGRESS_BUFFER_BUDGET_BYTES",
            min=65536,
            help="Bytes all sessions together may hold read from destinations and not yet "
            "acknowledged; beyond it the sessions holding the most stop reading.",
        ),
    ] = 512 * 1024 * 1024,
    session_idle_timeout: Annotated[
        float,
        typer.Option(
            envvar="FERRY_EGRESS_SESSION_IDLE_TIMEOUT",
            min=0.001,
            help="Seconds without a packet from a client before its session ends.",
        ),
    ] = 30.0,
    stream_idle_timeout: Annotated[
        float,
        typer.Option(
            envvar="FERRY_EGRESS_STREAM_IDLE_TIMEOUT",
            min=0.001,
            help="Seconds without a byte either way before a stream is reset.",
        ),
    ] = 300.0,
    drain_seconds: Annotated[
        float,
        typer.Option(
            envvar="FERRY_EGRESS_DRAIN_SECONDS",
            min=0.0,
            help="On SIGTERM, seconds open streams may run before the egress closes them "
            "(new sessions are refused at once; a second SIGTERM or a SIGINT stops now).",
        ),
    ] = 30.0,
    admin_listen: Annotated[
        str | None,
        typer.Option(
            envvar="FERRY_EGRESS_ADMIN_LISTEN",
            help="HOST:PORT serving /healthz and /metrics, apart from the relay listener; "
            "0 turns it off. Default: 127.0.0.1:9464 (skipped with a warning if busy).",
        ),
    ] = None,
    ready_file: Annotated[Path | None, _ready_file_option("EGRESS")] = None,
    unsafe_logging: Annotated[bool, _unsafe_logging_option("EGRESS")] = False,
    verbose: Annotated[bool, _verbose_option("EGRESS")] = False,
) -> None:
    """Run an egress: the exit from ferry to the internet."""
    from prometheus_client import CollectorRegistry

    from ferry.egress.policy_reload import PolicyReloader, destination_policy
    from ferry.egress.server import Egress, EgressConfig

    _logging(verbose, unsafe_logging)
    try:
        host, port = parse_listen(listen)
        policy = destination_policy(
            tuple(allow_destination or ()),
            tuple(deny_destination or ()),
            deny_ports,
            allow_private=unsafe_allow_private_destinations,
            nat64_prefixes=tuple(nat64_prefix or ()),
        )
        admin_host: str = "127.0.0.1"
        admin_port: int | None = DEFAULT_EGRESS_ADMIN_PORT
        if admin_listen is not None:
            if admin_listen.strip() == "0":
                admin_port = None
            else:
                admin_host, admin_port = parse_listen(admin_listen, flag="--admin-listen")
        config = EgressConfig(
            state_dir=state_dir,
            host=host,
            port=port,
            public_url=public_url,
            policy=policy,
            max_sessions=max_sessions,
            max_handshakes=max_handshakes,
            handshake_timeout=handshake_timeout,
            handshakes_per_relay_burst=handshakes_per_relay_burst,
            handshakes_per_relay_per_second=handshakes_per_relay_per_second,
            max_streams_per_session=max_streams_per_session,
            session_buffer_bytes=session_buffer_bytes,
            buffer_budget_bytes=buffer_budget_bytes,
            session_idle_timeout=session_idle_timeout,
            stream_idle_timeout=stream_idle_timeout,
            drain_seconds=drain_seconds,
            admin_host=admin_host,
            admin_port=admin_port,
            admin_optional=admin_listen is None,
        )
    except ConfigError as exc:
        console.print(f"[bold red]ferry egress:[/] {exc}")
        raise typer.Exit(2) from None

    async def main(stop: asyncio.Event) -> None:
        server = Egress(config, registry=CollectorRegistry())
        bridge = await server.start()
        # SIGTERM drains; a second SIGTERM, or SIGINT at any time, stops at once.
        drain_requested, stop_now = asyncio.Event(), asyncio.Event()

        def on_sigterm() -> None:
            (stop_now if drain_requested.is_set() else drain_requested).set()

        def on_sigint() -> None:
            drain_requested.set()
            stop_now.set()

        policy_reloader = PolicyReloader(server, ConfigReloader(ctx), server.metrics.registry)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, policy_reloader.reload)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        if stop.is_set():  # a signal came while starting
            on_sigint()
        try:
            if server.created_identity:
                console.print(f"Created a new egress identity in {state_dir}.")
            console.print(f"ferry egress listening for volunteers at {bridge.url}")
            if unsafe_allow_private_destinations:
                console.print("[yellow]Private and loopback destinations are allowed.[/]")
            console.print(f"Bridge line for clients (also in {state_dir / 'bridge-line'}):")
            typer.echo(str(bridge))
            if server.admin_url is not None:
                console.print(f"Admin address (/healthz, /metrics): {server.admin_url}")
            ready: dict[str, object] = {"egress": bridge.url, "bridge": str(bridge)}
            if server.admin_url is not None:
                ready["admin"] = server.admin_url
            write_ready_file(ready_file, ready)
            await drain_requested.wait()
            await server.drain(stop_now=stop_now)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            await server.close()

    run_until_signal(main, event_loop)


def _check_pairing_option(code: str) -> None:
    """Raise :class:`ConfigError` unless ``code`` is a valid ``--pairing`` code."""
    from ferry.core.broker_messages import MessageError, check_pairing

    try:
        check_pairing(code, "--pairing")
    except MessageError as exc:
        raise ConfigError(str(exc)) from None


@app.command(cls=RoleCommand)
def volunteer(
    broker_url: Annotated[
        str, typer.Option("--broker", envvar="FERRY_VOLUNTEER_BROKER", help="The broker's URL.")
    ],
    config_file: Annotated[Path | None, config_option("VOLUNTEER")] = None,
    print_config: Annotated[bool, print_config_option("VOLUNTEER")] = False,
    capacity: Annotated[
        int,
        typer.Option(envvar="FERRY_VOLUNTEER_CAPACITY", min=1, max=1000, help="Clients at once."),
    ] = 5,
    max_rate: Annotated[
        str,
        typer.Option(
            envvar="FERRY_VOLUNTEER_MAX_RATE",
            metavar="BYTES_PER_S",
            help="Bytes per second relayed, all clients and both directions together; over it, "
            "datagrams wait up to 0.2 s for their turn, then are dropped. "
            "Suffixes k, M, G (x1000) or Ki, Mi, Gi (x1024), e.g. 2M. "
            "0 = unlimited.",
        ),
    ] = "0",
    quota: Annotated[
        str,
        typer.Option(
            envvar="FERRY_VOLUNTEER_QUOTA",
            metavar="BYTES",
            help="Bytes relayed per UTC day; once reached, relays end and the volunteer waits "
            "for 00:00 UTC. Same suffixes as --max-rate, e.g. 10G. 0 = unlimited.",
        ),
    ] = "0",
    test_impair_loss: Annotated[float, _impair_option("LOSS", "drop")] = 0.0,
    test_impair_duplicate: Annotated[float, _impair_option("DUPLICATE", "send twice")] = 0.0,
    test_impair_reorder: Annotated[float, _impair_option("REORDER", "delay")] = 0.0,
    test_impair_corrupt: Annotated[float, _impair_option("CORRUPT", "flip a bit of")] = 0.0,
    test_impair_seed: Annotated[
        int,
        typer.Option(
            envvar="FERRY_VOLUNTEER_TEST_IMPAIR_SEED",
            hidden=True,
            help="(testing only) Seed of the --test-impair-* faults.",
        ),
    ] = 0,
    ice_address: Annotated[list[str] | None, _ice_address_option("VOLUNTEER")] = None,
    sctp_packets_per_ack: Annotated[int | None, _sctp_packets_per_ack_option("VOLUNTEER")] = None,
    offer_local_candidates: Annotated[bool, _offer_local_candidates_option("VOLUNTEER")] = False,
    stun: Annotated[list[str] | None, _stun_option("VOLUNTEER")] = None,
    ice_server: Annotated[list[str] | None, _ice_server_option("VOLUNTEER")] = None,
    broker_ice_servers: Annotated[bool, _broker_ice_servers_option("VOLUNTEER")] = True,
    unsafe_allow_internal_ice_servers: Annotated[
        bool, _unsafe_internal_ice_servers_option("VOLUNTEER")
    ] = False,
    egress_allow: Annotated[
        list[str] | None,
        typer.Option(
            "--egress-allow",
            envvar="FERRY_VOLUNTEER_EGRESS_ALLOW",
            metavar="URL_OR_HOST",
            help="Relay only to this egress: a full URL (wss://egress.example/v1/relay) or a "
            "host (egress.example), repeatable. Default: any egress the broker names, except "
            "on loopback, private, link-local and other internal addresses.",
        ),
    ] = None,
    unsafe_allow_internal_egress: Annotated[
        bool,
        typer.Option(
            "--unsafe-allow-internal-egress",
            envvar="FERRY_VOLUNTEER_UNSAFE_ALLOW_INTERNAL_EGRESS",
            help="Relay to egresses on loopback, private and link-local addresses (tests and "
            "private networks only: a hostile broker could send this volunteer into its own "
            "machine or network).",
        ),
    ] = False,
    pairing: Annotated[
        str | None,
        typer.Option(
            envvar="FERRY_VOLUNTEER_PAIRING",
            metavar="CODE",
            help="Private pairing code (16-64 of A-Z a-z 0-9 _ -): relay only for clients "
            "started with the same --pairing, and for no one else.",
        ),
    ] = None,
    event_loop: Annotated[EventLoop, _event_loop_option("VOLUNTEER")] = EventLoop.UVLOOP,
    webrtc: Annotated[str, _webrtc_option("VOLUNTEER")] = "auto",
    browser: Annotated[str | None, _browser_option("VOLUNTEER")] = None,
    ready_file: Annotated[Path | None, _ready_file_option("VOLUNTEER")] = None,
    unsafe_logging: Annotated[bool, _unsafe_logging_option("VOLUNTEER")] = False,
    verbose: Annotated[bool, _verbose_option("VOLUNTEER")] = False,
) -> None:
    """Run a volunteer: relay encrypted traffic for people behind censorship."""
    from prometheus_client import CollectorRegistry

    from ferry.core.volunteer_limits import parse_byte_count
    from ferry.transport.browser_webrtc import BrowserEngineConfig, WebRtcStack
    from ferry.volunteer.impairment import RelayImpairment
    from ferry.volunteer.relay import Volunteer, VolunteerConfig

    _logging(verbose, unsafe_logging)
    try:
        config = VolunteerConfig(
            broker_url=broker_url,
            capacity=capacity,
            max_rate=parse_byte_count(max_rate, what="--max-rate"),
            quota=parse_byte_count(quota, what="--quota"),
            impairment=RelayImpairment(
                loss=test_impair_loss,
                duplicate=test_impair_duplicate,
                reorder=test_impair_reorder,
                corrupt=test_impair_corrupt,
                seed=test_impair_seed,
            ),
            webrtc=_webrtc_config(
                ice_address, sctp_packets_per_ack, ice_server, offer_local_candidates
            ),
            pairing=pairing,
            stun_servers=_stun_servers(stun),
            broker_ice_servers=broker_ice_servers,
            allow_internal_ice_servers=unsafe_allow_internal_ice_servers,
            egress_allow=tuple(egress_allow or ()),
            allow_internal_egress=unsafe_allow_internal_egress,
        )
        volunteer_webrtc = _webrtc_mode(webrtc)
        engine_config = BrowserEngineConfig(executable=browser)
    except ConfigError as exc:
        console.print(f"[bold red]ferry volunteer:[/] {exc}")
        raise typer.Exit(2) from None
    if config.impairment is not None and config.impairment.active:
        console.print(
            "[bold yellow]TESTING ONLY: this volunteer damages what it relays on purpose "
            "(--test-impair-*).[/]"
        )

    async def main(stop: asyncio.Event) -> None:
        registry = CollectorRegistry()
        stack = WebRtcStack(volunteer_webrtc, config.webrtc, engine_config, registry=registry)
        try:
            stack_status = await stack.start()
        except LocalError as exc:
            console.print(f"[bold red]ferry volunteer:[/] {exc}")
            raise typer.Exit(1) from None
        relay = Volunteer(config, peers=stack, registry=registry)
        relay.start()
        try:
            console.print(
                "WebRTC: "
                + (
                    f"browser engine ({stack_status.detail})"
                    if stack_status.stack == "browser"
                    else f"Python ({stack_status.detail})"
                )
            )
            limits = (f", at most {config.max_rate} bytes/s" if config.max_rate else "") + (
                f", at most {config.quota} bytes per UTC day" if config.quota else ""
            )
            console.print(
                f"ferry volunteer polling {broker_url} for clients "
                f"(up to {capacity} at once{limits})"
            )
            write_ready_file(
                ready_file,
                {
                    "broker": broker_url,
                    "capacity": capacity,
                    "max_rate": config.max_rate,
                    "quota": config.quota,
                    "webrtc": stack_status.stack,
                },
            )
            await stop.wait()
        finally:
            await relay.close()
            await stack.close()

    run_until_signal(main, event_loop)


@app.command(cls=RoleCommand)
def client(
    broker_url: Annotated[
        str, typer.Option("--broker", envvar="FERRY_CLIENT_BROKER", help="The broker's URL.")
    ],
    bridge: Annotated[
        str,
        typer.Option(envvar="FERRY_CLIENT_BRIDGE", help="The bridge line of the egress to use."),
    ],
    config_file: Annotated[Path | None, config_option("CLIENT")] = None,
    print_config: Annotated[bool, print_config_option("CLIENT")] = False,
    listen: Annotated[
        str,
        typer.Option(envvar="FERRY_CLIENT_LISTEN", help="Proxy address, HOST:PORT (loopback)."),
    ] = "127.0.0.1:1080",
    volunteers: Annotated[
        int,
        typer.Option(envvar="FERRY_CLIENT_VOLUNTEERS", min=1, max=8, help="Volunteers to keep."),
    ] = 2,
    spare_volunteers: Annotated[
        int,
        typer.Option(
            envvar="FERRY_CLIENT_SPARE_VOLUNTEERS",
            min=0,
            max=4,
            help="Extra volunteers kept connected and ready to take over at once.",
        ),
    ] = 1,
    username: Annotated[
        str | None,
        typer.Option(envvar="FERRY_CLIENT_USERNAME", help="Require this SOCKS5/HTTP username."),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(envvar="FERRY_CLIENT_PASSWORD", help="Require this password with it."),
    ] = None,
    status_every: Annotated[
        float,
        typer.Option(
            envvar="FERRY_CLIENT_STATUS_EVERY",
            min=0,
            help="Print what the client is doing (volunteers, their delay and speed) every "
            "this many seconds; 0 = never.",
        ),
    ] = 30.0,
    ice_address: Annotated[list[str] | None, _ice_address_option("CLIENT")] = None,
    sctp_packets_per_ack: Annotated[int | None, _sctp_packets_per_ack_option("CLIENT")] = None,
    offer_local_candidates: Annotated[bool, _offer_local_candidates_option("CLIENT")] = False,
    stun: Annotated[list[str] | None, _stun_option("CLIENT")] = None,
    ice_server: Annotated[list[str] | None, _ice_server_option("CLIENT")] = None,
    broker_ice_servers: Annotated[bool, _broker_ice_servers_option("CLIENT")] = True,
    unsafe_allow_internal_ice_servers: Annotated[
        bool, _unsafe_internal_ice_servers_option("CLIENT")
    ] = False,
    front: Annotated[
        str | None,
        typer.Option(
            envvar="FERRY_CLIENT_FRONT",
            metavar="HOST[:PORT]",
            help="Reach the broker through this front (a CDN or reverse proxy): the TCP and "
            "TLS connection (SNI) go to HOST, the HTTP Host header inside TLS names the "
            "broker of --broker.",
        ),
    ] = None,
    broker_ca: Annotated[
        Path | None,
        typer.Option(
            envvar="FERRY_CLIENT_BROKER_CA",
            metavar="PEM_FILE",
            help="Trust only these CA certificates for the broker's (or front's) TLS, "
            "instead of the system's (a private CA).",
        ),
    ] = None,
    pairing: Annotated[
        str | None,
        typer.Option(
            envvar="FERRY_CLIENT_PAIRING",
            metavar="CODE",
            help="Private pairing code from a volunteer's private link: use only "
            "volunteers holding the same code.",
        ),
    ] = None,
    ui_listen: Annotated[
        str,
        typer.Option(
            envvar="FERRY_CLIENT_UI_LISTEN",
            help="Address of the local status page, HOST:PORT on loopback (0 = any free "
            "port); 'auto' = the proxy's port + 1 (any free port if the proxy's is 0; if that "
            "port is taken, the client warns and runs without the page); 'off'.",
        ),
    ] = "auto",
    lang: Annotated[
        str | None,
        typer.Option(
            envvar="FERRY_CLIENT_LANG",
            help="Language of the page and messages: en, zh_CN, zh_TW, fa, ru "
            "(default: from LC_ALL, LC_MESSAGES or LANG).",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            envvar="FERRY_CLIENT_CHECK",
            help="Test each step of the connection in order, say which one fails, and exit "
            "(non-zero if a step failed; at most 60 s).",
        ),
    ] = False,
    check_url: Annotated[
        str | None,
        typer.Option(
            envvar="FERRY_CLIENT_CHECK_URL",
            help="With --check: fetch this http:// URL through the chain (default: a test "
            "the egress answers itself).",
        ),
    ] = None,
    print_browser_setup: Annotated[
        bool,
        typer.Option(
            "--print-browser-setup",
            envvar="FERRY_CLIENT_PRINT_BROWSER_SETUP",
            help="Print what to enter in Firefox, Chromium and the system proxy settings, "
            "and exit.",
        ),
    ] = False,
    event_loop: Annotated[EventLoop, _event_loop_option("CLIENT")] = EventLoop.UVLOOP,
    webrtc: Annotated[str, _webrtc_option("CLIENT")] = "auto",
    browser: Annotated[str | None, _browser_option("CLIENT")] = None,
    ready_file: Annotated[Path | None, _ready_file_option("CLIENT")] = None,
    unsafe_logging: Annotated[bool, _unsafe_logging_option("CLIENT")] = False,
    verbose: Annotated[bool, _verbose_option("CLIENT")] = False,
) -> None:
    """Run a client: a local SOCKS5/HTTP proxy that reaches the internet through ferry."""
    from ferry.client.app import ClientApp, ClientConfig, broker_ssl_context
    from ferry.client.local_page import LocalPageConfig
    from ferry.client.local_proxy import LocalProxyConfig
    from ferry.client.messages import DEFAULT_LANGUAGE, catalogue, choose_language
    from ferry.client.rendezvous import fronted_url
    from ferry.client.self_check import parse_check_url
    from ferry.client.session import TunnelConfig
    from ferry.client.status import format_status
    from ferry.core.bridge_line import BridgeLineDamagedError, parse_bridge_line
    from ferry.core.proxy_handshake import Credentials
    from ferry.transport.browser_webrtc import BrowserEngineConfig

    _logging(verbose, unsafe_logging)
    words = catalogue(DEFAULT_LANGUAGE)
    try:
        words = catalogue(choose_language(lang, os.environ))
        bridge_line = parse_bridge_line(bridge)
        host, port = parse_listen(listen)
        if (username is None) != (password is None):
            raise ConfigError("give both --username and --password, or neither")
        if pairing is not None:
            _check_pairing_option(pairing)
        stun_servers = _stun_servers(stun)
        webrtc_config = _webrtc_config(
            ice_address, sctp_packets_per_ack, ice_server, offer_local_candidates
        )
        if front is not None:
            fronted_url(broker_url, front)  # check it now, not at the first rendezvous
        broker_ssl_context(broker_ca)
        page_config = None
        ui_choice = ui_listen.strip().lower()
        if ui_choice != "off":
            if ui_choice == "auto":
                ui_host, ui_port = "127.0.0.1", (port + 1 if 0 < port < 65535 else 0)
            else:
                ui_host, ui_port = parse_listen(ui_listen, flag="--ui-listen")
            page_config = LocalPageConfig(host=ui_host, port=ui_port, language=words.language)
        check_fetch = parse_check_url(check_url)
        client_webrtc = _webrtc_mode(webrtc)
        engine_config = BrowserEngineConfig(executable=browser)
    except BridgeLineDamagedError:
        console.print(f"[bold red]ferry client:[/] {rich_escape(words.text('bridge.damaged'))}")
        raise typer.Exit(2) from None
    except ConfigError as exc:
        console.print(f"[bold red]ferry client:[/] {exc}")
        raise typer.Exit(2) from None
    credentials = (
        Credentials(username=username, password=password)
        if username is not None and password is not None
        else None
    )
    config = ClientConfig(
        broker_url=broker_url,
        tunnel=TunnelConfig(
            bridge=bridge_line,
            volunteers=volunteers,
            spare_volunteers=spare_volunteers,
            webrtc=webrtc_config,
        ),
        proxy=LocalProxyConfig(host=host, port=port, credentials=credentials),
        pairing=pairing,
        stun_servers=stun_servers,
        broker_ice_servers=broker_ice_servers,
        allow_internal_ice_servers=unsafe_allow_internal_ice_servers,
        front=front,
        broker_ca=broker_ca,
        page=page_config,
        page_optional=ui_choice == "auto",
        check_fetch=check_fetch,
        webrtc_mode=client_webrtc,
        browser=engine_config,
    )
    if print_browser_setup:
        _print_browser_setup(config, words)
        return
    if check:
        _run_client_check(config, words)
        return

    async def main(stop: asyncio.Event) -> None:
        client_app = ClientApp(config)
        try:
            proxy_host, proxy_port = await client_app.start()
        except LocalError as exc:
            await client_app.close()
            console.print(f"[bold red]ferry client:[/] {exc}")
            raise typer.Exit(1) from None
        try:
            console.print(words.text("cli.proxy", address=f"{proxy_host}:{proxy_port}"))
            if client_app.page_url:
                console.print(words.text("cli.page", url=client_app.page_url))
            stack_status = client_app.webrtc.stack_status()
            if stack_status.stack == "browser":
                console.print(f"WebRTC: browser engine ({stack_status.detail})")
            else:
                console.print(f"WebRTC: Python ({stack_status.detail})")
                console.print(f"[yellow]Warning:[/] {stack_status.warning}")
            console.print(words.text("cli.looking"))
            assert client_app.tunnel is not None
            session_task = asyncio.create_task(client_app.tunnel.ensure_session())
            stopper = asyncio.create_task(stop.wait())
            try:
                while not stop.is_set():
                    await asyncio.wait({session_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if stop.is_set():
                        break
                    try:
                        session_task.result()
                    except FerryError as exc:
                        waiting = words.text("cli.not_yet", detail=exc)
                        console.print(f"[yellow]{rich_escape(waiting)}[/]")
                        session_task = asyncio.create_task(client_app.tunnel.ensure_session())
                        continue
                    console.print(f"[green]{words.text('cli.connected')}[/]")
                    write_ready_file(
                        ready_file,
                        {
                            "proxy": f"{proxy_host}:{proxy_port}",
                            "broker": broker_url,
                            "egress": bridge_line.url,
                            **({"ui": client_app.page_url} if client_app.page_url else {}),
                            "webrtc": client_app.webrtc.stack_status().stack,
                        },
                    )
                    while status_every > 0 and not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), status_every)
                        if not stop.is_set():
                            console.print(
                                format_status(
                                    client_app.tunnel.status(), words, client_app.nat.behaviour
                                )
                            )
                    await stop.wait()
            finally:
                stopper.cancel()
                session_task.cancel()
                with contextlib.suppress(BaseException):
                    await session_task
        finally:
            await client_app.close()

    run_until_signal(main, event_loop)


@app.command("nat")
def nat_command(
    stun: Annotated[
        list[str],
        typer.Option(
            envvar="FERRY_NAT_STUN",
            metavar="URL",
            help=(
                "An RFC 5780 STUN server, stun:HOST[:PORT] (repeatable; tried in order until one "
                "can run the tests)."
            ),
        ),
    ],
    json_output: Annotated[
        bool, typer.Option("--json", envvar="FERRY_NAT_JSON", help="Print one JSON object.")
    ] = False,
) -> None:
    """Show this host's NAT behaviour (RFC 5780 mapping and filtering) and its class."""
    from ferry.transport.stun import discover_with_servers

    try:
        servers = _stun_servers(stun)
    except ConfigError as exc:
        console.print(f"[bold red]ferry nat:[/] {exc}")
        raise typer.Exit(2) from None
    behaviour = asyncio.run(discover_with_servers(servers))
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "mapping": behaviour.mapping.value,
                    "filtering": behaviour.filtering.value,
                    "class": behaviour.nat_class.value,
                }
            )
        )
    else:
        typer.echo(f"mapping:   {behaviour.mapping.value}")
        typer.echo(f"filtering: {behaviour.filtering.value}")
        typer.echo(f"class:     {behaviour.nat_class.value}")


def _print_browser_setup(config: ClientConfig, words: Catalogue) -> None:
    """``ferry client --print-browser-setup``: the values the page shows, on the terminal."""
    from ferry.client.local_page import browser_setup, format_browser_setup

    page = config.page
    if page is None or page.port == 0:
        console.print(
            "[bold red]ferry client:[/] --print-browser-setup needs a fixed --ui-listen port "
            "(the proxy file is served by the status page)"
        )
        raise typer.Exit(2)
    if config.proxy.port == 0:
        console.print(
            "[bold red]ferry client:[/] --print-browser-setup needs a fixed --listen port"
        )
        raise typer.Exit(2)
    host = f"[{page.host}]" if ":" in page.host else page.host
    setup = browser_setup((config.proxy.host, config.proxy.port), f"http://{host}:{page.port}/")
    typer.echo(format_browser_setup(setup, words))


def _run_client_check(config: ClientConfig, words: Catalogue) -> None:
    """``ferry client --check``: run the self-check, print each step, exit 1 on a failure."""
    from ferry.client.app import ClientApp
    from ferry.client.self_check import StepOutcome, format_result, format_summary

    failed = False

    async def main(stop: asyncio.Event) -> None:
        nonlocal failed
        client_app = ClientApp(config)
        try:
            console.print(f"[bold]{words.text('cli.check_heading')}[/]")
            number = 0

            def show(result: StepResult) -> None:
                nonlocal number
                number += 1
                colour = {"ok": "green", "failed": "bold red", "bypassed": "yellow"}.get(
                    result.outcome.value, "dim"
                )
                text = format_result(result, number, words)
                console.print(f"[{colour}]{rich_escape(text)}[/]")

            results = await client_app.self_check().run(show)
            failed = any(result.outcome is StepOutcome.FAILED for result in results)
            console.print(f"[bold]{rich_escape(format_summary(results, words))}[/]")
        finally:
            await client_app.close()

    run_until_signal(main)
    if failed:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the ``ferry`` command."""
    app()
