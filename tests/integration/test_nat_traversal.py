"""NAT traversal with the STUN and TURN servers the broker hands out (issue 14), end to end.

One internet lab (``tests/support_internet.py``) for the module: four homes (a cone and a
symmetric one for clients, the same for volunteers) and, in the internet namespace, an origin
web server with a random file, two RFC 5780 STUN servers, coturn (the shipped
``deploy/turnserver.conf`` with a random secret) and an egress
(``tests/support_traversal.py``). Each test starts its own broker (its own port and ICE
flags), a volunteer in one home and a client in another, each a real ``python -m ferry``
process, and curl in the client's home downloads the file through the client's SOCKS port;
its SHA-256 must match. No ``--ice-address``: the peers gather on every interface as real
users' do. Brokers get the first STUN server only, except in the blackhole test, which comes
last in the file and silences the second one for good.

Everything that leaves loopback is a subprocess under ``ip netns exec``; this process never
is. Every role is stopped by its PID, Chromium by its process group.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.transport.browser_webrtc import find_browser

from ..host_tools import require_host
from ..support_internet import STUN_ADDRESSES, InternetLab, NamespacedProcess, RelayUsage
from ..support_traversal import (
    STUN_URLS,
    TURN_URL,
    FerryOnTheInternet,
)
from ..waiting import wait_until_blocking
from .test_nat_namespaces import lab_environment

pytestmark = [pytest.mark.timeout(240)]

HOMES = {
    "cone_client": "cone",
    "symmetric_client": "symmetric",
    "cone_volunteer": "cone",
    "symmetric_volunteer": "symmetric",
}
PYTHON_CLIENT = ["--webrtc", "python"]
_broker_ports = itertools.count(8081)


@pytest.fixture(autouse=True)
def _host_has_what_the_test_needs() -> None:
    require_host("ip", "iptables", "ss", "turnserver", "curl", root=True)


@pytest.fixture(scope="module")
def internet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryOnTheInternet]:
    require_host("ip", "iptables", "ss", "turnserver", "curl", root=True)
    folder = tmp_path_factory.mktemp("internet")
    with InternetLab("nt", HOMES) as lab:
        ferry = FerryOnTheInternet(lab, folder, lab_environment(), secrets.token_hex(20))
        ferry.start_services()
        (folder / "turn-secret").write_text(ferry.secret + "\n")
        (folder / "wrong-turn-secret").write_text(secrets.token_hex(20) + "\n")
        yield ferry


@pytest.fixture(autouse=True)
def _stop_the_tests_roles(internet: FerryOnTheInternet) -> Iterator[None]:
    yield
    internet.stop_roles()


def secret_file(internet: FerryOnTheInternet, wrong: bool = False) -> str:
    return str(internet.folder / ("wrong-turn-secret" if wrong else "turn-secret"))


def stun_and_turn(internet: FerryOnTheInternet, wrong_secret: bool = False) -> list[str]:
    return [
        "--ice-server", STUN_URLS[0], "--ice-server", TURN_URL,
        "--turn-secret-file", secret_file(internet, wrong_secret),
    ]  # fmt: skip


def download_and_check(internet: FerryOnTheInternet, home: str, folder: Path) -> None:
    target = folder / "download.bin"
    internet.download(home, target)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(internet.content).digest()


def connect(
    internet: FerryOnTheInternet,
    folder: Path,
    broker_arguments: list[str],
    client_home: str,
    volunteer_home: str,
    client_arguments: list[str] = PYTHON_CLIENT,
) -> tuple[NamespacedProcess, NamespacedProcess, NamespacedProcess]:
    """Broker, volunteer and client, connected (the client's ready file written) and a
    download checked; (broker, volunteer, client)."""
    broker, url = internet.start_broker("broker", next(_broker_ports), broker_arguments, folder)
    volunteer = internet.start_volunteer("volunteer", volunteer_home, url, [], folder)
    client, ready = internet.start_client("client", client_home, url, client_arguments, folder)
    client.wait_for(ready, timeout=90)
    download_and_check(internet, client_home, folder)
    return broker, volunteer, client


def assert_secret_nowhere(internet: FerryOnTheInternet, *texts: str) -> None:
    for text in texts:
        assert internet.secret not in text


def relayed_sessions(internet: FerryOnTheInternet, usernames: set[str]) -> list[RelayUsage]:
    assert internet.coturn is not None
    return [usage for usage in internet.coturn.relay_usage() if usage.username in usernames]


# --- STUN ---------------------------------------------------------------------------------


def test_cone_client_and_cone_python_volunteer_connect_with_stun_only(
    internet: FerryOnTheInternet, tmp_path: Path
) -> None:
    assert internet.coturn is not None
    allocations_before = len(internet.coturn.allocations())
    _, volunteer, client = connect(
        internet, tmp_path, ["--ice-server", STUN_URLS[0]], "cone_client", "cone_volunteer"
    )
    # Through STUN alone: the broker names no TURN server and coturn allocated nothing.
    assert len(internet.coturn.allocations()) == allocations_before
    assert "TURN" not in client.log()
    # NAT discovery used the broker's STUN server (no --nat-stun given) and found the cones.
    wait_until_blocking(lambda: "client NAT:" in client.log(), "the client logs its NAT class")
    assert "client NAT: unrestricted (mapping endpoint-independent" in client.log()
    assert "volunteer NAT: unrestricted (mapping endpoint-independent" in volunteer.log()


def test_default_client_and_the_widget_in_chromium_connect_with_stun_only(
    internet: FerryOnTheInternet, tmp_path: Path
) -> None:
    assert internet.coturn is not None
    allocations_before = len(internet.coturn.allocations())
    port = next(_broker_ports)
    _, url = internet.start_broker("broker", port, ["--ice-server", STUN_URLS[0]], tmp_path)
    with internet.widget_in_chromium("cone_volunteer", url, tmp_path) as chromium_log:
        wait_until_blocking(
            lambda: internet.volunteers_available(url) > 0,
            f"the widget polls the broker (Chromium's log: {chromium_log})",
            timeout=60,
            interval=0.5,
        )
        client, ready = internet.start_client("client", "cone_client", url, [], tmp_path)
        client.wait_for(ready, timeout=90)
        download_and_check(internet, "cone_client", tmp_path)
        # --webrtc auto chose the Chromium engine
        assert f"WebRTC runs in the browser engine {find_browser()}" in client.log()
    assert len(internet.coturn.allocations()) == allocations_before


# --- TURN ---------------------------------------------------------------------------------


@pytest.mark.parametrize("volunteer_home", ["cone_volunteer", "symmetric_volunteer"])
def test_a_symmetric_client_connects_through_turn(
    internet: FerryOnTheInternet, tmp_path: Path, volunteer_home: str
) -> None:
    coturn = internet.coturn
    assert coturn is not None
    before = {username for _, username in coturn.allocations()}
    broker, volunteer, client = connect(
        internet, tmp_path, stun_and_turn(internet), "symmetric_client", volunteer_home
    )
    usernames = {username for _, username in coturn.allocations()} - before
    assert usernames, coturn.log()[-3000:]
    # coturn reports an allocation's relayed bytes when it closes: stop both peers.
    client.stop()
    volunteer.stop()
    wait_until_blocking(
        lambda: {u.username for u in relayed_sessions(internet, usernames)} == usernames,
        "coturn logs the relay usage of each of the session's allocations",
        timeout=30,
    )
    time.sleep(1)  # an allocation may log more than one "peer usage" line (each a delta)
    usage = relayed_sessions(internet, usernames)
    relayed = sum(u.bytes_from_peers + u.bytes_to_peers for u in usage)
    # The whole file crossed the relay (and the QUIC packets around it).
    assert relayed >= len(internet.content), usage
    assert_secret_nowhere(internet, broker.log(), volunteer.log(), client.log())


def test_without_turn_a_symmetric_client_and_a_cone_volunteer_do_not_connect(
    internet: FerryOnTheInternet, tmp_path: Path
) -> None:
    port = next(_broker_ports)
    _, url = internet.start_broker("broker", port, ["--ice-server", STUN_URLS[0]], tmp_path)
    internet.start_volunteer("volunteer", "cone_volunteer", url, [], tmp_path)
    client, ready = internet.start_client(
        "client", "symmetric_client", url, PYTHON_CLIENT, tmp_path
    )
    wait_until_blocking(
        lambda: "data channel did not open" in client.log(),
        "the client gives up on the data channel",
        timeout=60,
        interval=0.25,
    )
    assert not ready.exists()


def test_turn_credentials_signed_with_the_wrong_secret_are_refused(
    internet: FerryOnTheInternet, tmp_path: Path
) -> None:
    coturn = internet.coturn
    assert coturn is not None
    port = next(_broker_ports)
    _, url = internet.start_broker(
        "broker", port, stun_and_turn(internet, wrong_secret=True), tmp_path
    )
    internet.start_volunteer("volunteer", "symmetric_volunteer", url, [], tmp_path)
    client, ready = internet.start_client(
        "client", "symmetric_client", url, PYTHON_CLIENT, tmp_path
    )
    wait_until_blocking(
        lambda: "refused the credentials (401" in client.log(),
        "the client logs the TURN server's refusal",
        timeout=60,
        interval=0.25,
    )
    assert "Cannot find credentials of user" in coturn.log()
    assert "--turn-secret-file does not hold the TURN server's static-auth-secret" in client.log()
    assert not ready.exists()


def test_an_expired_turn_credential_of_the_clients_own_is_refused(
    internet: FerryOnTheInternet, tmp_path: Path
) -> None:
    from ..support_internet import TURN_ADDRESS, TURN_PORT, turn_rest_credentials

    username, password = turn_rest_credentials(internet.secret, int(time.time()) - 120, "old")
    port = next(_broker_ports)
    _, url = internet.start_broker("broker", port, ["--ice-server", STUN_URLS[0]], tmp_path)
    internet.start_volunteer("volunteer", "symmetric_volunteer", url, [], tmp_path)
    own_turn = f"turn:{username}:{password}@{TURN_ADDRESS}:{TURN_PORT}"
    client, ready = internet.start_client(
        "client", "symmetric_client", url, [*PYTHON_CLIENT, "--ice-server", own_turn], tmp_path
    )
    wait_until_blocking(
        lambda: "refused the credentials (401" in client.log(),
        "the client logs the TURN server's refusal",
        timeout=60,
        interval=0.25,
    )
    assert "they expired" in client.log()
    assert not ready.exists()
    assert internet.coturn is not None
    assert f"Cannot find credentials of user <{username}>" in internet.coturn.log()
    assert password not in client.log()


# --- privacy ------------------------------------------------------------------------------


def test_the_turn_secret_is_in_no_log_and_on_no_page(
    internet: FerryOnTheInternet, tmp_path: Path
) -> None:
    port = next(_broker_ports)
    broker, url = internet.start_broker("broker", port, [*stun_and_turn(internet), "-v"], tmp_path)
    ice = internet.fetch_in_internet(
        f"{url}/v1/ice-servers", "-X", "POST", "-H", "Content-Type: application/json",
        "--data", '{"version": 1}',
    )  # fmt: skip
    assert '"credential"' in ice and TURN_URL in ice  # minted from the secret, not the secret
    pages = [internet.fetch_in_internet(f"{url}{page}") for page in ("/", "/status", "/metrics")]
    broker.stop()
    # Every ferry role's log of the module so far (coturn's own log is not ferry's).
    logs = [
        path.read_text(errors="replace")
        for path in tmp_path.parent.glob("*/*.log")
        if not path.name.startswith("turnserver")
    ]
    assert len(logs) > 5
    assert_secret_nowhere(internet, ice, *pages, *logs)


# --- a silent STUN server (last: it blackholes the second STUN server for the module) ------


def test_a_blackholed_stun_server_is_named_and_does_not_stop_the_client(
    internet: FerryOnTheInternet, tmp_path: Path
) -> None:
    internet.lab.blackhole(STUN_ADDRESSES[1])
    broker_arguments = [
        "--ice-server", STUN_URLS[0], "--ice-server", STUN_URLS[1], "--ice-servers-per-peer", "2",
    ]  # fmt: skip
    _, _, client = connect(internet, tmp_path, broker_arguments, "cone_client", "cone_volunteer")
    wait_until_blocking(
        lambda: f"the STUN server {STUN_URLS[1]} is left out" in client.log(),
        "the client names the silent STUN server",
        timeout=10,
    )
    assert STUN_URLS[0] + " is left out" not in client.log()
