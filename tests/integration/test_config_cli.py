"""``ferry ROLE --config PATH`` and ``--print-config`` as an operator runs them.

Each test runs ``python -m ferry`` in a subprocess with ``--print-config`` or a bad file, so
nothing is started: the command prints or refuses and exits by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ferry.core.bridge_line import BridgeLine

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "ferry.example.toml"
COMMAND_TIMEOUT = 60.0
"""Longest a command that exits by itself may run."""


def ferry(
    *arguments: str, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ferry ARGUMENTS`` with no FERRY_* variables but ``environment``."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("FERRY_")}
    clean.update({"NO_COLOR": "1", "COLUMNS": "200"}, **(environment or {}))
    return subprocess.run(
        [sys.executable, "-m", "ferry", *arguments],
        capture_output=True,
        text=True,
        env=clean,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def printed(
    *arguments: str, environment: dict[str, str] | None = None
) -> tuple[str, dict[str, object]]:
    """``--print-config`` output of ``ferry ARGUMENTS``: its text and its one table."""
    result = ferry(*arguments, "--print-config", environment=environment)
    assert result.returncode == 0, result.stderr
    document = tomllib.loads(result.stdout)
    (table,) = document.values()
    assert isinstance(table, dict)
    return result.stdout, table


def origins(text: str) -> dict[str, str]:
    """``key`` → the comment saying where its value came from."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#") or " = " not in line:
            continue
        key = line.split(" = ", 1)[0]
        found[key] = line.rsplit("  # ", 1)[1]
    return found


def test_flags_beat_environment_beats_file_beats_defaults(tmp_path: Path) -> None:
    config = tmp_path / "ferry.toml"
    config.write_text(
        "[egress]\n"
        'listen = "127.0.0.1:9001"\n'
        'public_url = "wss://from-file.example/v1/relay"\n'
        'deny_destination = ["192.0.2.0/24", "*:6881-6999"]\n'
        "verbose = true\n"
    )
    text, table = printed(
        "egress",
        "--config",
        str(config),
        "--public-url",
        "wss://from-flag.example/v1/relay",
        environment={"FERRY_EGRESS_LISTEN": "127.0.0.1:9002", "FERRY_EGRESS_VERBOSE": "0"},
    )
    assert table["listen"] == "127.0.0.1:9002"
    assert table["public_url"] == "wss://from-flag.example/v1/relay"
    assert table["deny_destination"] == ["192.0.2.0/24", "*:6881-6999"]
    assert table["verbose"] is False
    assert table["deny_ports"] == "25,119,135-139,445,563"
    where = origins(text)
    assert where["listen"] == "env FERRY_EGRESS_LISTEN"
    assert where["public_url"] == "flag --public-url"
    assert where["deny_destination"] == "file"
    assert where["verbose"] == "env FERRY_EGRESS_VERBOSE"
    assert where["deny_ports"] == "default"
    assert str(config) in text.splitlines()[0]


def test_printed_settings_are_a_config_file_that_gives_the_same_settings(tmp_path: Path) -> None:
    first_text, first = printed(
        "volunteer",
        "--broker",
        "https://broker.example",
        "--capacity",
        "7",
        "--ice-address",
        "127.0.0.1",
        "--ice-address",
        "::1",
        "--max-rate",
        "2M",
        "--test-impair-loss",
        "0.25",
        "--verbose",
    )
    saved = tmp_path / "printed.toml"
    saved.write_text(first_text)
    second_text, second = printed("volunteer", "--config", str(saved))
    assert second == first
    assert first["capacity"] == 7 and first["ice_address"] == ["127.0.0.1", "::1"]
    # A hidden (testing-only) setting is printed once it is set, and only then.
    assert first["test_impair_loss"] == 0.25
    assert "test_impair_duplicate" not in first
    assert set(origins(second_text).values()) == {"file"}


