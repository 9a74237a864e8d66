"""Options and config-building helpers shared by the ``ferry ROLE`` commands.

Each role's own options live beside it (``ferry/<role>/command.py``); this module holds the
options several roles declare alike (``FERRY_<ROLE>_<FLAG>`` differs only by the role) and the
parsers that turn option text into config values, raising :class:`ConfigError` naming the flag.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import typer

from ferry.core.ice_servers import IceServer, IceServerError, parse_user_ice_server
from ferry.errors import ConfigError
from ferry.logs import configure as configure_logging
from ferry.roles import console

if TYPE_CHECKING:
    from ferry.client.local_page import LocalPageConfig
    from ferry.core.nat_behaviour import StunServer
    from ferry.transport.browser_webrtc import WebRtcMode
    from ferry.transport.webrtc import WebRtcConfig

Built = TypeVar("Built")


def config_or_exit(role: str, build: Callable[[], Built]) -> Built:
    """``build()``; a :class:`ConfigError` prints ``ferry ROLE: what is wrong`` and exits 2."""
    try:
        return build()
    except ConfigError as exc:
        console.print(f"[bold red]ferry {role}:[/] {exc}")
        raise typer.Exit(2) from None


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


def page_config(ui_listen: str, proxy_port: int, language: str) -> LocalPageConfig | None:
    """``--ui-listen`` → the local status page's config: ``off`` → ``None``; ``auto`` → the
    proxy's port + 1 on 127.0.0.1 (any free port if the proxy's is 0)."""
    from ferry.client.local_page import LocalPageConfig

    choice = ui_listen.strip().lower()
    if choice == "off":
        return None
    if choice == "auto":
        host, port = "127.0.0.1", (proxy_port + 1 if 0 < proxy_port < 65535 else 0)
    else:
        host, port = parse_listen(ui_listen, flag="--ui-listen")
    return LocalPageConfig(host=host, port=port, language=language)


def environment_language() -> str:
    """The language the environment asks for (LC_ALL, LC_MESSAGES, LANG)."""
    from ferry.client.messages import choose_language

    return choose_language(None, os.environ)


def setup_logging(verbose: bool, unsafe_logging: bool) -> None:
    """Configure the logs; warn on the terminal when ``--unsafe-logging`` is on."""
    configure_logging(verbose=verbose, unsafe_logging=unsafe_logging)
    if unsafe_logging:
        console.print(
            "[yellow]--unsafe-logging is on: logs will contain addresses and destinations.[/]"
        )


def webrtc_config(
    ice_addresses: list[str] | None,
    sctp_packets_per_ack: int | None = None,
    ice_servers: list[str] | None = None,
    offer_local_candidates: bool = False,
) -> WebRtcConfig:
    """The Python WebRTC settings of ``--ice-address``, ``--sctp-packets-per-ack``,
    ``--ice-server`` and ``--offer-local-candidates``."""
    import dataclasses

    from ferry.transport.webrtc import WebRtcConfig

    config = WebRtcConfig(
        host_candidate_addresses=tuple(ice_addresses) if ice_addresses else None,
        ice_servers=tuple(ice_server_values(ice_servers, "--ice-server", user=True)),
        offer_local_candidates=offer_local_candidates,
    )
    if sctp_packets_per_ack is None:
        return config
    return dataclasses.replace(config, sctp_packets_per_acknowledgement=sctp_packets_per_ack)


def ice_server_values(values: list[str] | None, flag: str, *, user: bool) -> list[IceServer]:
    """``--ice-server`` values as ICE servers; :class:`ConfigError` naming the flag. A user's
    own TURN server (client, volunteer) may carry ``USER:PASSWORD@``; the broker's may not."""
    servers = []
    for value in values or ():
        try:
            servers.append(parse_user_ice_server(value) if user else IceServer(value))
        except IceServerError as exc:
            raise ConfigError(f"{flag} {value.split('@')[-1]!r}: {exc}") from None
    return servers


def webrtc_mode(value: str) -> WebRtcMode:
    """``--webrtc``'s value; :class:`ConfigError` unless browser, python or auto."""
    from ferry.transport.browser_webrtc import WebRtcMode

    try:
        return WebRtcMode(value)
    except ValueError:
        raise ConfigError(f"--webrtc must be browser, python or auto, not {value!r}") from None


def stun_servers(urls: list[str] | None) -> tuple[StunServer, ...]:
    """``--nat-stun`` values as STUN servers; :class:`ConfigError` if one is not a STUN URL."""
    from ferry.core.nat_behaviour import parse_stun_url

    return tuple(parse_stun_url(url) for url in urls or ())


