"""Which broker found by zeroconf discovery the edge agent may use: enrolled and pinned keys.

An advertisement proves nothing (see :mod:`ridgeline_core.discovery`): anyone on the link can
claim any name, address and fingerprint. So a discovered broker is used only when the
certificate it *actually presents* is trusted:

* its SHA-256 fingerprint is one the user enrolled (``broker.enrolled``), or
* it equals the certificate pinned earlier for that advertised instance name, or
* no certificate is pinned for that name yet and trust-on-first-use is on; then it is pinned
  now, and from then on a different certificate under that name is refused as a possible
  impersonation. A pin is never replaced silently: the user removes it deliberately.

The certificate is read with a TLS handshake that does not verify it (that is the only way to
see a self-signed one), and nothing is sent over that connection. What is returned then makes
gRPC verify the real connection against exactly that certificate: ``ca_pem`` becomes gRPC's
root certificates and ``server_name`` its ``ssl_target_name_override``. A broker that swaps
its key between the check and the call therefore fails the handshake; there is no
time-of-check/time-of-use gap.

That works for a **self-signed** broker certificate, which is what discovery is meant for.
A leaf issued by a CA cannot serve as its own root: for such a broker the user configures
the CA file (``broker.ca_file``) and the broker's address, and enrols its fingerprint.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ridgeline_core.discovery import (
    PROTOCOL_VERSION,
    DiscoveredBroker,
    browse,
    certificate_fingerprint,
    is_fingerprint,
    leaf_certificate_der,
)
from ridgeline_core.errors import ConfigError, UnavailableError
from ridgeline_core.files import atomic_write, private_dir

from .certnames import expected_server_name

__all__ = [
    "FETCH_TIMEOUT_S",
    "CertificateFetcher",
    "Pin",
    "PinStore",
    "TrustedBroker",
    "discover_broker",
    "fetch_certificate",
    "resolve_discovered",
]

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 5.0
CertificateFetcher = Callable[[str, int, float], bytes]
"""``fetch(host, port, timeout_s) -> PEM``; tests pass their own."""

_PIN_FILE_VERSION = 1
_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f]+")
_INSTANCE_MAX_CHARS = 63


@dataclass(frozen=True)
class TrustedBroker:
    """A discovered broker whose certificate is trusted, and how to make gRPC verify it."""

    address: str  # HOST:PORT, or [V6]:PORT, to dial
    instance: str  # the advertised instance name (the pin's key)
    fingerprint: str  # sha256:<hex> of the certificate it presented
    ca_pem: bytes  # that certificate: the only root gRPC is to accept
    server_name: str  # a name in it, for grpc.ssl_target_name_override


@dataclass(frozen=True)
class Pin:
    fingerprint: str
    pem: bytes


# -- reading a server's certificate -----------------------------------------------------------


def fetch_certificate(host: str, port: int, timeout_s: float = FETCH_TIMEOUT_S) -> bytes:
    """PEM of the leaf certificate the TLS server at ``host:port`` presents, unverified.

    Verification is off only so that a self-signed certificate can be read at all; the caller
    decides whether to trust it. The handshake offers ALPN ``h2`` as a gRPC client would, and
    the connection is closed without sending anything.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    where = _address(host, port)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            server_hostname = None if _is_ip(host) else host
            with context.wrap_socket(sock, server_hostname=server_hostname) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError) as exc:  # ssl.SSLError and socket.timeout are OSErrors
        raise UnavailableError(f"cannot read the TLS certificate of {where}: {exc}") from exc
    if not der:
        raise UnavailableError(f"the TLS server at {where} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


# -- pins -------------------------------------------------------------------------------------


class PinStore:
    """Certificates pinned per discovered broker instance, in a small JSON file.

    The file is read on every call (another process may have pinned meanwhile) and replaced
    atomically, mode 0600. Layout::

        {"version": 1, "brokers": {"<instance>": {"fingerprint": "sha256:...", "pem": "..."}}}
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def get(self, instance: str) -> Pin | None:
        return self._load().get(_pin_key(instance))

    def items(self) -> list[tuple[str, Pin]]:
        return sorted(self._load().items())

    def pin(self, instance: str, pem: bytes) -> Pin:
        """Pin ``pem`` for ``instance``. Re-pinning the same certificate is a no-op; pinning
        a different one over an existing pin is refused (remove the old one first)."""
        key = _pin_key(instance)
        new = Pin(certificate_fingerprint(pem), pem)
        with self._lock:
            pins = self._load()
            old = pins.get(key)
            if old is not None:
                if old.fingerprint == new.fingerprint:
                    return old
                raise ConfigError(
                    f"{self.path}: broker {key!r} is already pinned to {old.fingerprint}; "
                    "remove that pin first to trust a different certificate"
                )
            pins[key] = new
            self._save(pins)
        return new

    def remove(self, instance: str) -> bool:
        """Forget the pin of ``instance``; False when there was none."""
        key = _pin_key(instance)
        with self._lock:
            pins = self._load()
            if pins.pop(key, None) is None:
                return False
            self._save(pins)
        return True

    def _load(self) -> dict[str, Pin]:
        return read_pins(self.path)

    def _save(self, pins: dict[str, Pin]) -> None:
        write_pins(self.path, pins)


def read_pins(path: Path) -> dict[str, Pin]:
    """The pins in ``path`` (none when it does not exist); a bad file is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"pinned brokers file {path}: cannot read it: {exc}") from exc
    try:
        return _parse_pins(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"pinned brokers file {path} is corrupt ({exc}); "
            "fix it or remove it and pin the brokers again"
        ) from exc


