"""The idle footprint of a volunteer's browser engine: CPU and memory while no client comes.

Starts, as separate ``ferry`` processes on 127.0.0.1, an egress, a broker and one volunteer
with ``--webrtc browser`` (its WebRTC in a headless Chromium, as ``--webrtc auto`` runs it
when Chromium is installed). No client ever comes: the volunteer long-polls the broker, as an
idle volunteer does. After ``--settle`` seconds it measures, over ``--seconds`` seconds:

* CPU: user + system time (``/proc/PID/stat``) of the volunteer's Python process and of every
  Chromium process below it, as a percentage of one core;
* memory at the end: RSS of each (which counts pages shared between Chromium's processes
  once per process, so their sum overstates) and PSS from ``/proc/PID/smaps_rollup`` (shared
  pages divided among their users: the sum is the footprint).

The browser is the engine's default (Chromium's headless shell where installed, else
Chromium or Chrome); ``--browser PATH`` measures another, for example the full
``/usr/bin/chromium``.

Usage::

    python benchmarks/idle_engine.py [--seconds 300] [--settle 20] [--browser PATH]

Only 127.0.0.1 is contacted, and only the processes this script started are stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from throughput import (
    LOOPBACK,
    BenchmarkError,
    FerryProcess,
    cpu_seconds,
    process_tree,
    start_egress_and_broker,
    start_role,
    stop_roles,
    wait_ready,
)


def memory_kib(pid: int, field: str) -> int:
    """``field`` (``Rss`` or ``Pss``) of ``pid`` from /proc/PID/smaps_rollup, in KiB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def footprint(volunteer: FerryProcess) -> tuple[dict[str, float], dict[str, tuple[int, int]]]:
    """CPU seconds and (RSS, PSS) KiB of the volunteer's Python process and its Chromium."""
    cpu = {"python": 0.0, "chromium": 0.0}
    memory = {"python": (0, 0), "chromium": (0, 0)}
    for pid in process_tree(volunteer.process.pid):
        part = "python" if pid == volunteer.process.pid else "chromium"
        with contextlib.suppress(OSError):
            cpu[part] += cpu_seconds(pid)
            rss, pss = memory[part]
            memory[part] = (rss + memory_kib(pid, "Rss"), pss + memory_kib(pid, "Pss"))
    return cpu, memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="measured window")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--browser", default=None, help="the browser (default: the engine's)")
    arguments = parser.parse_args()
    if not 1 <= arguments.seconds <= 3600 or not 0 <= arguments.settle <= 600:
        parser.error("--seconds must be within 1..3600 and --settle within 0..600")
    started: dict[str, FerryProcess] = {}
    with tempfile.TemporaryDirectory(prefix="ferry-idle-engine-") as name:
        folder = Path(name)
        try:
            _, broker_url = start_egress_and_broker(folder, arguments.ready_timeout, started)
            volunteer = start_role(
                "volunteer",
                [
                    *("--broker", broker_url, "--ice-address", LOOPBACK),
                    *("--unsafe-allow-internal-egress", "--webrtc", "browser"),
                    *(("--browser", arguments.browser) if arguments.browser else ()),
                ],
                folder,
            )
            started["volunteer"] = volunteer
            if wait_ready(volunteer, arguments.ready_timeout).get("webrtc") != "browser":
                raise BenchmarkError("the volunteer does not run the browser engine")
            time.sleep(arguments.settle)
            cpu_before, _ = footprint(volunteer)
            began = time.monotonic()
            time.sleep(arguments.seconds)
            cpu_after, memory = footprint(volunteer)
            elapsed = time.monotonic() - began
        except BenchmarkError as exc:
            print(f"idle_engine: {exc}", file=sys.stderr)
            return 1
        finally:
            stop_roles(list(reversed(started.values())))
    print(
        f"an idle volunteer with --webrtc browser ({arguments.browser or 'the default browser'}),"
        f" measured over {elapsed:.0f} s:"
    )
    for part in ("python", "chromium"):
        busy = (cpu_after[part] - cpu_before[part]) / elapsed * 100
        rss, pss = memory[part]
        print(
            f"  {part:<8} CPU {busy:5.2f} % of a core   RSS {rss / 1024:6.1f} MiB   "
            f"PSS {pss / 1024:6.1f} MiB"
        )
    total_cpu = sum(cpu_after[p] - cpu_before[p] for p in cpu_after) / elapsed * 100
    total_pss = sum(pss for _, pss in memory.values()) / 1024
    print(f"  total    CPU {total_cpu:5.2f} % of a core   PSS {total_pss:6.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
