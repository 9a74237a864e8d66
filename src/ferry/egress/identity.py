"""The egress's identity: its TLS key and self-signed certificate, kept in its state folder.

Clients pin the SHA-256 of the certificate (the bridge line), so no public CA is involved and
the certificate need not name a host. The key is ECDSA P-256, created once on first start
and kept with mode 0600; the certificate is valid for ten years.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ferry.core.bridge_line import certificate_fingerprint
from ferry.errors import ConfigError

KEY_FILE = "egress-key.pem"
CERT_FILE = "egress-cert.pem"
BRIDGE_LINE_FILE = "bridge-line"


@dataclass(frozen=True, slots=True)
class EgressIdentity:
    """The egress's private key and certificate."""

    private_key: ec.EllipticCurvePrivateKey
    """The key the egress signs its TLS handshakes with."""
    certificate: x509.Certificate
    """The self-signed certificate clients pin."""

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the certificate's DER encoding."""
        return certificate_fingerprint(self.certificate.public_bytes(serialization.Encoding.DER))


def create_identity() -> EgressIdentity:
    """A fresh key and self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry egress")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return EgressIdentity(private_key=key, certificate=certificate)


def load_or_create_identity(state_dir: Path) -> tuple[EgressIdentity, bool]:
    """The identity kept in ``state_dir``, created there on first use.

    Returns the identity and whether it was created now. Raises :class:`ConfigError` if the
    folder cannot be used, its files are damaged, or only one of the key and the certificate
    is there: a key is never replaced (clients pin the certificate made with it, and an
    operator who lost one file most likely wants it back from a backup, not a new identity).
    """
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create the egress state folder {state_dir}: {exc}") from exc
    key_path, cert_path = state_dir / KEY_FILE, state_dir / CERT_FILE
    if key_path.exists() and cert_path.exists():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"the egress key or certificate in {state_dir} is unreadable ({exc}); "
                "move them away to create a new identity (clients will need a new bridge line)"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path} is not an ECDSA key")
        return EgressIdentity(private_key=key, certificate=certificate), False
    if key_path.exists() or cert_path.exists():
        present, missing = (key_path, cert_path) if key_path.exists() else (cert_path, key_path)
        raise ConfigError(
            f"the egress state folder {state_dir} has {present.name} but not {missing.name}; "
            f"restore {missing.name} from your backup (the bridge line clients use pins this "
            f"identity), or move {present.name} away to create a new identity (every client "
            "will then need the new bridge line)"
        )
    identity = create_identity()
    try:
        # O_EXCL: never overwrite a key that appeared meanwhile.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(
                identity.private_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        with cert_path.open("xb") as cert_file:
            cert_file.write(identity.certificate.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise ConfigError(f"cannot write the egress identity to {state_dir}: {exc}") from exc
    return identity, True
