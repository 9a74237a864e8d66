"""Throughput, CPU cost and first-byte latency of a whole ferry chain on loopback.

Starts, as separate processes through the ``ferry`` command line, an egress, a broker, one
volunteer and a client (``--volunteers 1``), all on 127.0.0.1, plus an origin HTTP server (a
thread in this process) serving ``--megabytes`` MB of random bytes. Each run then downloads the
payload with curl

* through the client's SOCKS5 port (``curl --socks5-hostname``), and
* directly from the origin over loopback TCP,

checks the SHA-256 of both against the payload, and reports MB/s for each, the ratio
ferry ÷ direct, and the CPU time (user + system, from ``/proc/PID/stat``) that each ferry
process spent during the ferry download, in milliseconds per MB. MB means 10**6 bytes.

Then, in the same run:

* **first-byte latency**: the time from the first SOCKS5 byte to the first byte of the
  origin's HTTP reply, on the client's warm session, and on fresh client processes (one per
  measurement, each with nothing warmed: broker exchange, WebRTC, QUIC handshake included;
  they use a second broker and volunteer that share the egress);
* the same bulk runs through **one Chromium volunteer** (the widget on a loopback page in
  Debian's Chromium started as a visitor's browser runs, with no DevTools session attached;
  its own broker and client process; its CPU is that of every Chromium process, and where it
  went is printed by thread). ``--no-browser`` skips it;
* the **WebRTC stacks side by side**: python/python, browser/python, python/browser,
  browser/browser (client ``--webrtc`` / ``ferry volunteer --webrtc``; ``browser`` is the
  browser engine, whose Chromium's CPU is counted with its role) and the browser-engine client
  through the widget, each with its own broker on the shared egress, all up at once and the
  downloads interleaved, so that the ratios of one run share the machine's load (medians
  printed, with each pairing's MB/s and CPU per MB against python/python's). When
  Snowflake's binaries are present (``snowflake_compare.py --build``, as root), **Snowflake
  2.5.1** is one more row of that table, started by ``snowflake_compare.py`` in a network
  namespace of its own and measured in the same interleaved runs, and the ratios
  browser/browser ÷ Snowflake and browser/widget ÷ Snowflake are printed (``--no-snowflake``
  leaves it out). ``--stacks-only`` runs only this table.

``--volunteer-cpu N`` runs the volunteer (the ``ferry volunteer`` process, or every Chromium
process) on CPU N alone and everything else on the other CPUs, as if the volunteer had a
machine of its own, and reports how busy its CPU was.

Usage::

    python benchmarks/throughput.py [--megabytes 50] [--runs 3] [--latency-runs 5]
    python benchmarks/throughput.py --compare-sctp-packets-per-ack 1,2   # A/B, interleaved
    python benchmarks/throughput.py --volunteer-cpu 1   # the volunteer alone on CPU 1
    python benchmarks/throughput.py --stacks-only --megabytes 20 --runs 3

Exits 1 if a download fails or its hash does not match, 2 if the network does not come up.
Only 127.0.0.1 is ever contacted, and only the processes this script started are stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
MEGABYTE = 1_000_000
ROLES = ("client", "volunteer", "egress", "broker")
READY_POLL_INTERVAL = 0.1
"""Seconds between two looks at a ready file."""
STOP_TIMEOUT = 10.0
"""Seconds a ferry process gets to exit after SIGTERM before it is killed."""
MAX_REQUEST_HEAD = 65536
"""Largest HTTP request head the origin reads."""
SEND_CHUNK = 256 * 1024
"""Bytes the origin hands to the socket at once."""
RUN_FERRY = "import sys; from ferry.cli import main; sys.argv[0] = 'ferry'; main()"
"""Runs the ``ferry`` command with this interpreter (no PATH or shim between us and the PID)."""
CLIENT_WEBRTC = ("--webrtc", "python")
"""Every client runs its WebRTC on aiortc: with the default ``auto`` a client finds Debian's
Chromium and runs its WebRTC there, in processes whose CPU this script does not count."""


VOLUNTEER_WEBRTC = ("--webrtc", "python")
"""The "Python volunteer" runs aiortc: ``ferry volunteer`` defaults to ``auto`` too (the
stack table below measures the browser engine, its Chromium's CPU counted)."""


class BenchmarkError(Exception):
    """The benchmark could not run or a result was wrong; the message says which."""


# ---------------------------------------------------------------------------------------------
# Origin server


class OriginHandler(socketserver.BaseRequestHandler):
    """Answers ``GET /payload`` with the payload, anything else with 404; one request per
    connection."""

    server: OriginServer

    def handle(self) -> None:
        connection: socket.socket = self.request
        connection.settimeout(30.0)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_HEAD:
            chunk = connection.recv(4096)
            if not chunk:
                return
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].split()
        if request_line[:2] == [b"GET", b"/first-byte"]:
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            )
            return
        if len(request_line) < 2 or request_line[0] != b"GET" or request_line[1] != b"/payload":
            connection.sendall(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        payload = memoryview(self.server.payload)
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        )
        for offset in range(0, len(payload), SEND_CHUNK):
            connection.sendall(payload[offset : offset + SEND_CHUNK])


class OriginServer(socketserver.ThreadingTCPServer):
    """A loopback HTTP server that serves one payload from memory."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        super().__init__((LOOPBACK, 0), OriginHandler)

    @property
    def url(self) -> str:
        """The payload's URL."""
        return f"http://{LOOPBACK}:{self.server_address[1]}/payload"


@contextlib.contextmanager
def running_origin(payload: bytes) -> Iterator[OriginServer]:
    """Serve ``payload`` from a background thread until the block ends."""
    server = OriginServer(payload)
    thread = threading.Thread(target=server.serve_forever, name="origin", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_TIMEOUT)


# ---------------------------------------------------------------------------------------------
# ferry processes


@dataclass(slots=True)
class FerryProcess:
    """One ferry role started by this script."""

    role: str
    """Which role (client, volunteer, egress, broker)."""
    process: subprocess.Popen[bytes]
    """The running process."""
    log_path: Path
    """Its stdout and stderr."""
    ready_path: Path
    """The ready file it writes once usable."""

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


