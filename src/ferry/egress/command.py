"""``ferry egress``: its options and the :class:`EgressConfig` they build. The lifecycle is
:class:`ferry.egress.role.EgressRole`, run by :func:`ferry.roles.run_role`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ferry.command_options import (
    config_or_exit,
    event_loop_option,
    parse_listen,
    ready_file_option,
    setup_logging,
    unsafe_logging_option,
    verbose_option,
)
from ferry.command_settings import ConfigReloader, config_option, print_config_option
from ferry.roles import EventLoop, run_role

DEFAULT_EGRESS_ADMIN_PORT = 9464
"""The egress's admin port on 127.0.0.1 unless ``--admin-listen`` says otherwise."""

ConfigFile = Annotated[Path | None, config_option("EGRESS")]
PrintConfig = Annotated[bool, print_config_option("EGRESS")]
Listen = Annotated[
    str, typer.Option(envvar="FERRY_EGRESS_LISTEN", help="Address to listen on, HOST:PORT.")
]
StateDir = Annotated[
    Path,
    typer.Option(
        envvar="FERRY_EGRESS_STATE_DIR", help="Folder for the egress's key and certificate."
    ),
]
PublicUrl = Annotated[
    str | None,
    typer.Option(
        envvar="FERRY_EGRESS_PUBLIC_URL",
        help="The ws:// or wss:// URL volunteers reach this egress at "
        "(default: built from --listen).",
    ),
]
UnsafeAllowPrivateDestinations = Annotated[
    bool,
    typer.Option(
        envvar="FERRY_EGRESS_UNSAFE_ALLOW_PRIVATE_DESTINATIONS",
        help="Let clients reach loopback and private addresses (local testing only).",
    ),
]
AllowDestination = Annotated[
    list[str] | None,
    typer.Option(
        envvar="FERRY_EGRESS_ALLOW_DESTINATION",
        metavar="RULE",
        help="Allow a network (and ports) that the policy would refuse, e.g. "
        "10.1.2.0/24:443 (repeatable). See docs/operating.md for the rule syntax.",
    ),
]
DenyDestination = Annotated[
    list[str] | None,
    typer.Option(
        envvar="FERRY_EGRESS_DENY_DESTINATION",
        metavar="RULE",
        help="Refuse a network (and ports), e.g. 203.0.113.0/24 or *:6881-6999 "
        "(repeatable; deny rules win over allow rules).",
    ),
]
DenyPorts = Annotated[
    str,
    typer.Option(
        envvar="FERRY_EGRESS_DENY_PORTS",
        help="Ports refused on every address unless an allow rule names them.",
    ),
]
Nat64Prefix = Annotated[
    list[str] | None,
    typer.Option(
        envvar="FERRY_EGRESS_NAT64_PREFIX",
        metavar="PREFIX",
        help="A NAT64 prefix of this site besides 64:ff9b::/96, e.g. 2001:db8:64::/96 "
        "(repeatable): its addresses are judged by the IPv4 address they embed.",
    ),
]
EventLoopChoice = Annotated[EventLoop, event_loop_option("EGRESS")]
MaxSessions = Annotated[
    int,
    typer.Option(
        envvar="FERRY_EGRESS_MAX_SESSIONS",
        min=1,
        help='Client sessions at once; a new one beyond it is refused ("egress full").',
    ),
]
MaxHandshakes = Annotated[
    int,
    typer.Option(
        envvar="FERRY_EGRESS_MAX_HANDSHAKES",
        min=1,
        help="New sessions in their handshake at once (they count toward --max-sessions "
        "only once it completes); further new sessions wait.",
    ),
]
HandshakeTimeout = Annotated[
    float,
    typer.Option(
        envvar="FERRY_EGRESS_HANDSHAKE_TIMEOUT",
        min=0.001,
        help="Seconds a new session has to complete its handshake before it is dropped.",
    ),
]
HandshakesPerRelayBurst = Annotated[
    int,
    typer.Option(
        envvar="FERRY_EGRESS_HANDSHAKES_PER_RELAY_BURST",
        min=1,
        help="New sessions one volunteer's relay WebSocket may start at once.",
    ),
]
HandshakesPerRelayPerSecond = Annotated[
    float,
    typer.Option(
        envvar="FERRY_EGRESS_HANDSHAKES_PER_RELAY_PER_SECOND",
        min=0.001,
        help="New sessions one relay WebSocket may start per second after its burst.",
    ),
]
MaxStreamsPerSession = Annotated[
    int,
    typer.Option(
        envvar="FERRY_EGRESS_MAX_STREAMS_PER_SESSION",
        min=1,
        help="Streams (TCP connections) one session may have open at once.",
    ),
]
SessionBufferBytes = Annotated[
    int,
    typer.Option(
        envvar="FERRY_EGRESS_SESSION_BUFFER_BYTES",
        min=65536,
        help="Bytes one session may hold in the egress in each direction.",
    ),
]
BufferBudgetBytes = Annotated[
    int,
    typer.Option(
        envvar="FERRY_EGRESS_BUFFER_BUDGET_BYTES",
        min=65536,
        help="Bytes all sessions together may hold read from destinations and not yet "
        "acknowledged; beyond it the sessions holding the most stop reading.",
    ),
]
SessionIdleTimeout = Annotated[
    float,
    typer.Option(
        envvar="FERRY_EGRESS_SESSION_IDLE_TIMEOUT",
        min=0.001,
        help="Seconds without a packet from a client before its session ends.",
    ),
]
StreamIdleTimeout = Annotated[
    float,
    typer.Option(
        envvar="FERRY_EGRESS_STREAM_IDLE_TIMEOUT",
        min=0.001,
        help="Seconds without a byte either way before a stream is reset.",
    ),
]
DrainSeconds = Annotated[
    float,
    typer.Option(
        envvar="FERRY_EGRESS_DRAIN_SECONDS",
        min=0.0,
        help="On SIGTERM, seconds open streams may run before the egress closes them "
        "(new sessions are refused at once; a second SIGTERM or a SIGINT stops now).",
    ),
]
AdminListen = Annotated[
    str | None,
    typer.Option(
        envvar="FERRY_EGRESS_ADMIN_LISTEN",
        help="HOST:PORT serving /healthz and /metrics, apart from the relay listener; "
        "0 turns it off. Default: 127.0.0.1:9464 (skipped with a warning if busy).",
    ),
]
ReadyFile = Annotated[Path | None, ready_file_option("EGRESS")]
UnsafeLogging = Annotated[bool, unsafe_logging_option("EGRESS")]
Verbose = Annotated[bool, verbose_option("EGRESS")]


