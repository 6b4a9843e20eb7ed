"""Advertising a broker on the local link over zeroconf (mDNS/DNS-SD).

The wire format (service type, TXT keys) and browsing live in :mod:`ridgeline_core.discovery`,
which the edge agent shares; they are re-exported here for the broker's callers. Read that
module's warning before using anything an advertisement says: **the TXT record is not a trust
anchor**, and the ``tls=sha256:...`` fingerprint advertised here is a hint for a user to
compare with the one the operator publishes, never a reason by itself to trust a broker.

Importing this module opens no socket and does not import zeroconf; :func:`advertise` and
:func:`browse` import it when called and raise
:class:`~ridgeline_core.errors.MissingDependencyError` naming ``ridgeline[broker]`` when it is
not installed. Both block for about a second or more (probing, announcing, listening), so
async code calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ridgeline_core import discovery as _shared
from ridgeline_core.closing import Closing
from ridgeline_core.discovery import (
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    TXT_MODELS_KEY,
    TXT_PROTO_KEY,
    TXT_TLS_KEY,
    TXT_TLS_OFF,
    DiscoveredBroker,
    broker_from_info,
    certificate_fingerprint,
    instance_label,
    is_fingerprint,
    open_zeroconf,
    require_zeroconf,
)

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

# DNS-SD allows 63 bytes for an instance label; zeroconf appends "-2", "-3", ... on a name
# conflict, so we leave room for that suffix.
INSTANCE_MAX_BYTES = 60
TXT_STRING_MAX_BYTES = 255
_MODELS_VALUE_MAX_BYTES = TXT_STRING_MAX_BYTES - len(TXT_MODELS_KEY) - 1  # "models=" prefix
_UNSAFE_INSTANCE_CHARS = re.compile(r"[\x00-\x1f\x7f.]+")


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
    if tls_fingerprint is not None and not is_fingerprint(tls_fingerprint):
        raise ValueError(
            f"TLS fingerprint must look like 'sha256:<64 lowercase hex>', got {tls_fingerprint!r}"
        )
    return {
        TXT_PROTO_KEY: PROTOCOL_VERSION,
        TXT_MODELS_KEY: models_txt_value(models),
        TXT_TLS_KEY: tls_fingerprint if tls_fingerprint is not None else TXT_TLS_OFF,
    }


class Advertisement(Closing):
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
        return instance_label(self._info.name)

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
    require_zeroconf("broker")
    from zeroconf import ServiceInfo

    info = ServiceInfo(
        SERVICE_TYPE,
        f"{label}.{SERVICE_TYPE}",
        port=port,
        properties=dict(properties),
        server=_server_name(),
        parsed_addresses=parsed,
    )
    zeroconf = open_zeroconf(interfaces)
    try:
        zeroconf.register_service(info, allow_name_change=True)
    except BaseException:
        zeroconf.close()
        raise
    return Advertisement(zeroconf, info)


def browse(
    timeout_s: float = 3.0, *, interfaces: Sequence[str] | None = None
) -> list[DiscoveredBroker]:
    """:func:`ridgeline_core.discovery.browse`, with the broker's install hint."""
    require_zeroconf("broker")
    return _shared.browse(timeout_s, interfaces=interfaces)


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
