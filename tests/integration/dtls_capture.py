"""Capturing WebRTC handshakes on loopback and reading them with Debian's tshark.

:class:`LoopbackCapture` records UDP on ``lo`` for a given set of ports only (the test's
own peers), with Debian's tshark, started and stopped by PID. tshark says "Capturing on"
a little before it records anything: handshakes started right after that message were
missed here about every other time (only later consent checks were recorded), and with
``SETTLE`` seconds of waiting first, never in ten runs; the capture also runs on for
``LINGER`` seconds after the handshake, as libpcap hands packets over in blocks.
:func:`dtls_handshakes` decodes every ICE port as STUN, whose dissector hands DTLS on to
tshark's DTLS dissector (RFC 7983 demultiplexing), and returns one
:class:`HandshakeMessage` per ClientHello, ServerHello and Certificate seen in clear.

:func:`held_candidates` and :func:`loopback_candidates` make two browser peers reach each
other on 127.0.0.1 only, with no ICE packet before the capture starts (the answerer gets an
offer without candidates, so it cannot send a check until the offerer has the answer).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TSHARK = "/usr/bin/tshark"
SETTLE = 1.0
"""Seconds waited after tshark says it is capturing, before the handshake starts."""
LINGER = 2.0
"""Seconds a capture goes on after the handshake (libpcap's block timeout is 1 s)."""

CLIENT_HELLO = 1
SERVER_HELLO = 2
CERTIFICATE = 11


@dataclass(frozen=True, slots=True)
class HandshakeMessage:
    """One DTLS handshake message as tshark decoded it."""

    kind: int
    """Handshake type: 1 ClientHello, 2 ServerHello, 11 Certificate."""
    source_port: int
    """The UDP port that sent it."""
    length: int
    """The handshake message's length field (bytes, all fragments together)."""
    datagram_bytes: int
    """UDP payload bytes of the datagrams of the record(s) that carried it."""
    versions: tuple[str, ...]
    """``supported_versions`` (hex), or the legacy version when absent."""
    cipher_suites: tuple[str, ...]
    """Offered (ClientHello) or chosen (ServerHello) cipher suites, hex."""
    extensions: tuple[int, ...]
    """Extension types, in the order sent."""
    key_share_groups: tuple[str, ...]
    """Groups of the key shares sent."""
    srtp_profiles: tuple[str, ...]
    """``use_srtp`` protection profiles, in the order sent."""
    signature_algorithms: tuple[str, ...]
    """``signature_algorithms`` offered."""
    supported_groups: tuple[str, ...]
    """``supported_groups`` offered."""
    certificate_names: tuple[str, ...]
    """Subject/issuer name strings of a certificate sent in clear."""


def loopback_candidates(sdp: str) -> str:
    """``sdp`` with only its IPv4 UDP host candidates, each announced on 127.0.0.1 (Chromium
    gathers none on loopback, but its sockets answer on every local address)."""
    lines = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            fields = line.split(" ")
            if fields[2].lower() != "udp" or fields[7] != "host" or ":" in fields[4]:
                continue
            fields[4] = "127.0.0.1"
            line = " ".join(fields)
        lines.append(line)
    return "\r\n".join(lines)


def held_candidates(sdp: str) -> str:
    """``sdp`` without any candidate (see the module docstring)."""
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith("a=candidate:"))


def candidate_ports(sdp: str) -> list[int]:
    """The ports of the UDP candidates in ``sdp``."""
    return [
        int(line.split(" ")[5])
        for line in sdp.replace("\r\n", "\n").split("\n")
        if line.startswith("a=candidate:") and line.split(" ")[2].lower() == "udp"
    ]


