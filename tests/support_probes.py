"""Small network programs the internet-lab tests run inside namespaces, one JSON line out.

The test process itself may only reach loopback (``tests/conftest.py``), so whatever talks to
a namespace address runs as ``ip netns exec NS python -m tests.support_probes COMMAND``:

``turn-client``  a TURN client over UDP (RFC 8656, long-term credentials): Allocate, then
                 CreatePermission for each ``--permission`` address, then (with ``--peer-ip``)
                 a permission for the peer, writes the relayed address to ``--relay-file``,
                 answers the peer's first datagram with ``hello`` and waits for ``echo:hello``;
                 finally deletes the allocation. Prints the response codes and what arrived.
``turn-peer``    the other end: waits for ``--relay-file``, sends ``punch`` to the relayed
                 address every 0.2 s (opening its own NAT) and echoes what comes back.
``binding``      one STUN Binding request, retransmitted, with a bounded wait for the answer.
``udp-home``     sends ``hello`` to ``--to`` until ``solicited`` comes back, then prints every
                 datagram that arrived within ``--linger`` seconds.
``udp-internet`` answers ``udp-home`` from the port it was asked on, and sends, unsolicited,
                 from another port, from another address, to other ports of the NAT and to
                 the home's private address.

Every loop is bounded by a deadline. Only aioice's STUN codec is used, no event loop.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import time
from pathlib import Path

from aioice import stun

UDP_TRANSPORT = 0x11000000
"""REQUESTED-TRANSPORT for UDP (protocol 17 in the first byte)."""


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _error_code(message: stun.Message) -> int:
    if message.message_class == stun.Class.RESPONSE:
        return 200
    code = message.attributes.get("ERROR-CODE", (0, ""))
    assert isinstance(code, tuple)
    return int(code[0])


def _transact(
    sock: socket.socket, server: tuple[str, int], request: stun.Message
) -> stun.Message | None:
    """Send ``request`` up to five times, 0.5 s apart; the answer with its transaction id
    (other datagrams are dropped), or None."""
    for _ in range(5):
        sock.sendto(bytes(request), server)
        deadline = time.monotonic() + 0.5
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, _ = sock.recvfrom(4096)
            except TimeoutError:
                break
            try:
                answer = stun.parse_message(data)
            except ValueError:
                continue
            if answer.transaction_id == request.transaction_id:
                return answer
    return None


class TurnClient:
    """One allocation on a TURN server, signed with long-term credentials."""

    def __init__(self, server: tuple[str, int], username: str, password: str) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.realm = ""
        self.nonce = b""

    def request(self, method: stun.Method, **attributes: object) -> stun.Message | None:
        """A signed request; re-signed once when the server asks for (new) credentials."""
        for _ in range(3):
            message = stun.Message(message_method=method, message_class=stun.Class.REQUEST)
            message.attributes.update(attributes)
            if self.nonce:
                message.attributes["USERNAME"] = self.username
                message.attributes["REALM"] = self.realm
                message.attributes["NONCE"] = self.nonce
                key = hashlib.md5(f"{self.username}:{self.realm}:{self.password}".encode()).digest()
                message.add_message_integrity(key)
            answer = _transact(self.sock, self.server, message)
            if answer is None:
                return None
            code = _error_code(answer)
            unsigned_401 = code == 401 and "USERNAME" not in message.attributes
            if (unsigned_401 or code == 438) and "NONCE" in answer.attributes:
                self.realm = str(answer.attributes.get("REALM", self.realm))
                nonce = answer.attributes["NONCE"]
                assert isinstance(nonce, bytes)
                self.nonce = nonce
                continue
            return answer
        return answer

    def send(self, peer: tuple[str, int], data: bytes) -> None:
        indication = stun.Message(
            message_method=stun.Method.SEND, message_class=stun.Class.INDICATION
        )
        indication.attributes["XOR-PEER-ADDRESS"] = peer
        indication.attributes["DATA"] = data
        self.sock.sendto(bytes(indication), self.server)

    def receive(self, timeout: float) -> tuple[tuple[str, int], bytes] | None:
        """The next Data indication (peer, data) within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(4096)
            except TimeoutError:
                return None
            try:
                message = stun.parse_message(data)
            except ValueError:
                continue
            if message.message_method == stun.Method.DATA:
                peer = message.attributes["XOR-PEER-ADDRESS"]
                payload = message.attributes["DATA"]
                assert isinstance(peer, tuple) and isinstance(payload, bytes)
                return (str(peer[0]), int(peer[1])), payload
        return None


def turn_client(arguments: argparse.Namespace) -> dict[str, object]:
    client = TurnClient(_endpoint(arguments.server), arguments.username, arguments.password)
    result: dict[str, object] = {}
    answer = client.request(
        stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": UDP_TRANSPORT, "LIFETIME": 600}
    )
    result["allocate"] = None if answer is None else _error_code(answer)
    if answer is None or result["allocate"] != 200:
        return result
    relayed = answer.attributes["XOR-RELAYED-ADDRESS"]
    result["relayed"] = list(relayed)
    permissions: dict[str, int | None] = {}
    for address in arguments.permission:
        answer = client.request(stun.Method.CREATE_PERMISSION, **{"XOR-PEER-ADDRESS": (address, 9)})
        permissions[address] = None if answer is None else _error_code(answer)
    if arguments.peer_ip:
        answer = client.request(
            stun.Method.CREATE_PERMISSION, **{"XOR-PEER-ADDRESS": (arguments.peer_ip, 9)}
        )
        permissions[arguments.peer_ip] = None if answer is None else _error_code(answer)
        arguments.relay_file.write_text(json.dumps(list(relayed)))
        result.update(_exchange_with_peer(client, arguments.timeout))
    result["permissions"] = permissions
    answer = client.request(stun.Method.REFRESH, LIFETIME=0)
    result["delete"] = None if answer is None else _error_code(answer)
    return result


