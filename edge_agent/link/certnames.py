"""The host name a TLS client should expect in a certificate, read without ``cryptography``.

A pinned broker certificate is handed to gRPC as its root, and gRPC checks the server's
certificate against a name (``grpc.ssl_target_name_override``). gRPC matches that name
against the subjectAltName entries and looks at the subject's common name only when the
certificate has no subjectAltName at all, so :func:`expected_server_name` picks the first DNS
name, else the first IP address, else the common name.

The edge agent needs only these few fields, so this is a small strict DER reader rather than
a dependency: malformed input raises ValueError, it never guesses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from ridgeline_core.discovery import leaf_certificate_der

__all__ = ["CertificateNames", "certificate_names", "expected_server_name"]

_SEQUENCE = 0x30
_SET = 0x31
_OID = 0x06
_OCTET_STRING = 0x04
_BOOLEAN = 0x01
_VERSION = 0xA0  # [0] EXPLICIT in TBSCertificate
_EXTENSIONS = 0xA3  # [3] EXPLICIT in TBSCertificate
_SAN_DNS = 0x82  # [2] IMPLICIT IA5String
_SAN_IP = 0x87  # [7] IMPLICIT OCTET STRING
_OID_COMMON_NAME = bytes([0x55, 0x04, 0x03])  # 2.5.4.3
_OID_SUBJECT_ALT_NAME = bytes([0x55, 0x1D, 0x11])  # 2.5.29.17
# the string types X.520 allows for a common name
_STRING_TAGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}


@dataclass(frozen=True)
class CertificateNames:
    """The names a certificate is issued for, as read from its DER bytes."""

    common_name: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]


def certificate_names(cert_pem: bytes) -> CertificateNames:
    """Subject common name and subjectAltName DNS/IP entries of the leaf certificate."""
    der = leaf_certificate_der(cert_pem)
    cert = _only(der, 0, len(der), _SEQUENCE)
    tbs_start, tbs_end = _first(der, *cert, _SEQUENCE)
    fields = list(_children(der, tbs_start, tbs_end))
    if fields and fields[0][0] == _VERSION:
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, then options
    if len(fields) < 6:
        raise ValueError("certificate: TBSCertificate is too short")
    _, subject_start, subject_end = fields[4]
    common_name = _common_name(der, subject_start, subject_end)
    dns_names: list[str] = []
    ip_addresses: list[str] = []
    for tag, start, end in fields[6:]:
        if tag == _EXTENSIONS:
            _read_alt_names(der, *_first(der, start, end, _SEQUENCE), dns_names, ip_addresses)
    return CertificateNames(common_name, tuple(dns_names), tuple(ip_addresses))


def expected_server_name(cert_pem: bytes) -> str:
    """The name to give gRPC as ``ssl_target_name_override`` so it accepts this certificate."""
    names = certificate_names(cert_pem)
    if names.dns_names:
        return names.dns_names[0]
    if names.ip_addresses:
        return names.ip_addresses[0]
    if names.common_name:
        return names.common_name
    raise ValueError("certificate names no host: no subjectAltName and no common name")


def _common_name(der: bytes, start: int, end: int) -> str | None:
    for _, rdn_start, rdn_end in _children(der, start, end, _SET):
        for _, attr_start, attr_end in _children(der, rdn_start, rdn_end, _SEQUENCE):
            parts = list(_children(der, attr_start, attr_end))
            if len(parts) != 2 or parts[0][0] != _OID:
                raise ValueError("certificate: malformed name attribute")
            if der[parts[0][1] : parts[0][2]] == _OID_COMMON_NAME:
                tag, value_start, value_end = parts[1]
                encoding = _STRING_TAGS.get(tag)
                if encoding is None:
                    raise ValueError(f"certificate: common name has string tag {tag:#x}")
                return der[value_start:value_end].decode(encoding)
    return None


def _read_alt_names(
    der: bytes, start: int, end: int, dns_names: list[str], ip_addresses: list[str]
) -> None:
    for _, ext_start, ext_end in _children(der, start, end, _SEQUENCE):
        parts = list(_children(der, ext_start, ext_end))
        if not parts or parts[0][0] != _OID:
            raise ValueError("certificate: extension without an identifier")
        if der[parts[0][1] : parts[0][2]] != _OID_SUBJECT_ALT_NAME:
            continue
        value = parts[-1]
        if value[0] != _OCTET_STRING or not (len(parts) == 2 or parts[1][0] == _BOOLEAN):
            raise ValueError("certificate: malformed subjectAltName extension")
        names = _only(der, value[1], value[2], _SEQUENCE)
        for tag, name_start, name_end in _children(der, *names):
            raw = der[name_start:name_end]
            if tag == _SAN_DNS:
                dns_names.append(raw.decode("ascii"))
            elif tag == _SAN_IP and len(raw) in (4, 16):
                ip_addresses.append(str(ipaddress.ip_address(raw)))


def _header(der: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``, which must fit in ``end``."""
    if pos + 2 > end:
        raise ValueError("certificate: truncated DER")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise ValueError("certificate: unsupported DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise ValueError("certificate: truncated DER")
    return tag, pos, pos + length


def _children(
    der: bytes, start: int, end: int, expect: int | None = None
) -> Iterator[tuple[int, int, int]]:
    pos = start
    while pos < end:
        tag, content_start, content_end = _header(der, pos, end)
        if expect is not None and tag != expect:
            raise ValueError(f"certificate: expected DER tag {expect:#x}, found {tag:#x}")
        yield tag, content_start, content_end
        pos = content_end


def _first(der: bytes, start: int, end: int, expect: int) -> tuple[int, int]:
    tag, content_start, content_end = _header(der, start, end)
    if tag != expect:
        raise ValueError(f"certificate: expected DER tag {expect:#x}, found {tag:#x}")
    return content_start, content_end


def _only(der: bytes, start: int, end: int, expect: int) -> tuple[int, int]:
    content_start, content_end = _first(der, start, end, expect)
    if content_end != end:
        raise ValueError("certificate: trailing bytes after DER element")
    return content_start, content_end
