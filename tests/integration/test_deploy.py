"""The files under ``deploy/``: they parse, use real flags, and the units pass systemd's check.

No container engine and no systemd run here, so the Containerfile is checked by parsing it
and the unit files with ``systemd-analyze verify`` (Debian's ``systemd`` package, which
``.ci/run`` installs) plus a parser for the hardening this project promises.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer.core
import typer.main

from ferry.cli import app

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROOT = DEPLOY.parent
ROLES = ("broker", "egress", "volunteer")
UNIT_PATH_OF_FERRY = "/opt/ferry/bin/ferry"


def role_options(role: str) -> dict[str, typer.core.TyperOption]:
    """The options of ``ferry ROLE``, by flag (``--state-dir``)."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    command = group.commands[role]
    options: dict[str, typer.core.TyperOption] = {}
    for parameter in command.params:
        if isinstance(parameter, typer.core.TyperOption):
            for flag in parameter.opts:
                options[flag] = parameter
    return options


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section → key → every value given (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line {number}: no continuation lines, please"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {number}: a setting before any [Section]"
        key, equals, value = line.partition("=")
        assert equals, f"line {number}: not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def ferry_executable() -> str:
    """The ``ferry`` command installed with this Python (pip install -e .)."""
    beside_python = Path(sys.executable).parent / "ferry"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("ferry")
    assert found, "the ferry command is not installed (pip install -e '.[dev]')"
    return found


# --- The example configuration ----------------------------------------------------------------


def test_example_toml_parses_and_every_key_is_a_flag_of_today() -> None:
    with (DEPLOY / "ferry.example.toml").open("rb") as file:
        config = tomllib.load(file)
    assert set(config) == {"egress", "broker", "volunteer", "client"}
    checked = 0
    for role, table in config.items():
        options = role_options(role)
        for key, value in table.items():
            flag = "--" + key.replace("_", "-")
            assert flag in options, f"[{role}] {key}: ferry {role} has no {flag}"
            option = options[flag]
            if option.is_flag:
                assert isinstance(value, bool), f"[{role}] {key} is a switch: true or false"
            elif option.multiple:
                assert isinstance(value, list), f"[{role}] {key} may repeat: write a list"
            else:
                assert isinstance(value, str | int), f"[{role}] {key}: a string or a number"
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("role", ROLES)
def test_environment_examples_name_real_variables(role: str) -> None:
    variables = {
        option.envvar for option in role_options(role).values() if isinstance(option.envvar, str)
    }
    lines = [
        line
        for line in (DEPLOY / f"{role}.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines
    for line in lines:
        name, equals, value = line.partition("=")
        assert equals and value, f"{role}.env: not NAME=VALUE: {line!r}"
        assert name in variables, f"{role}.env: ferry {role} does not read {name}"


# --- systemd units ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_unit_runs_ferry_role_with_real_flags_and_hardening(role: str) -> None:
    unit = parse_unit((DEPLOY / f"ferry-{role}.service").read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]

    def one(key: str) -> str:
        values = service.get(key)
        assert values, f"ferry-{role}.service sets no {key}="
        return values[-1]

    command = one("ExecStart").split()
    assert command[:2] == [UNIT_PATH_OF_FERRY, role]
    options = role_options(role)
    for word in command[2:]:
        if word.startswith("-"):
            assert word in options, f"ExecStart: ferry {role} has no {word}"
    for environment_file in service.get("EnvironmentFile", []):
        assert environment_file.lstrip("-") == f"/etc/ferry/{role}.env"

    assert one("NoNewPrivileges") == "yes"
    assert one("PrivateTmp") == "yes"
    assert one("PrivateDevices") == "yes"
    assert one("DynamicUser") == "yes"
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") == "yes"
    assert one("CapabilityBoundingSet") == ""
    assert one("AmbientCapabilities") == ""
    assert one("RestrictSUIDSGID") == "yes"
    assert one("SystemCallArchitectures") == "native"
    assert "@system-service" in service["SystemCallFilter"]
    families = set(one("RestrictAddressFamilies").split())
    assert {"AF_INET", "AF_INET6"} <= families <= {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    assert "AF_PACKET" not in families
    if role == "egress":
        # The identity (key, certificate, bridge line) must survive restarts.
        assert one("StateDirectory") == "ferry-egress"
        assert one("StateDirectoryMode") == "0700"
        assert "${STATE_DIRECTORY}" in command
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd (.ci/run does)"
    # verify checks that ExecStart's program exists: point it at the installed ferry.
    executable = ferry_executable()
    units = []
    for role in ROLES:
        text = (DEPLOY / f"ferry-{role}.service").read_text()
        unit = tmp_path / f"ferry-{role}.service"
        unit.write_text(text.replace(UNIT_PATH_OF_FERRY, executable))
        units.append(str(unit))
    result = subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings: there must be none.
    assert result.stdout.strip() == "", result.stdout
    assert result.stderr.strip() == "", result.stderr


# --- The container build file -------------------------------------------------------------

KNOWN_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def containerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Containerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        instruction, _, arguments = whole.partition(" ")
        instructions.append((instruction, arguments.strip()))
    assert not pending, "the Containerfile ends inside a continued line"
    return instructions


def test_containerfile_builds_one_image_running_ferry_as_a_user() -> None:
    instructions = containerfile_instructions()
    for instruction, _ in instructions:
        assert instruction in KNOWN_INSTRUCTIONS, f"unknown instruction {instruction}"
        assert instruction == instruction.upper()
    names = [instruction for instruction, _ in instructions]
    assert names.count("FROM") == 1
    assert names[0] == "FROM"
    base = instructions[0][1]
    assert base.startswith("python:3.11-slim"), base

    for instruction, arguments in instructions:
        if instruction in ("COPY", "ADD"):
            *sources, _destination = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{instruction} {source}: not in the repository"
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    assert any("pip install ." in run for run in runs)
    assert any("useradd" in run for run in runs)

    user_at = max(i for i, name in enumerate(names) if name == "USER")
    assert instructions[user_at][1] not in ("root", "0")
    assert all(name != "RUN" for name in names[user_at:]), "RUN after USER would run as ferry"
    entrypoint = [
        arguments for instruction, arguments in instructions if instruction == "ENTRYPOINT"
    ]
    assert len(entrypoint) == 1
    assert json.loads(entrypoint[0]) == ["ferry"]
    # The readme the package metadata names is copied, or pip install fails.
    with (ROOT / "pyproject.toml").open("rb") as file:
        readme = tomllib.load(file)["project"]["readme"]
    assert any(
        instruction == "COPY" and readme in arguments.split()
        for instruction, arguments in instructions
    )


# --- coturn (deploy/turnserver.conf) ----------------------------------------------------------
# tests/integration/test_internet_lab.py runs coturn with this file; these check its text.


def turnserver_settings() -> list[tuple[str, str]]:
    """(option, value) of every setting line, in order ("" for a switch)."""
    settings = []
    for number, raw in enumerate((DEPLOY / "turnserver.conf").read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        assert key == key.strip() and " " not in key, f"line {number}: {line!r}"
        settings.append((key, value))
    return settings


def denied_ranges() -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]]:
    ranges = []
    for key, value in turnserver_settings():
        if key == "denied-peer-ip":
            first, _, last = value.partition("-")
            ranges.append((ipaddress.ip_address(first), ipaddress.ip_address(last or first)))
    return ranges


def test_turnserver_conf_uses_real_options_and_rest_credentials() -> None:
    turnserver = shutil.which("turnserver")
    assert turnserver, "turnserver is missing: apt-get install coturn (.ci/run does)"
    usage = subprocess.run(
        [turnserver, "-h"], capture_output=True, text=True, timeout=30, check=False
    )
    options = set(re.findall(r"--([a-z0-9-]+)", usage.stdout + usage.stderr))
    settings = dict(turnserver_settings())
    for key in settings:
        assert key in options, f"turnserver has no --{key}"
    assert "use-auth-secret" in settings
    assert "CHANGE" in settings["static-auth-secret"]
    assert settings["listening-port"] == "3478"
    assert settings["tls-listening-port"] == "5349"
    assert "no-cli" in settings and "no-multicast-peers" in settings
    for never in ("allow-loopback-peers", "verbose", "Verbose", "log-binding", "server-relay"):
        assert never not in settings, f"{never} must stay off"


@pytest.mark.parametrize(
    "address",
    ["0.1.2.3", "10.1.2.3", "100.64.0.1", "127.0.0.1", "169.254.169.254", "172.16.0.1",
     "172.31.255.255", "192.0.0.1", "192.168.1.1", "198.18.0.1", "198.19.255.255", "224.0.0.1",
     "255.255.255.255", "::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe",
     "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1"],
)  # fmt: skip
def test_turnserver_conf_denies_private_peers(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert any(
        type(first) is type(ip) and first <= ip <= last for first, last in denied_ranges()
    ), f"no denied-peer-ip covers {address}"


@pytest.mark.parametrize("address", ["8.8.8.8", "203.0.114.1", "2001:4860:4860::8888"])
def test_turnserver_conf_allows_public_peers(address: str) -> None:
    ip = ipaddress.ip_address(address)
    for first, last in denied_ranges():
        # coturn 4.6 reads a range from an unspecified address as "from below everything",
        # and orders IPv4 below IPv6: such a range would cover every public address too.
        assert not first.is_unspecified or first.version == last.version == 4, (first, last)
        assert not (type(first) is type(ip) and first <= ip <= last), (address, first, last)
