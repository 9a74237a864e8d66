"""Running ferry roles as separate processes for churn and restart tests (and benchmarks).

Every process writes its output to a file, is waited on through its ``--ready-file`` with a
deadline, and is stopped by PID. WebRTC stays on loopback (``--ice-address 127.0.0.1``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.waiting import wait_until_blocking

START_TIMEOUT = 30.0


def ferry_command() -> list[str]:
    """The command that runs ferry with this interpreter."""
    return [sys.executable, "-m", "ferry"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Role:
    """One ferry process."""

    def __init__(self, name: str, arguments: list[str], folder: Path) -> None:
        self.name = name
        self.ready_path = folder / f"{name}.ready.json"
        self.log_path = folder / f"{name}.log"
        self.ready_path.unlink(missing_ok=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
        environment["NO_COLOR"] = "1"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*ferry_command(), *arguments, "--ready-file", str(self.ready_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> dict[str, str]:
        """The ready file's JSON, once written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_path.exists():
                content: dict[str, str] = json.loads(self.ready_path.read_text())
                return content
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """Everything the process printed."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash or a closed laptop would."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class Network:
    """Egress, broker, volunteers and a client as separate processes on 127.0.0.1."""

    def __init__(self, folder: Path, *, egress_arguments: tuple[str, ...] = ()) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.egress_arguments = egress_arguments
        self.roles: list[Role] = []
        self.volunteers: list[Role] = []
        self.egress_port = free_port()
        self.egress: Role | None = None
        self.egress_ready: dict[str, str] = {}
        self.broker_url = ""
        self.bridge = ""
        self.proxy = ""
        self._volunteer_count = 0
        self.volunteer_arguments: tuple[str, ...] = ()

    def _start(self, name: str, arguments: list[str]) -> Role:
        role = Role(name, arguments, self.folder)
        self.roles.append(role)
        return role

    def start_egress(self) -> None:
        """Start (or restart) the egress on its fixed port with its kept identity."""
        self.egress = self._start(
            "egress",
            [
                "egress",
                "--listen",
                f"127.0.0.1:{self.egress_port}",
                "--state-dir",
                str(self.folder / "egress-state"),
                *(self.egress_arguments or ("--unsafe-allow-private-destinations",)),
            ],
        )
        self.egress_ready = self.egress.wait_ready()
        self.bridge = self.egress_ready["bridge"]

    def start(
        self,
        *,
        volunteers: int,
        client_volunteers: int = 2,
        client_arguments: tuple[str, ...] = (),
        volunteer_arguments: tuple[str, ...] = (),
        client_webrtc: str = "python",
        volunteer_webrtc: str = "python",
    ) -> None:
        """Start every role (the egress unless :meth:`start_egress` already did) and wait
        until the client's first session is up (its WebRTC on ``client_webrtc``: the Python
        stack unless a test asks for the browser engine; the volunteers' on
        ``volunteer_webrtc``, which ``--webrtc`` in ``volunteer_arguments`` overrides)."""
        self.volunteer_arguments = ("--webrtc", volunteer_webrtc, *volunteer_arguments)
        if self.egress is None:
            self.start_egress()
        egress_url = f"ws://127.0.0.1:{self.egress_port}/v1/relay"
        broker = self._start(
            "broker", ["broker", "--listen", "127.0.0.1:0", "--egress", egress_url]
        )
        self.broker_url = broker.wait_ready()["broker"]
        for _ in range(volunteers):
            self.add_volunteer()
        client = self._start(
            "client",
            [
                "client",
                "--broker",
                self.broker_url,
                "--bridge",
                self.bridge,
                "--listen",
                "127.0.0.1:0",
                "--volunteers",
                str(client_volunteers),
                "--ice-address",
                "127.0.0.1",
                "--webrtc",
                client_webrtc,
                *client_arguments,
            ],
        )
        self.proxy = client.wait_ready(60)["proxy"]
        self.client = client

    def add_volunteer(self, *, wait: bool = True) -> Role:
        """Start one more volunteer (and wait until it is ready, unless ``wait`` is off)."""
        self._volunteer_count += 1
        volunteer = self._start(
            f"volunteer{self._volunteer_count}",
            [
                "volunteer",
                "--broker",
                self.broker_url,
                "--ice-address",
                "127.0.0.1",
                "--unsafe-allow-internal-egress",
                *self.volunteer_arguments,
            ],
        )
        if wait:
            volunteer.wait_ready()
        self.volunteers.append(volunteer)
        return volunteer

    def logs(self) -> str:
        """Every process's output, for a failure message."""
        return "\n".join(f"==== {role.name}\n{role.log()[-4000:]}" for role in self.roles)

    def close(self) -> None:
        """Stop every process this network started."""
        for role in reversed(self.roles):
            role.stop()


