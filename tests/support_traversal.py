"""A ferry network on the internet lab: the pieces NAT traversal tests and benchmarks share.

:class:`FerryOnTheInternet` takes a built :class:`tests.support_internet.InternetLab` and runs,
in its internet namespace, an origin web server (a random file and a page embedding the
widget), the two RFC 5780 STUN servers, coturn and an egress; then, per test, brokers,
volunteers and clients, each a real ``python -m ferry`` process in a namespace, and curl in a
home through a client's SOCKS port. Every process is stopped by its PID (Chromium by its
process group): the lab stops what it started, and :meth:`FerryOnTheInternet.stop` stops a
role early (coturn logs an allocation's relayed bytes only when it closes).

Everything uses IP addresses: no resolver answers inside the lab (a lookup hangs until it
times out).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from .support_internet import (
    SERVICES,
    STUN_ADDRESSES,
    TURN_ADDRESS,
    TURN_PORT,
    Coturn,
    InternetLab,
    NamespacedProcess,
)

ORIGIN_PORT = 8000
EGRESS_PORT = 8443
FILE_NAME = "file.bin"
WIDGET_PAGE = "widget.html"
SOCKS = "127.0.0.1:1080"
STUN_URLS = tuple(f"stun:{address}:3478" for address in STUN_ADDRESSES)
TURN_URL = f"turn:{TURN_ADDRESS}:{TURN_PORT}?transport=udp"
CHROMIUM = "/usr/bin/chromium"

ORIGIN_SERVER = f"""
import functools, http.server, pathlib, socketserver, sys
class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):  # without HTTPServer's getfqdn(): no resolver answers in the lab
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
handler.log_message = lambda *args: None
server = Server(("{SERVICES}", {ORIGIN_PORT}), handler)
pathlib.Path(sys.argv[2]).write_text("ready")
server.serve_forever()
"""


def widget_page(broker_url: str) -> str:
    """A website embedding the broker's widget; ``#switch-on`` switches it on as a click on
    its button would (as ``benchmarks/throughput.py``'s host page does)."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>a website</title></head>"
        f"<body><ferry-widget data-broker='{broker_url}'></ferry-widget>"
        f"<script src='{broker_url}/widget.js' async></script>"
        "<script>if (location.hash === '#switch-on') customElements.whenDefined('ferry-widget')"
        ".then(() => document.querySelector('ferry-widget').toggle());</script></body></html>"
    )


