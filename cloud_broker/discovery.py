"""Optional zeroconf (mDNS/DNS-SD) advertisement of a broker, and browsing for one.

A broker can announce itself on the local link as a ``_ridgeline._tcp`` service so that
``edge-agent discover`` lists it without the user typing an address. The TXT record carries::

    proto=1                      wire protocol version (the ``ridgeline.v1`` package)
    models=a,b,c                 served model names, cut to whole names within 255 bytes
    tls=sha256:<64 hex digits>   SHA-256 of the broker's DER certificate, or ``tls=off``

**The TXT record is not a trust anchor.** mDNS is unauthenticated: anyone on the link can
advertise any name, address, port, model list or fingerprint, and can answer in place of a
real broker. Everything here is a *hint*. The fingerprint exists so that a user can compare
it with the one the broker's operator publishes (``openssl x509 -noout -fingerprint -sha256``
prints the same digest with colons) and pin it deliberately; it must never be trusted merely
because it arrived in an advertisement. A client that connects to a discovered broker still
verifies TLS against its configured CA bundle or pinned certificate and still authenticates
with its device token, exactly as it would for an address typed by hand.

Importing this module opens no socket and does not import zeroconf; each function imports it
when called and raises :class:`~ridgeline_core.errors.MissingDependencyError` when it is
not installed. Both :func:`advertise` and :func:`browse` block for about a second or more
(probing, announcing, listening), so async code calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from ridgeline_core.errors import MissingDependencyError

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

__all__ = [
    "INSTANCE_MAX_BYTES",
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "TXT_STRING_MAX_BYTES",
    "Advertisement",
    "DiscoveredBroker",
    "advertise",
    "broker_from_info",
    "browse",
    "certificate_fingerprint",
    "models_txt_value",
    "sanitize_instance_name",
    "txt_properties",
]

SERVICE_TYPE = "_ridgeline._tcp.local."
PROTOCOL_VERSION = "1"

# DNS-SD allows 63 bytes for an instance label; zeroconf appends "-2", "-3", ... on a name
# conflict, so we leave room for that suffix.
INSTANCE_MAX_BYTES = 60
TXT_STRING_MAX_BYTES = 255
_MODELS_KEY = "models"
_MODELS_VALUE_MAX_BYTES = TXT_STRING_MAX_BYTES - len(_MODELS_KEY) - 1  # "models=" prefix
_FINGERPRINT_RE = re.compile(r"sha256:[0-9a-f]{64}")
_PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")
_UNSAFE_INSTANCE_CHARS = re.compile(r"[\x00-\x1f\x7f.]+")
_RESOLVE_MAX_S = 1.0


@dataclass(frozen=True)
class DiscoveredBroker:
    """A broker seen on the link. Every field is what the advertiser claimed, unverified."""

    instance: str
    host: str
    addresses: tuple[str, ...]
    port: int
    protocol_version: str | None
    models: tuple[str, ...]
    tls_fingerprint: str | None
    plaintext: bool


def sanitize_instance_name(name: str) -> str:
    """Make a DNS-SD instance label: no dots or control characters, at most 60 UTF-8 bytes.

    An empty result falls back to "Ridgeline broker on <hostname>".
    """
    cleaned = " ".join(_UNSAFE_INSTANCE_CHARS.sub(" ", name).split())
    if not cleaned:
        host = socket.gethostname().split(".", 1)[0]
        cleaned = " ".join(_UNSAFE_INSTANCE_CHARS.sub(" ", f"Ridgeline broker on {host}").split())
    encoded = cleaned.encode("utf-8")[:INSTANCE_MAX_BYTES]
    return encoded.decode("utf-8", errors="ignore").rstrip()


def models_txt_value(models: Iterable[str]) -> str:
    """Comma-join whole model names, dropping those that would overflow one TXT string.

    Names that are empty or contain a comma cannot be represented and are skipped.
    """
    kept: list[str] = []
    size = 0
    for model in models:
        if not model or "," in model:
            continue
        cost = len(model.encode("utf-8")) + (1 if kept else 0)
        if size + cost > _MODELS_VALUE_MAX_BYTES:
            continue
        kept.append(model)
        size += cost
    return ",".join(kept)


def txt_properties(models: Iterable[str], tls_fingerprint: str | None) -> dict[str, str]:
    """The TXT key/value pairs a broker advertises; each encodes to at most 255 bytes."""
    if tls_fingerprint is not None and not _FINGERPRINT_RE.fullmatch(tls_fingerprint):
        raise ValueError(
            f"TLS fingerprint must look like 'sha256:<64 lowercase hex>', got {tls_fingerprint!r}"
        )
    return {
        "proto": PROTOCOL_VERSION,
        _MODELS_KEY: models_txt_value(models),
        "tls": tls_fingerprint if tls_fingerprint is not None else "off",
    }


def certificate_fingerprint(cert_pem: bytes) -> str:
    """``sha256:<hex>`` of the first (leaf) certificate in a PEM file, over its DER bytes."""
    match = _PEM_CERT_RE.search(cert_pem.decode("ascii", errors="replace"))
    if match is None:
        raise ValueError("no PEM certificate found (expected a BEGIN CERTIFICATE block)")
    der = ssl.PEM_cert_to_DER_cert(match.group(0))
    return "sha256:" + hashlib.sha256(der).hexdigest()


class Advertisement:
    """A registered ``_ridgeline._tcp`` service; ``close()`` says goodbye and stops zeroconf."""

    def __init__(self, zeroconf: Zeroconf, info: ServiceInfo) -> None:
        self._zeroconf = zeroconf
        self._info = info
        self._lock = threading.Lock()
        self._closed = False

    @property
    def name(self) -> str:
        """The full service name as registered (after any conflict rename)."""
        return self._info.name

    @property
    def instance(self) -> str:
        """The instance label as registered (after any conflict rename)."""
        return _instance_label(self._info.name)

    def close(self) -> None:
        """Send the goodbye (TTL 0) records and close the sockets; safe to call repeatedly."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._zeroconf.unregister_service(self._info)
            finally:
                self._zeroconf.close()

    def __enter__(self) -> Advertisement:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def advertise(
    *,
    instance: str,
    port: int,
    addresses: Sequence[str],
    models: Sequence[str],
    tls_fingerprint: str | None,
    interfaces: Sequence[str] | None = None,
) -> Advertisement:
    """Register the broker on the link and return once it is announced (about 1-2 s).

    ``addresses`` are the concrete IPs clients should dial (not 0.0.0.0 or ::).
    ``interfaces`` are the local addresses to run mDNS on; None means every interface.
    A name already taken on the link is renamed "<instance>-2" and so on; see
    :attr:`Advertisement.instance`.
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    parsed = _check_addresses(addresses)
    label = sanitize_instance_name(instance)
    properties = txt_properties(models, tls_fingerprint)
    _require_zeroconf()
    from zeroconf import ServiceInfo

    info = ServiceInfo(
        SERVICE_TYPE,
        f"{label}.{SERVICE_TYPE}",
        port=port,
        properties=dict(properties),
        server=_server_name(),
        parsed_addresses=parsed,
    )
    zeroconf = _open_zeroconf(interfaces)
    try:
        zeroconf.register_service(info, allow_name_change=True)
    except BaseException:
        zeroconf.close()
        raise
    return Advertisement(zeroconf, info)


def browse(
    timeout_s: float = 3.0, *, interfaces: Sequence[str] | None = None
) -> list[DiscoveredBroker]:
    """Listen for brokers for ``timeout_s`` seconds and return those still present, resolved.

    Services whose details do not arrive within one further second are left out.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    _require_zeroconf()
    from zeroconf import ServiceBrowser, ServiceInfo, ServiceListener

    names: dict[str, None] = {}
    lock = threading.Lock()

    class _Collector(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            with lock:
                names[name] = None

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            self.add_service(zc, type_, name)

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            with lock:
                names.pop(name, None)

    zeroconf = _open_zeroconf(interfaces)
    try:
        browser = ServiceBrowser(zeroconf, SERVICE_TYPE, listener=_Collector())
        try:
            time.sleep(timeout_s)
        finally:
            browser.cancel()
        with lock:
            found = list(names)
        resolve_deadline = time.monotonic() + min(timeout_s, _RESOLVE_MAX_S)
        brokers: list[DiscoveredBroker] = []
        for name in found:
            info = ServiceInfo(SERVICE_TYPE, name)
            remaining_ms = max(0.0, resolve_deadline - time.monotonic()) * 1000
            if info.load_from_cache(zeroconf) or info.request(zeroconf, remaining_ms):
                brokers.append(broker_from_info(info))
        return brokers
    finally:
        zeroconf.close()


def broker_from_info(info: ServiceInfo) -> DiscoveredBroker:
    """Read a resolved ServiceInfo defensively: the values are whatever the link sent."""
    properties = info.decoded_properties
    tls = properties.get("tls")
    models = properties.get(_MODELS_KEY) or ""
    return DiscoveredBroker(
        instance=_instance_label(info.name),
        host=info.server or "",
        addresses=tuple(info.parsed_addresses()),
        port=info.port or 0,
        protocol_version=properties.get("proto"),
        models=tuple(model for model in models.split(",") if model),
        tls_fingerprint=tls if tls is not None and _FINGERPRINT_RE.fullmatch(tls) else None,
        plaintext=tls == "off",
    )


def _require_zeroconf() -> None:
    try:
        import zeroconf  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("zeroconf", "broker") from exc


def _open_zeroconf(interfaces: Sequence[str] | None) -> Zeroconf:
    from zeroconf import InterfaceChoice, Zeroconf

    # use_asyncio=False: run zeroconf's own loop thread, so the blocking calls here work even
    # when the caller happens to be inside a running event loop.
    if interfaces is None:
        return Zeroconf(interfaces=InterfaceChoice.All, use_asyncio=False)
    return Zeroconf(interfaces=list(interfaces), use_asyncio=False)


def _check_addresses(addresses: Sequence[str]) -> list[str]:
    if not addresses:
        raise ValueError("advertise needs at least one address clients can dial")
    parsed: list[str] = []
    for text in addresses:
        address = ipaddress.ip_address(text)
        if address.is_unspecified:
            raise ValueError(f"{text} is a wildcard, not an address clients can dial")
        parsed.append(str(address))
    return parsed


def _server_name() -> str:
    """A host name for the SRV target, unique per advertisement (mDNS does not probe it)."""
    host = socket.gethostname().split(".", 1)[0].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", host).strip("-")[:40] or "ridgeline"
    return f"{slug}-{secrets.token_hex(3)}.local."


def _instance_label(name: str) -> str:
    suffix = "." + SERVICE_TYPE
    return name[: -len(suffix)] if name.lower().endswith(suffix.lower()) else name