def test_the_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text('[broker]\negress = ["ws://127.0.0.1:1/v1/relay"]\n')
    _, table = printed("broker", environment={"FERRY_BROKER_CONFIG": str(config)})
    assert table["egress"] == ["ws://127.0.0.1:1/v1/relay"]


def test_secrets_are_never_printed(tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text('[client]\nbroker = "https://b.example"\npassword = "file-secret"\n')
    result = ferry(
        "client",
        "--config",
        str(config),
        "--bridge",
        str(BridgeLine("ws://127.0.0.1:1/v1/relay", bytes.fromhex("ab" * 32))),
        "--username",
        "alice",
        "--pairing",
        "pairing-code-0123456789",
        "--print-config",
        environment={"FERRY_CLIENT_PASSWORD": "env-secret"},
    )
    assert result.returncode == 0, result.stderr
    assert "file-secret" not in result.stdout and "env-secret" not in result.stdout
    assert "pairing-code-0123456789" not in result.stdout
    assert "# password = (secret, not shown)  # env FERRY_CLIENT_PASSWORD" in result.stdout
    table = tomllib.loads(result.stdout)["client"]
    assert table["username"] == "alice"
    assert "password" not in table and "pairing" not in table


def test_passwords_in_urls_are_never_printed() -> None:
    """Issue 15: a Redis password given in --redis, and a TURN password in --ice-server."""
    result = ferry(
        "broker",
        "--redis",
        "redis://:hunter2-redis@127.0.0.1:6379/0",
        "--egress",
        "ws://127.0.0.1:1/v1/relay",
        "--print-config",
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2-redis" not in result.stdout
    assert 'redis = "redis://:***@127.0.0.1:6379/0"  (password not shown)' in result.stdout
    result = ferry(
        "volunteer",
        "--broker",
        "https://b.example",
        "--ice-server",
        "turn:alice:hunter2-turn@turn.example:3478",
        "--print-config",
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2-turn" not in result.stdout
    assert "turn:alice:***@turn.example:3478" in result.stdout
    tomllib.loads(result.stdout)  # still a valid config file


@pytest.mark.parametrize(
    ("role", "content", "message"),
    [
        (
            "egress",
            '[egress]\nlistne = "x"\n',
            '[egress] no setting "listne" (did you mean "listen"?)',
        ),
        ("egress", "[egress]\nverbose = 1\n", "[egress] verbose: expected true or false"),
        ("egress", "[egress\n", "not valid TOML"),
        ("egress", "[volunter]\n", '[volunter] is not a role (did you mean "volunteer"?)'),
        ("volunteer", '[volunteer]\nbroker = "x"\ncapacity = 0\n', "[volunteer] capacity:"),
    ],
)
def test_a_bad_file_stops_the_role_with_status_2_naming_file_and_key(
    tmp_path: Path, role: str, content: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    # No --print-config: the role would start if the file were accepted.
    result = ferry(role, "--config", str(config), "--ready-file", str(tmp_path / "ready"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"ferry {role}: config {config}: " in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "ready").exists()


def test_a_missing_file_stops_the_role(tmp_path: Path) -> None:
    result = ferry("broker", "--config", str(tmp_path / "missing.toml"), "--print-config")
    assert result.returncode == 2
    assert f"config {tmp_path / 'missing.toml'}: cannot read it" in result.stderr


@pytest.mark.parametrize("role", ["egress", "broker", "volunteer", "client"])
def test_each_table_of_the_example_file_loads(role: str) -> None:
    text, table = printed(role, "--config", str(EXAMPLE))
    with EXAMPLE.open("rb") as file:
        example = tomllib.load(file)[role]
    assert example
    for key, value in example.items():
        assert table[key] == value, key
        assert origins(text)[key] == "file", key


def test_help_names_the_config_options_and_their_variable() -> None:
    result = ferry("egress", "--help")
    assert result.returncode == 0, result.stderr
    for text in ("--config", "FERRY_EGRESS_CONFIG", "--print-config"):
        assert text in result.stdout