def _exchange_with_peer(client: TurnClient, timeout: float) -> dict[str, object]:
    """Answer every datagram from the peer with ``hello`` until ``echo:hello`` comes back."""
    deadline = time.monotonic() + timeout
    seen: dict[str, object] = {"peer": None, "echo": None}
    while (left := deadline - time.monotonic()) > 0:
        received = client.receive(min(left, 0.5))
        if received is None:
            continue
        peer, data = received
        seen["peer"] = list(peer)
        if data.startswith(b"echo:"):
            seen["echo"] = data.decode()
            break
        client.send(peer, b"hello")
    return seen


def turn_peer(arguments: argparse.Namespace) -> dict[str, object]:
    deadline = time.monotonic() + arguments.timeout
    while not arguments.relay_file.exists():
        if time.monotonic() > deadline:
            return {"error": "no relayed address"}
        time.sleep(0.05)
    relayed = tuple(json.loads(arguments.relay_file.read_text()))
    relay = (str(relayed[0]), int(relayed[1]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    received: list[str] = []
    last_hello = 0.0
    while time.monotonic() < deadline:
        if received and time.monotonic() - last_hello > 1.5:
            break  # the client has its echo: it stopped saying hello
        sock.sendto(b"punch", relay)
        sock.settimeout(0.2)
        try:
            data, sender = sock.recvfrom(4096)
        except TimeoutError:
            continue
        if sender == relay:
            received.append(data.decode(errors="replace"))
            last_hello = time.monotonic()
            sock.sendto(b"echo:" + data, relay)
    return {"received": received}


def binding(arguments: argparse.Namespace) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    started = time.monotonic()
    answer = _transact(sock, _endpoint(arguments.server), request)
    mapped = None if answer is None else answer.attributes.get("XOR-MAPPED-ADDRESS")
    return {
        "answered": answer is not None,
        "mapped": None if mapped is None else list(mapped),
        "seconds": round(time.monotonic() - started, 2),
    }


def udp_home(arguments: argparse.Namespace) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", arguments.port))
    target = _endpoint(arguments.to)
    received: list[str] = []
    deadline = time.monotonic() + arguments.timeout
    linger_until = deadline
    while (now := time.monotonic()) < min(deadline, linger_until):
        if "solicited" not in received:
            sock.sendto(b"hello", target)
        sock.settimeout(0.2)
        try:
            data, _ = sock.recvfrom(4096)
        except TimeoutError:
            continue
        received.append(data.decode(errors="replace"))
        if data == b"solicited" and linger_until == deadline:
            linger_until = now + arguments.linger
    return {"received": received}


def udp_internet(arguments: argparse.Namespace) -> dict[str, object]:
    """Answer the first ``hello`` on ``--listen``, then send the unsolicited datagrams."""
    listen = _endpoint(arguments.listen)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(listen)
    other_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_port.bind((listen[0], listen[1] + 1))
    other_address = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_address.bind((arguments.other_address, listen[1]))
    arguments.ready_file.write_text("ready")
    sock.settimeout(arguments.timeout)
    try:
        _, home = sock.recvfrom(4096)
    except TimeoutError:
        return {"hello_from": None}
    other_port.sendto(b"from another port", home)
    other_address.sendto(b"from another address", home)
    sock.sendto(b"to another port", (home[0], home[1] + 1))
    closed_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed_port.connect((home[0], 9))  # connected: an ICMP "port unreachable" would show
    closed_port.send(b"to the router's port 9")
    sock.sendto(b"to the private address", _endpoint(arguments.private))
    time.sleep(0.3)  # the unsolicited ones go first: "solicited" must not overtake them
    sock.sendto(b"solicited", home)
    closed_port.settimeout(0.5)
    try:
        closed_port.recv(4096)
        router_port_9 = "answered"
    except ConnectionRefusedError:
        router_port_9 = "refused"
    except TimeoutError:
        router_port_9 = "silent"
    return {"hello_from": list(home), "router_port_9": router_port_9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    client = commands.add_parser("turn-client")
    client.add_argument("--server", required=True)
    client.add_argument("--username", required=True)
    client.add_argument("--password", required=True)
    client.add_argument("--permission", action="append", default=[])
    client.add_argument("--peer-ip")
    client.add_argument("--relay-file", type=Path)
    client.add_argument("--timeout", type=float, default=20)
    peer = commands.add_parser("turn-peer")
    peer.add_argument("--relay-file", type=Path, required=True)
    peer.add_argument("--timeout", type=float, default=20)
    probe = commands.add_parser("binding")
    probe.add_argument("--server", required=True)
    home = commands.add_parser("udp-home")
    home.add_argument("--to", required=True)
    home.add_argument("--port", type=int, default=40000)
    home.add_argument("--linger", type=float, default=1.5)
    home.add_argument("--timeout", type=float, default=15)
    internet = commands.add_parser("udp-internet")
    internet.add_argument("--listen", required=True)
    internet.add_argument("--other-address", required=True)
    internet.add_argument("--private", required=True, help="the home host's ADDRESS:PORT")
    internet.add_argument("--ready-file", type=Path, required=True)
    internet.add_argument("--timeout", type=float, default=15)
    arguments = parser.parse_args()
    handlers = {
        "turn-client": turn_client,
        "turn-peer": turn_peer,
        "binding": binding,
        "udp-home": udp_home,
        "udp-internet": udp_internet,
    }
    print(json.dumps(handlers[arguments.command](arguments)), flush=True)


if __name__ == "__main__":
    main()
