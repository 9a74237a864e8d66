"""The internet lab (``tests/support_internet.py``) behaves like the real internet.

Homes behind real NATs reach the internet's services and nothing unsolicited reaches them;
``ferry nat`` classifies the two kinds of home; coturn, run with the shipped
``deploy/turnserver.conf``, relays between homes for valid TURN REST credentials only, and
refuses to relay to private, loopback, link-local, multicast and benchmarking addresses; a
blackholed STUN server stays silent. Everything that leaves loopback is a subprocess in a
namespace (``tests/support_probes.py``, curl, ``python -m ferry``); this process never is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..host_tools import require_host
from ..support_internet import (
    SERVICES,
    STUN_ADDRESSES,
    TURN_ADDRESS,
    TURN_PORT,
    Coturn,
    InternetLab,
    turn_rest_credentials,
)
from .test_nat_namespaces import lab_environment

pytestmark = [pytest.mark.timeout(180)]

SECRET = "lab-secret-0123456789"


@pytest.fixture(autouse=True)
def _host_has_what_the_test_needs() -> None:
    require_host("ip", "iptables", "ss", "curl", "turnserver", root=True)


def run_in(namespace: str, command: list[str], timeout: float = 60) -> str:
    """``command``'s stdout, run in ``namespace``; it must succeed."""
    completed = subprocess.run(
        ["ip", "netns", "exec", namespace, *command],
        capture_output=True, text=True, timeout=timeout, env=lab_environment(),
        cwd=Path(__file__).parents[2], check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def probe(namespace: str, *arguments: str, timeout: float = 60) -> dict[str, object]:
    """One ``tests.support_probes`` command's JSON answer."""
    output = run_in(namespace, [sys.executable, "-m", "tests.support_probes", *arguments], timeout)
    result: dict[str, object] = json.loads(output)
    return result


def namespaces() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=True
    ).stdout


# --- Homes and NATs ---------------------------------------------------------------------------


