"""An RFC 5780 STUN server for tests, and the network namespaces of the real-NAT tests.

:class:`Rfc5780StunServer` listens on two IP addresses × two ports (four UDP sockets). It
answers each Binding request with XOR-MAPPED-ADDRESS (the request's source), OTHER-ADDRESS
(the other IP with the other port) and RESPONSE-ORIGIN (the socket that answers), and honours
CHANGE-REQUEST by answering from the socket with the other IP and/or port. It runs in-process
on loopback (127.0.0.1 and 127.0.0.2) or as ``python -m tests.support_nat ADDRESS ADDRESS``
inside a test's own network namespace.

:class:`NatLab` builds three namespaces joined by veth pairs: ``public`` (the STUN server's two
addresses, 198.18.0.1 and 198.18.0.2, RFC 2544 benchmark space), ``router`` (198.18.0.254
outside, 10.77.0.1 inside) and ``inside`` (10.77.0.2, default route through the router). The
router masquerades (port-restricted cone), masquerades with ``--random-fully`` (symmetric), or
only routes (no NAT; the public namespace then has a route back to 10.77.0.0/24).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

from aioice import stun

STUN_PORTS = (3478, 3479)
"""The two ports the namespaced STUN server listens on."""

PUBLIC_ADDRESSES = ("198.18.0.1", "198.18.0.2")
"""The STUN server's two addresses in the public namespace."""


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, server: Rfc5780StunServer, ip_index: int, port_index: int) -> None:
        self._server = server
        self._ip_index = ip_index
        self._port_index = port_index

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._server.answer(data, (str(addr[0]), int(addr[1])), self._ip_index, self._port_index)


class Rfc5780StunServer:
    """Answers Binding requests on ``addresses`` × ``ports`` (two of each)."""

    def __init__(self, addresses: tuple[str, str], ports: tuple[int, int] = (0, 0)) -> None:
        self.addresses = addresses
        self._requested_ports = ports
        self.ports: tuple[int, int] = (0, 0)
        self._transports: dict[tuple[int, int], asyncio.DatagramTransport] = {}
        self.requests_seen = 0

    async def start(self) -> None:
        """Bind the four sockets (port 0 picks a free pair on the first address)."""
        loop = asyncio.get_running_loop()
        ports = list(self._requested_ports)
        for port_index in (0, 1):
            for ip_index in (0, 1):
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_Responder, self, ip_index, port_index),
                    local_addr=(self.addresses[ip_index], ports[port_index]),
                )
                ports[port_index] = transport.get_extra_info("sockname")[1]
                self._transports[(ip_index, port_index)] = transport
        self.ports = (ports[0], ports[1])

    def answer(self, data: bytes, sender: tuple[str, int], ip_index: int, port_index: int) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_method != stun.Method.BINDING or (
            request.message_class != stun.Class.REQUEST
        ):
            return
        self.requests_seen += 1
        flags = request.attributes.get("CHANGE-REQUEST", 0)
        assert isinstance(flags, int)
        answer_ip = 1 - ip_index if flags & 0x4 else ip_index
        answer_port = 1 - port_index if flags & 0x2 else port_index
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = sender
        response.attributes["OTHER-ADDRESS"] = (
            self.addresses[1 - ip_index],
            self.ports[1 - port_index],
        )
        response.attributes["RESPONSE-ORIGIN"] = (
            self.addresses[answer_ip],
            self.ports[answer_port],
        )
        self._transports[(answer_ip, answer_port)].sendto(bytes(response), sender)

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()


# --- namespaces -----------------------------------------------------------------------------


def run(*command: str) -> None:
    """Run ``command``; raise with its stderr if it fails."""
    completed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {completed.stderr.strip()}")


