"""The ``ferry`` command: one sub-command per role, plus ``ferry demo`` and ``ferry nat``.

Every flag can also be set through the environment variable named in its ``--help`` line
(``FERRY_<ROLE>_<FLAG>``). Each role writes its ``--ready-file`` (JSON) once it is usable, so
scripts and tests can wait for it instead of sleeping.

A command only declares its options and builds its role's config; each role's options live
beside the role (``ferry/<role>/command.py``), its lifecycle in a role app
(``ferry/<role>/role.py``) that :func:`ferry.roles.run_role` runs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from ferry import __version__
from ferry.broker.command import broker
from ferry.client.command import client
from ferry.command_options import (
    config_or_exit,
    environment_language,
    page_config,
    ready_file_option,
    setup_logging,
    stun_servers,
    unsafe_logging_option,
    verbose_option,
    webrtc_mode,
    webrtc_option,
)
from ferry.command_settings import RoleCommand, config_option, print_config_option
from ferry.egress.command import egress_command
from ferry.roles import run_role
from ferry.volunteer.command import volunteer

app = typer.Typer(
    name="ferry",
    help="ferry: reach the open internet through volunteers' browsers, end-to-end encrypted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(f"ferry {__version__}")
        raise typer.Exit()


DemoPort = Annotated[
    int, typer.Option(envvar="FERRY_DEMO_PORT", help="Client proxy port (0 = any free port).")
]
DemoVolunteers = Annotated[
    int, typer.Option(envvar="FERRY_DEMO_VOLUNTEERS", min=1, max=50, help="Volunteers to run.")
]
DemoUiListen = Annotated[
    str,
    typer.Option(
        envvar="FERRY_DEMO_UI_LISTEN",
        help="Address of the client's local status page, HOST:PORT on loopback (0 = any "
        "free port); 'auto' = the proxy's port + 1 (any free port if the proxy's is 0; "
        "if it is taken, the demo runs without the page); 'off'.",
    ),
]
DemoUnsafeAllowPrivateDestinations = Annotated[
    bool,
    typer.Option(
        envvar="FERRY_DEMO_UNSAFE_ALLOW_PRIVATE_DESTINATIONS",
        help="Let the egress reach loopback and private addresses (local testing only).",
    ),
]


@app.command(cls=RoleCommand)
def demo(
    config_file: Annotated[Path | None, config_option("DEMO")] = None,
    print_config: Annotated[bool, print_config_option("DEMO")] = False,
    port: DemoPort = 1080,
    volunteers: DemoVolunteers = 2,
    ui_listen: DemoUiListen = "auto",
    ready_file: Annotated[Path | None, ready_file_option("DEMO")] = None,
    unsafe_allow_private_destinations: DemoUnsafeAllowPrivateDestinations = False,
    webrtc: Annotated[str, webrtc_option("DEMO")] = "auto",
    unsafe_logging: Annotated[bool, unsafe_logging_option("DEMO")] = False,
    verbose: Annotated[bool, verbose_option("DEMO")] = False,
) -> None:
    """Run a whole ferry network on this machine: broker, egress, volunteers and a client."""
    from ferry.demo import DemoRole, LoopbackNetworkConfig

    setup_logging(verbose, unsafe_logging)
    page = config_or_exit("demo", lambda: page_config(ui_listen, port, environment_language()))
    mode = config_or_exit("demo", lambda: webrtc_mode(webrtc))
    config = LoopbackNetworkConfig(
        proxy_port=port,
        volunteers=volunteers,
        client_paths=min(2, volunteers),
        allow_private_destinations=unsafe_allow_private_destinations,
        page=page,
        page_optional=ui_listen.strip().lower() == "auto",
        client_webrtc=mode,
        volunteer_webrtc=mode,
    )
    run_role(DemoRole(config), name="demo", ready_file=ready_file)


app.command(cls=RoleCommand)(broker)
app.command("egress", cls=RoleCommand)(egress_command)
app.command(cls=RoleCommand)(volunteer)
app.command(cls=RoleCommand)(client)


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

    servers = config_or_exit("nat", lambda: stun_servers(stun))
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


def main() -> None:
    """Entry point of the ``ferry`` command."""
    app()
