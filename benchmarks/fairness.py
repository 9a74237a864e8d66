"""Does one greedy session slow another session's small requests at the egress?

Runs egress, broker, two volunteers (one client each, ``--capacity 1``) and two clients as
separate ``ferry`` processes on 127.0.0.1, so the only component sessions A and B share is
the egress (and the machine). Session B makes ``--exchanges`` small request/response round
trips (``--size`` bytes each way, echoed by a TCP server) over one SOCKS5 connection, while
session A is idle and while A downloads (or, with ``--bulk upload``, uploads) as fast as it
can through its own SOCKS5 connection; idle and busy blocks alternate ``--blocks`` times so
that changes in the machine's load hit both. Prints B's median and p95 round trip in both
phases, their ratios, and A's transfer rate alone and while B ran.

    python benchmarks/fairness.py --exchanges 400

Set ``PYTHONPATH`` to another source tree to measure that tree's egress the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.processes import Network  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (the smallest value with ``fraction`` of values <= it)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


async def socks5_connect(
    proxy: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A SOCKS5 CONNECT to 127.0.0.1:``port`` through ``proxy`` (HOST:PORT)."""
    host, _, proxy_port = proxy.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(proxy_port))
    writer.write(b"\x05\x01\x00")
    if await reader.readexactly(2) != b"\x05\x00":
        raise RuntimeError("the proxy refused the SOCKS5 greeting")
    writer.write(b"\x05\x01\x00\x01" + bytes([127, 0, 0, 1]) + struct.pack("!H", port))
    reply = await reader.readexactly(10)
    if reply[1] != 0:
        raise RuntimeError(f"the proxy refused the connection (REP {reply[1]})")
    return reader, writer


HANDLERS: set[asyncio.Task[object]] = set()
"""The origin's connection handlers, awaited (bounded) before the loop ends."""


def remember_handler() -> None:
    task = asyncio.current_task()
    if task is not None:
        HANDLERS.add(task)


async def serve_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    remember_handler()
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass  # the benchmark is over: end quietly (asyncio would log a cancelled handler)
    finally:
        writer.close()


async def serve_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    remember_handler()
    try:
        while await reader.read(262144):
            pass
    except (ConnectionError, asyncio.CancelledError):
        pass  # the benchmark is over: end quietly (asyncio would log a cancelled handler)
    finally:
        writer.close()


async def serve_endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    remember_handler()
    block = os.urandom(65536)
    try:
        while True:
            writer.write(block)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass  # the benchmark is over: end quietly (asyncio would log a cancelled handler)
    finally:
        writer.close()


async def round_trips(proxy: str, echo_port: int, count: int, size: int) -> list[float]:
    """``count`` echo round trips of ``size`` bytes over one connection, in seconds."""
    reader, writer = await socks5_connect(proxy, echo_port)
    message = b"q" * size
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(message)
            await asyncio.wait_for(reader.readexactly(size), 30)
            times.append(time.perf_counter() - started)
    finally:
        writer.close()
    return times


class BulkTransfer:
    """Session A's bulk transfer through its SOCKS5 port: a download from the endless
    source, or an upload into the sink."""

    def __init__(self, proxy: str, port: int, upload: bool) -> None:
        self.proxy, self.port, self.upload = proxy, port, upload
        self.moved = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        reader, writer = await socks5_connect(self.proxy, self.port)
        self._writer = writer
        self._tasks.append(asyncio.create_task(self._read(reader)))
        if self.upload:
            self._tasks.append(asyncio.create_task(self._write(writer)))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(262144):
            if not self.upload:
                self.moved += len(data)

    async def _write(self, writer: asyncio.StreamWriter) -> None:
        block = os.urandom(65536)
        while True:
            writer.write(block)
            await writer.drain()
            self.moved += len(block)

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


