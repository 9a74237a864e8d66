"""A small internet in network namespaces: services, STUN and TURN servers, and NATed homes.

:class:`InternetLab` builds one **internet** namespace and, per home, a **router** and a
**host** namespace::

    host (10.H.0.2) --lan/inside-- router (10.H.0.1 | 198.18.(100+H).2) --wan/homeH-- internet

The internet namespace holds every service address on its loopback device:

=====================  ====================================================================
``SERVICES``           198.18.0.1: broker, egress, the origin web server
``STUN_ADDRESSES``     198.18.0.11 and 198.18.0.12: two STUN servers. An RFC 5780 server
                       needs a second address for CHANGE-REQUEST and OTHER-ADDRESS, so each
                       one also owns ``STUN_ALTERNATE_ADDRESSES``: .11 pairs with .111, .12
                       with .112 (ports 3478 and 3479 on both, see ``tests.support_nat``).
``TURN_ADDRESS``       198.18.0.20: coturn, port 3478 (UDP and TCP), relaying from the same
                       address.
=====================  ====================================================================

Its default route leads into a device that silently drops everything (``void``), so a
packet to an address nobody routes (a home's 10.x host, 169.254.169.254) vanishes, as it does
on the real internet, instead of failing fast with "network unreachable". It routes back to
each router's public address only (a point-to-point /32), never to the homes behind them, and
it forwards between homes, so a host in one home reaches another home's router.

Each router masquerades what leaves its ``wan`` side: ``"cone"`` is iptables ``MASQUERADE``
(endpoint-independent mapping, address-and-port-dependent filtering through conntrack, the
"port-restricted cone" of RFC 3489), ``"symmetric"`` is ``MASQUERADE --random-fully`` (a new
random port per destination). Like a real home router it drops what arrives unsolicited from
the internet, forwarded or addressed to itself: only ESTABLISHED,RELATED packets come in.

Everything the lab made (processes, namespaces and with them their devices and firewall
rules) is removed on exit, also after a failure half-way through building it. Namespace names
carry this process's PID and a tag, and fit the 15 characters of an interface name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .support_nat import run

ROOT = Path(__file__).resolve().parents[1]
TURNSERVER_CONF = ROOT / "deploy" / "turnserver.conf"
"""The coturn configuration ferry ships for operators; the lab's coturn runs with it."""

SERVICES = "198.18.0.1"
"""Broker, egress and origin web server, in the internet namespace."""

STUN_ADDRESSES = ("198.18.0.11", "198.18.0.12")
"""The two STUN servers (ports 3478 and 3479)."""

STUN_ALTERNATE_ADDRESSES = ("198.18.0.111", "198.18.0.112")
"""The second address of each STUN server, in the same order (RFC 5780 OTHER-ADDRESS)."""

TURN_ADDRESS = "198.18.0.20"
"""coturn's listening and relay address."""

TURN_PORT = 3478
"""coturn's port, UDP and TCP."""

TURN_REALM = "ferry.test"
"""The realm the lab's coturn announces."""

HOME_PUBLIC_RANGE = ("198.18.100.0", "198.18.199.255")
"""Where the routers' public addresses live: the only part of the benchmarking range that the
lab's coturn may relay to (the shipped configuration denies the whole of 198.18.0.0/15)."""

NAT_KINDS = ("cone", "symmetric")

MAX_NAME = 15
"""Linux's limit on interface names; namespace names keep to it too."""


@dataclass(frozen=True)
class Home:
    """One home: a host behind a NATing router."""

    name: str
    """The name the test gave it ("client")."""
    nat: str
    """``"cone"`` or ``"symmetric"``."""
    host: str
    """The host's namespace."""
    router: str
    """The router's namespace."""
    host_address: str
    """The host's private address (10.H.0.2)."""
    public_address: str
    """The router's address on the internet side (198.18.(100+H).2)."""


def turn_rest_credentials(secret: str, expiry_unix: int, random_part: str) -> tuple[str, str]:
    """TURN REST API credentials, as coturn's ``use-auth-secret`` checks them: the username
    is ``"<expiry>:<random>"`` and the password is base64(HMAC-SHA1(secret, username))."""
    username = f"{expiry_unix}:{random_part}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