def check_pairing_option(code: str) -> None:
    """Raise :class:`ConfigError` unless ``code`` is a valid ``--pairing`` code."""
    from ferry.core.broker_messages import MessageError, check_pairing

    try:
        check_pairing(code, "--pairing")
    except MessageError as exc:
        raise ConfigError(str(exc)) from None


# -- options several roles declare alike ------------------------------------------------------


def event_loop_option(role: str) -> object:
    return typer.Option(
        "--event-loop",
        envvar=f"FERRY_{role}_EVENT_LOOP",
        help="The event loop: uvloop (faster; falls back to asyncio's own if uvloop is not "
        "installed) or asyncio.",
    )


def offer_local_candidates_option(role: str) -> object:
    return typer.Option(
        "--offer-local-candidates",
        envvar=f"FERRY_{role}_OFFER_LOCAL_CANDIDATES",
        help="Python WebRTC: announce this host's LAN, loopback and (client) IPv6 addresses "
        "in the SDP even when a STUN or TURN address is known (LAN-only networks). Default: "
        "left out, so the broker and the other peer do not learn them.",
    )


def sctp_packets_per_ack_option(role: str) -> object:
    return typer.Option(
        "--sctp-packets-per-ack",
        envvar=f"FERRY_{role}_SCTP_PACKETS_PER_ACK",
        min=1,
        help="Python WebRTC: send one SCTP acknowledgement per this many received packets "
        "(default 2, RFC 4960's delayed acknowledgement; 1 = one per packet, as aiortc does).",
    )


def ice_address_option(role: str) -> object:
    return typer.Option(
        envvar=f"FERRY_{role}_ICE_ADDRESS",
        help="Offer WebRTC host candidates only on this local address (repeatable; "
        "default: every interface).",
    )


def webrtc_option(role: str) -> object:
    return typer.Option(
        "--webrtc",
        envvar=f"FERRY_{role}_WEBRTC",
        metavar="browser|python|auto",
        help="Which WebRTC stack runs the connections: 'browser' runs them in the installed "
        "Chromium/Chrome (headless), so a censor sees a browser's own handshake; 'python' "
        "uses aiortc, whose handshake is easier to spot; 'auto' uses a browser when one is "
        "found and starts, else aiortc with a warning.",
    )


def browser_option(role: str) -> object:
    return typer.Option(
        "--browser",
        envvar=f"FERRY_{role}_BROWSER",
        metavar="PATH",
        help="The Chromium or Chrome executable for --webrtc browser/auto (default: the first "
        "found of chromium-headless-shell, chrome-headless-shell, chromium, chromium-browser, "
        "google-chrome in /usr/bin, then on PATH).",
    )


def verbose_option(role: str) -> object:
    return typer.Option("--verbose", "-v", envvar=f"FERRY_{role}_VERBOSE", help="Log more detail.")


def ready_file_option(role: str) -> object:
    return typer.Option(
        "--ready-file",
        envvar=f"FERRY_{role}_READY_FILE",
        help="Write JSON here once the role is usable (for scripts and tests).",
    )


def unsafe_logging_option(role: str) -> object:
    return typer.Option(
        "--unsafe-logging",
        envvar=f"FERRY_{role}_UNSAFE_LOGGING",
        help="Log client addresses and destinations. For debugging only: it endangers users.",
    )


def stun_option(role: str) -> object:
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


def ice_server_option(role: str) -> object:
    return typer.Option(
        "--ice-server",
        envvar=f"FERRY_{role}_ICE_SERVER",
        metavar="URL",
        help="Your own STUN or TURN server for WebRTC's ICE, used beside the broker's: "
        "stun:HOST[:PORT] or turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp] "
        "(repeatable). With --no-broker-ice-servers only these are used.",
    )


def broker_ice_servers_option(role: str) -> object:
    return typer.Option(
        "--broker-ice-servers/--no-broker-ice-servers",
        envvar=f"FERRY_{role}_BROKER_ICE_SERVERS",
        help="Use the STUN and TURN servers the broker hands out (default). Off: only "
        "--ice-server ones, which replace the broker's.",
    )


def unsafe_internal_ice_servers_option(role: str) -> object:
    return typer.Option(
        "--unsafe-allow-internal-ice-servers",
        envvar=f"FERRY_{role}_UNSAFE_ALLOW_INTERNAL_ICE_SERVERS",
        help="Accept STUN/TURN servers from the broker on loopback, private and link-local "
        "addresses (tests and private networks only: a hostile broker could aim this "
        "host's packets into its own network).",
    )
