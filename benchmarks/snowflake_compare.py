"""ferry and Snowflake 2.5.1 side by side: one bulk download through each, alternating.

In one run, the same payload (``--megabytes`` MB of random bytes, SHA-256 checked) is
downloaded with curl, alternately:

* through **ferry**: egress, broker, one Python volunteer and a client as four ``ferry``
  processes on 127.0.0.1 (``throughput.py``'s ``start_network``), from an origin thread;
* through **Snowflake 2.5.1**: ``snowflake-client``, one ``snowflake-proxy`` and
  ``snowflake-server`` as separate processes, with a stand-in broker (below), from an origin
  process that serves the payload on the server's ORPort.

For each download it reports MB/s and the CPU time (user + system, ``/proc/PID/stat``) that
each system's processes spent, in ms per MB, and at the end the medians and the ratios
ferry ÷ Snowflake. MB means 10**6 bytes. curl, the origins and the brokers are not counted in
CPU; the brokers are idle during a transfer and shown apart.

Two rates are shown: **MB/s** from curl's first byte to its last (``size / (time_total -
time_starttransfer)``), the figure the ratio uses, and **setup+MB/s** over curl's whole time.
Snowflake's client starts a new session (broker exchange, WebRTC, KCP/smux) for every SOCKS
connection, so its whole-time figure includes that set-up; ferry's client keeps one session.

Where everything runs (only loopback, never a public address):

* ferry runs in this machine's network namespace on 127.0.0.1, as ``throughput.py`` does.
* Snowflake runs in a **network namespace this script creates** (``ip netns``; needs root)
  and deletes at the end. pion (Snowflake's WebRTC) never offers a candidate on a loopback
  interface, so the namespace gets a veth pair holding 198.18.0.1/32 (RFC 2544's benchmarking
  range), which exists only inside it; the broker, relay, ORPort and SOCKS port are on its
  127.0.0.1. The namespace has no route out, so the binaries' public defaults (STUN
  at a public STUN server, the NAT probe at the Tor Project's broker, which the Debian proxy has
  no flag for) cannot be reached: they fail at once and the NAT type stays "unknown". STUN is
  set to 127.0.0.1 anyway on both sides.

The Snowflake pieces:

* ``snowflake-client`` and ``snowflake-proxy``: Debian bookworm's packages, 2.5.1, as shipped
  (``apt-get install -y snowflake-client snowflake-proxy``). The client runs as a Tor managed
  pluggable transport (``TOR_PT_MANAGED_TRANSPORT_VER=1``, ``TOR_PT_CLIENT_TRANSPORTS=snowflake``,
  ``TOR_PT_STATE_LOCATION``); its PT arguments (``url=`` the broker, ``ice=`` the STUN server,
  ``max=1``) travel in the SOCKS5 username and password, as tor sends them. The proxy runs with
  ``-broker``, ``-relay ws://127.0.0.1:PORT/``, ``-allow-non-tls-relay``, ``-stun``,
  ``-capacity 1``.
* ``snowflake-server``: Debian does not package it, and ``golang-snowflake-dev`` (2.5.1) holds
  ``client/``, ``proxy/`` and ``common/`` but not ``server/`` or ``broker/``. ``--build`` builds
  it with Debian's Go 1.19 in GOPATH mode against ``/usr/share/gocode`` (no module download)
  from Snowflake 2.5.1's ``server/lib/*.go`` (``http.go``, ``snowflake.go``,
  ``turbotunnel.go``), which you put in the directory given by ``--server-source`` (default
  ``$SNOWFLAKE_BIN_DIR/server-src/lib``), with a minimal ``main`` in this script (plain HTTP,
  no ACME/TLS: the ``--disable-tls`` path; each tunnelled stream copied to
  ``TOR_PT_ORPORT``). No Snowflake code is in this repository.
* The **broker** is a stand-in in this script (``--serve-broker``), speaking the 2.5.1 broker
  protocol (``POST /client``, ``/proxy``, ``/answer``; ``common/messages``): it hands each
  client offer to the next proxy poll, which it holds open up to 10 s as the real broker does,
  and the proxy's answer back to the client. It is idle while bytes flow. The real broker was
  not built: its source is not in any Debian package either.

Binaries are looked up in ``--bin-dir`` (env ``SNOWFLAKE_BIN_DIR``, default
``~/.cache/ferry-snowflake/bin``), then ``/usr/bin`` for the client and the proxy.

**Upstream's corruption fix.** 2.5.1's ``common/turbotunnel/queuepacketconn.go`` keeps a
buffer that kcp-go reuses, so the server mangles packets and some downloads arrive corrupt
(Snowflake issue 40260; fixed upstream in 2.6.0 by commit d2858ae, which reverts the change).
``--build --patch FILE`` applies such a patch (``patch -p1`` from the module root) to copies
of Debian's ``common/`` and the given ``server/lib`` before building; the figures in
BENCHMARKS.md are with that fix (``git show d2858ae`` in a Snowflake clone gives the file).
``throughput.py`` refuses a corrupt Snowflake download in its stack table and says this.

Usage (as root)::

    python benchmarks/snowflake_compare.py --build --patch 40260.patch   # once: apt-get + go build
    python benchmarks/snowflake_compare.py [--megabytes 50] [--runs 3]

Exits 1 if a download fails or a ferry download's hash does not match (a Snowflake download
with a wrong hash is shown as CORRUPT, counted, and left out of the medians: 2.5.1 as Debian
ships it corrupts some), 2 if a system does not come up or a binary is missing (the message
says how to get it). Only processes this script started are stopped, by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput

LOOPBACK = "127.0.0.1"
MEGABYTE = 1_000_000
NAMESPACE_ADDRESS = "198.18.0.1"
"""The one non-loopback address inside the namespace (RFC 2544 benchmarking range)."""
SERVER_PORT = 9901
"""snowflake-server's WebSocket port inside the namespace (PT needs a fixed port; the
namespace is new, so it is free)."""
STUN_URL = f"stun:{LOOPBACK}:3478"
"""The STUN server both Snowflake ends are given: loopback, nothing listens."""
BROKER_PROXY_HOLD = 10.0
"""Seconds the stand-in broker holds a proxy poll open waiting for a client (as 2.5.1's)."""
BROKER_CLIENT_WAIT = 20.0
"""Seconds the stand-in broker waits for a proxy's answer to a client's offer."""
IDLE_SECONDS = 3.0
"""Seconds the Snowflake processes' idle CPU is sampled before the runs."""
DEFAULT_BIN_DIR = Path.home() / ".cache" / "ferry-snowflake" / "bin"
SNOWFLAKE_PROCESSES = ("client", "proxy", "server")
FERRY_PROCESSES = ("client", "volunteer", "egress")
DEBIAN_PACKAGES = ("snowflake-client", "snowflake-proxy", "golang-snowflake-dev", "golang-go")
SERVER_MAIN = """\
// Minimal snowflake-server main for ferry's loopback benchmark (not Snowflake's own main):
// plain HTTP (the --disable-tls path), PT server setup from the environment, and each
// tunnelled stream copied to and from the ORPort.
package main

import (
\t"io"
\t"log"
\t"net"
\t"os"
\t"os/signal"
\t"syscall"

\tpt "{pt_prefix}/pluggable-transports/goptlib.git"
\tsf "{pt_prefix}/pluggable-transports/snowflake.git/v2/server/lib"
)

func proxy(local *net.TCPConn, conn net.Conn) {
\tdone := make(chan struct{}, 2)
\tgo func() { io.Copy(conn, local); local.CloseRead(); conn.Close(); done <- struct{}{} }()
\tgo func() { io.Copy(local, conn); local.CloseWrite(); conn.Close(); done <- struct{}{} }()
\t<-done
\t<-done
}

func main() {
\tlog.SetFlags(log.LstdFlags | log.LUTC)
\tptInfo, err := pt.ServerSetup(nil)
\tif err != nil {
\t\tlog.Fatalf("error in setup: %s", err)
\t}
\tfor _, bindaddr := range ptInfo.Bindaddrs {
\t\tif bindaddr.MethodName != "snowflake" {
\t\t\tpt.SmethodError(bindaddr.MethodName, "no such method")
\t\t\tcontinue
\t\t}
\t\t// One KCP instance, as 2.5.1's server main defaults to (-num-turbotunnel 1).
\t\tln, err := sf.NewSnowflakeServer(nil).Listen(bindaddr.Addr, 1)
\t\tif err != nil {
\t\t\tpt.SmethodError(bindaddr.MethodName, err.Error())
\t\t\tcontinue
\t\t}
\t\tgo func() {
\t\t\tfor {
\t\t\t\tconn, err := ln.Accept()
\t\t\t\tif err != nil {
\t\t\t\t\tlog.Printf("accept: %v", err)
\t\t\t\t\treturn
\t\t\t\t}
\t\t\t\tgo func() {
\t\t\t\t\tdefer conn.Close()
\t\t\t\t\tor, err := pt.DialOr(&ptInfo, conn.RemoteAddr().String(), "snowflake")
\t\t\t\t\tif err != nil {
\t\t\t\t\t\tlog.Printf("ORPort: %v", err)
\t\t\t\t\t\treturn
\t\t\t\t\t}
\t\t\t\t\tdefer or.Close()
\t\t\t\t\tproxy(or, conn)
\t\t\t\t}()
\t\t\t}
\t\t}()
\t\targs := pt.Args{}
\t\targs.Add("tls", "no")
\t\tpt.SmethodArgs(bindaddr.MethodName, bindaddr.Addr, args)
\t}
\tpt.SmethodsDone()
\tsig := make(chan os.Signal, 1)
\tsignal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
\t<-sig
}
"""

BenchmarkError = throughput.BenchmarkError


# ---------------------------------------------------------------------------------------------
# Finding and building the binaries


@dataclass(frozen=True, slots=True)
class SnowflakeBinaries:
    """Paths of the three Snowflake programs."""

    client: Path
    """snowflake-client (Debian's)."""
    proxy: Path
    """snowflake-proxy (Debian's)."""
    server: Path
    """snowflake-server (built by ``--build``)."""


HOW_TO_GET = (
    "get them with: python benchmarks/snowflake_compare.py --build (as root; it runs "
    f"apt-get install -y {' '.join(DEBIAN_PACKAGES)} and builds snowflake-server from "
    "Snowflake 2.5.1's server/lib/*.go in --server-source)"
)


def find_binaries(bin_dir: Path) -> SnowflakeBinaries:
    """The three programs, from ``bin_dir`` first, then /usr/bin; BenchmarkError if missing."""
    found: dict[str, Path] = {}
    for name in ("snowflake-client", "snowflake-proxy", "snowflake-server"):
        for candidate in (bin_dir / name, Path("/usr/bin") / name):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                found[name] = candidate
                break
        else:
            raise BenchmarkError(f"{name} not found in {bin_dir} or /usr/bin; {HOW_TO_GET}")
    return SnowflakeBinaries(
        client=found["snowflake-client"],
        proxy=found["snowflake-proxy"],
        server=found["snowflake-server"],
    )


def build(bin_dir: Path, server_source: Path, patches: list[Path]) -> None:
    """Install Debian's packages and build snowflake-server into ``bin_dir``.

    ``patches`` (``--patch``, in order) are applied with ``patch -p1`` to a copy of the
    module (Debian's ``common/`` and the given ``server/lib``), never to Debian's files.
    """
    subprocess.run(["apt-get", "install", "-y", *DEBIAN_PACKAGES], check=True)
    library = server_source
    if not all((library / name).is_file() for name in ("http.go", "snowflake.go")):
        raise BenchmarkError(
            f"{library} does not hold Snowflake 2.5.1's server/lib/*.go (http.go, snowflake.go, "
            "turbotunnel.go). golang-snowflake-dev ships no server/ directory: copy it from "
            "Snowflake's v2.5.1 source tree there."
        )
    gocode = Path("/usr/share/gocode/src")
    # The Go import paths start with the code host's name, which is taken from Debian's
    # layout rather than written here.
    found = sorted(gocode.glob("*/pluggable-transports/snowflake.git"))
    kcp_found = sorted(gocode.glob("*/xtaci/kcp-go"))
    if not found or not kcp_found:
        raise BenchmarkError(
            f"{gocode} holds no Snowflake or kcp-go source: install {DEBIAN_PACKAGES}"
        )
    debian_snowflake = found[0]
    pt_prefix = debian_snowflake.parent.parent.name
    kcp_go = kcp_found[0]
    work = bin_dir.parent / "gopath"
    v2 = work / "src" / pt_prefix / "pluggable-transports/snowflake.git/v2"
    (v2 / "server").mkdir(parents=True, exist_ok=True)
    # Debian lays the v2 module out without its /v2 (and kcp-go without /v5): GOPATH mode
    # finds the import paths through these links.
    copies = {v2 / "common": debian_snowflake / "common", v2 / "server" / "lib": library.resolve()}
    for copy, source in copies.items():
        if copy.is_symlink() or copy.is_file():
            copy.unlink()
        elif copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(source, copy)
    for patch in patches:
        print(f"applying {patch}")
        with patch.open("rb") as stream:
            subprocess.run(["patch", "-p1", "-d", str(v2)], stdin=stream, check=True)
    kcp_link = work / "src" / kcp_go.relative_to(gocode) / "v5"
    kcp_link.parent.mkdir(parents=True, exist_ok=True)
    if kcp_link.is_symlink() or kcp_link.exists():
        kcp_link.unlink()
    kcp_link.symlink_to(kcp_go)
    main_dir = work / "server-main"
    main_dir.mkdir(parents=True, exist_ok=True)
    (main_dir / "main.go").write_text(SERVER_MAIN.replace("{pt_prefix}", pt_prefix))
    bin_dir.mkdir(parents=True, exist_ok=True)
    environment = dict(
        os.environ,
        GO111MODULE="off",
        GOPATH=f"{work}:/usr/share/gocode",
        GOPROXY="off",
        GOFLAGS="",
        GOCACHE=str(bin_dir.parent / "gocache"),
    )
    subprocess.run(
        ["go", "build", "-o", str(bin_dir / "snowflake-server"), "."],
        cwd=main_dir,
        env=environment,
        check=True,
    )
    print(f"built {bin_dir / 'snowflake-server'}")


# ---------------------------------------------------------------------------------------------
# Helper roles this script runs inside the namespace (``--serve-origin``, ``--serve-broker``)


def serve_origin(payload_path: Path, ready_path: Path) -> None:
    """Serve the payload over HTTP on 127.0.0.1 (throughput.py's origin) until SIGTERM."""
    payload = payload_path.read_bytes()
    with throughput.running_origin(payload) as origin:
        ready_path.write_text(json.dumps({"port": origin.server_address[1]}))
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


@dataclass(slots=True)
class PendingClient:
    """One client offer waiting for a proxy, and then for its answer."""

    offer: str
    """The client's SDP offer (as the client sent it: JSON text)."""
    answer: queue.Queue[str]
    """Receives the proxy's answer."""


class StandInBroker:
    """The state of the stand-in broker: offers waiting for proxies, proxies' sessions."""

    def __init__(self) -> None:
        self.offers: queue.Queue[PendingClient] = queue.Queue()
        self.matched: dict[str, PendingClient] = {}
        self.lock = threading.Lock()


class BrokerHandler(http.server.BaseHTTPRequestHandler):
    """``POST /client``, ``/proxy`` and ``/answer`` of Snowflake 2.5.1's broker protocol."""

    server: BrokerServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def reply(self, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        broker = self.server.broker
        try:
            if self.path.rstrip("/").endswith("/client"):
                version, _, message = body.partition(b"\n")
                if version != b"1.0":
                    self.reply(400, {"error": "unsupported message version"})
                    return
                offer = json.loads(message)["offer"]
                pending = PendingClient(offer=offer, answer=queue.Queue(maxsize=1))
                broker.offers.put(pending)
                try:
                    answer = pending.answer.get(timeout=BROKER_CLIENT_WAIT)
                except queue.Empty:
                    self.reply(200, {"error": "timed out waiting for answer!"})
                    return
                self.reply(200, {"answer": answer})
            elif self.path.rstrip("/").endswith("/proxy"):
                sid = json.loads(body)["Sid"]
                try:
                    pending = broker.offers.get(timeout=BROKER_PROXY_HOLD)
                except queue.Empty:
                    self.reply(200, {"Status": "no match"})
                    return
                with broker.lock:
                    broker.matched[sid] = pending
                self.reply(
                    200,
                    {
                        "Status": "client match",
                        "Offer": pending.offer,
                        "NAT": "unknown",
                        "RelayURL": "",
                    },
                )
            elif self.path.rstrip("/").endswith("/answer"):
                request = json.loads(body)
                with broker.lock:
                    matched = broker.matched.pop(request["Sid"], None)
                if matched is None:
                    self.reply(200, {"Status": "client gone"})
                    return
                matched.answer.put(request["Answer"])
                self.reply(200, {"Status": "success"})
            else:
                self.reply(404, {"error": "no such path"})
        except (ValueError, KeyError, TypeError) as exc:
            self.reply(400, {"error": f"bad request: {exc}"})


class BrokerServer(http.server.ThreadingHTTPServer):
    """The stand-in broker's HTTP server."""

    daemon_threads = True

    def __init__(self) -> None:
        self.broker = StandInBroker()
        super().__init__((LOOPBACK, 0), BrokerHandler)


def serve_broker(ready_path: Path) -> None:
    """Run the stand-in broker on 127.0.0.1 until SIGTERM."""
    server = BrokerServer()
    thread = threading.Thread(target=server.serve_forever, name="broker", daemon=True)
    thread.start()
    ready_path.write_text(json.dumps({"port": server.server_address[1]}))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.shutdown()


# ---------------------------------------------------------------------------------------------
# The namespace and the Snowflake processes


@contextlib.contextmanager
def network_namespace(name: str) -> Iterator[str]:
    """A new network namespace with lo up and a veth pair holding 198.18.0.1/32; deleted at
    the end."""

    def ip(*arguments: str) -> None:
        result = subprocess.run(["ip", *arguments], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BenchmarkError(f"ip {' '.join(arguments)}: {result.stderr.strip()}")

    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "link", "add", "sfa", "type", "veth", "peer", "name", "sfb")
        ip("-n", name, "addr", "add", f"{NAMESPACE_ADDRESS}/32", "dev", "sfa")
        ip("-n", name, "link", "set", "sfa", "up")
        ip("-n", name, "link", "set", "sfb", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@dataclass(slots=True)
class Started:
    """One process this script started."""

    name: str
    """What it is (client, proxy, server, broker, origin)."""
    process: subprocess.Popen[bytes]
    """The process (``ip netns exec`` execs the program, so this is its PID)."""
    log_path: Path
    """Its stderr (and stdout, unless read)."""

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def clean_environment() -> dict[str, str]:
    """This environment minus proxy variables, TOR_PT_* and FERRY_* settings."""
    return {
        name: value
        for name, value in throughput.ferry_environment().items()
        if not name.startswith("TOR_PT_")
    }


def start_in_namespace(
    namespace: str,
    name: str,
    command: list[str],
    folder: Path,
    environment: dict[str, str] | None = None,
    *,
    pipe_stdout: bool = False,
) -> Started:
    """Start ``command`` inside ``namespace`` with output to ``folder/NAME.log``."""
    log_path = folder / f"snowflake-{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command],
            stdin=subprocess.PIPE if pipe_stdout else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else log,
            stderr=log,
            env={**clean_environment(), **(environment or {})},
            start_new_session=True,
        )
    return Started(name=name, process=process, log_path=log_path)


def stop(started: list[Started]) -> None:
    """SIGTERM each started process by PID, wait (bounded), SIGKILL what is left."""
    for item in started:
        if item.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                item.process.send_signal(signal.SIGTERM)
    for item in started:
        try:
            item.process.wait(timeout=throughput.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                item.process.kill()
            item.process.wait(timeout=throughput.STOP_TIMEOUT)


def wait_port_file(item: Started, path: Path, timeout: float) -> int:
    """Wait (bounded) for a helper's ready file and return its port."""
    for _ in range(int(timeout / throughput.READY_POLL_INTERVAL) + 1):
        if path.exists() and path.stat().st_size > 0:
            port = json.loads(path.read_text())["port"]
            if isinstance(port, int):
                return port
        if item.process.poll() is not None:
            raise BenchmarkError(f"{item.name} exited early:\n{item.log_tail()}")
        time.sleep(throughput.READY_POLL_INTERVAL)
    raise BenchmarkError(f"{item.name} was not ready after {timeout:.0f} s:\n{item.log_tail()}")


def read_pt_line(item: Started, prefix: bytes, timeout: float) -> bytes:
    """Read the PT process's stdout (bounded) until a line starting with ``prefix``."""
    stdout = item.process.stdout
    if stdout is None:
        raise BenchmarkError(f"{item.name}: stdout is not a pipe")
    lines: list[bytes] = []
    result: list[bytes] = []

    def reader() -> None:
        for line in stdout:
            lines.append(line)
            if line.startswith(prefix) or b"ERROR" in line:
                result.append(line)
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    if not result or b"ERROR" in result[0]:
        raise BenchmarkError(
            f"{item.name} did not print {prefix.decode()} in {timeout:.0f} s: "
            f"{b''.join(lines).decode(errors='replace')}\n{item.log_tail()}"
        )
    # Keep draining stdout so the process never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()
    return result[0]


@dataclass(slots=True)
class SnowflakeNetwork:
    """The running Snowflake processes and how to reach them."""

    processes: dict[str, Started]
    """client, proxy, server, broker, origin."""
    socks_port: int
    """snowflake-client's SOCKS5 port (127.0.0.1 in the namespace)."""
    broker_port: int
    """The stand-in broker's port."""
    origin_port: int
    """The origin's (ORPort's) port."""

    @property
    def proxy_url(self) -> str:
        """curl's ``--proxy`` for snowflake-client: the PT arguments travel in the SOCKS5
        username and password, as tor sends them (:func:`socks_arguments`)."""
        username, password = socks_arguments(self.broker_port)
        return (
            f"socks5h://{quote(username, safe='')}:{quote(password, safe='')}"
            f"@{LOOPBACK}:{self.socks_port}"
        )

    @property
    def payload_url(self) -> str:
        """The payload's URL. The client tunnels every SOCKS connection to the bridge
        whatever the target: the origin behind the server's ORPort answers the request."""
        return f"http://{LOOPBACK}:{self.origin_port}/payload"


def start_snowflake(
    namespace: str, binaries: SnowflakeBinaries, payload_path: Path, folder: Path, timeout: float
) -> SnowflakeNetwork:
    """Start origin, broker, server, proxy and client inside ``namespace``."""
    started: dict[str, Started] = {}
    me = [sys.executable, str(Path(__file__).resolve())]
    try:
        origin_ready = folder / "sf-origin.ready.json"
        started["origin"] = start_in_namespace(
            namespace,
            "origin",
            [*me, "--serve-origin", str(payload_path), "--ready-file", str(origin_ready)],
            folder,
        )
        origin_port = wait_port_file(started["origin"], origin_ready, timeout)
        broker_ready = folder / "sf-broker.ready.json"
        started["broker"] = start_in_namespace(
            namespace, "broker", [*me, "--serve-broker", "--ready-file", str(broker_ready)], folder
        )
        broker_port = wait_port_file(started["broker"], broker_ready, timeout)

        state = folder / "sf-state"
        state.mkdir(exist_ok=True)
        started["server"] = start_in_namespace(
            namespace,
            "server",
            [str(binaries.server)],
            folder,
            {
                "TOR_PT_MANAGED_TRANSPORT_VER": "1",
                "TOR_PT_SERVER_TRANSPORTS": "snowflake",
                "TOR_PT_SERVER_BINDADDR": f"snowflake-{LOOPBACK}:{SERVER_PORT}",
                "TOR_PT_ORPORT": f"{LOOPBACK}:{origin_port}",
                "TOR_PT_STATE_LOCATION": str(state / "server"),
            },
            pipe_stdout=True,
        )
        read_pt_line(started["server"], b"SMETHODS DONE", timeout)

        started["proxy"] = start_in_namespace(
            namespace,
            "proxy",
            [
                str(binaries.proxy),
                "-broker",
                f"http://{LOOPBACK}:{broker_port}/",
                "-relay",
                f"ws://{LOOPBACK}:{SERVER_PORT}/",
                "-allow-non-tls-relay",
                "-allowed-relay-hostname-pattern",
                f"{LOOPBACK}$",
                "-stun",
                STUN_URL,
                "-capacity",
                "1",
                # "0s" is documented to disable the summary but makes 2.5.1 print it in a
                # busy loop (a whole core); a day is never reached here.
                "-summary-interval",
                "24h",
                "-nat-retest-interval",
                "0s",
                "-verbose",
            ],
            folder,
        )
        started["client"] = start_in_namespace(
            namespace,
            "client",
            [str(binaries.client), "-log", str(folder / "snowflake-client-pt.log")],
            folder,
            {
                "TOR_PT_MANAGED_TRANSPORT_VER": "1",
                "TOR_PT_CLIENT_TRANSPORTS": "snowflake",
                "TOR_PT_STATE_LOCATION": str(state / "client"),
                "TOR_PT_EXIT_ON_STDIN_CLOSE": "0",
            },
            pipe_stdout=True,
        )
        line = read_pt_line(started["client"], b"CMETHOD snowflake", timeout)
        # CMETHOD snowflake socks5 127.0.0.1:PORT
        socks_port = int(line.split()[3].rpartition(b":")[2])
    except BaseException:
        stop(list(reversed(started.values())))
        raise
    return SnowflakeNetwork(
        processes=started, socks_port=socks_port, broker_port=broker_port, origin_port=origin_port
    )


def socks_arguments(broker_port: int) -> tuple[str, str]:
    """The PT arguments, split over the SOCKS5 username and password as tor does (the two are
    concatenated; ``key=value`` pairs separated by ``;``)."""
    username = f"url=http://{LOOPBACK}:{broker_port}/;ice={STUN_URL};"
    password = "max=1"
    return username, password


def start_ferry(
    folder: Path, timeout: float, client_webrtc: str
) -> tuple[dict[str, throughput.FerryProcess], str]:
    """throughput.py's four ferry processes (egress, broker, one Python volunteer, client),
    the client with ``--webrtc CLIENT_WEBRTC``; return them and the client's proxy."""
    started: dict[str, throughput.FerryProcess] = {}
    try:
        egress = throughput.start_role(
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
        egress_ready = throughput.wait_ready(egress, timeout)
        egress_url = throughput.ready_text(egress_ready, "egress", "egress")
        bridge = throughput.ready_text(egress_ready, "bridge", "egress")
        broker = throughput.start_role(
            "broker", ["--listen", f"{LOOPBACK}:0", "--egress", egress_url], folder
        )
        started["broker"] = broker
        broker_url = throughput.ready_text(
            throughput.wait_ready(broker, timeout), "broker", "broker"
        )
        volunteer = throughput.start_role(
            "volunteer",
            [
                *("--broker", broker_url, "--capacity", "1", "--ice-address", LOOPBACK),
                "--unsafe-allow-internal-egress",
                *throughput.VOLUNTEER_WEBRTC,
            ],
            folder,
        )
        started["volunteer"] = volunteer
        throughput.wait_ready(volunteer, timeout)
        client = throughput.start_role(
            "client",
            throughput.one_volunteer_client(broker_url, bridge, webrtc=("--webrtc", client_webrtc)),
            folder,
        )
        started["client"] = client
        proxy = throughput.ready_text(throughput.wait_ready(client, timeout), "proxy", "client")
    except BaseException:
        throughput.stop_roles(list(reversed(started.values())))
        raise
    return started, proxy


# ---------------------------------------------------------------------------------------------
# Downloads and measurement


@dataclass(frozen=True, slots=True)
class Transfer:
    """One finished download."""

    total_seconds: float
    """curl's whole time."""
    body_seconds: float
    """From curl's first byte to its last."""
    size: int
    """Bytes received."""
    sha256: str
    """Hex SHA-256 of what was received."""


def curl(
    url: str,
    output: Path,
    timeout: float,
    proxy_url: str | None,
    namespace: str | None,
) -> Transfer:
    """Fetch ``url`` with curl through ``proxy_url`` (inside ``namespace`` if given)."""
    fetched = throughput.curl_download(
        url,
        output,
        timeout,
        ["--proxy", proxy_url] if proxy_url is not None else [],
        wrapper=["ip", "netns", "exec", namespace] if namespace is not None else None,
        environment=clean_environment(),
    )
    return Transfer(
        total_seconds=fetched.seconds,
        body_seconds=max(fetched.seconds - fetched.first_byte_seconds, 1e-6),
        size=fetched.size,
        sha256=fetched.sha256,
    )


@dataclass(frozen=True, slots=True)
class Measurement:
    """One download through one system."""

    system: str
    """ferry or Snowflake."""
    rate: float
    """MB/s from the first byte to the last."""
    setup_rate: float
    """MB/s over curl's whole time (set-up included)."""
    cpu_ms_per_megabyte: dict[str, float]
    """CPU ms per MB of each of the system's processes during the download."""
    intact: bool
    """Whether the bytes received were exactly the payload (size and SHA-256)."""

    @property
    def total_cpu(self) -> float:
        """CPU ms per MB summed over the system's data-path processes."""
        return sum(self.cpu_ms_per_megabyte.values())


def measure(
    system: str,
    readers: dict[str, Callable[[], float]],
    fetch: Callable[[], Transfer],
    size: int,
    sha256: str,
) -> Measurement:
    """Download once, reading each process's CPU before and after; check the bytes.

    A ferry download that is not the payload raises; a Snowflake one is recorded as corrupt
    (2.5.1 as Debian ships it is known to corrupt some downloads) and left out of the medians.
    """
    before = {name: read() for name, read in readers.items()}
    transfer = fetch()
    after = {name: read() for name, read in readers.items()}
    intact = transfer.size == size and transfer.sha256 == sha256
    if not intact and system == "ferry":
        raise BenchmarkError(
            f"{system} download does not match the payload: {transfer.size} bytes, sha256 "
            f"{transfer.sha256} (expected {size} bytes, sha256 {sha256})"
        )
    megabytes = size / MEGABYTE
    return Measurement(
        system=system,
        rate=megabytes / transfer.body_seconds,
        setup_rate=megabytes / transfer.total_seconds,
        cpu_ms_per_megabyte={
            name: (after[name] - before[name]) * 1000 / megabytes for name in readers
        },
        intact=intact,
    )


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process ``root`` and every live descendant (and of the
    children they have reaped), from /proc. ferry's client runs its WebRTC in a headless
    Chromium child by default (``--webrtc auto``), which ``/proc/ROOT/stat`` alone misses."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        # fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14-17.
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = sum(int(value) for value in fields[11:15]) / ticks_per_second
    if root not in times:
        raise BenchmarkError(f"process {root} is gone")
    total = 0.0
    pending = [root]
    while pending:
        pid = pending.pop()
        total += times.get(pid, 0.0)
        pending.extend(child for child, parent in parents.items() if parent == pid)
    return total


def pid_cpu(pid: int) -> Callable[[], float]:
    """A reader of the CPU seconds of process ``pid`` and its descendants."""
    return lambda: tree_cpu_seconds(pid)


# ---------------------------------------------------------------------------------------------
# Report


def print_report(results: list[Measurement], megabytes: int) -> None:
    """Each run, the medians per system, and the ratios."""
    columns = ["system", "MB/s", "setup+MB/s", "CPU ms/MB", "per process (ms/MB)"]
    rows = [columns]
    for result in results:
        rows.append(
            [
                result.system if result.intact else f"{result.system} (CORRUPT)",
                f"{result.rate:.2f}",
                f"{result.setup_rate:.2f}",
                f"{result.total_cpu:.1f}",
                ", ".join(f"{k} {v:.1f}" for k, v in result.cpu_ms_per_megabyte.items()),
            ]
        )
    medians: dict[str, tuple[float, float, float]] = {}
    for system in ("ferry", "Snowflake"):
        mine = [r for r in results if r.system == system and r.intact]
        if not mine:
            print(f"\nevery {system} download was corrupt: no median")
            return
        medians[system] = (
            statistics.median(r.rate for r in mine),
            statistics.median(r.setup_rate for r in mine),
            statistics.median(r.total_cpu for r in mine),
        )
        rate, setup_rate, cpu = medians[system]
        rows.append([f"{system} median", f"{rate:.2f}", f"{setup_rate:.2f}", f"{cpu:.1f}", ""])
    print()
    print(f"{megabytes} MB per download, alternating (runs in the order shown):")
    print(throughput.format_table(rows))
    corrupt = sum(1 for r in results if not r.intact)
    print(
        f"corrupt downloads (wrong SHA-256, left out of the medians): {corrupt} of {len(results)}"
    )
    ferry, snowflake = medians["ferry"], medians["Snowflake"]
    print()
    print(
        f"ferry ÷ Snowflake: throughput {ferry[0] / snowflake[0]:.2f}× (goal ≥ 2), "
        f"with set-up {ferry[1] / snowflake[1]:.2f}×; CPU per MB {ferry[2] / snowflake[2]:.2f}× "
        "(goal ≤ 1)"
    )
    print(
        "CPU ms/MB: user+system CPU per MB (10**6 bytes) during the download, summed over "
        "ferry's client, volunteer and egress and over Snowflake's client, proxy and server; "
        "curl, the origins and the (idle) brokers are not counted."
    )


# ---------------------------------------------------------------------------------------------
# Main


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=50, help="payload size in MB")
    parser.add_argument("--runs", type=int, default=3, help="downloads through each system")
    parser.add_argument(
        "--bin-dir",
        type=Path,
        default=Path(os.environ.get("SNOWFLAKE_BIN_DIR") or DEFAULT_BIN_DIR),
        help="where snowflake-server is (and -client/-proxy if not Debian's); env "
        f"SNOWFLAKE_BIN_DIR; default {DEFAULT_BIN_DIR}",
    )
    parser.add_argument(
        "--build",
        action="store_true",
        help="apt-get install Debian's Snowflake packages and Go, build snowflake-server, exit",
    )
    parser.add_argument(
        "--server-source",
        type=Path,
        default=None,
        help="Snowflake 2.5.1 server/lib source for --build (default BIN_DIR/../server-src/lib)",
    )
    parser.add_argument(
        "--patch",
        type=Path,
        action="append",
        default=[],
        help="with --build: a patch (patch -p1, relative to the module root) applied to the "
        "copied source before building, e.g. upstream's fix for issue 40260 (git show d2858ae); "
        "repeatable",
    )
    parser.add_argument(
        "--ferry-client-webrtc",
        choices=("auto", "python", "browser"),
        default="auto",
        help="ferry client's --webrtc (default auto, ferry's default: headless Chromium when "
        "installed, whose CPU is counted with the client's)",
    )
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="start-up bound, s")
    parser.add_argument("--download-timeout", type=float, default=None, help="per download, s")
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="copy the Snowflake processes' logs here"
    )
    parser.add_argument("--serve-origin", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-broker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.megabytes < 1 or arguments.runs < 1:
        parser.error("--megabytes and --runs must be at least 1")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.serve_origin is not None:
        serve_origin(arguments.serve_origin, arguments.ready_file)
        return 0
    if arguments.serve_broker:
        serve_broker(arguments.ready_file)
        return 0
    bin_dir: Path = arguments.bin_dir
    if arguments.build:
        try:
            build(
                bin_dir,
                arguments.server_source or bin_dir.parent / "server-src" / "lib",
                arguments.patch,
            )
        except (BenchmarkError, subprocess.CalledProcessError) as exc:
            print(f"snowflake_compare: build failed: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        binaries = find_binaries(bin_dir)
    except BenchmarkError as exc:
        print(f"snowflake_compare: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("curl") is None:
        print("snowflake_compare: needs root, ip (iproute2) and curl", file=sys.stderr)
        return 2
    size = arguments.megabytes * MEGABYTE
    download_timeout = arguments.download_timeout or max(60.0, 10.0 * arguments.megabytes)
    payload = os.urandom(size)
    payload_sha256 = hashlib.sha256(payload).hexdigest()
    print(f"machine: {os.cpu_count()} CPUs, load average at start {os.getloadavg()}")
    print(f"payload: {arguments.megabytes} MB of random bytes, sha256 {payload_sha256[:16]}…")
    scratch_root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with (
        tempfile.TemporaryDirectory(prefix="ferry-vs-sf-", dir=scratch_root) as temporary,
        throughput.running_origin(payload) as origin,
    ):
        folder = Path(temporary)
        payload_path = folder / "payload.bin"
        payload_path.write_bytes(payload)
        output = folder / "download.bin"
        try:
            print(
                "starting ferry: egress, broker, one Python volunteer, client "
                f"(--webrtc {arguments.ferry_client_webrtc})…",
                flush=True,
            )
            roles, ferry_proxy = start_ferry(
                folder, arguments.ready_timeout, arguments.ferry_client_webrtc
            )
        except BenchmarkError as exc:
            print(f"snowflake_compare: ferry did not come up: {exc}", file=sys.stderr)
            return 2
        try:
            with network_namespace(f"ferry-sf-{os.getpid()}") as namespace:
                print(
                    "starting Snowflake in its namespace: origin, broker, server, proxy, client…",
                    flush=True,
                )
                try:
                    network = start_snowflake(
                        namespace, binaries, payload_path, folder, arguments.ready_timeout
                    )
                except BenchmarkError as exc:
                    print(f"snowflake_compare: Snowflake did not come up: {exc}", file=sys.stderr)
                    return 2
                try:
                    return alternate(
                        arguments,
                        roles,
                        ferry_proxy,
                        origin.url,
                        network,
                        namespace,
                        output,
                        size,
                        payload_sha256,
                        download_timeout,
                        folder,
                    )
                finally:
                    stop(list(reversed(network.processes.values())))
                    if arguments.keep_logs is not None:
                        arguments.keep_logs.mkdir(parents=True, exist_ok=True)
                        for log in folder.glob("snowflake-*.log"):
                            shutil.copy(log, arguments.keep_logs / log.name)
        except BenchmarkError as exc:
            print(f"snowflake_compare: {exc}", file=sys.stderr)
            return 2
        finally:
            throughput.stop_roles(list(reversed(roles.values())))


def alternate(
    arguments: argparse.Namespace,
    roles: dict[str, throughput.FerryProcess],
    ferry_proxy: str,
    ferry_url: str,
    network: SnowflakeNetwork,
    namespace: str,
    output: Path,
    size: int,
    payload_sha256: str,
    download_timeout: float,
    folder: Path,
) -> int:
    """The alternating runs and the report."""
    ferry_readers = {name: pid_cpu(roles[name].process.pid) for name in FERRY_PROCESSES}
    snowflake_readers = {
        name: pid_cpu(network.processes[name].process.pid) for name in SNOWFLAKE_PROCESSES
    }
    snowflake_proxy = network.proxy_url
    snowflake_url = network.payload_url
    idle = {name: read() for name, read in snowflake_readers.items()}
    time.sleep(IDLE_SECONDS)
    print(
        f"Snowflake CPU while idle for {IDLE_SECONDS:.0f} s: "
        + ", ".join(
            f"{name} {(read() - idle[name]) * 1000 / IDLE_SECONDS:.0f} ms/s"
            for name, read in snowflake_readers.items()
        ),
        flush=True,
    )
    results: list[Measurement] = []
    try:
        for run in range(1, arguments.runs + 1):
            for system in ("ferry", "Snowflake"):
                if system == "ferry":
                    result = measure(
                        system,
                        ferry_readers,
                        lambda: curl(
                            ferry_url, output, download_timeout, f"socks5h://{ferry_proxy}", None
                        ),
                        size,
                        payload_sha256,
                    )
                else:
                    result = measure(
                        system,
                        snowflake_readers,
                        lambda: curl(
                            snowflake_url, output, download_timeout, snowflake_proxy, namespace
                        ),
                        size,
                        payload_sha256,
                    )
                results.append(result)
                print(
                    f"run {run} {system}: {result.rate:.2f} MB/s "
                    f"({result.setup_rate:.2f} with set-up), {result.total_cpu:.1f} CPU ms/MB "
                    f"({'sha256 ok' if result.intact else 'CORRUPT: sha256 does not match'})",
                    flush=True,
                )
    except BenchmarkError as exc:
        print(f"snowflake_compare: {exc}", file=sys.stderr)
        for item in network.processes.values():
            print(f"--- {item.name} log tail:\n{item.log_tail()}", file=sys.stderr)
        return 1
    print_report(results, arguments.megabytes)
    print(f"load average at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