class NamespacedProcess:
    """``command`` run in ``namespace`` (``ip netns exec``) with stdout and stderr in
    ``folder/name.log``. Stopped by its PID only."""

    def __init__(
        self,
        name: str,
        namespace: str,
        command: list[str],
        folder: Path,
        environment: Mapping[str, str],
    ) -> None:
        self.name = name
        self.log_path = folder / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", namespace, *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(environment),
                cwd=ROOT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, path: Path, timeout: float = 60) -> None:
        """Wait until ``path`` exists; fail with the log's tail if the process exits or
        ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not get ready:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its return code."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"{self.name} still ran after {timeout} s:\n{self.log()[-4000:]}"
            ) from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


# --- coturn -----------------------------------------------------------------------------------

_ALLOCATION = re.compile(r"session (\d+): new, realm=<([^>]*)>, username=<([^>]*)>")
_PEER_USAGE = re.compile(
    r"session (\d+): peer usage: realm=<[^>]*>, username=<([^>]*)>, "
    r"rp=(\d+), rb=(\d+), sp=(\d+), sb=(\d+)"
)


@dataclass(frozen=True)
class RelayUsage:
    """What coturn logged about one allocation's relayed traffic when it closed."""

    session: str
    username: str
    packets_from_peers: int
    """``rp`` of the "peer usage" line: packets the relay received from peers."""
    bytes_from_peers: int
    packets_to_peers: int
    """``sp``: packets the relay sent to peers."""
    bytes_to_peers: int


def lab_turnserver_conf(log_path: Path) -> str:
    """The shipped ``deploy/turnserver.conf`` with its one ``syslog`` line replaced by a log
    file the test can read. coturn takes its log destination from the configuration file
    before its command line (4.6.1 ignores ``--log-file`` when the file names one), so this
    is the one change the lab cannot make on the command line; every other line is shipped."""
    lines = TURNSERVER_CONF.read_text().splitlines()
    destinations = [number for number, line in enumerate(lines) if line.strip() == "syslog"]
    if len(destinations) != 1:
        raise AssertionError(f"{TURNSERVER_CONF} should send the log to syslog, once")
    lines[destinations[0]] = f"log-file={log_path}\nsimple-log"
    return "\n".join(lines) + "\n"