class LoopbackCapture:
    """tshark on ``lo`` for the given UDP ports, stopped by PID (see the module docstring)."""

    def __init__(self, ports: list[int], path: Path) -> None:
        assert ports, "no port to capture"
        self.ports = sorted(set(ports))
        self.path = path
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LoopbackCapture:
        port_filter = " or ".join(f"udp port {port}" for port in self.ports)
        self._process = subprocess.Popen(
            [TSHARK, "-i", "lo", "-n", "-q", "-f", port_filter, "-w", str(self.path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self._process.stderr is not None
        deadline = time.monotonic() + 20
        for _ in range(20):  # "Capturing on 'Loopback: lo'" once its filter is installed
            line = self._process.stderr.readline().decode(errors="replace")
            if "Capturing on" in line:
                time.sleep(SETTLE)
                return self
            assert line and time.monotonic() < deadline, f"tshark did not start: {line}"
        raise AssertionError("tshark did not say it was capturing")

    def __exit__(self, *exc_info: object) -> None:
        process = self._process
        assert process is not None
        time.sleep(LINGER)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


_FIELDS = (
    "udp.srcport",
    "udp.length",
    "dtls.handshake.type",
    "dtls.handshake.length",
    "dtls.handshake.version",
    "dtls.handshake.extensions.supported_version",
    "dtls.handshake.ciphersuite",
    "dtls.handshake.extension.type",
    "dtls.handshake.extensions_key_share_group",
    "dtls.use_srtp.protection_profile",
    "dtls.handshake.sig_hash_alg",
    "dtls.handshake.extensions_supported_group",
    "x509sat.printableString",
    "x509sat.uTF8String",
)


def _values(layers: dict[str, list[str]], name: str) -> list[str]:
    return list(layers.get(name, []))


def dtls_handshakes(path: Path, ports: list[int]) -> list[HandshakeMessage]:
    """Every ClientHello, ServerHello and clear Certificate in the capture, in order.

    A datagram that carries several handshake messages (a ServerHello flight in DTLS 1.2)
    yields one entry per message kind; fields are attributed to the first message of the
    datagram that can carry them, which is enough for the hellos compared here.
    """
    decode = [argument for port in ports for argument in ("-d", f"udp.port=={port},stun")]
    arguments = [TSHARK, "-r", str(path), *decode, "-Y", "dtls.handshake", "-T", "json"]
    for field in _FIELDS:
        arguments += ["-e", field]
    result = subprocess.run(arguments, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    frames = json.loads(result.stdout or b"[]")
    messages: list[HandshakeMessage] = []
    fragments: dict[int, int] = {}  # source port → UDP bytes of fragments seen before
    for frame in frames:
        layers: dict[str, list[str]] = frame["_source"]["layers"]
        port = int(layers["udp.srcport"][0])
        udp_payload = int(layers["udp.length"][0]) - 8
        kinds = [int(kind) for kind in _values(layers, "dtls.handshake.type")]
        lengths = [int(length) for length in _values(layers, "dtls.handshake.length")]
        has_body = bool(_values(layers, "dtls.handshake.ciphersuite")) or CERTIFICATE in kinds
        if not has_body:  # a first fragment: counted with the reassembled message
            fragments[port] = fragments.get(port, 0) + udp_payload
            continue
        datagram_bytes = fragments.pop(port, 0) + udp_payload
        for kind in dict.fromkeys(kinds):
            if kind not in (CLIENT_HELLO, SERVER_HELLO, CERTIFICATE):
                continue
            hello = kind in (CLIENT_HELLO, SERVER_HELLO)
            versions = (
                _values(layers, "dtls.handshake.extensions.supported_version")
                or (_values(layers, "dtls.handshake.version")[:1])
            )
            messages.append(
                HandshakeMessage(
                    kind=kind,
                    source_port=port,
                    length=lengths[kinds.index(kind)] if kind in kinds else 0,
                    datagram_bytes=datagram_bytes,
                    versions=tuple(versions) if hello else (),
                    cipher_suites=tuple(_values(layers, "dtls.handshake.ciphersuite"))
                    if hello
                    else (),
                    extensions=tuple(
                        int(value) for value in _values(layers, "dtls.handshake.extension.type")
                    )
                    if hello
                    else (),
                    key_share_groups=tuple(
                        _values(layers, "dtls.handshake.extensions_key_share_group")
                    )
                    if hello
                    else (),
                    srtp_profiles=tuple(_values(layers, "dtls.use_srtp.protection_profile"))
                    if hello
                    else (),
                    signature_algorithms=tuple(_values(layers, "dtls.handshake.sig_hash_alg"))
                    if kind == CLIENT_HELLO
                    else (),
                    supported_groups=tuple(
                        _values(layers, "dtls.handshake.extensions_supported_group")
                    )
                    if kind == CLIENT_HELLO
                    else (),
                    certificate_names=tuple(
                        _values(layers, "x509sat.printableString")
                        + _values(layers, "x509sat.uTF8String")
                    )
                    if kind == CERTIFICATE
                    else (),
                )
            )
    return messages


def first(messages: list[HandshakeMessage], kind: int, port: int | None = None) -> HandshakeMessage:
    """The first message of ``kind`` (sent from ``port`` if given)."""
    for message in messages:
        if message.kind == kind and (port is None or message.source_port == port):
            return message
    raise AssertionError(f"no handshake message of type {kind} from {port}: {messages}")