@contextmanager
def process_network(
    folder: Path, *, egress_arguments: tuple[str, ...] = (), **start: object
) -> Iterator[Network]:
    """A started :class:`Network`, stopped at the end (``egress_arguments`` replace the
    default ``--unsafe-allow-private-destinations``)."""
    network = Network(folder, egress_arguments=egress_arguments)
    try:
        network.start(**start)  # type: ignore[arg-type]
        yield network
    finally:
        network.close()


def payload(size: int) -> bytes:
    """Deterministic bytes (SHA-256 chained), the same for server and test."""
    blocks = []
    block = b"ferry"
    total = 0
    while total < size:
        block = hashlib.sha256(block).digest() * 1024  # 32 KiB, then chained
        block = hashlib.sha256(block).digest() + block[32:]
        blocks.append(block)
        total += len(block)
    return b"".join(blocks)[:size]


@contextmanager
def origin_server(body: bytes, *, rate: float | None = None) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 (in a thread): ``/size/N`` serves the first N bytes of
    ``body``, every other path all of it; at most ``rate`` bytes per second if given (the
    source paces itself, so a download is steady rather than bursts and pauses)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served = body
            if self.path.startswith("/size/"):
                served = body[: int(self.path.removeprefix("/size/"))]
            self.send_response(200)
            self.send_header("Content-Length", str(len(served)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            try:
                view = memoryview(served)
                chunk = 16384 if rate else 65536
                started = time.monotonic()
                for offset in range(0, len(served), chunk):
                    if rate:
                        due = started + offset / rate
                        if (wait := due - time.monotonic()) > 0:
                            time.sleep(wait)
                    self.wfile.write(view[offset : offset + chunk])
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def start_curl(
    proxy: str, url: str, output: Path, *, limit_rate: str | None = None
) -> subprocess.Popen[bytes]:
    """Start a curl download through the SOCKS5 proxy into ``output``."""
    arguments = ["/usr/bin/curl", "--silent", "--show-error", "--max-time", "150"]
    if limit_rate is not None:
        arguments += ["--limit-rate", limit_rate]
    arguments += ["--socks5-hostname", proxy, "-o", str(output), url]
    return subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def download_while_killing_volunteers(
    net: Network, url: str, body: bytes, output: Path, *, limit_rate: str | None = None
) -> None:
    """Download ``url`` (serving ``body``) with curl through ``net``'s client while the
    oldest volunteer is SIGKILLed five times, a new one started each time; assert every kill
    landed mid-download, the download is intact (SHA-256) and the client noticed.

    The kills come at 1/8, 2/8, ... 5/8 of the download (by what curl has written), not every
    so many seconds, so they land mid-download however slow or loaded the machine is; each
    kill first waits until the next volunteer in line is ready, so one always remains."""
    curl = start_curl(net.proxy, url, output, limit_rate=limit_rate)

    def downloaded() -> int:
        return output.stat().st_size if output.exists() else 0

    exits: list[int | None] = []
    for kill in range(1, 6):
        share = kill * len(body) // 8
        wait_until_blocking(
            lambda share=share: downloaded() >= share or curl.poll() is not None,
            f"{kill}/8 of the download",
            timeout=150,
        )
        if curl.poll() is not None:
            _, error = curl.communicate(timeout=10)
            raise AssertionError(
                f"the download ended (curl exit {curl.returncode}, {downloaded()} bytes) before"
                f" kill {kill}: {error.decode()}\n{net.logs()}"
            )
        net.volunteers[1].wait_ready()
        victim = net.volunteers.pop(0)
        victim.kill()
        exits.append(victim.process.returncode)
        net.add_volunteer(wait=False)
    _, error = curl.communicate(timeout=150)
    assert curl.returncode == 0, f"{error.decode()}\n{net.logs()}"
    # each volunteer was running until the kill ended it (not one that had exited already)
    assert exits == [-signal.SIGKILL] * 5, f"volunteers' exits: {exits}\n{net.logs()}"
    assert hashlib.sha256(output.read_bytes()).digest() == hashlib.sha256(body).digest()
    assert "went silent" in net.client.log() or "closed" in net.client.log()