class Coturn:
    """Debian's ``turnserver`` in the internet namespace, configured by the shipped
    ``deploy/turnserver.conf`` (logging to a file: :func:`lab_turnserver_conf`) plus the
    lab's overrides on the command line: addresses, port, secret, realm, relaying to the
    homes' public addresses allowed, pid file, its own user database file, no TLS/DTLS, no
    CLI, and ``--verbose`` (the shipped file leaves it off), without which coturn 4.6.1 logs
    no allocation and no traffic counters. Runs as root in the foreground.

    The lines :meth:`allocations` and :meth:`relay_usage` parse, as coturn 4.6.1 writes them::

        session 000000000000000001: new, realm=<ferry.test>, username=<1796393171:abc>,
            lifetime=600
        session 000000000000000001: peer usage: realm=<ferry.test>,
            username=<1796393171:abc>, rp=7, rb=40, sp=1, sb=5

    (each on one line; wrapped here). ``rp``/``rb`` are packets/bytes received from peers,
    ``sp``/``sb`` sent to them.
    ``peer usage`` comes when the allocation ends, and during a busy allocation also earlier
    (measured: one 1.5 MB download through the relay gave two lines for one session, the
    counts of each line since the one before), so add up every line of a session;
    ``usage:`` just before it counts the client side, STUN messages included."""

    def __init__(self, namespace: str, secret: str, folder: Path, verbose: bool = True) -> None:
        self.log_path = folder / "turnserver.log"
        self.config_path = folder / "turnserver.conf"
        self.config_path.write_text(lab_turnserver_conf(self.log_path))
        self.pid_path = folder / "turnserver.pid"
        self.output_path = folder / "turnserver.stdout"
        command = [
            "ip", "netns", "exec", namespace, "/usr/bin/turnserver",
            "-c", str(self.config_path),
            "--listening-ip", TURN_ADDRESS, "--relay-ip", TURN_ADDRESS,
            "--listening-port", str(TURN_PORT),
            "--use-auth-secret", "--static-auth-secret", secret, "--realm", TURN_REALM,
            "--allowed-peer-ip", "-".join(HOME_PUBLIC_RANGE),
            "--new-log-timestamp",
            "--pidfile", str(self.pid_path), "--userdb", str(folder / "turndb"),
            "--no-tls", "--no-dtls", "--no-cli", *(["--verbose"] if verbose else []),
        ]  # fmt: skip
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )

    def log(self) -> str:
        """The log file's text (empty before coturn opened it)."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def wait_until_listening(self, namespace: str, timeout: float = 20) -> None:
        """Wait until ``TURN_ADDRESS:TURN_PORT`` is bound for UDP and TCP."""
        wanted = f"{TURN_ADDRESS}:{TURN_PORT}"
        deadline = time.monotonic() + timeout
        while True:
            sockets = subprocess.run(
                ["ip", "netns", "exec", namespace, "ss", "-Hlntu"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout  # fmt: skip
            kinds = {line.split()[0] for line in sockets.splitlines() if wanted in line}
            if {"udp", "tcp"} <= kinds:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                output = self.output_path.read_text(errors="replace")
                raise RuntimeError(f"coturn did not listen on {wanted}:\n{output[-4000:]}")
            time.sleep(0.1)

    def allocations(self) -> list[tuple[str, str]]:
        """(session, username) of every allocation coturn accepted, from its
        ``session N: new, realm=<R>, username=<U>, lifetime=L`` lines."""
        return [(match[1], match[3]) for match in _ALLOCATION.finditer(self.log())]

    def relay_usage(self) -> list[RelayUsage]:
        """The ``peer usage`` line of every allocation that has closed."""
        return [
            RelayUsage(
                session=match[1],
                username=match[2],
                packets_from_peers=int(match[3]),
                bytes_from_peers=int(match[4]),
                packets_to_peers=int(match[5]),
                bytes_to_peers=int(match[6]),
            )
            for match in _PEER_USAGE.finditer(self.log())
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


# --- the lab ----------------------------------------------------------------------------------


class InternetLab:
    """The internet namespace and one home per entry of ``homes`` (name → NAT kind). Use as a
    context manager."""

    def __init__(self, tag: str, homes: Mapping[str, str]) -> None:
        if not re.fullmatch(r"[a-z0-9]{1,3}", tag):
            raise ValueError(f"tag {tag!r}: one to three lowercase letters or digits")
        if not 1 <= len(homes) <= 9:
            raise ValueError("one to nine homes")
        prefix = f"fi{os.getpid()}{tag}"
        self.internet = f"{prefix}net"
        self._homes: dict[str, Home] = {}
        for index, (name, nat) in enumerate(homes.items(), start=1):
            if nat not in NAT_KINDS:
                raise ValueError(f"home {name!r}: NAT kind {nat!r} is not one of {NAT_KINDS}")
            self._homes[name] = Home(
                name=name,
                nat=nat,
                host=f"{prefix}h{index}",
                router=f"{prefix}r{index}",
                host_address=f"10.{index}.0.2",
                public_address=f"198.18.{100 + index}.2",
            )
        for namespace in (self.internet, *self.namespaces()):
            if len(namespace) > MAX_NAME:
                raise ValueError(f"namespace name {namespace!r} is longer than {MAX_NAME}")
        self._made: list[str] = []
        self._processes: list[NamespacedProcess | Coturn] = []

    def namespaces(self) -> list[str]:
        """Every namespace of the homes (routers and hosts)."""
        return [name for home in self._homes.values() for name in (home.router, home.host)]

    def home(self, name: str) -> Home:
        return self._homes[name]

    def __enter__(self) -> InternetLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- building ---

    def _namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        internet = self.internet
        self._namespace(internet)
        for address in (SERVICES, *STUN_ADDRESSES, *STUN_ALTERNATE_ADDRESSES, TURN_ADDRESS):
            run("ip", "-n", internet, "addr", "add", f"{address}/32", "dev", "lo")
        # The void: a veth whose other end stays down, so it has no carrier and silently
        # drops what it is given (no "dummy" module in containers); NOARP, so no neighbour
        # lookup ever fails and reports "host unreachable".
        run("ip", "-n", internet, "link", "add", "void", "type", "veth", "peer", "name", "voidend")
        run("ip", "-n", internet, "link", "set", "void", "arp", "off")
        run("ip", "-n", internet, "link", "set", "void", "up")
        run("ip", "-n", internet, "route", "add", "default", "dev", "void")
        run("ip", "netns", "exec", internet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for index, home in enumerate(self._homes.values(), start=1):
            self._build_home(index, home)

    def _build_home(self, index: int, home: Home) -> None:
        internet, router, host = self.internet, home.router, home.host
        self._namespace(router)
        self._namespace(host)
        # veth pairs made directly inside the namespaces: their names never meet the
        # root namespace's, so nothing collides with other tests or other engineers.
        outside = f"home{index}"
        run("ip", "-n", router, "link", "add", "wan", "type", "veth",
            "peer", "name", outside, "netns", internet)  # fmt: skip
        run("ip", "-n", host, "link", "add", "eth0", "type", "veth",
            "peer", "name", "lan", "netns", router)  # fmt: skip
        gateway = f"198.18.{100 + index}.1"
        run("ip", "-n", internet, "addr", "add", gateway, "peer", home.public_address,
            "dev", outside)  # fmt: skip
        run("ip", "-n", router, "addr", "add", home.public_address, "peer", gateway,
            "dev", "wan")  # fmt: skip
        inside_gateway = f"10.{index}.0.1"
        run("ip", "-n", router, "addr", "add", f"{inside_gateway}/24", "dev", "lan")
        run("ip", "-n", host, "addr", "add", f"{home.host_address}/24", "dev", "eth0")
        for namespace, device in ((internet, outside), (router, "wan"), (router, "lan"),
                                  (host, "eth0")):  # fmt: skip
            run("ip", "-n", namespace, "link", "set", device, "up")
        run("ip", "-n", router, "route", "add", "default", "via", gateway)
        run("ip", "-n", host, "route", "add", "default", "via", inside_gateway)
        run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._firewall(router, home.nat)

    def _firewall(self, router: str, nat: str) -> None:
        def iptables(*arguments: str) -> None:
            run("ip", "netns", "exec", router, "iptables", "-w", "5", *arguments)

        established = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]
        iptables("-A", "INPUT", "-i", "lo", "-j", "ACCEPT")
        iptables("-A", "INPUT", "-i", "lan", "-j", "ACCEPT")
        iptables("-A", "INPUT", *established)
        iptables("-P", "INPUT", "DROP")
        iptables("-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT")
        iptables("-A", "FORWARD", "-i", "wan", "-o", "lan", *established)
        iptables("-P", "FORWARD", "DROP")
        masquerade = ["-j", "MASQUERADE"]
        if nat == "symmetric":
            masquerade.append("--random-fully")
        iptables("-t", "nat", "-A", "POSTROUTING", "-o", "wan", *masquerade)

    # --- services ---

    def start_stun_servers(
        self, ready_dir: Path, environment: Mapping[str, str]
    ) -> list[NamespacedProcess]:
        """Start the RFC 5780 STUN server of ``tests.support_nat`` on each of
        ``STUN_ADDRESSES`` (with its ``STUN_ALTERNATE_ADDRESSES`` partner) and wait (20 s at
        most each) until they listen. ``environment`` must let ``tests`` import."""
        servers = []
        for number, (address, alternate) in enumerate(
            zip(STUN_ADDRESSES, STUN_ALTERNATE_ADDRESSES, strict=True), start=1
        ):
            ready = ready_dir / f"stun{number}.ready"
            ready.unlink(missing_ok=True)
            server = self.start(
                f"stun{number}",
                self.internet,
                [sys.executable, "-m", "tests.support_nat", address, alternate,
                 "--ready-file", str(ready)],
                ready_dir,
                environment,
            )  # fmt: skip
            server.wait_for(ready, timeout=20)
            servers.append(server)
        return servers

    def start_coturn(self, secret: str, ready_dir: Path) -> Coturn:
        """Start coturn on ``TURN_ADDRESS:TURN_PORT`` with the shipped configuration, the REST
        API ``secret`` and relaying allowed to the homes' public addresses; wait (20 s at most)
        until it listens."""
        coturn = Coturn(self.internet, secret, ready_dir)
        self._processes.append(coturn)
        coturn.wait_until_listening(self.internet)
        return coturn

    def start(
        self,
        name: str,
        namespace: str,
        command: list[str],
        folder: Path,
        environment: Mapping[str, str],
    ) -> NamespacedProcess:
        """Run ``command`` in ``namespace``; the lab stops it on exit."""
        process = NamespacedProcess(name, namespace, command, folder, environment)
        self._processes.append(process)
        return process

    def blackhole(self, address: str) -> None:
        """Make the internet namespace drop every UDP and TCP packet to ``address`` silently,
        as a server that is down behind a firewall."""
        for protocol in ("udp", "tcp"):
            for chain in ("INPUT", "FORWARD"):
                run("ip", "netns", "exec", self.internet, "iptables", "-w", "5",
                    "-I", chain, "-d", address, "-p", protocol, "-j", "DROP")  # fmt: skip

    def close(self) -> None:
        """Stop the lab's processes (by PID), then delete its namespaces."""
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        for namespace in reversed(self._made):
            subprocess.run(
                ["ip", "netns", "del", namespace], capture_output=True, timeout=30, check=False
            )
        self._made.clear()
