"""A real reverse proxy standing in for a CDN front: Debian's nginx with a test CA.

:func:`make_test_ca` writes a CA and a certificate for ``localhost`` (and 127.0.0.1) signed by
it; :class:`NginxFront` runs nginx in the foreground with its own configuration, pid file and
logs in a temporary folder, TLS on one loopback port, and two virtual servers: one named
``broker_name`` that proxies to the broker, and a default server that answers 421 to every
other ``Host``, so a test proves that routing is by the ``Host`` header, not the SNI.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NGINX = "/usr/sbin/nginx"


def make_test_ca(folder: Path) -> tuple[Path, Path, Path]:
    """Write ``ca.pem``, ``front.pem`` and ``front.key`` (the front's certificate is for
    ``localhost`` and 127.0.0.1); returns their paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "front.pem", folder / "front.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NginxFront:
    """nginx on ``127.0.0.1:port`` (TLS) routing ``Host: broker_name`` to ``backend``."""

    def __init__(
        self, folder: Path, *, broker_name: str, backend: str, cert: Path, key: Path
    ) -> None:
        self.folder = folder
        self.port = _free_port()  # nginx cannot listen on port 0: pick a free port first
        self.access_log = folder / "access.log"
        self.error_log = folder / "error.log"
        self._process: subprocess.Popen[bytes] | None = None
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for path in temp.values():
            path.mkdir(exist_ok=True)
        tls = f"ssl_certificate {cert}; ssl_certificate_key {key};"
        self.config_path = folder / "nginx.conf"
        self.config_path.write_text(
            f"""{user}daemon off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {self.error_log} warn;
events {{ worker_connections 64; }}
http {{
    log_format front '$ssl_server_name $host "$request" $status';
    access_log {self.access_log} front;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    server {{
        listen 127.0.0.1:{self.port} ssl default_server;
        server_name _;
        {tls}
        return 421;
    }}
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {broker_name};
        {tls}
        location / {{
            proxy_pass {backend};
            proxy_http_version 1.1;
            proxy_read_timeout 60s;
            proxy_buffering off;
        }}
    }}
}}
"""
        )

    def start(self) -> None:
        """Start nginx and wait until its port accepts connections."""
        self._process = subprocess.Popen(
            [NGINX, "-p", str(self.folder), "-e", str(self.error_log), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(f"nginx exited: {self.error_log.read_text(errors='replace')}")
            with socket.socket() as probe:
                probe.settimeout(1)
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("nginx did not start listening within 20 s")

    def access_lines(self) -> list[str]:
        """The access log (``SNI Host "request" status`` per line)."""
        if not self.access_log.exists():
            return []
        return self.access_log.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        """Stop nginx (SIGTERM to the PID it was started with, then SIGKILL)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None