def test_homes_reach_the_internet_and_nothing_unsolicited_reaches_them(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("served from the internet namespace\n")
    with InternetLab("w", {"cone": "cone", "symmetric": "symmetric"}) as lab:
        lab.start(
            "origin", lab.internet, [sys.executable, "-c", _ORIGIN_SERVER, str(site),
                                     str(tmp_path / "origin.ready")],
            tmp_path, lab_environment(),
        ).wait_for(tmp_path / "origin.ready")  # fmt: skip
        for name in ("cone", "symmetric"):
            home = lab.home(name)
            page = run_in(home.host, ["curl", "--silent", "--show-error", "--max-time", "20",
                                      f"http://{SERVICES}:8000/index.html"])  # fmt: skip
            assert page == "served from the internet namespace\n"

            ready = tmp_path / f"{name}.udp.ready"
            internet_side = lab.start(
                f"udp-{name}", lab.internet,
                [sys.executable, "-m", "tests.support_probes", "udp-internet",
                 "--listen", f"{SERVICES}:7000", "--other-address", STUN_ADDRESSES[0],
                 "--private", f"{home.host_address}:40000", "--ready-file", str(ready)],
                tmp_path, lab_environment(),
            )  # fmt: skip
            internet_side.wait_for(ready)
            seen = probe(home.host, "udp-home", "--to", f"{SERVICES}:7000", "--port", "40000")
            assert internet_side.wait(timeout=30) == 0
            sent = json.loads(internet_side.log())
            # The internet saw the router's public address, never the home's 10.x one ...
            assert sent["hello_from"][0] == home.public_address, sent
            # A closed port of the router drops silently, as a home router does (no ICMP).
            assert sent["router_port_9"] == "silent", sent
            # ... and of everything it sent, only the answer to the home's own datagram got in:
            # not from another port or address, not to another port, not to the private address.
            assert seen["received"] == ["solicited"], (name, seen)


_ORIGIN_SERVER = f"""
import functools, http.server, pathlib, socketserver, sys
class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):  # without HTTPServer's getfqdn(): no resolver answers in the lab
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
handler.log_message = lambda *args: None
server = Server(("{SERVICES}", 8000), handler)
pathlib.Path(sys.argv[2]).write_text("ready")
server.serve_forever()
"""


@pytest.mark.parametrize(
    ("nat", "expected"),
    [
        ("cone", {"mapping": "endpoint-independent", "class": "unrestricted"}),
        ("symmetric", {"mapping": "address-and-port-dependent", "class": "restricted"}),
    ],
)
def test_ferry_nat_classifies_each_kind_of_home(
    nat: str, expected: dict[str, str], tmp_path: Path
) -> None:
    with InternetLab("n", {"home": nat}) as lab:
        lab.start_stun_servers(tmp_path, lab_environment())
        output = run_in(
            lab.home("home").host,
            [sys.executable, "-m", "ferry", "nat", "--json",
             "--stun", f"stun:{STUN_ADDRESSES[0]}:3478"],
        )  # fmt: skip
        result = json.loads(output)
        assert {key: result[key] for key in expected} == expected, result
        assert result["filtering"] == "address-and-port-dependent", result


def test_a_blackholed_stun_server_stays_silent_while_the_other_answers(tmp_path: Path) -> None:
    with InternetLab("b", {"home": "cone"}) as lab:
        lab.start_stun_servers(tmp_path, lab_environment())
        home = lab.home("home")
        first, second = (f"{address}:3478" for address in STUN_ADDRESSES)
        before = probe(home.host, "binding", "--server", second)
        assert before["answered"] is True, before  # it answers until it is blackholed
        lab.blackhole(STUN_ADDRESSES[1])
        answered = probe(home.host, "binding", "--server", first)
        assert answered["answered"] is True, answered
        assert answered["mapped"][0] == home.public_address, answered
        silent = probe(home.host, "binding", "--server", second)
        assert silent["answered"] is False, silent
        assert silent["seconds"] >= 2, silent  # five tries, 0.5 s apart, no error either


def test_a_half_built_lab_removes_what_it_made() -> None:
    lab = InternetLab("f", {"client": "cone", "volunteer": "symmetric"})
    in_the_way = lab.home("volunteer").router
    subprocess.run(["ip", "netns", "add", in_the_way], timeout=30, check=True)
    try:
        with pytest.raises(RuntimeError, match="netns add"), lab:
            pass
        listed = namespaces()
        assert lab.internet not in listed
        assert lab.home("client").host not in listed
        assert in_the_way in listed  # not the lab's to delete
    finally:
        subprocess.run(["ip", "netns", "del", in_the_way], timeout=30, check=False)


# --- TURN: coturn with deploy/turnserver.conf -------------------------------------------------


def turn_client(lab: InternetLab, home: str, username: str, password: str, *more: str) -> dict:
    return probe(
        lab.home(home).host, "turn-client", "--server", f"{TURN_ADDRESS}:{TURN_PORT}",
        "--username", username, "--password", password, *more,
    )  # fmt: skip


def wait_for_log(coturn: Coturn, text: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while text not in coturn.log():
        assert time.monotonic() < deadline, f"coturn never logged {text!r}:\n{coturn.log()}"
        time.sleep(0.1)


def test_turn_relays_between_homes_with_valid_rest_credentials(tmp_path: Path) -> None:
    with InternetLab("t", {"client": "symmetric", "volunteer": "cone"}) as lab:
        coturn = lab.start_coturn(SECRET, tmp_path)
        username, password = turn_rest_credentials(SECRET, int(time.time()) + 600, "relay")
        relay_file = tmp_path / "relayed.json"
        peer = lab.start(
            "peer", lab.home("volunteer").host,
            [sys.executable, "-m", "tests.support_probes", "turn-peer",
             "--relay-file", str(relay_file)],
            tmp_path, lab_environment(),
        )  # fmt: skip
        result = turn_client(
            lab, "client", username, password,
            "--peer-ip", lab.home("volunteer").public_address, "--relay-file", str(relay_file),
        )  # fmt: skip
        assert result["allocate"] == 200, result
        assert result["relayed"][0] == TURN_ADDRESS, result
        # The symmetric NAT's mapping towards the relay is all the peer's side ever sees:
        assert result["peer"][0] == lab.home("volunteer").public_address, result
        assert result["echo"] == "echo:hello", result
        assert result["delete"] == 200, result
        assert peer.wait(timeout=30) == 0
        assert "hello" in json.loads(peer.log())["received"]

        assert [user for _, user in coturn.allocations()] == [username]
        wait_for_log(coturn, "peer usage:")
        [usage] = [usage for usage in coturn.relay_usage() if usage.username == username]
        assert usage.packets_to_peers >= 1 and usage.bytes_to_peers == len(b"hello") * (
            usage.packets_to_peers
        ), usage
        assert usage.bytes_from_peers >= len(b"echo:hello"), usage


def test_turn_refuses_wrongly_signed_and_expired_credentials(tmp_path: Path) -> None:
    with InternetLab("r", {"client": "cone"}) as lab:
        coturn = lab.start_coturn(SECRET, tmp_path)
        now = int(time.time())
        forged = turn_rest_credentials("not-the-secret", now + 600, "forged")
        expired = turn_rest_credentials(SECRET, now - 60, "expired")
        for username, password in (forged, expired):
            assert turn_client(lab, "client", username, password) == {"allocate": 401}
            wait_for_log(coturn, f"Cannot find credentials of user <{username}>")
        valid = turn_rest_credentials(SECRET, now + 600, "valid")
        assert turn_client(lab, "client", *valid)["allocate"] == 200  # the same lab, signed
        assert [user for _, user in coturn.allocations()] == [valid[0]]


def test_turn_refuses_to_relay_to_private_loopback_and_metadata_addresses(
    tmp_path: Path,
) -> None:
    with InternetLab("p", {"client": "cone", "volunteer": "symmetric"}) as lab:
        coturn = lab.start_coturn(SECRET, tmp_path)
        refused = {
            lab.home("volunteer").host_address: "10.0.0.0-10.255.255.255",
            "192.168.1.1": "192.168.0.0-192.168.255.255",
            "172.17.0.1": "172.16.0.0-172.31.255.255",
            "100.64.0.1": "100.64.0.0-100.127.255.255",
            "169.254.169.254": "169.254.0.0-169.254.255.255",
            SERVICES: "198.18.0.0-198.19.255.255",  # outside the homes the lab allows
            "127.0.0.1": None,  # coturn's own loopback rule: no allow-loopback-peers
            "0.0.0.0": None,  # coturn's own rule (CVE-2020-26262)
            "224.0.0.1": None,  # no-multicast-peers
        }
        public = "203.0.114.1"  # a public address no shipped range covers: allowed
        username, password = turn_rest_credentials(SECRET, int(time.time()) + 600, "private")
        permissions = [arg for address in (*refused, public) for arg in ("--permission", address)]
        result = turn_client(lab, "client", username, password, *permissions)
        assert result["allocate"] == 200, result
        assert result["permissions"] == {**dict.fromkeys(refused, 403), public: 200}, result
        for address, denied_range in refused.items():
            if denied_range is not None:
                wait_for_log(coturn, f"A peer IP {address} denied in the range: {denied_range}")
        assert coturn.log().count("CREATE_PERMISSION processed, error 403: Forbidden IP") == len(
            refused
        )
