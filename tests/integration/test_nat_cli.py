"""The command line of NAT discovery and fronting: ``ferry nat``, ``--stun``, ``--front``,
``--broker-ca``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ferry
from ferry.core.bridge_line import BridgeLine

from ..support_nat import Rfc5780StunServer

pytestmark = pytest.mark.timeout(60)


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    environment["PYTHONPATH"] = str(Path(ferry.__file__).parents[1])
    environment["NO_COLOR"] = "1"
    environment["COLUMNS"] = "200"
    environment.update(extra or {})
    return environment


def run_ferry(*arguments: str) -> tuple[int, str]:
    completed = subprocess.run(
        [sys.executable, "-m", "ferry", *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=30,
        check=False,
    )
    return completed.returncode, completed.stdout + completed.stderr


@pytest.mark.parametrize(
    ("role", "words"),
    [
        ("client", ("--nat-stun", "FERRY_CLIENT_NAT_STUN", "--front", "FERRY_CLIENT_FRONT")),
        ("client", ("--broker-ca", "FERRY_CLIENT_BROKER_CA")),
        ("client", ("--ice-server", "FERRY_CLIENT_ICE_SERVER", "--no-broker-ice-servers")),
        ("volunteer", ("--nat-stun", "FERRY_VOLUNTEER_NAT_STUN")),
        ("volunteer", ("--ice-server", "FERRY_VOLUNTEER_ICE_SERVER")),
        ("broker", ("--ice-server", "--turn-secret-file", "FERRY_BROKER_TURN_SECRET_FILE")),
        ("nat", ("--stun", "FERRY_NAT_STUN", "--json", "FERRY_NAT_JSON")),
    ],
)
def test_help_names_the_new_options_and_their_variables(role: str, words: tuple[str, ...]) -> None:
    status, output = run_ferry(role, "--help")
    assert status == 0, output
    assert [word for word in words if word not in output] == []


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (("--stun", "stun.example.test"), "--stun"),
        (("--front", "https://cdn.test/"), "--front"),
        (("--broker-ca", "/nonexistent/ca.pem"), "--broker-ca"),
    ],
)
def test_a_bad_value_is_refused_naming_the_option(arguments: tuple[str, ...], named: str) -> None:
    base = ("client", "--broker", "https://broker.test", "--bridge")
    bridge = str(BridgeLine("ws://127.0.0.1:9/v1/relay", bytes(32)))
    status, output = run_ferry(*base, bridge, *arguments)
    if "bridge line" in output:  # the bridge line is checked first: use a valid one
        pytest.fail(f"the test's bridge line is not valid: {output}")
    assert status == 2, output
    assert named in output
    assert "Traceback" not in output


async def test_ferry_nat_prints_mapping_filtering_and_class_with_the_env_variable() -> None:
    server = Rfc5780StunServer(("127.0.0.1", "127.0.0.2"))
    await server.start()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ferry",
            "nat",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_environment({"FERRY_NAT_STUN": f"stun:127.0.0.1:{server.ports[0]}"}),
        )
        async with asyncio.timeout(30):
            out, err = await process.communicate()
    finally:
        server.close()
    assert process.returncode == 0, err
    assert out.decode().splitlines() == [
        "mapping:   no NAT",
        "filtering: endpoint-independent",
        "class:     unrestricted",
    ]
    assert server.requests_seen >= 3
