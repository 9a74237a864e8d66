"""Resident memory of an egress holding many idle QUIC sessions (issue 8: 1,000 under 500 MB).

Starts ``ferry egress`` on 127.0.0.1 as its own process, then ``--workers`` worker processes
(this script with ``--worker``) that each open their share of ``--sessions`` sessions the way
a volunteer relays them: one WebSocket to the egress's ``/v1/relay`` per session, carrying one
QUIC session (ferry's own :class:`~ferry.transport.quic.QuicSession`, the client's settings)
whose TLS handshake completes. No WebRTC: the volunteer only relays bytes, so the egress sees
exactly what it would see. The sessions then sit idle, each sending a QUIC PING every
``--keepalive`` seconds (well inside the 30 s idle timeout), while this script reads the
egress's resident set size (``VmRSS`` in ``/proc/PID/status``) before any session and again
``--settle`` seconds after the last one is up. At the end every session is pinged once more:
the figure counts only if all of them answer (the egress still holds them all).

Usage::

    python benchmarks/idle_sessions.py [--sessions 1000] [--workers 4]

Exits 1 if sessions fail or are dropped, 2 if the egress does not come up. Only 127.0.0.1 is
contacted, and only the processes this script started are stopped (by PID).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

LOOPBACK = "127.0.0.1"
RUN_FERRY = "import sys; from ferry.cli import main; sys.argv[0] = 'ferry'; main()"
"""Runs the ``ferry`` command with this interpreter."""
READY_TIMEOUT = 60.0
"""Seconds the egress gets to write its ready file."""
HANDSHAKE_TIMEOUT = 30.0
"""Seconds one session's handshake may take (many start at once on a busy machine)."""
PING_TIMEOUT = 20.0
"""Seconds one keep-alive or final PING may wait for its acknowledgement."""
OPEN_CONCURRENCY = 16
"""Sessions one worker opens at the same time."""
STOP_TIMEOUT = 10.0
"""Seconds a process gets to exit after SIGTERM before it is killed."""


def resident_kib(pid: int) -> int:
    """``VmRSS`` of process ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


# ---------------------------------------------------------------------------------------------
# Worker: holds its share of the sessions


async def hold_sessions(url: str, count: int, keepalive: float) -> int:
    """Open ``count`` sessions, report on stdout, keep them alive until stdin closes.

    Protocol with the parent (one line each on stdout): ``up N`` once N sessions have
    completed their handshake (N < count means some failed), then, after stdin closes,
    ``alive N``: how many answered a final PING.
    """
    from ferry.transport.quic import QuicSession, QuicSettings
    from ferry.transport.websocket import connect_websocket_channel

    settings = QuicSettings()
    sessions: list[QuicSession] = []
    limit = asyncio.Semaphore(OPEN_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def open_one() -> None:
            async with limit:
                channel = await connect_websocket_channel(url, http)
                session = QuicSession(
                    settings.new_connection(settings.configuration(is_client=True)),
                    settings=settings,
                    send=channel.send,
                )
                channel.start(session.receive_datagram, lambda: session.close("relay closed"))
                session.connect()
                await session.wait_handshake(HANDSHAKE_TIMEOUT)
                sessions.append(session)

        results = await asyncio.gather(*(open_one() for _ in range(count)), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            print(f"# {len(failures)} sessions failed, first: {failures[0]!r}", flush=True)
        print(f"up {len(sessions)}", flush=True)

        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(keepalive)
                await asyncio.gather(
                    *(session.ping(PING_TIMEOUT) for session in sessions), return_exceptions=True
                )

        loop = asyncio.get_running_loop()
        keeper = asyncio.create_task(keep_alive())
        try:
            await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        answers = await asyncio.gather(
            *(session.ping(PING_TIMEOUT) for session in sessions), return_exceptions=True
        )
        alive = sum(1 for answer in answers if answer is None)
        print(f"alive {alive}", flush=True)
        for session in sessions:
            session.close("done")
        await asyncio.sleep(0.2)  # let the CONNECTION_CLOSE frames leave
    return 0


# ---------------------------------------------------------------------------------------------
# Parent


def start_egress(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``ferry egress`` on loopback; return it and its relay URL once ready."""
    ready = folder / "egress.ready.json"
    log = (folder / "egress.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            RUN_FERRY,
            "egress",
            "--listen",
            f"{LOOPBACK}:0",
            "--state-dir",
            str(folder / "state"),
            "--ready-file",
            str(ready),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if ready.exists():
            url = json.loads(ready.read_text())["egress"]
            return process, str(url)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    stop(process)
    raise SystemExit(2)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, wait (bounded), then SIGKILL."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def read_line(worker: subprocess.Popen[str], prefix: str, timeout: float) -> int:
    """The number after ``prefix`` on the worker's next such stdout line."""
    assert worker.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = worker.stdout.readline()
        if not line:
            raise RuntimeError(f"a worker exited before reporting {prefix!r}")
        if line.startswith("#"):
            print(line.rstrip())
        elif line.startswith(prefix + " "):
            return int(line.split()[1])
    raise RuntimeError(f"a worker did not report {prefix!r} in {timeout:.0f} s")


def run(arguments: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="ferry-idle-") as temporary:
        egress, url = start_egress(Path(temporary))
        workers: list[subprocess.Popen[str]] = []
        try:
            time.sleep(1.0)
            before = resident_kib(egress.pid)
            print(f"egress PID {egress.pid}: {before / 1024:.1f} MiB resident with no session")
            shares = [arguments.sessions // arguments.workers] * arguments.workers
            shares[0] += arguments.sessions - sum(shares)
            started = time.monotonic()
            for share in shares:
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            __file__,
                            "--worker",
                            str(share),
                            "--url",
                            url,
                            "--keepalive",
                            str(arguments.keepalive),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            up = sum(read_line(worker, "up", 600.0) for worker in workers)
            print(f"{up} sessions up in {time.monotonic() - started:.1f} s")
            time.sleep(arguments.settle)
            after = resident_kib(egress.pid)
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.close()
            alive = sum(read_line(worker, "alive", 120.0) for worker in workers)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    try:
                        worker.wait(timeout=STOP_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        worker.kill()
                        worker.wait(timeout=STOP_TIMEOUT)
            stop(egress)
    per_session = (after - before) / max(up, 1)
    print(
        f"egress resident memory with {up} idle sessions: {after / 1024:.1f} MiB "
        f"({(after - before) / 1024:.1f} MiB more than with none; "
        f"{per_session:.1f} KiB per session); {alive} of {up} still answered a PING after it"
    )
    if up < arguments.sessions or alive < up:
        print("idle_sessions: not every session came up and stayed up", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000, help="idle sessions to hold")
    parser.add_argument("--workers", type=int, default=4, help="client processes")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds idle before memory is read"
    )
    parser.add_argument(
        "--keepalive", type=float, default=10.0, help="seconds between a session's PINGs"
    )
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.worker is not None:
        return asyncio.run(hold_sessions(arguments.url, arguments.worker, arguments.keepalive))
    if not 1 <= arguments.workers <= arguments.sessions:
        parser.error("--workers must be between 1 and --sessions")
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main())
