"""``ferry client``: its options and the :class:`ClientConfig` they build. The lifecycle is
:class:`ferry.client.role.ClientRole` (``--check``: :class:`~ferry.client.role.ClientCheckRole`),
run by :func:`ferry.roles.run_role`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape as rich_escape

from ferry.command_options import (
    broker_ice_servers_option,
    browser_option,
    check_pairing_option,
    config_or_exit,
    event_loop_option,
    ice_address_option,
    ice_server_option,
    offer_local_candidates_option,
    page_config,
    parse_listen,
    ready_file_option,
    sctp_packets_per_ack_option,
    setup_logging,
    stun_option,
    stun_servers,
    unsafe_internal_ice_servers_option,
    unsafe_logging_option,
    verbose_option,
    webrtc_config,
    webrtc_mode,
    webrtc_option,
)
from ferry.command_settings import config_option, print_config_option
from ferry.errors import ConfigError
from ferry.roles import EventLoop, console, run_role

if TYPE_CHECKING:
    from ferry.client.app import ClientConfig
    from ferry.client.messages import Catalogue
    from ferry.core.proxy_handshake import Credentials

BrokerUrl = Annotated[
    str, typer.Option("--broker", envvar="FERRY_CLIENT_BROKER", help="The broker's URL.")
]
Bridge = Annotated[
    str, typer.Option(envvar="FERRY_CLIENT_BRIDGE", help="The bridge line of the egress to use.")
]
ConfigFile = Annotated[Path | None, config_option("CLIENT")]
PrintConfig = Annotated[bool, print_config_option("CLIENT")]
Listen = Annotated[
    str, typer.Option(envvar="FERRY_CLIENT_LISTEN", help="Proxy address, HOST:PORT (loopback).")
]
Volunteers = Annotated[
    int, typer.Option(envvar="FERRY_CLIENT_VOLUNTEERS", min=1, max=8, help="Volunteers to keep.")
]
SpareVolunteers = Annotated[
    int,
    typer.Option(
        envvar="FERRY_CLIENT_SPARE_VOLUNTEERS",
        min=0,
        max=4,
        help="Extra volunteers kept connected and ready to take over at once.",
    ),
]
Username = Annotated[
    str | None,
    typer.Option(envvar="FERRY_CLIENT_USERNAME", help="Require this SOCKS5/HTTP username."),
]
Password = Annotated[
    str | None,
    typer.Option(envvar="FERRY_CLIENT_PASSWORD", help="Require this password with it."),
]
StatusEvery = Annotated[
    float,
    typer.Option(
        envvar="FERRY_CLIENT_STATUS_EVERY",
        min=0,
        help="Print what the client is doing (volunteers, their delay and speed) every "
        "this many seconds; 0 = never.",
    ),
]
IceAddress = Annotated[list[str] | None, ice_address_option("CLIENT")]
SctpPacketsPerAck = Annotated[int | None, sctp_packets_per_ack_option("CLIENT")]
OfferLocalCandidates = Annotated[bool, offer_local_candidates_option("CLIENT")]
Stun = Annotated[list[str] | None, stun_option("CLIENT")]
IceServers = Annotated[list[str] | None, ice_server_option("CLIENT")]
BrokerIceServers = Annotated[bool, broker_ice_servers_option("CLIENT")]
UnsafeAllowInternalIceServers = Annotated[bool, unsafe_internal_ice_servers_option("CLIENT")]
Front = Annotated[
    str | None,
    typer.Option(
        envvar="FERRY_CLIENT_FRONT",
        metavar="HOST[:PORT]",
        help="Reach the broker through this front (a CDN or reverse proxy): the TCP and "
        "TLS connection (SNI) go to HOST, the HTTP Host header inside TLS names the "
        "broker of --broker.",
    ),
]
BrokerCa = Annotated[
    Path | None,
    typer.Option(
        envvar="FERRY_CLIENT_BROKER_CA",
        metavar="PEM_FILE",
        help="Trust only these CA certificates for the broker's (or front's) TLS, "
        "instead of the system's (a private CA).",
    ),
]
Pairing = Annotated[
    str | None,
    typer.Option(
        envvar="FERRY_CLIENT_PAIRING",
        metavar="CODE",
        help="Private pairing code from a volunteer's private link: use only "
        "volunteers holding the same code.",
    ),
]
UiListen = Annotated[
    str,
    typer.Option(
        envvar="FERRY_CLIENT_UI_LISTEN",
        help="Address of the local status page, HOST:PORT on loopback (0 = any free "
        "port); 'auto' = the proxy's port + 1 (any free port if the proxy's is 0; if that "
        "port is taken, the client warns and runs without the page); 'off'.",
    ),
]
Lang = Annotated[
    str | None,
    typer.Option(
        envvar="FERRY_CLIENT_LANG",
        help="Language of the page and messages: en, zh_CN, zh_TW, fa, ru "
        "(default: from LC_ALL, LC_MESSAGES or LANG).",
    ),
]
Check = Annotated[
    bool,
    typer.Option(
        "--check",
        envvar="FERRY_CLIENT_CHECK",
        help="Test each step of the connection in order, say which one fails, and exit "
        "(non-zero if a step failed; at most 60 s).",
    ),
]
CheckUrl = Annotated[
    str | None,
    typer.Option(
        envvar="FERRY_CLIENT_CHECK_URL",
        help="With --check: fetch this http:// URL through the chain (default: a test "
        "the egress answers itself).",
    ),
]
PrintBrowserSetup = Annotated[
    bool,
    typer.Option(
        "--print-browser-setup",
        envvar="FERRY_CLIENT_PRINT_BROWSER_SETUP",
        help="Print what to enter in Firefox, Chromium and the system proxy settings, and exit.",
    ),
]
EventLoopChoice = Annotated[EventLoop, event_loop_option("CLIENT")]
WebRtc = Annotated[str, webrtc_option("CLIENT")]
Browser = Annotated[str | None, browser_option("CLIENT")]
ReadyFile = Annotated[Path | None, ready_file_option("CLIENT")]
UnsafeLogging = Annotated[bool, unsafe_logging_option("CLIENT")]
Verbose = Annotated[bool, verbose_option("CLIENT")]


def _words(lang: str | None) -> Catalogue:
    """The messages in ``--lang``'s language, or the environment's."""
    from ferry.client.messages import catalogue, choose_language

    return config_or_exit("client", lambda: catalogue(choose_language(lang, os.environ)))


def _run_check(config: ClientConfig, words: Catalogue) -> None:
    """``ferry client --check``: run the self-check, print each step, exit 1 on a failure."""
    from ferry.client.role import ClientCheckRole

    check_role = ClientCheckRole(config, words)
    run_role(check_role, name="client")
    if check_role.failed:
        raise typer.Exit(1)


def _exit_on_config_error(words: Catalogue, error: ConfigError) -> typer.Exit:
    """Print ``error`` (a damaged bridge line in the user's language); the exit to raise."""
    from ferry.core.bridge_line import BridgeLineDamagedError

    if isinstance(error, BridgeLineDamagedError):
        console.print(f"[bold red]ferry client:[/] {rich_escape(words.text('bridge.damaged'))}")
    else:
        console.print(f"[bold red]ferry client:[/] {error}")
    return typer.Exit(2)


def _checked_access(
    username: str | None,
    password: str | None,
    broker_url: str,
    front: str | None,
    broker_ca: Path | None,
    pairing: str | None,
) -> Credentials | None:
    """The proxy's credentials (``--username`` and ``--password``: both or neither), once
    ``--pairing``, ``--front`` and ``--broker-ca`` are checked (now, not at the first
    rendezvous)."""
    from ferry.client.app import broker_ssl_context
    from ferry.client.rendezvous import fronted_url
    from ferry.core.proxy_handshake import Credentials

    if (username is None) != (password is None):
        raise ConfigError("give both --username and --password, or neither")
    if pairing is not None:
        check_pairing_option(pairing)
    if front is not None:
        fronted_url(broker_url, front)
    broker_ssl_context(broker_ca)
    if username is None or password is None:
        return None
    return Credentials(username=username, password=password)


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


def client(
    broker_url: BrokerUrl,
    bridge: Bridge,
    config_file: ConfigFile = None,
    print_config: PrintConfig = False,
    listen: Listen = "127.0.0.1:1080",
    volunteers: Volunteers = 2,
    spare_volunteers: SpareVolunteers = 1,
    username: Username = None,
    password: Password = None,
    status_every: StatusEvery = 30.0,
    ice_address: IceAddress = None,
    sctp_packets_per_ack: SctpPacketsPerAck = None,
    offer_local_candidates: OfferLocalCandidates = False,
    stun: Stun = None,
    ice_server: IceServers = None,
    broker_ice_servers: BrokerIceServers = True,
    unsafe_allow_internal_ice_servers: UnsafeAllowInternalIceServers = False,
    front: Front = None,
    broker_ca: BrokerCa = None,
    pairing: Pairing = None,
    ui_listen: UiListen = "auto",
    lang: Lang = None,
    check: Check = False,
    check_url: CheckUrl = None,
    print_browser_setup: PrintBrowserSetup = False,
    event_loop: EventLoopChoice = EventLoop.UVLOOP,
    webrtc: WebRtc = "auto",
    browser: Browser = None,
    ready_file: ReadyFile = None,
    unsafe_logging: UnsafeLogging = False,
    verbose: Verbose = False,
) -> None:
    """Run a client: a local SOCKS5/HTTP proxy that reaches the internet through ferry."""
    from ferry.client.app import ClientConfig
    from ferry.client.local_proxy import LocalProxyConfig
    from ferry.client.role import ClientRole
    from ferry.client.self_check import parse_check_url
    from ferry.client.session import TunnelConfig
    from ferry.core.bridge_line import parse_bridge_line
    from ferry.transport.browser_webrtc import BrowserEngineConfig

    setup_logging(verbose, unsafe_logging)
    words = _words(lang)
    try:
        bridge_line = parse_bridge_line(bridge)
        host, port = parse_listen(listen)
        credentials = _checked_access(username, password, broker_url, front, broker_ca, pairing)
        config = ClientConfig(
            broker_url=broker_url,
            tunnel=TunnelConfig(
                bridge=bridge_line,
                volunteers=volunteers,
                spare_volunteers=spare_volunteers,
                webrtc=webrtc_config(
                    ice_address, sctp_packets_per_ack, ice_server, offer_local_candidates
                ),
            ),
            proxy=LocalProxyConfig(host=host, port=port, credentials=credentials),
            pairing=pairing,
            stun_servers=stun_servers(stun),
            broker_ice_servers=broker_ice_servers,
            allow_internal_ice_servers=unsafe_allow_internal_ice_servers,
            front=front,
            broker_ca=broker_ca,
            page=page_config(ui_listen, port, words.language),
            page_optional=ui_listen.strip().lower() == "auto",
            check_fetch=parse_check_url(check_url),
            webrtc_mode=webrtc_mode(webrtc),
            browser=BrowserEngineConfig(executable=browser),
        )
    except ConfigError as exc:
        raise _exit_on_config_error(words, exc) from None
    if print_browser_setup:
        _print_browser_setup(config, words)
    elif check:
        _run_check(config, words)
    else:
        role = ClientRole(config, words, status_every)
        run_role(role, name="client", ready_file=ready_file, event_loop=event_loop)
