"""How long a download stalls when the volunteer carrying it is killed.

Runs egress, broker, volunteers and a client as separate ``ferry`` processes on 127.0.0.1
(the same helpers as ``tests/integration/test_churn.py``), starts a rate-limited curl download
through the client's SOCKS5 port (the origin paces itself at ``--rate``), and every
``--interval`` seconds SIGKILLs the volunteer that
is carrying the most traffic right now (judged by its process's I/O counters in
``/proc/PID/io``), then starts a replacement. It samples the size of curl's output file every
5 ms and reports, for each kill, the longest time the file did not grow in the window after
the kill; then p50 and p95 over all kills, next to the same figure measured with no kill
(the baseline stall of a healthy download at that rate, from curl's own write pattern).

    python benchmarks/churn.py --kills 20
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.processes import (  # noqa: E402
    Role,
    origin_server,
    payload,
    process_network,
    start_curl,
)

SAMPLE_INTERVAL = 0.005


def io_bytes(role: Role) -> int:
    """Bytes the process has read and written through system calls so far."""
    try:
        fields = dict(
            line.split(": ")
            for line in Path(f"/proc/{role.process.pid}/io").read_text().splitlines()
        )
    except OSError:
        return 0
    return int(fields["rchar"]) + int(fields["wchar"])


def busiest(volunteers: list[Role], window: float) -> Role:
    """The volunteer whose I/O grew the most over ``window`` seconds."""
    before = {id(v): io_bytes(v) for v in volunteers}
    time.sleep(window)
    return max(volunteers, key=lambda v: io_bytes(v) - before[id(v)])


def longest_stall(output: Path, duration: float) -> float:
    """Longest time, within ``duration`` seconds from now, that ``output`` did not grow."""
    start = time.monotonic()
    last_size = output.stat().st_size if output.exists() else 0
    last_growth = start
    longest = 0.0
    while (now := time.monotonic()) - start < duration:
        size = output.stat().st_size if output.exists() else 0
        if size != last_size:
            longest = max(longest, now - last_growth)
            last_size, last_growth = size, now
        time.sleep(SAMPLE_INTERVAL)
    return max(longest, time.monotonic() - last_growth)


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (the smallest value with ``fraction`` of values <= it)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (a browser-engine volunteer's Chromium)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, ()))
    return tree


def kill_with_its_browser(victim: Role) -> None:
    """SIGKILL the volunteer and, at the same moment, every process it started (its browser
    engine's Chromium), as when the machine it runs on goes away."""
    below = process_tree(victim.process.pid)[1:]
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    victim.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="volunteers to kill (default 20)")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between kills")
    parser.add_argument(
        "--rate", type=float, default=2e6, help="bytes/s the origin sends (default 2e6)"
    )
    parser.add_argument("--volunteers", type=int, default=3, help="volunteers running at once")
    parser.add_argument("--keep-logs", type=Path, help="copy every process's log here")
    parser.add_argument(
        "--webrtc",
        choices=("python", "browser"),
        default="python",
        help="the WebRTC stack of the client and of every volunteer (browser: the browser "
        "engine on both ends)",
    )
    arguments = parser.parse_args()
    if not 1 <= arguments.kills <= 200:
        parser.error("--kills must be within 1..200")

    # Far more than a run needs at the limited rate; curl is stopped at the end.
    body = payload(64 * 1024 * 1024) * 16
    stalls: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ferry-churn-") as folder_name:
        folder = Path(folder_name)
        with (
            origin_server(body, rate=arguments.rate) as port,
            process_network(
                folder,
                volunteers=arguments.volunteers,
                client_webrtc=arguments.webrtc,
                volunteer_webrtc=arguments.webrtc,
            ) as net,
        ):
            output = folder / "download.bin"
            curl = start_curl(net.proxy, f"http://127.0.0.1:{port}/big", output)
            try:
                time.sleep(2.0)
                baseline = longest_stall(output, arguments.interval)
                print(f"baseline: longest stall with no kill {baseline * 1000:.0f} ms")
                for kill in range(1, arguments.kills + 1):
                    if curl.poll() is not None:
                        error = curl.stderr.read().decode() if curl.stderr else ""
                        size = output.stat().st_size if output.exists() else 0
                        print(f"curl ended early (exit {curl.returncode}, {size} bytes): {error}")
                        return 1
                    victim = busiest(net.volunteers, 0.3)
                    net.volunteers.remove(victim)
                    killed_at = time.strftime("%H:%M:%S")
                    kill_with_its_browser(victim)
                    stall = longest_stall(output, arguments.interval)
                    stalls.append(stall)
                    print(f"kill {kill:2d} at {killed_at}: longest stall {stall * 1000:6.0f} ms")
                    net.add_volunteer()
            finally:
                if curl.poll() is None:
                    curl.kill()
                curl.wait(timeout=10)
                if arguments.keep_logs is not None:
                    arguments.keep_logs.mkdir(parents=True, exist_ok=True)
                    for log in folder.glob("*.log"):
                        (arguments.keep_logs / log.name).write_bytes(log.read_bytes())
    p50, p95 = percentile(stalls, 0.50), percentile(stalls, 0.95)
    print()
    print(
        f"kills: {len(stalls)}  origin rate: {arguments.rate / 1e6:.1f} MB/s  "
        f"volunteers: {arguments.volunteers}  WebRTC: {arguments.webrtc} on both ends"
    )
    print(
        f"longest stall after a kill: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {max(stalls) * 1000:.0f} ms, mean {statistics.mean(stalls) * 1000:.0f} ms"
    )
    print(f"baseline stall (no kill): {baseline * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
