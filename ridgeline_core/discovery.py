"""Zeroconf (mDNS/DNS-SD) discovery of brokers: what an advertisement says, and browsing.

A broker can announce itself on the local link as a ``_ridgeline._tcp`` service (see
``cloud_broker.discovery.advertise``) so that an edge agent finds it without the user typing
an address. The TXT record carries::

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
with its device token, exactly as it would for an address typed by hand
(``edge_agent.link.pinning`` decides which discovered broker, if any, is trusted).

The advertising side and the browsing side both import this module, so the wire format is
defined once. Importing it opens no socket and does not import zeroconf; the functions that
need zeroconf import it when called and raise
:class:`~ridgeline_core.errors.MissingDependencyError` when it is not installed.
:func:`browse` blocks for its whole timeout, so async code calls it through
``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import MissingDependencyError

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

__all__ = [
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "TXT_MODELS_KEY",
    "TXT_PROTO_KEY",
    "TXT_TLS_KEY",
    "TXT_TLS_OFF",
    "DiscoveredBroker",
    "broker_from_info",
    "browse",
    "certificate_fingerprint",
    "instance_label",
    "is_fingerprint",
    "leaf_certificate_der",
    "open_zeroconf",
    "require_zeroconf",
]

SERVICE_TYPE = "_ridgeline._tcp.local."
PROTOCOL_VERSION = "1"

TXT_PROTO_KEY = "proto"
TXT_MODELS_KEY = "models"
TXT_TLS_KEY = "tls"
TXT_TLS_OFF = "off"

_FINGERPRINT_RE = re.compile(r"sha256:[0-9a-f]{64}")
_PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")
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


def is_fingerprint(text: str) -> bool:
    """True for ``sha256:<64 lowercase hex>``, the only fingerprint form we read or write."""
    return _FINGERPRINT_RE.fullmatch(text) is not None


def leaf_certificate_der(cert_pem: bytes) -> bytes:
    """The DER bytes of the first (leaf) certificate in PEM text."""
    match = _PEM_CERT_RE.search(cert_pem.decode("ascii", errors="replace"))
    if match is None:
        raise ValueError("no PEM certificate found (expected a BEGIN CERTIFICATE block)")
    return ssl.PEM_cert_to_DER_cert(match.group(0))


def certificate_fingerprint(cert_pem: bytes) -> str:
    """``sha256:<hex>`` of the first (leaf) certificate in a PEM file, over its DER bytes."""
    return "sha256:" + hashlib.sha256(leaf_certificate_der(cert_pem)).hexdigest()


def browse(
    timeout_s: float = 3.0, *, interfaces: Sequence[str] | None = None
) -> list[DiscoveredBroker]:
    """Listen for brokers for ``timeout_s`` seconds and return those still present, resolved.

    Services whose details do not arrive within one further second are left out.
    ``interfaces`` are the local addresses to listen on; None means every interface.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    require_zeroconf("edge")
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

    zeroconf = open_zeroconf(interfaces)
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
    tls = properties.get(TXT_TLS_KEY)
    models = properties.get(TXT_MODELS_KEY) or ""
    return DiscoveredBroker(
        instance=instance_label(info.name),
        host=info.server or "",
        addresses=tuple(info.parsed_addresses()),
        port=info.port or 0,
        protocol_version=properties.get(TXT_PROTO_KEY),
        models=tuple(model for model in models.split(",") if model),
        tls_fingerprint=tls if tls is not None and is_fingerprint(tls) else None,
        plaintext=tls == TXT_TLS_OFF,
    )


def instance_label(name: str) -> str:
    """The instance part of a full service name ("Lab._ridgeline._tcp.local." -> "Lab")."""
    suffix = "." + SERVICE_TYPE
    return name[: -len(suffix)] if name.lower().endswith(suffix.lower()) else name


def require_zeroconf(extra: str) -> None:
    """Raise MissingDependencyError naming ``ridgeline[<extra>]`` when zeroconf is missing."""
    try:
        import zeroconf  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError.for_module("zeroconf", extra) from exc


def open_zeroconf(interfaces: Sequence[str] | None) -> Zeroconf:
    """A Zeroconf instance on ``interfaces`` (None: all); the caller closes it."""
    from zeroconf import InterfaceChoice, Zeroconf

    # use_asyncio=False: run zeroconf's own loop thread, so the blocking calls here work even
    # when the caller happens to be inside a running event loop.
    if interfaces is None:
        return Zeroconf(interfaces=InterfaceChoice.All, use_asyncio=False)
    return Zeroconf(interfaces=list(interfaces), use_asyncio=False)
