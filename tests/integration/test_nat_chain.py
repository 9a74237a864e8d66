"""The whole chain with the client behind a real symmetric NAT and an unrestricted volunteer.

Network namespaces from :class:`tests.support_nat.NatLab`: broker, egress, an origin web
server, the STUN server and a Python volunteer in the "public" namespace; the client in the
"inside" one, behind an iptables MASQUERADE ``--random-fully`` router. WebRTC connects
because the volunteer's mapping is stable: it learns the client's NATed port as a
peer-reflexive candidate when the client's checks arrive. curl, inside, downloads through the
client; the file's SHA-256 must match. Every role is its own process, stopped by PID.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..host_tools import require_host
from ..support_internet import NamespacedProcess
from ..support_nat import NatLab
from .test_nat_namespaces import lab_environment

pytestmark = [
    pytest.mark.timeout(180),
]


@pytest.fixture(autouse=True)
def _host_has_what_the_test_needs() -> None:
    require_host("ip", "iptables", root=True)


STUN = "stun:198.18.0.1:3478"


def test_a_client_behind_a_symmetric_nat_downloads_through_an_unrestricted_volunteer(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    content = os.urandom(1_500_000)
    (site / "file.bin").write_bytes(content)
    ferry = [sys.executable, "-m", "ferry"]
    processes: list[NamespacedProcess] = []

    def start(name: str, namespace: str, command: list[str]) -> NamespacedProcess:
        process = NamespacedProcess(name, namespace, command, tmp_path, lab_environment())
        processes.append(process)
        return process

    def ready(name: str) -> Path:
        return tmp_path / f"{name}.ready.json"

    with NatLab("symmetric", "c") as lab:
        try:
            lab.start_stun_server(tmp_path / "stun.ready", lab_environment())
            start(
                "origin",
                lab.public,
                [sys.executable, "-c", _ORIGIN_SERVER, str(site), str(ready("origin"))],
            ).wait_for(ready("origin"))
            start(
                "egress",
                lab.public,
                [*ferry, "egress", "--listen", "198.18.0.1:8443", "--state-dir",
                 str(tmp_path / "egress"), "--unsafe-allow-private-destinations",
                 "--ready-file", str(ready("egress"))],
            ).wait_for(ready("egress"))  # fmt: skip
            bridge = json.loads(ready("egress").read_text())["bridge"]
            start(
                "broker",
                lab.public,
                [*ferry, "broker", "--listen", "198.18.0.1:8080", "--egress",
                 "ws://198.18.0.1:8443/v1/relay", "--ready-file", str(ready("broker"))],
            ).wait_for(ready("broker"))  # fmt: skip
            broker_url = json.loads(ready("broker").read_text())["broker"]
            volunteer = start(
                "volunteer",
                lab.public,
                [*ferry, "volunteer", "--broker", broker_url, "--ice-address", "198.18.0.1",
                 "--webrtc", "python",
                 "--stun", STUN, "--ready-file", str(ready("volunteer"))],
            )  # fmt: skip
            volunteer.wait_for(ready("volunteer"))
            client = start(
                "client",
                lab.inside,
                [*ferry, "client", "--broker", broker_url, "--bridge", bridge, "--listen",
                 "127.0.0.1:1080", "--volunteers", "1", "--spare-volunteers", "0",
                 "--ice-address", "10.77.0.2", "--stun", STUN, "--status-every", "0",
                 "--ready-file", str(ready("client"))],
            )  # fmt: skip
            client.wait_for(ready("client"), timeout=90)
            target = tmp_path / "download.bin"
            curl = subprocess.run(
                ["ip", "netns", "exec", lab.inside, "/usr/bin/curl", "--silent", "--show-error",
                 "--max-time", "90", "--socks5-hostname", "127.0.0.1:1080", "-o", str(target),
                 "http://198.18.0.1:8000/file.bin"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert curl.returncode == 0, curl.stderr + client.log()[-4000:]
            assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(content).digest()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "client NAT:" not in client.log():
                time.sleep(0.1)
            assert "client NAT: restricted (mapping address-and-port-dependent" in client.log()
            assert "volunteer NAT: unrestricted (mapping no NAT" in volunteer.log()
            nat_lines = [
                line
                for process in (client, volunteer)
                for line in process.log().splitlines()
                if "NAT:" in line
            ]
            assert nat_lines
            assert not [line for line in nat_lines if "198.18." in line or "10.77." in line]
        finally:
            for process in reversed(processes):
                process.stop()


_ORIGIN_SERVER = """
import functools, http.server, pathlib, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
handler.log_message = lambda *args: None
server = http.server.ThreadingHTTPServer(("198.18.0.1", 8000), handler)
pathlib.Path(sys.argv[2]).write_text("ready")
server.serve_forever()
"""
