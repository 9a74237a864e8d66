"""Striping: one download over K rate-capped volunteers at once.

Runs egress, broker, K volunteers (each ``--max-rate 2000000 --capacity 1``, so every path is
a different volunteer) and a client (``--volunteers K --spare-volunteers 0``) as separate
``ferry`` processes on 127.0.0.1, downloads through the client's SOCKS5 port with curl for a
fixed time, and prints the aggregate rate and its ratio to K × the cap, for K = 1, 2, 4.
The goal (issue 3) is at least 0.85 for every K.

    python benchmarks/striping.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.processes import (  # noqa: E402
    origin_server,
    payload,
    process_network,
    start_curl,
)


def measure(k: int, cap: int, seconds: float, body_port: int) -> float:
    """Aggregate bytes per second of one download over ``k`` volunteers capped at ``cap``."""
    with tempfile.TemporaryDirectory(prefix="ferry-striping-") as folder_name:
        folder = Path(folder_name)
        with process_network(
            folder,
            volunteers=k,
            client_volunteers=k,
            client_arguments=("--spare-volunteers", "0"),
            volunteer_arguments=("--max-rate", str(cap), "--capacity", "1"),
        ) as net:
            output = folder / "download.bin"
            curl = start_curl(net.proxy, f"http://127.0.0.1:{body_port}/big", output)
            try:
                time.sleep(2.0)  # let slow start and the first probes settle
                start_size = output.stat().st_size if output.exists() else 0
                start = time.monotonic()
                time.sleep(seconds)
                end_size = output.stat().st_size if output.exists() else 0
                elapsed = time.monotonic() - start
            finally:
                if curl.poll() is None:
                    curl.kill()
                curl.wait(timeout=10)
    return (end_size - start_size) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap", type=int, default=2_000_000, help="bytes/s per volunteer")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per K")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4], help="volunteer counts")
    arguments = parser.parse_args()
    if not 1 <= arguments.seconds <= 120 or any(not 1 <= k <= 8 for k in arguments.k):
        parser.error("--seconds must be 1..120 and each K 1..8")
    body = payload(64 * 1024 * 1024) * 4  # more than any run needs
    rows = []
    with origin_server(body) as port:
        for k in arguments.k:
            rate = measure(k, arguments.cap, arguments.seconds, port)
            ratio = rate / (k * arguments.cap)
            rows.append((k, rate, ratio))
            print(f"K={k}: {rate / 1e6:.2f} MB/s aggregate, {ratio:.2f} of K x cap", flush=True)
    print()
    print("   K  aggregate MB/s  K x cap MB/s  ratio")
    for k, rate, ratio in rows:
        print(f"{k:4d}  {rate / 1e6:14.2f}  {k * arguments.cap / 1e6:12.2f}  {ratio:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
