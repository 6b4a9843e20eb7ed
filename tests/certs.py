"""Self-signed certificates for tests, made with ``cryptography``."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed_pem(
    common_name: str | None,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[bytes, x509.Certificate]:
    """A self-signed certificate valid for a day, as PEM and as an object.

    ``common_name`` None leaves the subject without a CN; the names become subjectAltName
    entries (none: no such extension).
    """
    key = key or ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ridgeline tests")]
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    name = x509.Name(attributes)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(dns) for dns in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), cert


@dataclass(frozen=True)
class ServerIdentity:
    """A self-signed server certificate and its key, written to files (key mode 0600)."""

    cert_file: Path
    key_file: Path
    pem: bytes
    cert: x509.Certificate

    @property
    def fingerprint(self) -> str:
        return "sha256:" + self.cert.fingerprint(hashes.SHA256()).hex()


def self_signed_server(
    directory: Path,
    name: str,
    *,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
) -> ServerIdentity:
    """A self-signed server identity named ``name`` for the given host names and addresses."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem, cert = self_signed_pem(name, dns_names=dns_names, ip_addresses=ip_addresses, key=key)
    directory.mkdir(parents=True, exist_ok=True)
    cert_file = directory / f"{name}.crt"
    key_file = directory / f"{name}.key"
    cert_file.write_bytes(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ServerIdentity(cert_file, key_file, pem, cert)
