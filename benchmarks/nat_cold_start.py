"""Cold start to first byte through NATs: how long a new client takes to carry its first byte.

Builds the internet lab of ``tests/support_internet.py`` (network namespaces; needs root,
iproute2, iptables, coturn and curl) with an origin, two RFC 5780 STUN servers, coturn and an
egress (``tests/support_traversal.py``); one broker per scenario, and per run a fresh
volunteer and a fresh client. It measures:

* **cold start to first byte** = (client process started → its ``--ready-file`` appears,
  written once its QUIC session to the egress is up through a volunteer; polled every 10 ms)
  + curl's ``time_starttransfer`` for a 100 kB file through the client's SOCKS port, curl
  started the moment the ready file appears. The volunteer is already polling the broker.
  Python's own start (about 1 s of the client's time here) is included: it is what a user
  waits for.

Scenarios (client home / volunteer home, the broker's ICE servers):

* ``no NAT``: client and volunteer in the internet namespace itself; STUN server 1.
* ``cone/cone via STUN``: port-restricted cone NATs both; STUN server 1.
* ``symmetric/cone via TURN``: the client behind a symmetric NAT; STUN 1 and coturn.
* ``cone/cone, STUN 2 blackholed``: STUN 1 and 2 both handed out
  (``--ice-servers-per-peer 2``), the second silently dropping everything (last: the blackhole
  stays for the lab's life).

Usage::

    sudo python benchmarks/nat_cold_start.py [--runs 3] [--client-webrtc python|browser]

The volunteer is the Python one. Every loop is bounded; every process is stopped by PID. This
process itself only talks to loopback; everything else runs under ``ip netns exec``.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.test_nat_namespaces import lab_environment  # noqa: E402
from tests.support_internet import STUN_ADDRESSES, InternetLab  # noqa: E402
from tests.support_traversal import (  # noqa: E402
    STUN_URLS,
    TURN_URL,
    FerryOnTheInternet,
    wait_until,
)

SMALL_FILE_SIZE = 100_000
READY_POLL = 0.01
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Scenario:
    name: str
    client_home: str
    volunteer_home: str
    ice_servers: tuple[str, ...]
    turn: bool = False
    blackhole_second_stun: bool = False


SCENARIOS = (
    Scenario("no NAT", "internet", "internet", (STUN_URLS[0],)),
    Scenario("cone/cone via STUN", "cone_client", "cone_volunteer", (STUN_URLS[0],)),
    Scenario(
        "symmetric/cone via TURN",
        "symmetric_client",
        "cone_volunteer",
        (STUN_URLS[0], TURN_URL),
        turn=True,
    ),
    Scenario(
        "cone/cone, STUN 2 blackholed",
        "cone_client",
        "cone_volunteer",
        STUN_URLS,
        blackhole_second_stun=True,
    ),
)


@dataclass(frozen=True)
class Run:
    connected: float
    """Client process start → ready file (seconds)."""
    first_byte: float
    """``connected`` + curl's time to first byte."""


def one_run(
    ferry: FerryOnTheInternet, scenario: Scenario, broker_url: str, client_webrtc: str, folder: Path
) -> Run:
    ferry.start_volunteer("volunteer", scenario.volunteer_home, broker_url, [], folder)
    wait_until(
        lambda: ferry.volunteers_available(broker_url) > 0,
        "the volunteer polls the broker",
        timeout=30,
        step=0.2,
    )
    started = time.monotonic()
    client, ready = ferry.start_client(
        "client", scenario.client_home, broker_url, ["--webrtc", client_webrtc], folder
    )
    for _ in range(int(READY_TIMEOUT / READY_POLL)):
        if ready.exists() or client.process.poll() is not None:
            break
        time.sleep(READY_POLL)
    connected = time.monotonic() - started
    if not ready.exists():
        raise RuntimeError(f"the client did not connect:\n{client.log()[-3000:]}")
    first_byte = ferry.download(scenario.client_home, folder / "download.bin")
    return Run(connected=connected, first_byte=connected + first_byte)


def measure(scenario: Scenario, ferry: FerryOnTheInternet, runs: int, client_webrtc: str,
            port: int) -> list[Run]:  # fmt: skip
    folder = ferry.folder / f"scenario-{port}"
    folder.mkdir()
    if scenario.blackhole_second_stun:
        ferry.lab.blackhole(STUN_ADDRESSES[1])
    arguments = [argument for url in scenario.ice_servers for argument in ("--ice-server", url)]
    if scenario.turn:
        arguments += ["--turn-secret-file", str(ferry.folder / "turn-secret")]
    arguments += ["--ice-servers-per-peer", "2"]
    _, broker_url = ferry.start_broker("broker", port, arguments, folder)
    results = []
    try:
        for number in range(runs):
            run_folder = folder / f"run{number}"
            run_folder.mkdir()
            try:
                results.append(one_run(ferry, scenario, broker_url, client_webrtc, run_folder))
            finally:
                while len(ferry.roles) > 1:  # the client and the volunteer, not the broker
                    ferry.roles.pop().stop()
    finally:
        ferry.stop_roles()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument(
        "--client-webrtc",
        choices=("python", "browser"),
        default="python",
        help="the client's WebRTC stack (default python; browser = the Chromium engine)",
    )
    arguments = parser.parse_args()
    runs = max(1, min(arguments.runs, 20))
    homes = {"cone_client": "cone", "symmetric_client": "symmetric", "cone_volunteer": "cone"}
    print(
        "cold start to first byte = client process start -> connected (ready file) + curl's "
        f"time_starttransfer for {SMALL_FILE_SIZE // 1000} kB through its SOCKS port; "
        f"client --webrtc {arguments.client_webrtc}, Python volunteer already polling; "
        f"{runs} runs each"
    )
    table = []
    with TemporaryDirectory(prefix="nat-cold-start-") as temporary:
        folder = Path(temporary)
        with InternetLab("cs", homes) as lab:
            ferry = FerryOnTheInternet(lab, folder, lab_environment(), secrets.token_hex(20))
            ferry.start_services(file_size=SMALL_FILE_SIZE)
            (folder / "turn-secret").write_text(ferry.secret + "\n")
            for port, scenario in enumerate(SCENARIOS, start=8180):
                results = measure(scenario, ferry, runs, arguments.client_webrtc, port)
                table.append((scenario.name, results))
    print(f"{'scenario':<30} {'connected (median)':>19} {'first byte (median)':>20} {'min':>6} "
          f"{'max':>6}")  # fmt: skip
    for name, results in table:
        first = [run.first_byte for run in results]
        print(
            f"{name:<30} {statistics.median(run.connected for run in results):>17.2f} s"
            f" {statistics.median(first):>18.2f} s {min(first):>5.2f}s {max(first):>5.2f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