class FerryOnTheInternet:
    """Origin, STUN servers, coturn and egress in ``lab``'s internet namespace (started by
    :meth:`start_services`), and the roles a test adds. ``environment`` must import this
    tree's ferry and the ``tests`` package (``lab_environment()``)."""

    def __init__(
        self, lab: InternetLab, folder: Path, environment: Mapping[str, str], secret: str
    ) -> None:
        self.lab = lab
        self.folder = folder
        self.environment = dict(environment)
        self.secret = secret
        self.site = folder / "site"
        self.content = b""
        self.bridge = ""
        self.coturn: Coturn | None = None
        self.ferry = [sys.executable, "-m", "ferry"]
        self.roles: list[NamespacedProcess] = []
        """The processes :meth:`start_role` started since the last :meth:`stop_roles`."""

    # --- the internet's services ---

    def start_services(self, file_size: int = 1_500_000, turn: bool = True) -> None:
        self.site.mkdir(exist_ok=True)
        self.content = os.urandom(file_size)
        (self.site / FILE_NAME).write_bytes(self.content)
        internet = self.lab.internet
        origin_ready = self.folder / "origin.ready"
        self.lab.start(
            "origin", internet,
            [sys.executable, "-c", ORIGIN_SERVER, str(self.site), str(origin_ready)],
            self.folder, self.environment,
        ).wait_for(origin_ready)  # fmt: skip
        self.lab.start_stun_servers(self.folder, self.environment)
        if turn:
            self.coturn = self.lab.start_coturn(self.secret, self.folder)
        egress_ready = self.folder / "egress.ready.json"
        self.lab.start(
            "egress", internet,
            [*self.ferry, "egress", "--listen", f"{SERVICES}:{EGRESS_PORT}",
             "--state-dir", str(self.folder / "egress"),
             # the origin sits in 198.18.0.0/15, which the egress refuses by default
             # (benchmarking addresses); this one address and port only
             "--allow-destination", f"{SERVICES}/32:{ORIGIN_PORT}",
             "--ready-file", str(egress_ready)],
            self.folder, self.environment,
        ).wait_for(egress_ready)  # fmt: skip
        self.bridge = json.loads(egress_ready.read_text())["bridge"]

    # --- roles ---

    def namespace(self, place: str) -> str:
        """The host namespace of the home named ``place``, or the internet namespace itself
        for ``"internet"`` (no NAT at all)."""
        return self.lab.internet if place == "internet" else self.lab.home(place).host

    def start_role(
        self, name: str, namespace: str, command: list[str], folder: Path
    ) -> NamespacedProcess:
        role = self.lab.start(name, namespace, command, folder, self.environment)
        self.roles.append(role)
        return role

    def stop_roles(self) -> None:
        """Stop (by PID) every role started since the last call, newest first."""
        while self.roles:
            self.roles.pop().stop()

    def start_broker(
        self, name: str, port: int, arguments: list[str], folder: Path
    ) -> tuple[NamespacedProcess, str]:
        """A broker on ``SERVICES:port`` with ``arguments`` added; it and its URL, once
        ready."""
        ready = folder / f"{name}.ready.json"
        broker = self.start_role(
            name, self.lab.internet,
            [*self.ferry, "broker", "--listen", f"{SERVICES}:{port}",
             "--egress", f"ws://{SERVICES}:{EGRESS_PORT}/v1/relay", *arguments,
             "--metrics-allow", f"{SERVICES}/32", "--ready-file", str(ready)],
            folder,
        )  # fmt: skip
        broker.wait_for(ready)
        return broker, str(json.loads(ready.read_text())["broker"])

    def start_volunteer(
        self, name: str, home: str, broker_url: str, arguments: list[str], folder: Path
    ) -> NamespacedProcess:
        """A Python volunteer in ``home``'s host, once it polls."""
        ready = folder / f"{name}.ready.json"
        volunteer = self.start_role(
            name, self.namespace(home),
            [*self.ferry, "volunteer", "--broker", broker_url, "--webrtc", "python", *arguments,
             "--ready-file", str(ready)],
            folder,
        )  # fmt: skip
        volunteer.wait_for(ready)
        return volunteer

    def start_client(
        self, name: str, home: str, broker_url: str, arguments: list[str], folder: Path
    ) -> tuple[NamespacedProcess, Path]:
        """A client in ``home``'s host with its SOCKS port on ``SOCKS``, one volunteer and no
        spare; it and its ready file (written once it is connected)."""
        ready = folder / f"{name}.ready.json"
        ready.unlink(missing_ok=True)
        client = self.start_role(
            name, self.namespace(home),
            [*self.ferry, "client", "--broker", broker_url, "--bridge", self.bridge,
             "--listen", SOCKS, "--volunteers", "1", "--spare-volunteers", "0",
             "--status-every", "0", *arguments, "--ready-file", str(ready)],
            folder,
        )  # fmt: skip
        return client, ready

    def download(
        self, home: str, target: Path, timeout: float = 60, name: str = FILE_NAME
    ) -> float:
        """curl ``name`` from the origin in ``home``'s host through ``SOCKS`` into
        ``target``; curl's time to first byte (``time_starttransfer``, seconds). Fails with
        curl's error unless curl succeeds."""
        curl = subprocess.run(
            ["ip", "netns", "exec", self.namespace(home), "/usr/bin/curl", "--silent",
             "--show-error", "--max-time", str(timeout), "--socks5-hostname", SOCKS,
             "-o", str(target), "-w", "%{time_starttransfer}",
             f"http://{SERVICES}:{ORIGIN_PORT}/{name}"],
            capture_output=True, text=True, timeout=timeout + 30, check=False,
        )  # fmt: skip
        if curl.returncode != 0:
            raise AssertionError(f"curl failed ({curl.returncode}): {curl.stderr}")
        return float(curl.stdout)

    def fetch_in_internet(self, url: str, *curl_arguments: str) -> str:
        """A page's body, fetched by curl in the internet namespace (this process never
        leaves loopback)."""
        completed = subprocess.run(
            ["ip", "netns", "exec", self.lab.internet, "/usr/bin/curl", "--silent",
             "--show-error", "--max-time", "20", *curl_arguments, url],
            capture_output=True, text=True, timeout=40, check=False,
        )  # fmt: skip
        if completed.returncode != 0:
            raise AssertionError(f"curl {url} failed: {completed.stderr}")
        return completed.stdout

    def volunteers_available(self, broker_url: str) -> float:
        """The broker's ``ferry_broker_volunteers_available`` gauge, summed."""
        metrics = self.fetch_in_internet(f"{broker_url}/metrics")
        return sum(
            float(line.rpartition(" ")[2])
            for line in metrics.splitlines()
            if line.startswith("ferry_broker_volunteers_available")
        )

    @contextlib.contextmanager
    def widget_in_chromium(self, home: str, broker_url: str, folder: Path) -> Iterator[Path]:
        """Debian's Chromium in ``home``'s host showing a website (served by the origin)
        that embeds ``broker_url``'s widget, switched on: a visitor's browser, with no
        DevTools session and ferry's quiet headless flags (mDNS host candidates, as by
        default). Name lookups answer "not found" (no resolver answers in the lab) except
        for ``SERVICES``: ferry's ``NO_NAME_LOOKUPS`` rule (``MAP * ~NOTFOUND, EXCLUDE
        127.0.0.1``) maps IP literals too, so with it Chromium fails to load any page off
        loopback (``net::ERR_NAME_NOT_RESOLVED`` for ``http://198.18.0.1:8000/``). Started
        in its own session; its whole process group is stopped on exit. Yields its log's
        path."""
        from ferry.transport.browser_webrtc import QUIET_HEADLESS_CHROMIUM, sandbox_arguments

        page = f"widget-{folder.name}.html"
        (self.site / page).write_text(widget_page(broker_url))
        log_path = folder / "chromium.log"
        with log_path.open("wb") as log:
            browser = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.home(home).host, CHROMIUM,
                 *QUIET_HEADLESS_CHROMIUM, *sandbox_arguments(os.geteuid()),
                 "--enable-logging=stderr", "--log-level=0",
                 f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {SERVICES}",
                 f"--user-data-dir={folder / 'chromium-profile'}",
                 f"http://{SERVICES}:{ORIGIN_PORT}/{page}#switch-on"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            yield log_path
        finally:
            stop_process_group(browser)


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process``, the leader of its own process group, and every process of that
    group: SIGTERM, then SIGKILL after 10 s."""
    group = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        process.wait(timeout=10)
    time.sleep(0.2)  # the children's own SIGTERM handling
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