class NatLab:
    """Three network namespaces (public, router, inside); ``nat`` is ``"none"``,
    ``"port_restricted"`` or ``"symmetric"``. Use as a context manager: everything it made is
    removed on exit, even after a failure half-way through setting up."""

    def __init__(self, nat: str, tag: str) -> None:
        if nat not in ("none", "port_restricted", "symmetric"):
            raise ValueError(nat)
        self.nat = nat
        prefix = f"fy{os.getpid()}{tag}"
        self.public = f"{prefix}pub"
        self.router = f"{prefix}rtr"
        self.inside = f"{prefix}in"
        self._veth_public = f"{prefix}a"  # public end of public<->router
        self._veth_router_out = f"{prefix}b"
        self._veth_router_in = f"{prefix}c"
        self._veth_inside = f"{prefix}d"
        self._made: list[str] = []
        self.stun_process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NatLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _build(self) -> None:
        for namespace in (self.public, self.router, self.inside):
            run("ip", "netns", "add", namespace)
            self._made.append(namespace)
            run("ip", "-n", namespace, "link", "set", "lo", "up")
        run(
            "ip",
            "link",
            "add",
            self._veth_public,
            "type",
            "veth",
            "peer",
            "name",
            self._veth_router_out,
        )
        run("ip", "link", "set", self._veth_public, "netns", self.public)
        run("ip", "link", "set", self._veth_router_out, "netns", self.router)
        run(
            "ip",
            "link",
            "add",
            self._veth_router_in,
            "type",
            "veth",
            "peer",
            "name",
            self._veth_inside,
        )
        run("ip", "link", "set", self._veth_router_in, "netns", self.router)
        run("ip", "link", "set", self._veth_inside, "netns", self.inside)
        for address in PUBLIC_ADDRESSES:
            run("ip", "-n", self.public, "addr", "add", f"{address}/24", "dev", self._veth_public)
        run("ip", "-n", self.router, "addr", "add", "198.18.0.254/24", "dev", self._veth_router_out)
        run("ip", "-n", self.router, "addr", "add", "10.77.0.1/24", "dev", self._veth_router_in)
        run("ip", "-n", self.inside, "addr", "add", "10.77.0.2/24", "dev", self._veth_inside)
        run("ip", "-n", self.public, "link", "set", self._veth_public, "up")
        run("ip", "-n", self.router, "link", "set", self._veth_router_out, "up")
        run("ip", "-n", self.router, "link", "set", self._veth_router_in, "up")
        run("ip", "-n", self.inside, "link", "set", self._veth_inside, "up")
        run("ip", "-n", self.inside, "route", "add", "default", "via", "10.77.0.1")
        run("ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if self.nat == "none":
            run("ip", "-n", self.public, "route", "add", "10.77.0.0/24", "via", "198.18.0.254")
        else:
            masquerade = ["-j", "MASQUERADE"]
            if self.nat == "symmetric":
                masquerade.append("--random-fully")
            run(
                "ip",
                "netns",
                "exec",
                self.router,
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                self._veth_router_out,
                *masquerade,
            )

    def start_stun_server(self, ready_file: Path, environment: dict[str, str]) -> None:
        """Start the STUN server in the public namespace and wait (20 s at most) until it
        listens. ``environment`` must let ``python -m tests.support_nat`` import."""
        ready_file.unlink(missing_ok=True)
        self.stun_process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.public,
                sys.executable,
                "-m",
                "tests.support_nat",
                *PUBLIC_ADDRESSES,
                "--ready-file",
                str(ready_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=environment,
            cwd=Path(__file__).parents[1],
        )
        deadline = time.monotonic() + 20
        while not ready_file.exists():
            if self.stun_process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the namespaced STUN server did not start")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the STUN server and delete the namespaces (their veths go with them)."""
        if self.stun_process is not None:
            self.stun_process.terminate()
            try:
                self.stun_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.stun_process.kill()
                self.stun_process.wait(timeout=10)
            if self.stun_process.stderr is not None:
                self.stun_process.stderr.close()
            self.stun_process = None
        for namespace in reversed(self._made):
            subprocess.run(
                ["ip", "netns", "del", namespace], capture_output=True, timeout=30, check=False
            )
        self._made.clear()


async def _serve(addresses: tuple[str, str], ready_file: Path | None) -> None:
    server = Rfc5780StunServer(addresses, STUN_PORTS)
    await server.start()
    if ready_file is not None:
        await asyncio.to_thread(ready_file.write_text, "ready\n")
    try:
        await asyncio.Event().wait()
    finally:
        server.close()


def main() -> None:
    """Serve on two addresses and :data:`STUN_PORTS` until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("first_address")
    parser.add_argument("second_address")
    parser.add_argument("--ready-file", type=Path)
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            _serve((arguments.first_address, arguments.second_address), arguments.ready_file)
        )


if __name__ == "__main__":
    main()
