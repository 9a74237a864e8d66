"""NAT discovery against real NATs: network namespaces, veth pairs and iptables masquerading.

Each test builds its own namespaces (:class:`tests.support_nat.NatLab`, names carrying this
process's PID), runs the RFC 5780 STUN server of ``tests/support_nat.py`` in the "public"
one, and runs ``python -m ferry nat --json`` in the "inside" one, behind the router. Only the
subprocesses inside the namespaces leave loopback; this process never does. Everything is
removed afterwards, also when a test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ferry

from ..host_tools import require_host
from ..support_nat import NatLab

pytestmark = [
    pytest.mark.timeout(120),
]


@pytest.fixture(autouse=True)
def _host_has_what_the_test_needs() -> None:
    require_host("ip", "iptables", root=True)


ROOT = Path(__file__).parents[2]


def lab_environment() -> dict[str, str]:
    """This process's environment without FERRY_* settings, importing this tree's ferry and
    the tests package: the repository's own ``src`` comes first, so a git worktree's
    subprocesses run the worktree's code even where another checkout's ferry is installed
    (editable) in the interpreter that runs pytest."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    source = ROOT / "src"
    if not (source / "ferry").is_dir():  # an installed ferry, tested from an sdist's tests
        source = Path(ferry.__file__).parents[1]
    environment["PYTHONPATH"] = os.pathsep.join([str(source), str(ROOT)])
    environment["NO_COLOR"] = "1"
    return environment


def ferry_nat_inside(lab: NatLab, *stun_urls: str) -> dict[str, str]:
    arguments = [arg for url in stun_urls for arg in ("--stun", url)]
    completed = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.inside,
            sys.executable,
            "-m",
            "ferry",
            "nat",
            "--json",
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=lab_environment(),
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, str] = json.loads(completed.stdout)
    return result


def namespaces() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize(
    ("nat", "stun_urls", "expected"),
    [
        (
            "none",
            # the first server does not exist (nothing answers): the second is used
            ("stun:198.18.0.3:3478", "stun:198.18.0.1:3478"),
            {"mapping": "no NAT", "filtering": "endpoint-independent", "class": "unrestricted"},
        ),
        (
            "port_restricted",
            ("stun:198.18.0.1:3478",),
            {
                "mapping": "endpoint-independent",
                "filtering": "address-and-port-dependent",
                "class": "unrestricted",
            },
        ),
        (
            "symmetric",
            ("stun:198.18.0.1",),
            {
                "mapping": "address-and-port-dependent",
                "filtering": "address-and-port-dependent",
                "class": "restricted",
            },
        ),
    ],
)
def test_ferry_nat_classifies_a_real_nat(
    nat: str, stun_urls: tuple[str, ...], expected: dict[str, str], tmp_path: Path
) -> None:
    with NatLab(nat, "n") as lab:
        lab.start_stun_server(tmp_path / "stun.ready", lab_environment())
        assert ferry_nat_inside(lab, *stun_urls) == expected
        made = lab.inside
    assert made not in namespaces()


def test_no_stun_server_answering_means_unknown(tmp_path: Path) -> None:
    with NatLab("port_restricted", "u") as lab:  # no STUN server started
        assert ferry_nat_inside(lab, "stun:198.18.0.1:3478") == {
            "mapping": "unknown",
            "filtering": "unknown",
            "class": "unknown",
        }


def test_a_failed_setup_removes_what_it_made() -> None:
    lab = NatLab("symmetric", "f")
    lab.router = "bad/name"  # "ip netns add" refuses it, half-way through the setup
    with pytest.raises(RuntimeError), lab:
        pass
    assert lab.public not in namespaces()