async def measure(net: Network, proxy_b: str, arguments: argparse.Namespace) -> None:
    echo = await asyncio.start_server(serve_echo, "127.0.0.1", 0)
    endless = await asyncio.start_server(serve_endless, "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    endless_port = endless.sockets[0].getsockname()[1]
    sink = await asyncio.start_server(serve_sink, "127.0.0.1", 0)
    sink_port = sink.sockets[0].getsockname()[1]
    idle: list[float] = []
    busy: list[float] = []
    alone_rates: list[float] = []
    shared_rates: list[float] = []
    per_block = max(1, arguments.exchanges // arguments.blocks)
    try:
        await round_trips(proxy_b, echo_port, 10, arguments.size)  # warm up
        # Idle and busy blocks alternate, so a change in the machine's load hits both.
        for _ in range(arguments.blocks):
            idle += await round_trips(proxy_b, echo_port, per_block, arguments.size)
            bulk = BulkTransfer(
                net.proxy,
                sink_port if arguments.bulk == "upload" else endless_port,
                arguments.bulk == "upload",
            )
            await bulk.start()
            try:
                await asyncio.sleep(arguments.warmup)
                before, started = bulk.moved, time.perf_counter()
                await asyncio.sleep(arguments.warmup)
                alone_rates.append((bulk.moved - before) / (time.perf_counter() - started))
                before, started = bulk.moved, time.perf_counter()
                busy += await round_trips(proxy_b, echo_port, per_block, arguments.size)
                shared_rates.append((bulk.moved - before) / (time.perf_counter() - started))
                if not bulk.running:
                    raise RuntimeError("session A's transfer ended during the measurement")
            finally:
                await bulk.stop()
    finally:
        echo.close()
        endless.close()
        sink.close()
        if HANDLERS:
            await asyncio.wait(HANDLERS, timeout=10)
            for handler in HANDLERS:
                handler.cancel()

    def line(name: str, values: list[float]) -> str:
        return (
            f"{name}: median {statistics.median(values) * 1000:7.2f} ms   "
            f"p95 {percentile(values, 0.95) * 1000:7.2f} ms   "
            f"max {max(values) * 1000:7.2f} ms"
        )

    print(
        f"session B: {len(idle)} + {len(busy)} round trips of {arguments.size} bytes each way, "
        f"in {arguments.blocks} alternating blocks; session A: bulk {arguments.bulk}"
    )
    print(line("A idle", idle))
    print(line("A busy", busy))
    print(
        f"session A's bulk {arguments.bulk}: median {statistics.median(alone_rates) / 1e6:.1f} "
        f"MB/s alone, {statistics.median(shared_rates) / 1e6:.1f} MB/s while B ran"
    )
    median_ratio = statistics.median(busy) / statistics.median(idle)
    p95_ratio = percentile(busy, 0.95) / percentile(idle, 0.95)
    print(f"ratio busy/idle: median {median_ratio:.2f}x   p95 {p95_ratio:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchanges", type=int, default=400, help="round trips per phase")
    parser.add_argument("--blocks", type=int, default=4, help="idle/busy block pairs")
    parser.add_argument(
        "--bulk", choices=("download", "upload"), default="download", help="session A's load"
    )
    parser.add_argument("--size", type=int, default=100, help="bytes per request and reply")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds A runs alone before B starts"
    )
    arguments = parser.parse_args()
    if not 1 <= arguments.exchanges <= 10000:
        parser.error("--exchanges must be within 1..10000")
    with tempfile.TemporaryDirectory(prefix="ferry-fairness-") as folder_name:
        net = Network(Path(folder_name))
        try:
            net.start(
                volunteers=2,
                client_volunteers=1,
                client_arguments=("--spare-volunteers", "0"),
                volunteer_arguments=("--capacity", "1"),
            )
            client_b = net._start(
                "client-b",
                [
                    "client",
                    "--broker",
                    net.broker_url,
                    "--bridge",
                    net.bridge,
                    "--listen",
                    "127.0.0.1:0",
                    "--volunteers",
                    "1",
                    "--spare-volunteers",
                    "0",
                    "--ice-address",
                    "127.0.0.1",
                ],
            )
            proxy_b = client_b.wait_ready(60)["proxy"]
            asyncio.run(measure(net, proxy_b, arguments))
        finally:
            net.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