def write_pins(path: Path, pins: dict[str, Pin]) -> None:
    """Replace ``path`` atomically, mode 0600, in a private directory."""
    document = {
        "version": _PIN_FILE_VERSION,
        "brokers": {
            key: {"fingerprint": pin.fingerprint, "pem": pin.pem.decode("ascii")}
            for key, pin in sorted(pins.items())
        },
    }
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    try:
        private_dir(path.parent)
        atomic_write(path, data)
    except OSError as exc:
        raise ConfigError(f"pinned brokers file {path}: cannot write it: {exc}") from exc


def _parse_pins(document: object) -> dict[str, Pin]:
    if not isinstance(document, dict) or document.get("version") != _PIN_FILE_VERSION:
        raise ValueError(f"expected an object with version {_PIN_FILE_VERSION}")
    brokers = document["brokers"]
    if not isinstance(brokers, dict):
        raise ValueError("'brokers' is not an object")
    pins: dict[str, Pin] = {}
    for key, entry in brokers.items():
        if not isinstance(entry, dict):
            raise ValueError(f"broker {key!r}: not an object")
        fingerprint, pem_text = entry["fingerprint"], entry["pem"]
        if not isinstance(fingerprint, str) or not is_fingerprint(fingerprint):
            raise ValueError(f"broker {key!r}: bad fingerprint {fingerprint!r}")
        if not isinstance(pem_text, str):
            raise ValueError(f"broker {key!r}: 'pem' is not text")
        pem = pem_text.encode("ascii")
        if certificate_fingerprint(pem) != fingerprint:
            raise ValueError(f"broker {key!r}: the certificate does not match its fingerprint")
        pins[key] = Pin(fingerprint, pem)
    return pins


def _pin_key(instance: str) -> str:
    """The advertised instance name, cleaned of control characters and extra whitespace."""
    key = " ".join(_UNSAFE_NAME_CHARS.sub(" ", instance).split())[:_INSTANCE_MAX_CHARS]
    if not key:
        raise ValueError(f"broker instance name {instance!r} is empty")
    return key


# -- deciding ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Seen:
    """A discovered broker with the certificate it really presented."""

    instance: str
    address: str
    pem: bytes
    fingerprint: str
    server_name: str


def resolve_discovered(
    discovered: Sequence[DiscoveredBroker],
    *,
    enrolled: Sequence[str],
    pins: PinStore,
    trust_on_first_use: bool,
    fetch: CertificateFetcher = fetch_certificate,
    fetch_timeout_s: float = FETCH_TIMEOUT_S,
) -> TrustedBroker | None:
    """The first discovered broker whose presented certificate is trusted, or None.

    Plaintext advertisements are never used. A broker whose certificate is enrolled or matches
    its pin wins over one that would be pinned now, so a stranger advertising a new name does
    not displace a known broker; trust-on-first-use pins at most one broker per call. Every
    refusal is logged, a pin mismatch as a warning of possible impersonation.
    """
    trusted = _check_enrolled(enrolled)
    first_new: _Seen | None = None
    for advert in discovered:
        seen = _inspect(advert, fetch, fetch_timeout_s)
        if seen is None:
            continue
        if seen.fingerprint in trusted:
            log.info("discovered broker %r at %s is enrolled", seen.instance, seen.address)
            return _trusted(seen)
        pin = pins.get(seen.instance)
        if pin is not None and pin.fingerprint == seen.fingerprint:
            log.info("discovered broker %r at %s matches its pin", seen.instance, seen.address)
            return _trusted(seen)
        if _refused(seen, pin, pins, trust_on_first_use):
            continue
        if first_new is None:
            first_new = seen
    if first_new is None:
        return None
    pins.pin(first_new.instance, first_new.pem)
    log.warning(
        "trusting discovered broker %r at %s on first use: pinned certificate %s in %s",
        first_new.instance,
        first_new.address,
        first_new.fingerprint,
        pins.path,
    )
    return _trusted(first_new)


