"""Throughput and CPU cost of the client's WebRTC in Chromium against aiortc, in one run.

Starts, as separate processes, an egress, a broker, one volunteer (aiortc, or Chromium with
``--volunteer-webrtc browser``) and two clients on 127.0.0.1: one with ``--webrtc python``,
one with ``--webrtc browser`` (each ``--volunteers 1 --spare-volunteers 0``). Downloads of
``--megabytes`` MB through each client then alternate (python, browser, python, …) for
``--runs`` rounds, so that both see the same machine load. Each download is checked by
SHA-256 and reported as MB/s and CPU ms/MB: the client process, the client's Chromium (every
process in the browser's process group, whose leader's PID the client logs), and the
volunteer and egress. MB means 10**6 bytes. Reuses benchmarks/throughput.py's helpers.

Usage::

    python benchmarks/browser_webrtc.py [--megabytes 50] [--runs 3] [--volunteer-webrtc python]

Exits 1 if a download fails or its hash does not match, 2 if the network does not come up.
Only 127.0.0.1 is ever contacted, and only the processes this script started are stopped
(each client stops its own Chromium).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from throughput import (
    LOOPBACK,
    MEGABYTE,
    BenchmarkError,
    FerryProcess,
    cpu_seconds,
    download,
    ready_text,
    running_origin,
    start_egress_and_broker,
    start_role,
    stop_roles,
    wait_ready,
)

STACKS = ("python", "browser")


def group_cpu_seconds(group: int) -> float:
    """User + system CPU of every live process in process group ``group``."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # field 5, pgrp
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass(frozen=True, slots=True)
class Measurement:
    """One download through one client."""

    rate: float
    """MB/s."""
    cpu_ms_per_megabyte: dict[str, float]
    """CPU ms per MB: client, chromium, volunteer, egress."""


def start_network(
    folder: Path, ready_timeout: float, volunteer_webrtc: str
) -> tuple[dict[str, FerryProcess], dict[str, str], int]:
    """Egress, broker, a volunteer and one client per stack; their proxies; Chromium's PID."""
    started: dict[str, FerryProcess] = {}
    try:
        bridge, broker_url = start_egress_and_broker(folder, ready_timeout, started)
        volunteer = start_role(
            "volunteer",
            [
                *("--broker", broker_url, "--capacity", "2", "--ice-address", LOOPBACK),
                "--unsafe-allow-internal-egress",
                *("--webrtc", volunteer_webrtc),
            ],
            folder,
        )
        started["volunteer"] = volunteer
        wait_ready(volunteer, ready_timeout)
        proxies = {}
        for stack in STACKS:
            client = start_role(
                "client",
                [
                    *("--broker", broker_url, "--bridge", bridge, "--listen", f"{LOOPBACK}:0"),
                    *("--volunteers", "1", "--spare-volunteers", "0", "--ice-address", LOOPBACK),
                    *("--webrtc", stack),
                ],
                folder / stack,
            )
            started[stack] = client
            proxies[stack] = ready_text(wait_ready(client, ready_timeout), "proxy", "client")
        found = re.search(r"running \(pid (\d+)", started["browser"].log_path.read_text())
        if found is None:
            raise BenchmarkError("the browser client did not log its Chromium's PID")
    except BaseException:
        stop_roles(list(reversed(started.values())))
        raise
    return started, proxies, int(found.group(1))


def measure(
    roles: dict[str, FerryProcess],
    stack: str,
    chromium: int,
    url: str,
    proxy: str,
    payload: bytes,
    folder: Path,
    timeout: float,
) -> Measurement:
    """One download through ``stack``'s client, with the CPU each process spent on it."""
    processes = {
        "client": roles[stack].process.pid,
        "volunteer": roles["volunteer"].process.pid,
        "egress": roles["egress"].process.pid,
    }
    before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    before["chromium"] = group_cpu_seconds(chromium) if stack == "browser" else 0.0
    result = download(url, folder / f"{stack}.bin", timeout, proxy)
    after = {name: cpu_seconds(pid) for name, pid in processes.items()}
    after["chromium"] = group_cpu_seconds(chromium) if stack == "browser" else 0.0
    if result.size != len(payload) or result.sha256 != hashlib.sha256(payload).hexdigest():
        raise BenchmarkError(f"the download through the {stack} client is damaged")
    megabytes = result.size / MEGABYTE
    return Measurement(
        rate=result.megabytes_per_second(),
        cpu_ms_per_megabyte={
            name: (after[name] - before[name]) * 1000 / megabytes for name in after
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ready-timeout", type=float, default=90.0)
    parser.add_argument("--volunteer-webrtc", choices=STACKS, default="python")
    arguments = parser.parse_args(argv)
    payload = os.urandom(arguments.megabytes * MEGABYTE)
    timeout = max(60.0, 10.0 * arguments.megabytes)
    with (
        tempfile.TemporaryDirectory(prefix="ferry-bench-") as temporary,
        running_origin(payload) as origin,
    ):
        folder = Path(temporary)
        for stack in STACKS:
            (folder / stack).mkdir()
        try:
            roles, proxies, chromium = start_network(
                folder, arguments.ready_timeout, arguments.volunteer_webrtc
            )
        except BenchmarkError as exc:
            print(f"browser_webrtc: the network did not come up: {exc}", file=sys.stderr)
            return 2
        results: dict[str, list[Measurement]] = {stack: [] for stack in STACKS}
        try:
            for run in range(1, arguments.runs + 1):
                for stack in STACKS:
                    measurement = measure(
                        roles, stack, chromium, origin.url, proxies[stack], payload, folder, timeout
                    )
                    results[stack].append(measurement)
                    cpu = measurement.cpu_ms_per_megabyte
                    print(
                        f"run {run} {stack:7}: {measurement.rate:6.2f} MB/s, CPU ms/MB client "
                        f"{cpu['client']:.0f} + chromium {cpu['chromium']:.0f}, volunteer "
                        f"{cpu['volunteer']:.0f}, egress {cpu['egress']:.0f} (sha256 ok)",
                        flush=True,
                    )
        except BenchmarkError as exc:
            print(f"browser_webrtc: {exc}", file=sys.stderr)
            return 1
        finally:
            stop_roles(list(reversed(roles.values())))
        print()
        print(
            "| client WebRTC | MB/s (median) | client CPU ms/MB | + Chromium | volunteer | egress |"
        )
        print("|---|---|---|---|---|---|")
        for stack in STACKS:
            rows = results[stack]

            def median(name: str, rows: list[Measurement] = rows) -> float:
                return statistics.median(row.cpu_ms_per_megabyte[name] for row in rows)

            print(
                f"| {stack} | {statistics.median(row.rate for row in rows):.2f} | "
                f"{median('client'):.0f} | {median('chromium'):.0f} | "
                f"{median('volunteer'):.0f} | {median('egress'):.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
