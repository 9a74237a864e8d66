"""``ferry volunteer``: its options and the :class:`VolunteerConfig` they build. The
lifecycle is :class:`ferry.volunteer.role.VolunteerRole`, run by :func:`ferry.roles.run_role`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ferry.command_options import (
    broker_ice_servers_option,
    browser_option,
    config_or_exit,
    event_loop_option,
    ice_address_option,
    ice_server_option,
    offer_local_candidates_option,
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
from ferry.roles import EventLoop, console, run_role


def _impair_option(fault: str, verb: str) -> object:
    return typer.Option(
        envvar=f"FERRY_VOLUNTEER_TEST_IMPAIR_{fault}",
        min=0.0,
        max=1.0,
        hidden=True,
        help=f"(testing only) Probability to {verb} each relayed datagram.",
    )


BrokerUrl = Annotated[
    str, typer.Option("--broker", envvar="FERRY_VOLUNTEER_BROKER", help="The broker's URL.")
]
ConfigFile = Annotated[Path | None, config_option("VOLUNTEER")]
PrintConfig = Annotated[bool, print_config_option("VOLUNTEER")]
Capacity = Annotated[
    int,
    typer.Option(envvar="FERRY_VOLUNTEER_CAPACITY", min=1, max=1000, help="Clients at once."),
]
MaxRate = Annotated[
    str,
    typer.Option(
        envvar="FERRY_VOLUNTEER_MAX_RATE",
        metavar="BYTES_PER_S",
        help="Bytes per second relayed, all clients and both directions together; over it, "
        "datagrams wait up to 0.2 s for their turn, then are dropped. "
        "Suffixes k, M, G (x1000) or Ki, Mi, Gi (x1024), e.g. 2M. "
        "0 = unlimited.",
    ),
]
Quota = Annotated[
    str,
    typer.Option(
        envvar="FERRY_VOLUNTEER_QUOTA",
        metavar="BYTES",
        help="Bytes relayed per UTC day; once reached, relays end and the volunteer waits "
        "for 00:00 UTC. Same suffixes as --max-rate, e.g. 10G. 0 = unlimited.",
    ),
]
ImpairLoss = Annotated[float, _impair_option("LOSS", "drop")]
ImpairDuplicate = Annotated[float, _impair_option("DUPLICATE", "send twice")]
ImpairReorder = Annotated[float, _impair_option("REORDER", "delay")]
ImpairCorrupt = Annotated[float, _impair_option("CORRUPT", "flip a bit of")]
ImpairSeed = Annotated[
    int,
    typer.Option(
        envvar="FERRY_VOLUNTEER_TEST_IMPAIR_SEED",
        hidden=True,
        help="(testing only) Seed of the --test-impair-* faults.",
    ),
]
IceAddress = Annotated[list[str] | None, ice_address_option("VOLUNTEER")]
SctpPacketsPerAck = Annotated[int | None, sctp_packets_per_ack_option("VOLUNTEER")]
OfferLocalCandidates = Annotated[bool, offer_local_candidates_option("VOLUNTEER")]
Stun = Annotated[list[str] | None, stun_option("VOLUNTEER")]
IceServers = Annotated[list[str] | None, ice_server_option("VOLUNTEER")]
BrokerIceServers = Annotated[bool, broker_ice_servers_option("VOLUNTEER")]
UnsafeAllowInternalIceServers = Annotated[bool, unsafe_internal_ice_servers_option("VOLUNTEER")]
EgressAllow = Annotated[
    list[str] | None,
    typer.Option(
        "--egress-allow",
        envvar="FERRY_VOLUNTEER_EGRESS_ALLOW",
        metavar="URL_OR_HOST",
        help="Relay only to this egress: a full URL (wss://egress.example/v1/relay) or a "
        "host (egress.example), repeatable. Default: any egress the broker names, except "
        "on loopback, private, link-local and other internal addresses.",
    ),
]
UnsafeAllowInternalEgress = Annotated[
    bool,
    typer.Option(
        "--unsafe-allow-internal-egress",
        envvar="FERRY_VOLUNTEER_UNSAFE_ALLOW_INTERNAL_EGRESS",
        help="Relay to egresses on loopback, private and link-local addresses (tests and "
        "private networks only: a hostile broker could send this volunteer into its own "
        "machine or network).",
    ),
]
Pairing = Annotated[
    str | None,
    typer.Option(
        envvar="FERRY_VOLUNTEER_PAIRING",
        metavar="CODE",
        help="Private pairing code (16-64 of A-Z a-z 0-9 _ -): relay only for clients "
        "started with the same --pairing, and for no one else.",
    ),
]
EventLoopChoice = Annotated[EventLoop, event_loop_option("VOLUNTEER")]
WebRtc = Annotated[str, webrtc_option("VOLUNTEER")]
Browser = Annotated[str | None, browser_option("VOLUNTEER")]
ReadyFile = Annotated[Path | None, ready_file_option("VOLUNTEER")]
UnsafeLogging = Annotated[bool, unsafe_logging_option("VOLUNTEER")]
Verbose = Annotated[bool, verbose_option("VOLUNTEER")]


def volunteer(
    broker_url: BrokerUrl,
    config_file: ConfigFile = None,
    print_config: PrintConfig = False,
    capacity: Capacity = 5,
    max_rate: MaxRate = "0",
    quota: Quota = "0",
    test_impair_loss: ImpairLoss = 0.0,
    test_impair_duplicate: ImpairDuplicate = 0.0,
    test_impair_reorder: ImpairReorder = 0.0,
    test_impair_corrupt: ImpairCorrupt = 0.0,
    test_impair_seed: ImpairSeed = 0,
    ice_address: IceAddress = None,
    sctp_packets_per_ack: SctpPacketsPerAck = None,
    offer_local_candidates: OfferLocalCandidates = False,
    stun: Stun = None,
    ice_server: IceServers = None,
    broker_ice_servers: BrokerIceServers = True,
    unsafe_allow_internal_ice_servers: UnsafeAllowInternalIceServers = False,
    egress_allow: EgressAllow = None,
    unsafe_allow_internal_egress: UnsafeAllowInternalEgress = False,
    pairing: Pairing = None,
    event_loop: EventLoopChoice = EventLoop.UVLOOP,
    webrtc: WebRtc = "auto",
    browser: Browser = None,
    ready_file: ReadyFile = None,
    unsafe_logging: UnsafeLogging = False,
    verbose: Verbose = False,
) -> None:
    """Run a volunteer: relay encrypted traffic for people behind censorship."""
    from ferry.core.volunteer_limits import parse_byte_count
    from ferry.transport.browser_webrtc import BrowserEngineConfig
    from ferry.volunteer.impairment import RelayImpairment
    from ferry.volunteer.relay import VolunteerConfig
    from ferry.volunteer.role import VolunteerRole

    setup_logging(verbose, unsafe_logging)
    config = config_or_exit(
        "volunteer",
        lambda: VolunteerConfig(
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
            webrtc=webrtc_config(
                ice_address, sctp_packets_per_ack, ice_server, offer_local_candidates
            ),
            pairing=pairing,
            stun_servers=stun_servers(stun),
            broker_ice_servers=broker_ice_servers,
            allow_internal_ice_servers=unsafe_allow_internal_ice_servers,
            egress_allow=tuple(egress_allow or ()),
            allow_internal_egress=unsafe_allow_internal_egress,
        ),
    )
    mode = config_or_exit("volunteer", lambda: webrtc_mode(webrtc))
    if config.impairment is not None and config.impairment.active:
        console.print(
            "[bold yellow]TESTING ONLY: this volunteer damages what it relays on purpose "
            "(--test-impair-*).[/]"
        )
    role = VolunteerRole(config, mode, BrowserEngineConfig(executable=browser))
    run_role(role, name="volunteer", ready_file=ready_file, event_loop=event_loop)