EXEC_ON_CPU = (
    "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)
"""Pins itself to CPU ``argv[1]``, then becomes the program ``argv[2:]`` (same PID); what
the program starts later inherits the pinning."""


def on_cpu(command: list[str], cpu: int | None) -> list[str]:
    """``command`` (its first word an absolute path) pinned to ``cpu``; ``None``: as it is."""
    return command if cpu is None else [sys.executable, "-c", EXEC_ON_CPU, str(cpu), *command]


def ferry_environment() -> dict[str, str]:
    """This environment minus proxy variables and FERRY_* settings that could change a role."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.lower().endswith("_proxy") and not name.startswith("FERRY_")
    }


def one_volunteer_client(
    broker_url: str,
    bridge: str,
    extra: tuple[str, ...] = (),
    webrtc: tuple[str, ...] = CLIENT_WEBRTC,
) -> list[str]:
    """``ferry client``'s arguments in every benchmark: one volunteer, any free loopback port,
    loopback ICE, ``webrtc`` (the Python stack by default), then ``extra``."""
    return [
        *("--broker", broker_url, "--bridge", bridge, "--listen", f"{LOOPBACK}:0"),
        *("--volunteers", "1", "--ice-address", LOOPBACK, *webrtc, *extra),
    ]


def start_role(
    role: str,
    arguments: list[str],
    folder: Path,
    *,
    name: str | None = None,
    code: str = RUN_FERRY,
    cpu: int | None = None,
) -> FerryProcess:
    """Start ``ferry ROLE ARGUMENTS --ready-file ...`` with output to a log file.

    ``name`` (default: the role) names its log and ready files; ``code`` is the Python that
    runs the command line; ``cpu``, if given, the only CPU it runs on.
    """
    name = name or role
    ready_path = folder / f"{name}.ready.json"
    log_path = folder / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            on_cpu(
                [sys.executable, "-c", code, role, *arguments, "--ready-file", str(ready_path)],
                cpu,
            ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ferry_environment(),
            start_new_session=True,
        )
    return FerryProcess(role=role, process=process, log_path=log_path, ready_path=ready_path)


def wait_ready(role: FerryProcess, timeout: float) -> dict[str, object]:
    """Wait (bounded) for ``role``'s ready file and return its JSON."""
    for _ in range(int(timeout / READY_POLL_INTERVAL) + 1):
        if role.ready_path.exists():
            content = json.loads(role.ready_path.read_text())
            if not isinstance(content, dict):
                raise BenchmarkError(f"{role.role}: ready file is not a JSON object")
            return content
        if role.process.poll() is not None:
            raise BenchmarkError(
                f"{role.role} exited with status {role.process.returncode} before it was "
                f"ready:\n{role.log_tail()}"
            )
        time.sleep(READY_POLL_INTERVAL)
    raise BenchmarkError(f"{role.role} was not ready after {timeout:.0f} s:\n{role.log_tail()}")


def ready_text(content: dict[str, object], key: str, role: str) -> str:
    """One string field of a ready file."""
    value = content.get(key)
    if not isinstance(value, str):
        raise BenchmarkError(f"{role}: ready file has no string {key!r}: {content}")
    return value


def stop_roles(roles: list[FerryProcess]) -> None:
    """SIGTERM each started process by PID, wait (bounded), then SIGKILL what is left."""
    for role in roles:
        if role.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                role.process.send_signal(signal.SIGTERM)
    for role in roles:
        try:
            role.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                role.process.kill()
            role.process.wait(timeout=STOP_TIMEOUT)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# Downloads


@dataclass(frozen=True, slots=True)
class Download:
    """One finished download."""

    seconds: float
    """curl's total time, from start to the last byte."""
    first_byte_seconds: float
    """curl's time from start to the first byte of the reply."""
    size: int
    """Bytes received."""
    sha256: str
    """Hex SHA-256 of what was received."""

    def megabytes_per_second(self) -> float:
        """Throughput in MB (10**6 bytes) per second."""
        return self.size / MEGABYTE / self.seconds


def curl_download(
    url: str,
    output: Path,
    timeout: float,
    proxy_arguments: list[str],
    *,
    wrapper: list[str] | None = None,
    environment: dict[str, str] | None = None,
) -> Download:
    """Fetch ``url`` with curl and its ``proxy_arguments`` (``--noproxy *`` when empty),
    run inside ``wrapper`` (e.g. ``ip netns exec NS``) if given, into ``output``; hash what
    arrived and remove the file."""
    command = [
        "curl",
        "--silent",
        "--show-error",
        "--fail",
        "--max-time",
        f"{timeout:.0f}",
        "--output",
        str(output),
        "--write-out",
        "%{time_total} %{time_starttransfer} %{size_download}",
        *(proxy_arguments or ["--noproxy", "*"]),
        url,
    ]
    try:
        result = subprocess.run(
            [*(wrapper or []), *command],
            capture_output=True,
            timeout=timeout + 10,
            env=environment if environment is not None else ferry_environment(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"curl {url} did not finish in {timeout + 10:.0f} s") from None
    if result.returncode != 0:
        raise BenchmarkError(
            f"curl {url} failed (exit {result.returncode}): {result.stderr.decode().strip()}"
        )
    seconds_text, first_byte_text, size_text = result.stdout.decode().split()
    digest = hashlib.sha256()
    with output.open("rb") as received:
        while chunk := received.read(1 << 20):
            digest.update(chunk)
    output.unlink()
    return Download(
        seconds=float(seconds_text),
        first_byte_seconds=float(first_byte_text),
        size=int(size_text),
        sha256=digest.hexdigest(),
    )


def download(url: str, output: Path, timeout: float, socks_proxy: str | None) -> Download:
    """Fetch ``url`` with curl (through ``socks_proxy`` if given) into ``output``."""
    proxy = ["--socks5-hostname", socks_proxy] if socks_proxy is not None else []
    return curl_download(url, output, timeout, proxy)


@dataclass(frozen=True, slots=True)
class RunResult:
    """The figures of one run."""

    ferry_rate: float
    """MB/s through ferry."""
    direct_rate: float
    """MB/s directly from the origin."""
    cpu_ms_per_megabyte: dict[str, float]
    """CPU milliseconds per MB during the ferry download, per role."""

    @property
    def ratio(self) -> float:
        """ferry ÷ direct."""
        return self.ferry_rate / self.direct_rate

    @property
    def total_cpu_ms_per_megabyte(self) -> float:
        """CPU milliseconds per MB summed over every ferry process."""
        return sum(self.cpu_ms_per_megabyte.values())


def check_download(result: Download, payload_size: int, payload_sha256: str, label: str) -> None:
    """Raise if a download is not exactly the payload."""
    if result.size != payload_size or result.sha256 != payload_sha256:
        raise BenchmarkError(
            f"{label} download does not match the payload: {result.size} bytes, sha256 "
            f"{result.sha256} (expected {payload_size} bytes, sha256 {payload_sha256})"
        )


def process_cpu(role: FerryProcess) -> Callable[[], float]:
    """A reader of ``role``'s CPU seconds."""
    return lambda: cpu_seconds(role.process.pid)


def one_run(
    cpu_readers: dict[str, Callable[[], float]],
    origin_url: str,
    proxy: str,
    payload: bytes,
    payload_sha256: str,
    folder: Path,
    timeout: float,
) -> RunResult:
    """Download once through ferry (measuring each role's CPU) and once directly."""
    output = folder / "download.bin"
    before = {name: read() for name, read in cpu_readers.items()}
    through_ferry = download(origin_url, output, timeout, socks_proxy=proxy)
    after = {name: read() for name, read in cpu_readers.items()}
    check_download(through_ferry, len(payload), payload_sha256, "ferry")
    direct = download(origin_url, output, timeout, socks_proxy=None)
    check_download(direct, len(payload), payload_sha256, "direct")
    megabytes = len(payload) / MEGABYTE
    return RunResult(
        ferry_rate=through_ferry.megabytes_per_second(),
        direct_rate=direct.megabytes_per_second(),
        cpu_ms_per_megabyte={
            name: (after[name] - before[name]) * 1000 / megabytes for name in cpu_readers
        },
    )


# ---------------------------------------------------------------------------------------------
# Report

COLUMNS = ("run", "ferry MB/s", "direct MB/s", "ferry/direct", "CPU ms/MB", *ROLES)


def table_row(label: str, result: RunResult) -> list[str]:
    """One table row."""
    return [
        label,
        f"{result.ferry_rate:.2f}",
        f"{result.direct_rate:.1f}",
        f"{result.ratio:.4f}",
        f"{result.total_cpu_ms_per_megabyte:.1f}",
        *(f"{result.cpu_ms_per_megabyte[role]:.1f}" for role in ROLES),
    ]


def median_result(results: list[RunResult]) -> RunResult:
    """Each column's median over the runs (column by column, so not one particular run)."""
    return RunResult(
        ferry_rate=statistics.median(r.ferry_rate for r in results),
        direct_rate=statistics.median(r.direct_rate for r in results),
        cpu_ms_per_megabyte={
            role: statistics.median(r.cpu_ms_per_megabyte[role] for r in results) for role in ROLES
        },
    )


def format_table(rows: list[list[str]]) -> str:
    """A plain-text table with right-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# First-byte latency


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def receive_exactly(connection: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``connection``; :class:`BenchmarkError` if it closes first."""
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise BenchmarkError(f"the proxy closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def first_byte_seconds(connection: socket.socket, origin_port: int) -> float:
    """Seconds from the first SOCKS5 byte sent on ``connection`` (connected to the client's
    proxy) to the first byte of the origin's HTTP reply to ``GET /first-byte``."""
    started = time.perf_counter()
    connection.sendall(b"\x05\x01\x00")  # SOCKS5, one method: no authentication
    if receive_exactly(connection, 2) != b"\x05\x00":
        raise BenchmarkError("the client's proxy refused SOCKS5 without authentication")
    connection.sendall(
        b"\x05\x01\x00\x01" + socket.inet_aton(LOOPBACK) + origin_port.to_bytes(2, "big")
    )
    reply = receive_exactly(connection, 10)  # VER REP RSV ATYP=1 ADDR(4) PORT(2)
    if reply[1] != 0:
        raise BenchmarkError(f"the client's proxy answered CONNECT with code {reply[1]}")
    connection.sendall(b"GET /first-byte HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
    receive_exactly(connection, 1)
    return time.perf_counter() - started


def warm_first_byte(proxy: str, origin_port: int, timeout: float) -> float:
    """First-byte latency through a client whose session is up and has been used."""
    host, _, port = proxy.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        return first_byte_seconds(connection, origin_port)


def fresh_first_byte(
    folder: Path, broker_url: str, bridge: str, origin_port: int, run: int, timeout: float
) -> float:
    """Start a new client process and time its very first SOCKS request.

    The clock starts when the request is sent, as soon as the client's proxy port accepts a
    connection (the interpreter's start-up before that is not counted); it includes the
    broker exchange, WebRTC (ICE, DTLS, SCTP), the QUIC handshake and the stream to the
    origin. The client is stopped afterwards.
    """
    port = free_port()
    client = start_role(
        "client",
        [
            "--broker",
            broker_url,
            "--bridge",
            bridge,
            "--listen",
            f"{LOOPBACK}:{port}",
            "--volunteers",
            "1",
            "--spare-volunteers",
            "0",
            "--ice-address",
            LOOPBACK,
            *CLIENT_WEBRTC,
        ],
        folder,
        name=f"fresh-client-{run}",
    )
    try:
        for _ in range(int(timeout / 0.005)):
            if client.process.poll() is not None:
                raise BenchmarkError(f"a fresh client exited early:\n{client.log_tail()}")
            try:
                connection = socket.create_connection((LOOPBACK, port), timeout=timeout)
            except ConnectionRefusedError:
                time.sleep(0.005)
                continue
            with connection:
                return first_byte_seconds(connection, origin_port)
        raise BenchmarkError(f"a fresh client did not listen within {timeout:.0f} s")
    finally:
        stop_roles([client])


# ---------------------------------------------------------------------------------------------
# One Chromium volunteer

CLIENT_CHECKING_LOOPBACK_PEERS = (
    "import dataclasses, ferry.client.command as command; webrtc = command.webrtc_config; "
    "command.webrtc_config = lambda *options: dataclasses.replace("
    "webrtc(*options), remote_candidate_addresses=('127.0.0.1',))\n" + RUN_FERRY
)
"""The client command, but checking only the browser's 127.0.0.1 candidates: Chromium also
offers its other interfaces' addresses, and this benchmark must not send to them (the browser
tests use the same setting, ``tests/browser/support.py``)."""


def chromium_processes() -> list[int]:
    """PIDs of every Chromium process started by this process (children, grandchildren, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rpartition(")")[2].split()[1]
                )
    found = []
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor is not None and ancestor != os.getpid():
            ancestor = parents.get(ancestor)
        if ancestor is None:
            continue
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().startswith("chrom"):
                found.append(pid)
    return found


def chromium_cpu_seconds() -> float:
    """CPU seconds of every Chromium process started by this process."""
    total = 0.0
    for pid in chromium_processes():
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def chromium_process_kind(pid: int) -> str:
    """``browser``, ``renderer``, ``gpu-process``, ``network`` (the network service), ..."""
    command = (
        Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    )
    kind = "browser"
    for word in command.split():
        if word.startswith("--type="):
            kind = word.removeprefix("--type=")
        elif word.startswith("--utility-sub-type="):
            return word.removeprefix("--utility-sub-type=").split(".")[0]
    return kind


def chromium_thread_seconds() -> dict[str, float]:
    """CPU seconds of Chromium's threads, summed by "process kind / thread name (user|sys)"."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for pid in chromium_processes():
        with contextlib.suppress(OSError):
            kind = chromium_process_kind(pid)
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    name = (task / "comm").read_text().strip()
                    fields = (task / "stat").read_text().rpartition(")")[2].split()
                    for part, index in (("user", 11), ("sys", 12)):
                        key = f"{kind} / {name} ({part})"
                        totals[key] = totals.get(key, 0.0) + int(fields[index]) / ticks
    return totals


def print_chromium_threads(
    before: dict[str, float], after: dict[str, float], megabytes: float
) -> None:
    """Where Chromium's CPU went during the runs: ms per MB by thread, largest first."""
    spent = {key: (after[key] - before.get(key, 0.0)) * 1000 / megabytes for key in after}
    print(
        f"Chromium's CPU by thread over {megabytes:.0f} MB"
        " (ms/MB; 'network' is its network service):"
    )
    for key, value in sorted(spent.items(), key=lambda item: -item[1]):
        if value >= 0.5:
            print(f"  {value:6.1f}  {key}")


@contextlib.contextmanager
def host_page(broker_url: str) -> Iterator[str]:
    """A loopback web page embedding the widget (loaded from the broker); yields its URL."""
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>a website</title></head>"
        f"<body><ferry-widget data-broker='{broker_url}'></ferry-widget>"
        f"<script src='{broker_url}/widget.js' async></script>"
        "<script>if (location.hash === '#switch-on') customElements.whenDefined('ferry-widget')"
        ".then(() => document.querySelector('ferry-widget').toggle());</script></body></html>"
    ).encode()

    class Page(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(MAX_REQUEST_HEAD)
            self.request.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                + f"Content-Length: {len(html)}\r\n\r\n".encode()
                + html
            )

    server = socketserver.ThreadingTCPServer((LOOPBACK, 0), Page)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="host-page", daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_TIMEOUT)


def broker_volunteers_available(broker_url: str) -> float:
    """The broker's ``ferry_broker_volunteers_available`` gauge, summed (0 if unreadable)."""
    try:
        with urllib.request.urlopen(f"{broker_url}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("ferry_broker_volunteers_available{")
    )


@contextlib.contextmanager
def visitor_chromium(
    page_url: str, folder: Path, cpu: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Debian's Chromium showing ``page_url`` with its widget switched on, as a visitor's
    browser runs it: no DevTools session attached.

    Driven through Playwright, Chromium also serves a DevTools session (with its network
    events on, WebSocket frames included); measured, that added 20-25 ms of CPU per MB to the
    volunteer (75-81 against 55-60 ms/MB; 13 of it in the browser process's main, IO and
    DevTools-pipe threads, which carry nothing otherwise) and cut its throughput by a
    quarter. So the page switches the widget on itself (``#switch-on``, the same ``toggle()``
    a click calls) and the browser is an ordinary child process, stopped by PID. With ``cpu``,
    every Chromium process runs on that CPU only.
    """
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)  # for tests.browser.support (Chromium's path and flags)
    from tests.browser.support import CHROMIUM, CHROMIUM_ARGS

    profile = folder / "chromium-profile"
    command = on_cpu(
        [CHROMIUM, *CHROMIUM_ARGS, f"--user-data-dir={profile}", f"{page_url}#switch-on"], cpu
    )
    with (folder / "chromium.log").open("wb") as log:
        browser = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield browser
    finally:
        if browser.poll() is None:
            browser.terminate()
        try:
            browser.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait(timeout=STOP_TIMEOUT)


def chromium_runs(
    folder: Path,
    egress: FerryProcess,
    egress_url: str,
    bridge: str,
    measure: Callable[[dict[str, Callable[[], float]], str], RunResult],
    runs: int,
    ready_timeout: float,
    client_arguments: tuple[str, ...] = (),
    thread_report_megabytes: float | None = None,
    volunteer_cpu: int | None = None,
) -> list[RunResult]:
    """Bulk runs through one Chromium volunteer (the widget), with its own broker and client
    (``client_arguments`` added to the client's command line). With
    ``thread_report_megabytes`` (the MB all runs download), also print Chromium's CPU by
    thread; with ``volunteer_cpu``, Chromium runs on that CPU only."""
    started: list[FerryProcess] = []
    try:
        broker = start_role(
            "broker",
            ["--listen", f"{LOOPBACK}:0", "--egress", egress_url],
            folder,
            name="chromium-broker",
        )
        started.append(broker)
        broker_url = ready_text(wait_ready(broker, ready_timeout), "broker", "broker")
        with (
            host_page(broker_url) as page_url,
            visitor_chromium(page_url, folder, volunteer_cpu) as browser,
        ):
            for _ in range(int(ready_timeout / READY_POLL_INTERVAL) + 1):
                if broker_volunteers_available(broker_url) > 0:
                    break
                if browser.poll() is not None:
                    raise BenchmarkError(f"Chromium exited with status {browser.returncode}")
                time.sleep(READY_POLL_INTERVAL)
            else:
                raise BenchmarkError(
                    f"the widget in Chromium did not poll the broker within {ready_timeout:.0f} s"
                )
            client = start_role(
                "client",
                one_volunteer_client(broker_url, bridge, client_arguments),
                folder,
                name="chromium-client",
                code=CLIENT_CHECKING_LOOPBACK_PEERS,
            )
            started.append(client)
            proxy = ready_text(wait_ready(client, ready_timeout), "proxy", "client")
            readers = {
                "client": process_cpu(client),
                "volunteer": chromium_cpu_seconds,
                "egress": process_cpu(egress),
                "broker": process_cpu(broker),
            }
            threads_before = chromium_thread_seconds()
            results = [measure(readers, proxy) for _ in range(runs)]
            if thread_report_megabytes:
                print_chromium_threads(
                    threads_before, chromium_thread_seconds(), thread_report_megabytes
                )
            return results
    finally:
        stop_roles(list(reversed(started)))


# ---------------------------------------------------------------------------------------------
# The WebRTC stacks side by side


STACK_PAIRINGS = (
    ("python", "python"),
    ("browser", "python"),
    ("python", "browser"),
    ("browser", "browser"),
    ("browser", "widget"),
)
"""(client ``--webrtc``, volunteer) pairings of the stack table: ``browser`` is the browser
engine, ``widget`` the web widget in a visitor's Chromium."""


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (its browser engine's Chromium, for a role)."""
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


def tree_cpu(pid: int) -> Callable[[], float]:
    """A reader of the CPU seconds of ``pid`` and the processes below it."""

    def read() -> float:
        total = 0.0
        for member in process_tree(pid):
            with contextlib.suppress(OSError):
                total += cpu_seconds(member)
        return total

    return read


@dataclass(frozen=True, slots=True)
class StackNetwork:
    """One row of the stack table, ready for downloads: a ferry pairing's broker, volunteer
    and client, or Snowflake."""

    label: str
    readers: dict[str, Callable[[], float]]
    """CPU seconds of each role (the ROLES columns)."""
    proxy: str
    """The client's SOCKS5 address (ferry rows)."""
    run: Callable[[], RunResult] | None = None
    """Downloads once and measures, where the row is not ferry's (Snowflake's)."""


SNOWFLAKE_LABEL = "Snowflake 2.5.1"
"""The stack table's Snowflake row."""


def start_snowflake_row(
    stack: contextlib.ExitStack,
    folder: Path,
    payload: bytes,
    payload_sha256: str,
    download_timeout: float,
    ready_timeout: float,
) -> StackNetwork | None:
    """Snowflake as one more row of the stack table, via ``snowflake_compare.py`` (its
    client, proxy and server in a network namespace of their own; stopped when ``stack``
    closes), or None, saying why, when its binaries, root or ``ip`` are missing.

    Its columns: client is snowflake-client, volunteer snowflake-proxy, egress
    snowflake-server; the stand-in broker is idle and not counted. Its MB/s is from curl's
    first byte to its last, because Snowflake's client sets up a new session (broker, WebRTC,
    KCP) for each SOCKS connection; ferry's rows count curl's whole time, so the comparison
    leans, if anything, in Snowflake's favour.
    """
    import snowflake_compare  # this folder; it imports this module, so not at the top

    bin_dir = Path(os.environ.get("SNOWFLAKE_BIN_DIR") or snowflake_compare.DEFAULT_BIN_DIR)
    try:
        binaries = snowflake_compare.find_binaries(bin_dir)
    except snowflake_compare.BenchmarkError as exc:
        print(f"Snowflake: not measured: {exc}")
        return None
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("Snowflake: not measured: its network namespace needs root and ip (iproute2)")
        return None
    payload_path = folder / "snowflake-payload.bin"
    payload_path.write_bytes(payload)
    namespace = stack.enter_context(snowflake_compare.network_namespace(f"ferry-sf-{os.getpid()}"))
    network = snowflake_compare.start_snowflake(
        namespace, binaries, payload_path, folder, ready_timeout
    )
    stack.callback(snowflake_compare.stop, list(reversed(network.processes.values())))
    readers = {
        "client": snowflake_compare.pid_cpu(network.processes["client"].process.pid),
        "volunteer": snowflake_compare.pid_cpu(network.processes["proxy"].process.pid),
        "egress": snowflake_compare.pid_cpu(network.processes["server"].process.pid),
        "broker": lambda: 0.0,
    }
    proxy = network.proxy_url

    def run() -> RunResult:
        measured = snowflake_compare.measure(
            "Snowflake",
            readers,
            lambda: snowflake_compare.curl(
                network.payload_url,
                folder / "snowflake-download.bin",
                download_timeout,
                proxy,
                namespace,
            ),
            len(payload),
            payload_sha256,
        )
        if not measured.intact:
            raise BenchmarkError(
                "a Snowflake download does not match the payload: was snowflake-server built "
                "with upstream's fix for issue 40260 (snowflake_compare.py --build --patch)?"
            )
        return RunResult(
            ferry_rate=measured.rate,
            direct_rate=float("nan"),
            cpu_ms_per_megabyte=measured.cpu_ms_per_megabyte,
        )

    return StackNetwork(SNOWFLAKE_LABEL, readers, proxy, run)


def start_stack_network(
    stack: contextlib.ExitStack,
    folder: Path,
    egress: FerryProcess,
    pairing: tuple[str, str],
    ready_timeout: float,
) -> StackNetwork:
    """Start one pairing (its own broker) on the shared egress; stopped when ``stack`` closes."""
    client_stack, volunteer_stack = pairing
    name = f"{client_stack}-{volunteer_stack}"
    egress_ready = json.loads(egress.ready_path.read_text())
    bridge = ready_text(egress_ready, "bridge", "egress")
    broker = start_role(
        "broker",
        ["--listen", f"{LOOPBACK}:0", "--egress", ready_text(egress_ready, "egress", "egress")],
        folder,
        name=f"{name}-broker",
    )
    stack.callback(stop_roles, [broker])
    broker_url = ready_text(wait_ready(broker, ready_timeout), "broker", "broker")
    if volunteer_stack == "widget":
        page_url = stack.enter_context(host_page(broker_url))
        browser = stack.enter_context(visitor_chromium(page_url, folder / name))
        volunteer_cpu = tree_cpu(browser.pid)
        for _ in range(int(ready_timeout / READY_POLL_INTERVAL) + 1):
            if broker_volunteers_available(broker_url) > 0:
                break
            time.sleep(READY_POLL_INTERVAL)
        else:
            raise BenchmarkError(f"{name}: the widget did not poll within {ready_timeout:.0f} s")
    else:
        volunteer = start_role(
            "volunteer",
            [
                *("--broker", broker_url, "--capacity", "1", "--ice-address", LOOPBACK),
                *("--unsafe-allow-internal-egress", "--webrtc", volunteer_stack),
            ],
            folder,
            name=f"{name}-volunteer",
        )
        stack.callback(stop_roles, [volunteer])
        if wait_ready(volunteer, ready_timeout).get("webrtc") != volunteer_stack:
            raise BenchmarkError(f"{name}: the volunteer does not run {volunteer_stack}")
        volunteer_cpu = tree_cpu(volunteer.process.pid)
    client = start_role(
        "client",
        one_volunteer_client(broker_url, bridge, webrtc=("--webrtc", client_stack)),
        folder,
        name=f"{name}-client",
        code=CLIENT_CHECKING_LOOPBACK_PEERS,
    )
    stack.callback(stop_roles, [client])
    client_ready = wait_ready(client, ready_timeout)
    if client_ready.get("webrtc") != client_stack:
        raise BenchmarkError(f"{name}: the client does not run {client_stack}")
    readers = {
        "client": tree_cpu(client.process.pid),
        "volunteer": volunteer_cpu,
        "egress": process_cpu(egress),
        "broker": process_cpu(broker),
    }
    label = f"{client_stack}/{volunteer_stack}"
    return StackNetwork(label, readers, ready_text(client_ready, "proxy", "client"))


def stack_table(
    folder: Path,
    egress: FerryProcess,
    measure: Callable[[dict[str, Callable[[], float]], str], RunResult],
    runs: int,
    ready_timeout: float,
    snowflake: Callable[[contextlib.ExitStack], StackNetwork | None] | None = None,
) -> dict[str, list[RunResult]]:
    """Every pairing of STACK_PAIRINGS up at once, and Snowflake when ``snowflake`` starts
    it; runs interleaved (each run downloads once through each row, in turn), so the ratios
    of one run share the machine's load."""
    results: dict[str, list[RunResult]] = {}
    with contextlib.ExitStack() as stack:
        networks = []
        for pairing in STACK_PAIRINGS:
            (folder / "-".join(pairing)).mkdir(exist_ok=True)
            networks.append(start_stack_network(stack, folder, egress, pairing, ready_timeout))
            print(f"  {networks[-1].label} ready", flush=True)
        if snowflake is not None and (row := snowflake(stack)) is not None:
            networks.append(row)
            print(f"  {row.label} ready (in its own network namespace)", flush=True)
        for run in range(1, runs + 1):
            for network in networks:
                if network.run is not None:
                    result = network.run()
                else:
                    result = measure(network.readers, network.proxy)
                results.setdefault(network.label, []).append(result)
                report_run(f"stacks {network.label}", run, result)
    return results


def print_stack_table(results: dict[str, list[RunResult]], megabytes: int) -> None:
    """Medians per pairing, and each one's MB/s and CPU per MB against python/python's."""
    base = median_result(results["python/python"])
    rows = [["client/volunteer", "MB/s", "CPU ms/MB", *ROLES, "MB/s ÷ py/py", "CPU ÷ py/py"]]
    for label, runs in results.items():
        median = median_result(runs)
        rows.append(
            [
                label,
                f"{median.ferry_rate:.2f}",
                f"{median.total_cpu_ms_per_megabyte:.0f}",
                *(f"{median.cpu_ms_per_megabyte[role]:.0f}" for role in ROLES),
                f"{median.ferry_rate / base.ferry_rate:.2f}",
                f"{median.total_cpu_ms_per_megabyte / base.total_cpu_ms_per_megabyte:.2f}",
            ]
        )
    print()
    print(
        f"WebRTC stacks side by side ({megabytes} MB per run, medians; a role's CPU includes "
        "its browser engine's Chromium; 'widget' is every process of the visitor's Chromium):"
    )
    print(format_table(rows))
    if SNOWFLAKE_LABEL not in results:
        print(
            "Snowflake: not in this run (see above why); build it once with "
            "benchmarks/snowflake_compare.py --build (as root)."
        )
        return
    snowflake = median_result(results[SNOWFLAKE_LABEL])
    for label, goal in (("browser/browser", "≥ 2"), ("browser/widget", "≥ 1")):
        if label in results:
            median = median_result(results[label])
            print(
                f"{label} ÷ Snowflake: MB/s {median.ferry_rate / snowflake.ferry_rate:.2f}× "
                f"(goal {goal}), CPU per MB "
                f"{median.total_cpu_ms_per_megabyte / snowflake.total_cpu_ms_per_megabyte:.2f}× "
                "(goal ≤ 1)"
            )


# ---------------------------------------------------------------------------------------------
# Main


def start_egress_and_broker(
    folder: Path, ready_timeout: float, started: dict[str, FerryProcess]
) -> tuple[str, str]:
    """Start an egress (loopback destinations allowed) and a broker for it, each recorded in
    ``started`` as soon as it runs (the caller stops them on failure); return the bridge line
    and the broker's URL."""
    egress = start_role(
        "egress",
        [
            "--listen",
            f"{LOOPBACK}:0",
            "--state-dir",
            str(folder / "egress-state"),
            "--unsafe-allow-private-destinations",
        ],
        folder,
    )
    started["egress"] = egress
    egress_ready = wait_ready(egress, ready_timeout)
    egress_url = ready_text(egress_ready, "egress", "egress")
    bridge = ready_text(egress_ready, "bridge", "egress")
    broker = start_role("broker", ["--listen", f"{LOOPBACK}:0", "--egress", egress_url], folder)
    started["broker"] = broker
    broker_url = ready_text(wait_ready(broker, ready_timeout), "broker", "broker")
    return bridge, broker_url


def start_network(
    folder: Path,
    ready_timeout: float,
    role_arguments: tuple[str, ...] = (),
    volunteer_cpu: int | None = None,
) -> tuple[dict[str, FerryProcess], str]:
    """Start egress, broker, volunteer and client (``role_arguments`` added to the last two;
    the volunteer on CPU ``volunteer_cpu`` only, if given); return them and the client's
    proxy."""
    started: dict[str, FerryProcess] = {}
    try:
        bridge, broker_url = start_egress_and_broker(folder, ready_timeout, started)

        volunteer = start_role(
            "volunteer",
            [
                *("--broker", broker_url, "--capacity", "1", "--ice-address", LOOPBACK),
                "--unsafe-allow-internal-egress",
                *VOLUNTEER_WEBRTC,
                *role_arguments,
            ],
            folder,
            cpu=volunteer_cpu,
        )
        started["volunteer"] = volunteer
        wait_ready(volunteer, ready_timeout)

        client = start_role(
            "client",
            one_volunteer_client(broker_url, bridge, role_arguments),
            folder,
        )
        started["client"] = client
        proxy = ready_text(wait_ready(client, ready_timeout), "proxy", "client")
    except BaseException:
        stop_roles(list(reversed(started.values())))
        raise
    return started, proxy


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--megabytes", type=int, default=50, help="payload size in MB (10**6 bytes)"
    )
    parser.add_argument("--runs", type=int, default=3, help="measured runs (median reported)")
    parser.add_argument(
        "--latency-runs", type=int, default=5, help="fresh and warm first-byte measurements"
    )
    parser.add_argument(
        "--no-browser",
        action="store_true",
        help="skip the Chromium volunteer and the stack table (no Chromium)",
    )
    parser.add_argument(
        "--stacks-only",
        action="store_true",
        help="only the table of WebRTC stacks side by side (python/python, browser/python, "
        "python/browser, browser/browser, browser client through the widget)",
    )
    parser.add_argument(
        "--no-snowflake",
        action="store_true",
        help="leave Snowflake out of the stack table even when its binaries are present",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        help="seconds each role gets to write its ready file",
    )
    parser.add_argument(
        "--download-timeout",
        type=float,
        default=None,
        help="seconds one download may take (default: 10 s per MB, at least 60 s)",
    )
    parser.add_argument(
        "--compare-sctp-packets-per-ack",
        metavar="N,M,...",
        default=None,
        help="A/B mode: one network per value of the client's and volunteer's "
        "--sctp-packets-per-ack, downloads interleaved (N, M, N, M, ...), Chromium runs "
        "alternating too; no latency measurements",
    )
    parser.add_argument(
        "--volunteer-cpu",
        type=int,
        metavar="N",
        default=None,
        help="run the volunteer (the ferry volunteer process, or every Chromium process) on "
        "CPU N only and everything else of the benchmark on the other CPUs, as if the "
        "volunteer had a machine of its own with one core; reports how busy that CPU was",
    )
    arguments = parser.parse_args(argv)
    if arguments.volunteer_cpu is not None:
        allowed = os.sched_getaffinity(0)
        if arguments.volunteer_cpu not in allowed or len(allowed) < 2:
            parser.error(
                f"--volunteer-cpu must be one of the CPUs this may use ({sorted(allowed)}), "
                "and at least one other must remain"
            )
        if arguments.compare_sctp_packets_per_ack is not None:
            parser.error("--volunteer-cpu does not combine with --compare-sctp-packets-per-ack")
    if arguments.compare_sctp_packets_per_ack is not None:
        try:
            values = [int(v) for v in arguments.compare_sctp_packets_per_ack.split(",")]
        except ValueError:
            parser.error("--compare-sctp-packets-per-ack takes integers separated by commas")
        if not values or min(values) < 1:
            parser.error("--compare-sctp-packets-per-ack values must be at least 1")
        arguments.compare_sctp_packets_per_ack = values
    if arguments.megabytes < 1:
        parser.error("--megabytes must be at least 1")
    if arguments.runs < 1 or arguments.latency_runs < 1:
        parser.error("--runs and --latency-runs must be at least 1")
    return arguments


def print_results(
    label: str, results: list[RunResult], arguments: argparse.Namespace, volunteer: str
) -> None:
    """One table: each run and the medians."""
    rows = [list(COLUMNS)]
    rows += [table_row(str(index), result) for index, result in enumerate(results, 1)]
    rows.append(table_row("median", median_result(results)))
    print()
    print(f"{label} ({arguments.megabytes} MB per run; 'volunteer' CPU is {volunteer}):")
    print(format_table(rows))
    if arguments.volunteer_cpu is not None:
        busy = [
            result.ferry_rate * result.cpu_ms_per_megabyte["volunteer"] / 10 for result in results
        ]
        print(
            f"the volunteer's CPU {arguments.volunteer_cpu} was busy "
            f"{', '.join(f'{value:.0f}' for value in busy)} % of the download time "
            f"(median {statistics.median(busy):.0f} %; MB/s × volunteer ms/MB ÷ 10)"
        )


def report_run(label: str, run: int, result: RunResult) -> None:
    direct = "" if math.isnan(result.direct_rate) else f"direct {result.direct_rate:.1f} MB/s, "
    system = "Snowflake" if SNOWFLAKE_LABEL in label else "ferry"
    print(
        f"{label} run {run}: {system} {result.ferry_rate:.2f} MB/s, {direct}"
        f"{result.total_cpu_ms_per_megabyte:.1f} CPU ms/MB (sha256 ok)",
        flush=True,
    )


def compare_packets_per_ack(
    arguments: argparse.Namespace,
    folder: Path,
    measure: Callable[[dict[str, Callable[[], float]], str], RunResult],
    browser: bool,
) -> int:
    """A/B: one complete network per ``--sctp-packets-per-ack`` value, runs interleaved."""
    values: list[int] = arguments.compare_sctp_packets_per_ack
    networks: dict[int, tuple[dict[str, FerryProcess], str]] = {}
    try:
        for value in values:
            variant = folder / f"acks-{value}"
            variant.mkdir()
            print(f"starting a network with --sctp-packets-per-ack {value}…", flush=True)
            networks[value] = start_network(
                variant, arguments.ready_timeout, ("--sctp-packets-per-ack", str(value))
            )
        python_results: dict[int, list[RunResult]] = {value: [] for value in values}
        chromium_results: dict[int, list[RunResult]] = {value: [] for value in values}
        for run in range(1, arguments.runs + 1):
            for value in values:
                roles, proxy = networks[value]
                readers = {name: process_cpu(role) for name, role in roles.items()}
                python_results[value].append(measure(readers, proxy))
                report_run(f"Python volunteer, {value} packets/ack", run, python_results[value][-1])
        if browser:
            for run in range(1, arguments.runs + 1):
                for value in values:
                    roles, _ = networks[value]
                    egress_ready = json.loads(roles["egress"].ready_path.read_text())
                    variant = folder / f"acks-{value}" / f"chromium-{run}"
                    variant.mkdir()
                    result = chromium_runs(
                        variant,
                        roles["egress"],
                        ready_text(egress_ready, "egress", "egress"),
                        ready_text(egress_ready, "bridge", "egress"),
                        measure,
                        1,
                        arguments.ready_timeout,
                        ("--sctp-packets-per-ack", str(value)),
                    )[0]
                    chromium_results[value].append(result)
                    report_run(f"Chromium volunteer, {value} packets/ack", run, result)
        for value in values:
            print_results(
                f"Python volunteer, --sctp-packets-per-ack {value}",
                python_results[value],
                arguments,
                "the ferry volunteer process",
            )
        for value in values:
            if chromium_results[value]:
                print_results(
                    f"Chromium volunteer, client --sctp-packets-per-ack {value}",
                    chromium_results[value],
                    arguments,
                    "every Chromium process",
                )
    except BenchmarkError as exc:
        print(f"throughput: {exc}", file=sys.stderr)
        return 1
    finally:
        for roles, _ in networks.values():
            stop_roles(list(reversed(roles.values())))
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if shutil.which("curl") is None:
        print("throughput: curl is not installed", file=sys.stderr)
        return 2
    browser = not arguments.no_browser
    if browser and not Path("/usr/bin/chromium").exists():
        print("throughput: /usr/bin/chromium is missing (or pass --no-browser)", file=sys.stderr)
        return 2
    if arguments.volunteer_cpu is not None:
        # this thread, and so every thread and process started from here on, keeps off the
        # volunteer's CPU; the volunteer alone is moved onto it
        os.sched_setaffinity(0, os.sched_getaffinity(0) - {arguments.volunteer_cpu})
    size = arguments.megabytes * MEGABYTE
    download_timeout = arguments.download_timeout or max(60.0, 10.0 * arguments.megabytes)
    payload = os.urandom(size)
    payload_sha256 = hashlib.sha256(payload).hexdigest()
    scratch_root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with (
        tempfile.TemporaryDirectory(prefix="ferry-bench-", dir=scratch_root) as temporary,
        running_origin(payload) as origin,
    ):
        folder = Path(temporary)
        origin_port = origin.server_address[1]
        print(f"payload: {arguments.megabytes} MB of random bytes, sha256 {payload_sha256[:16]}…")
        if arguments.compare_sctp_packets_per_ack is not None:

            def measure_variant(readers: dict[str, Callable[[], float]], through: str) -> RunResult:
                return one_run(
                    readers, origin.url, through, payload, payload_sha256, folder, download_timeout
                )

            return compare_packets_per_ack(arguments, folder, measure_variant, browser)
        print("starting egress, broker, one volunteer and a client (separate processes)…")
        try:
            roles, proxy = start_network(
                folder, arguments.ready_timeout, volunteer_cpu=arguments.volunteer_cpu
            )
        except BenchmarkError as exc:
            print(f"throughput: the network did not come up: {exc}", file=sys.stderr)
            return 2
        extra: list[FerryProcess] = []

        def measure(readers: dict[str, Callable[[], float]], through: str) -> RunResult:
            return one_run(
                readers, origin.url, through, payload, payload_sha256, folder, download_timeout
            )

        def snowflake_row(stack: contextlib.ExitStack) -> StackNetwork | None:
            if arguments.no_snowflake:
                print("Snowflake: not measured (--no-snowflake)")
                return None
            return start_snowflake_row(
                stack, folder, payload, payload_sha256, download_timeout, arguments.ready_timeout
            )

        def run_stack_table() -> dict[str, list[RunResult]]:
            print("starting one network per pairing of WebRTC stacks…")
            return stack_table(
                folder,
                roles["egress"],
                measure,
                arguments.runs,
                arguments.ready_timeout,
                snowflake_row,
            )

        try:
            pids = ", ".join(f"{name} {role.process.pid}" for name, role in roles.items())
            print(f"ready: proxy socks5://{proxy}; PIDs {pids}")
            if arguments.stacks_only:
                print_stack_table(run_stack_table(), arguments.megabytes)
                return 0
            readers = {name: process_cpu(role) for name, role in roles.items()}
            python_results = []
            for run in range(1, arguments.runs + 1):
                python_results.append(measure(readers, proxy))
                report_run("Python volunteer", run, python_results[-1])
            warm = [
                warm_first_byte(proxy, origin_port, arguments.ready_timeout)
                for _ in range(arguments.latency_runs)
            ]
            egress_ready = json.loads(roles["egress"].ready_path.read_text())
            egress_url = ready_text(egress_ready, "egress", "egress")
            bridge = ready_text(egress_ready, "bridge", "egress")
            broker = start_role(
                "broker",
                ["--listen", f"{LOOPBACK}:0", "--egress", egress_url],
                folder,
                name="latency-broker",
            )
            extra.append(broker)
            latency_broker = ready_text(wait_ready(broker, arguments.ready_timeout), "broker", "b")
            volunteer = start_role(
                "volunteer",
                [
                    "--broker",
                    latency_broker,
                    "--capacity",
                    "50",
                    "--ice-address",
                    LOOPBACK,
                    "--unsafe-allow-internal-egress",
                    *VOLUNTEER_WEBRTC,
                ],
                folder,
                name="latency-volunteer",
            )
            extra.append(volunteer)
            wait_ready(volunteer, arguments.ready_timeout)
            fresh = [
                fresh_first_byte(
                    folder, latency_broker, bridge, origin_port, run, arguments.ready_timeout
                )
                for run in range(1, arguments.latency_runs + 1)
            ]
            print(f"first byte, fresh client: {', '.join(f'{s * 1000:.0f}' for s in fresh)} ms")
            print(f"first byte, warm session: {', '.join(f'{s * 1000:.1f}' for s in warm)} ms")
            stop_roles(list(reversed(extra)))
            extra.clear()
            chromium_results: list[RunResult] = []
            stacks: dict[str, list[RunResult]] = {}
            if browser:
                print("starting a Chromium volunteer (the widget) with its own broker and client…")
                chromium_results = chromium_runs(
                    folder,
                    roles["egress"],
                    egress_url,
                    bridge,
                    measure,
                    arguments.runs,
                    arguments.ready_timeout,
                    thread_report_megabytes=arguments.runs * arguments.megabytes,
                    volunteer_cpu=arguments.volunteer_cpu,
                )
                for run, result in enumerate(chromium_results, 1):
                    report_run("Chromium volunteer", run, result)
                stacks = run_stack_table()
            print_results(
                "One Python volunteer (ferry volunteer)",
                python_results,
                arguments,
                "the ferry volunteer process",
            )
            if chromium_results:
                print_results(
                    "One Chromium volunteer (the widget)",
                    chromium_results,
                    arguments,
                    "every Chromium process",
                )
                print_stack_table(stacks, arguments.megabytes)
            print()
            print(
                "first byte of the reply after the SOCKS request, median of "
                f"{arguments.latency_runs}: fresh client {statistics.median(fresh) * 1000:.0f} ms "
                f"(goal < 1000), warm session {statistics.median(warm) * 1000:.1f} ms (goal < 20)"
            )
            print(
                "CPU ms/MB: user+system CPU of the ferry processes (and Chromium's) during the "
                "ferry download, per MB (10**6 bytes); the origin and curl are not counted."
            )
        except BenchmarkError as exc:
            print(f"throughput: {exc}", file=sys.stderr)
            return 1
        finally:
            stop_roles(list(reversed(extra)))
            stop_roles(list(reversed(roles.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
