"""``ferry broker``: its options and the :class:`BrokerConfig` they build. The lifecycle is
:class:`ferry.broker.role.BrokerRole`, run by :func:`ferry.roles.run_role`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ferry.command_options import (
    config_or_exit,
    ice_server_values,
    parse_listen,
    ready_file_option,
    setup_logging,
    unsafe_logging_option,
    verbose_option,
)
from ferry.command_settings import config_option, print_config_option
from ferry.core.addresses import is_loopback_host
from ferry.roles import console, run_role

ConfigFile = Annotated[Path | None, config_option("BROKER")]
PrintConfig = Annotated[bool, print_config_option("BROKER")]
Listen = Annotated[
    str, typer.Option(envvar="FERRY_BROKER_LISTEN", help="Address to listen on, HOST:PORT.")
]
Egresses = Annotated[
    list[str] | None,
    typer.Option(
        envvar="FERRY_BROKER_EGRESS",
        help="An egress WebSocket URL volunteers may be sent to (repeat for several).",
    ),
]
RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis",
        envvar="FERRY_BROKER_REDIS",
        help="Keep the state in Redis at this URL (redis://HOST:PORT/DB), shared with every "
        "broker instance given the same URL; default: in this process.",
    ),
]
TrustedSourceHeader = Annotated[
    str | None,
    typer.Option(
        envvar="FERRY_BROKER_TRUSTED_SOURCE_HEADER",
        help="Behind a front (reverse proxy, CDN): rate-limit by the last entry of this "
        "header (e.g. X-Forwarded-For) instead of the peer address. Only when every "
        "request comes through the front.",
    ),
]
OfferRate = Annotated[
    float,
    typer.Option(envvar="FERRY_BROKER_OFFER_RATE", help="Client offers per second per source."),
]
OfferBurst = Annotated[
    int,
    typer.Option(envvar="FERRY_BROKER_OFFER_BURST", help="Client offers per source at once."),
]
PollRate = Annotated[
    float,
    typer.Option(envvar="FERRY_BROKER_POLL_RATE", help="Volunteer polls per second per source."),
]
PollBurst = Annotated[
    int,
    typer.Option(envvar="FERRY_BROKER_POLL_BURST", help="Volunteer polls per source at once."),
]
PollTimeout = Annotated[
    float,
    typer.Option(
        envvar="FERRY_BROKER_POLL_TIMEOUT",
        help="Seconds a volunteer's poll is held before 'no client' (then it polls again).",
    ),
]
ClientTimeout = Annotated[
    float,
    typer.Option(
        envvar="FERRY_BROKER_CLIENT_TIMEOUT",
        help="Seconds a client's offer is held waiting for a volunteer's answer.",
    ),
]
MaxWaitingVolunteers = Annotated[
    int,
    typer.Option(
        envvar="FERRY_BROKER_MAX_WAITING_VOLUNTEERS",
        help="Most volunteer polls waiting at once (with --redis: over all instances).",
    ),
]
MaxWaitingClients = Annotated[
    int,
    typer.Option(
        envvar="FERRY_BROKER_MAX_WAITING_CLIENTS",
        help="Most client offers waiting at once (with --redis: over all instances).",
    ),
]
MaxHeldPolls = Annotated[
    int,
    typer.Option(
        envvar="FERRY_BROKER_MAX_HELD_POLLS",
        help="Most volunteer polls this instance holds open at once.",
    ),
]
MaxHeldOffers = Annotated[
    int,
    typer.Option(
        envvar="FERRY_BROKER_MAX_HELD_OFFERS",
        help="Most client offers this instance holds open at once.",
    ),
]
BusyRetryAfter = Annotated[
    float,
    typer.Option(
        envvar="FERRY_BROKER_BUSY_RETRY_AFTER",
        help="Seconds a 503 from a full, closing or store-less broker asks callers to "
        "wait (Retry-After).",
    ),
]
IceServers = Annotated[
    list[str] | None,
    typer.Option(
        envvar="FERRY_BROKER_ICE_SERVER",
        help="A STUN or TURN server handed to clients and volunteers for ICE: "
        "stun:HOST[:PORT] or turn:HOST[:PORT][?transport=udp|tcp] (turns: for TLS); "
        "repeat for several. TURN needs --turn-secret-file.",
    ),
]
IceServersPerPeer = Annotated[
    int,
    typer.Option(
        envvar="FERRY_BROKER_ICE_SERVERS_PER_PEER",
        help="At most this many STUN and this many TURN servers go to each peer, chosen "
        "at random per request (so one blocked server does not stop everyone).",
    ),
]
TurnSecretFile = Annotated[
    Path | None,
    typer.Option(
        envvar="FERRY_BROKER_TURN_SECRET_FILE",
        help="A file holding the TURN REST shared secret (coturn's static-auth-secret); "
        "short-lived TURN credentials are minted from it per peer. Keep it readable by "
        "the broker's user only.",
    ),
]
TurnCredentialTtl = Annotated[
    float,
    typer.Option(
        envvar="FERRY_BROKER_TURN_CREDENTIAL_TTL",
        help="Seconds a minted TURN credential stays valid (60..86400).",
    ),
]
MetricsAllow = Annotated[
    list[str] | None,
    typer.Option(
        envvar="FERRY_BROKER_METRICS_ALLOW",
        metavar="NETWORK",
        help="A network (CIDR) whose requests GET /metrics answers (repeatable; default: "
        "loopback and private networks). Requests through the front never get it.",
    ),
]
ReadyFile = Annotated[Path | None, ready_file_option("BROKER")]
UnsafeLogging = Annotated[bool, unsafe_logging_option("BROKER")]
Verbose = Annotated[bool, verbose_option("BROKER")]


def broker(
    config_file: ConfigFile = None,
    print_config: PrintConfig = False,
    listen: Listen = "127.0.0.1:8080",
    egress: Egresses = None,
    redis_url: RedisUrl = None,
    trusted_source_header: TrustedSourceHeader = None,
    offer_rate: OfferRate = 1.0,
    offer_burst: OfferBurst = 20,
    poll_rate: PollRate = 5.0,
    poll_burst: PollBurst = 50,
    poll_timeout: PollTimeout = 10.0,
    client_timeout: ClientTimeout = 10.0,
    max_waiting_volunteers: MaxWaitingVolunteers = 10000,
    max_waiting_clients: MaxWaitingClients = 1000,
    max_held_polls: MaxHeldPolls = 20000,
    max_held_offers: MaxHeldOffers = 2000,
    busy_retry_after: BusyRetryAfter = 5.0,
    ice_server: IceServers = None,
    ice_servers_per_peer: IceServersPerPeer = 2,
    turn_secret_file: TurnSecretFile = None,
    turn_credential_ttl: TurnCredentialTtl = 3600.0,
    metrics_allow: MetricsAllow = None,
    ready_file: ReadyFile = None,
    unsafe_logging: UnsafeLogging = False,
    verbose: Verbose = False,
) -> None:
    """Run a broker: matches clients with volunteers."""
    from ferry.broker.role import BrokerRole
    from ferry.broker.server import DEFAULT_METRICS_ALLOW, BrokerConfig
    from ferry.broker.turn_secret import read_turn_secret

    setup_logging(verbose, unsafe_logging)
    if not egress:
        console.print("[bold red]ferry broker:[/] give at least one --egress URL")
        raise typer.Exit(2)
    allowed_egresses = tuple(egress)
    host, port = config_or_exit("broker", lambda: parse_listen(listen))
    config = config_or_exit(
        "broker",
        lambda: BrokerConfig(
            host=host,
            port=port,
            allowed_egresses=allowed_egresses,
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
            ice_servers=tuple(ice_server_values(ice_server, "--ice-server", user=False)),
            ice_servers_per_peer=ice_servers_per_peer,
            turn_secret=read_turn_secret(turn_secret_file) if turn_secret_file else None,
            turn_credential_ttl=turn_credential_ttl,
            metrics_allow=tuple(metrics_allow) if metrics_allow else DEFAULT_METRICS_ALLOW,
        ),
    )
    if trusted_source_header is None and is_loopback_host(host):
        console.print(
            "[yellow]The broker listens on loopback: if a reverse proxy or CDN front forwards "
            "to it, set --trusted-source-header X-Forwarded-For (and have the front set it), or "
            "every client shares one rate limit.[/]"
        )
    run_role(BrokerRole(config), name="broker", ready_file=ready_file)