def admin_address(admin_listen: str | None) -> tuple[str, int | None]:
    """``--admin-listen`` → (host, port); port ``None`` for ``0`` (no admin listener)."""
    if admin_listen is None:
        return "127.0.0.1", DEFAULT_EGRESS_ADMIN_PORT
    if admin_listen.strip() == "0":
        return "127.0.0.1", None
    return parse_listen(admin_listen, flag="--admin-listen")


def egress_command(
    ctx: typer.Context,
    config_file: ConfigFile = None,
    print_config: PrintConfig = False,
    listen: Listen = "127.0.0.1:8443",
    state_dir: StateDir = Path("ferry-egress"),
    public_url: PublicUrl = None,
    unsafe_allow_private_destinations: UnsafeAllowPrivateDestinations = False,
    allow_destination: AllowDestination = None,
    deny_destination: DenyDestination = None,
    deny_ports: DenyPorts = "25,119,135-139,445,563",
    nat64_prefix: Nat64Prefix = None,
    event_loop: EventLoopChoice = EventLoop.UVLOOP,
    max_sessions: MaxSessions = 10000,
    max_handshakes: MaxHandshakes = 256,
    handshake_timeout: HandshakeTimeout = 10.0,
    handshakes_per_relay_burst: HandshakesPerRelayBurst = 4,
    handshakes_per_relay_per_second: HandshakesPerRelayPerSecond = 0.5,
    max_streams_per_session: MaxStreamsPerSession = 256,
    session_buffer_bytes: SessionBufferBytes = 8 * 1024 * 1024,
    buffer_budget_bytes: BufferBudgetBytes = 512 * 1024 * 1024,
    session_idle_timeout: SessionIdleTimeout = 30.0,
    stream_idle_timeout: StreamIdleTimeout = 300.0,
    drain_seconds: DrainSeconds = 30.0,
    admin_listen: AdminListen = None,
    ready_file: ReadyFile = None,
    unsafe_logging: UnsafeLogging = False,
    verbose: Verbose = False,
) -> None:
    """Run an egress: the exit from ferry to the internet."""
    from ferry.egress.policy_reload import destination_policy
    from ferry.egress.role import EgressRole
    from ferry.egress.server import EgressConfig

    setup_logging(verbose, unsafe_logging)
    host, port = config_or_exit("egress", lambda: parse_listen(listen))
    policy = config_or_exit(
        "egress",
        lambda: destination_policy(
            tuple(allow_destination or ()),
            tuple(deny_destination or ()),
            deny_ports,
            allow_private=unsafe_allow_private_destinations,
            nat64_prefixes=tuple(nat64_prefix or ()),
        ),
    )
    admin_host, admin_port = config_or_exit("egress", lambda: admin_address(admin_listen))
    config = config_or_exit(
        "egress",
        lambda: EgressConfig(
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
        ),
    )
    role = EgressRole(config, settings=ConfigReloader(ctx))
    run_role(role, name="egress", ready_file=ready_file, event_loop=event_loop)
