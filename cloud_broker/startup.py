"""What the broker server is assembled from: the gRPC services (broker, health,
reflection), the interceptors, the bound port (with TLS and client certificates), and
the announcements next to it (the Prometheus endpoint and the mDNS advertisement)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from ridgeline_core import transport
from ridgeline_core.errors import ConfigError, MissingDependencyError, RidgelineError

from .auth import TokenStore, TokenTable
from .interceptors import AuthInterceptor, ErrorInterceptor, status_of
from .metrics import BrokerMetrics
from .ratelimit import Rate
from .reflection import enable_reflection
from .service import BrokerService
from .settings import BrokerSettings, split_host_port
from .strategies import Catalog

__all__ = [
    "Announcements",
    "add_services",
    "bind",
    "interceptors",
    "new_server",
    "open_tokens",
    "serve_grpc",
]

SERVICE_NAME = "ridgeline.v1.Broker"


async def serve_grpc(
    settings: BrokerSettings,
    catalog: Catalog,
    metrics: BrokerMetrics,
    limits: tuple[TokenTable | None, Rate | None],
    share_port: bool = False,
) -> tuple[grpc.aio.Server, BrokerService, Any, int]:
    """The started gRPC server, its broker and health servicers (health SERVING), and
    the port it bound. ``share_port``: bind with SO_REUSEPORT (fronts on one Ray node)."""
    try:
        from grpc_health.v1 import health_pb2
    except ImportError:
        raise MissingDependencyError.for_module("grpcio-health-checking", "broker") from None
    tokens, rate = limits
    server = new_server(settings, interceptors(tokens, metrics), share_port=share_port)
    service, health = add_services(server, settings, catalog, metrics, tokens, rate)
    port = bind(server, settings)
    await server.start()
    for name in (SERVICE_NAME, ""):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, service, health, port


def open_tokens(settings: BrokerSettings, log_line: Callable[[str], None]) -> TokenStore | None:
    """The device tokens when ``auth.enabled`` (a warning when there are none yet)."""
    if not settings.auth.enabled:
        return None
    tokens = TokenStore(settings.auth.tokens_file)
    if not len(tokens):
        log_line(
            f"warning: no device tokens in {settings.auth.tokens_file}; every call "
            "will be refused (cloud-broker tokens add DEVICE)"
        )
    return tokens


def new_server(
    settings: BrokerSettings,
    chain: list[grpc.aio.ServerInterceptor],
    *,
    share_port: bool = False,
) -> grpc.aio.Server:
    """A gRPC server with our message size and keepalive settings; a taken port is an
    error unless ``share_port`` (then the kernel spreads connections over the sharers)."""
    options = transport.server_options(
        max_message_bytes=settings.server.max_message_bytes,
        keepalive_s=settings.server.keepalive_s,
        keepalive_timeout_s=settings.server.keepalive_timeout_s,
        min_ping_interval_s=settings.server.min_ping_interval_s,
    )
    if share_port:
        options = [(k, 1 if k == "grpc.so_reuseport" else v) for k, v in options]
    return grpc.aio.server(interceptors=chain, options=options)


def add_services(
    server: grpc.aio.Server,
    settings: BrokerSettings,
    catalog: Catalog,
    metrics: BrokerMetrics,
    tokens: TokenTable | None,
    rate: Rate | None = None,
) -> tuple[BrokerService, Any]:
    """The broker, health and (when enabled) reflection services; the broker servicer
    and the health servicer. ``rate``: what calls are rate-limited by (default: a limiter
    of this process's own)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1._async import HealthServicer

    from .service import add_to_server

    service = BrokerService(catalog, settings.limits, metrics, auth=tokens is not None, rate=rate)
    add_to_server(service, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    if settings.server.reflection:
        enable_reflection(names, server)
    return service, health


def interceptors(
    tokens: TokenTable | None, metrics: BrokerMetrics
) -> list[grpc.aio.ServerInterceptor]:
    """Authentication first (with device tokens), then errors to status codes."""
    chain: list[grpc.aio.ServerInterceptor] = []
    if tokens is not None:

        def refused(error: RidgelineError) -> None:
            metrics.child(metrics.errors, status_of(error).name, error.kind).inc()

        chain.append(AuthInterceptor(tokens, refused))
    chain.append(ErrorInterceptor())
    return chain


def bind(server: grpc.aio.Server, settings: BrokerSettings) -> int:
    """The port ``server.listen`` bound, with TLS (and client certificates) when enabled."""
    listen, tls = settings.server.listen, settings.tls
    try:
        if not tls.enabled:
            port: int = server.add_insecure_port(listen)
            return port
        assert tls.cert_file is not None and tls.key_file is not None
        ca = tls.client_ca_file
        credentials = grpc.ssl_server_credentials(
            [(read_file(tls.key_file, "tls.key_file"), read_file(tls.cert_file, "tls.cert_file"))],
            root_certificates=read_file(ca, "tls.client_ca_file") if ca else None,
            require_client_auth=ca is not None,
        )
        port = server.add_secure_port(listen, credentials)
        return port
    except RuntimeError as exc:
        raise ConfigError(f"server.listen {listen}: cannot bind ({exc})") from None


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None


class Announcements:
    """The Prometheus endpoint (``metrics.listen``) and the mDNS advertisement
    (``discovery.enabled``): started after the port is bound, closed at shutdown."""

    def __init__(self, settings: BrokerSettings, log_line: Callable[[str], None]) -> None:
        self._settings = settings
        self._log = log_line
        self.metrics_port: int | None = None
        self._metrics_server: Any = None
        self._advertisement: Any = None

    async def start(self, metrics: BrokerMetrics, port: int, models: Iterable[str]) -> None:
        listen = self._settings.metrics.listen
        if listen:
            host, metrics_port = split_host_port(listen)
            try:
                self._metrics_server, self.metrics_port = metrics.serve(host, metrics_port)
            except OSError as exc:
                raise ConfigError(f"metrics.listen {listen}: {exc.strerror or exc}") from None
        if self._settings.discovery.enabled:
            self._advertisement = await asyncio.to_thread(self._advertise, port, sorted(models))
            self._log(f"advertised {self._advertisement.name} over mDNS")

    def _advertise(self, port: int, models: list[str]) -> Any:
        from .discovery import advertise, certificate_fingerprint

        settings = self._settings
        host, _ = split_host_port(settings.server.listen)
        fingerprint = None
        if settings.tls.cert_file is not None:
            fingerprint = certificate_fingerprint(read_file(settings.tls.cert_file, "tls"))
        if host in ("0.0.0.0", "::", ""):
            addresses, interfaces = _host_addresses(), None
        else:
            addresses, interfaces = [host], [host]
        return advertise(
            instance=settings.discovery.instance or f"ridgeline-{socket.gethostname()}",
            port=port,
            addresses=addresses,
            models=models,
            tls_fingerprint=fingerprint,
            interfaces=interfaces,
        )

    async def withdraw(self) -> None:
        """Say goodbye over mDNS (before the streams drain)."""
        if self._advertisement is not None:
            await asyncio.to_thread(self._advertisement.close)
            self._advertisement = None

    def close(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None


def _host_addresses() -> list[str]:
    """The IPv4 addresses of this host's interfaces, loopback excluded."""
    import ifaddr

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return found or ["127.0.0.1"]