def _refused(seen: _Seen, pin: Any, pins: PinStore, trust_on_first_use: bool) -> bool:
    """Whether a broker that is neither enrolled nor pinned must be passed over (logged)."""
    if pin is not None:
        log.warning(
            "REFUSED discovered broker %r at %s: it presents certificate %s but %s is "
            "pinned for that name (in %s). This may be an impersonation attempt. If the "
            "broker's certificate really changed, remove the pin deliberately.",
            seen.instance,
            seen.address,
            seen.fingerprint,
            pin.fingerprint,
            pins.path,
        )
        return True
    if not trust_on_first_use:
        log.warning(
            "ignoring discovered broker %r at %s: its certificate %s is not enrolled "
            "(add it to broker.enrolled, or enable broker.trust_on_first_use)",
            seen.instance,
            seen.address,
            seen.fingerprint,
        )
        return True
    return False


def discover_broker(
    *,
    timeout_s: float,
    enrolled: Sequence[str],
    pins: PinStore,
    trust_on_first_use: bool,
    interfaces: Sequence[str] | None = None,
) -> TrustedBroker | None:
    """Browse the link for ``timeout_s`` seconds and return the first trusted broker.

    Blocks for the browse and the certificate checks; async code runs it in a thread.
    """
    return resolve_discovered(
        browse(timeout_s, interfaces=interfaces),
        enrolled=enrolled,
        pins=pins,
        trust_on_first_use=trust_on_first_use,
    )


def _check_enrolled(enrolled: Sequence[str]) -> frozenset[str]:
    fingerprints = frozenset(item.strip().lower() for item in enrolled)
    for item in fingerprints:
        if not is_fingerprint(item):
            raise ConfigError(
                f"broker.enrolled: {item!r} is not a fingerprint 'sha256:<64 hex digits>' "
                "(`openssl x509 -noout -fingerprint -sha256` prints it with colons)"
            )
    return fingerprints


def _inspect(advert: DiscoveredBroker, fetch: CertificateFetcher, timeout_s: float) -> _Seen | None:
    """Read the certificate the advertised broker presents; None (logged) when unusable."""
    name = advert.instance
    if advert.plaintext:
        log.warning("ignoring discovered broker %r: it advertises no TLS", name)
        return None
    if advert.protocol_version != PROTOCOL_VERSION:
        log.info(
            "ignoring discovered broker %r: protocol %r, not %r",
            name,
            advert.protocol_version,
            PROTOCOL_VERSION,
        )
        return None
    try:
        instance = _pin_key(name)
    except ValueError:
        log.info("ignoring a discovered broker with an empty instance name")
        return None
    if not 0 < advert.port < 65536 or not advert.addresses:
        log.info("ignoring discovered broker %r: no usable address or port", name)
        return None
    for host in _unique(advert.addresses):
        address = _address(host, advert.port)
        try:
            pem = _leaf_pem(fetch(host, advert.port, timeout_s))
            fingerprint = certificate_fingerprint(pem)
            server_name = expected_server_name(pem)
        except UnavailableError as exc:
            log.info("discovered broker %r: %s", name, exc)
            continue
        except ValueError as exc:
            log.warning("ignoring discovered broker %r at %s: %s", name, address, exc)
            return None
        if advert.tls_fingerprint is not None and advert.tls_fingerprint != fingerprint:
            log.warning(
                "ignoring discovered broker %r at %s: it advertises certificate %s but presents %s",
                name,
                address,
                advert.tls_fingerprint,
                fingerprint,
            )
            return None
        return _Seen(instance, address, pem, fingerprint, server_name)
    log.info("ignoring discovered broker %r: none of its addresses answered", name)
    return None


def _leaf_pem(cert_pem: bytes) -> bytes:
    """Just the leaf certificate, in canonical PEM: what is pinned and handed to gRPC."""
    return ssl.DER_cert_to_PEM_cert(leaf_certificate_der(cert_pem)).encode("ascii")


def _trusted(seen: _Seen) -> TrustedBroker:
    return TrustedBroker(
        address=seen.address,
        instance=seen.instance,
        fingerprint=seen.fingerprint,
        ca_pem=seen.pem,
        server_name=seen.server_name,
    )


def _unique(items: Sequence[str]) -> Iterator[str]:
    seen: set[str] = set()
    for item in items:
        if item not in seen:
            seen.add(item)
            yield item


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
