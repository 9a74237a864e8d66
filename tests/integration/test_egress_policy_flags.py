"""The egress's policy flags as an operator uses them: allow and deny rules on the command line.

Separate processes and Debian's curl; only loopback targets, one allowed by an explicit rule
and the same server refused by a deny rule.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .processes import origin_server, process_network

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BODY = b"reached through an allow rule\n"


def _curl(proxy: str, url: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "/usr/bin/curl",
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--socks5-hostname",
            proxy,
            url,
        ],
        capture_output=True,
        timeout=40,
        check=False,
    )


def test_an_allow_rule_opens_one_loopback_port_and_a_deny_rule_wins(tmp_path: Path) -> None:
    with origin_server(BODY) as port:
        allow = ("--allow-destination", f"127.0.0.1/32:{port}")
        with process_network(tmp_path / "allow", egress_arguments=allow, volunteers=1) as net:
            allowed = _curl(net.proxy, f"http://127.0.0.1:{port}/x")
            assert allowed.returncode == 0, allowed.stderr.decode() + net.logs()
            assert allowed.stdout == BODY
            # Only that port: the same host on another port is still refused by the policy.
            other = _curl(net.proxy, f"http://127.0.0.1:{port + 1 if port < 65535 else 1}/x")
            assert other.returncode == 97  # curl: SOCKS5 connection refused by the proxy
            assert b"(2)" in other.stderr  # SOCKS reply 0x02: not allowed by the ruleset
        deny = (*allow, "--deny-destination", "127.0.0.0/8")
        with process_network(tmp_path / "deny", egress_arguments=deny, volunteers=1) as net:
            denied = _curl(net.proxy, f"http://127.0.0.1:{port}/x")
            assert denied.returncode == 97
            assert b"(2)" in denied.stderr


def test_a_malformed_rule_is_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "ferry",
            "egress",
            "--state-dir",
            str(tmp_path),
            "--listen",
            "127.0.0.1:0",
            "--deny-destination",
            "10.1.2.3/24",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert b"host bits set" in output
    assert b"Traceback" not in output
