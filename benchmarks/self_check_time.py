"""How long ``ferry client --check`` takes, step by step, in a healthy network on loopback.

In this process: an egress, a broker and one Python volunteer on 127.0.0.1 (the helpers of
``tests/integration/client_network.py``), and a client whose self-check runs ``--runs`` times
in a row. Prints the median and the maximum of the whole check and of each step.

Usage::

    python benchmarks/self_check_time.py [--runs 10]

Exits 1 if a step fails. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.client_network import ClientNetwork  # noqa: E402

from ferry.client.self_check import StepOutcome  # noqa: E402


async def measure(runs: int) -> int:
    async with ClientNetwork().running() as network:
        client = await network.start_client(network.client_config(page=False), connect=False)
        totals: list[float] = []
        per_step: dict[str, list[float]] = {}
        for _ in range(runs):
            started = time.monotonic()
            results = await client.self_check().run()
            totals.append(time.monotonic() - started)
            for result in results:
                if result.outcome is StepOutcome.FAILED:
                    print(f"step {result.step.value} failed: {result.detail}")
                    return 1
                per_step.setdefault(result.step.value, []).append(result.seconds)
    print(
        f"whole check: median {statistics.median(totals):.3f} s, "
        f"max {max(totals):.3f} s ({runs} runs)"
    )
    for step, seconds in per_step.items():
        print(f"  {step:<10} median {statistics.median(seconds):.3f} s, max {max(seconds):.3f} s")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10, help="checks to run (default 10)")
    arguments = parser.parse_args()
    sys.exit(asyncio.run(measure(max(1, arguments.runs))))


if __name__ == "__main__":
    main()
