"""Run the broker: load backends, serve gRPC (+ health, reflection, metrics), shut down cleanly.

Shutdown on SIGTERM or SIGINT: health turns NOT_SERVING at once (load
balancers stop sending), the server refuses new calls, running streams get
``server.grace_s`` seconds to finish and are then cancelled (which stops their
generations), and backends are closed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from ridgeline_core import transport
from ridgeline_core.errors import ConfigError, MissingDependencyError, RidgelineError

from .auth import TokenStore
from .backends import Backend
from .interceptors import AuthInterceptor, ErrorInterceptor, status_of
from .metrics import BrokerMetrics
from .service import BrokerService
from .settings import BrokerSettings, split_host_port

__all__ = ["BrokerServer", "build_backends", "run"]

log = logging.getLogger("ridgeline.broker")
SERVICE_NAME = "ridgeline.v1.Broker"


def build_backends(settings: BrokerSettings, log_line: Callable[[str], None]) -> dict[str, Backend]:
    backends: dict[str, Backend] = {}
    if settings.models.serve:
        from .backends.llama_cpp import LlamaCppBackend

        catalog = settings.models.catalog()
        store = settings.models.store()
        for name in settings.models.serve:
            manifest = catalog.get(name)
            if manifest.runtime != "llama.cpp":
                raise ConfigError(
                    f"models.serve: {name!r} needs runtime {manifest.runtime!r}; "
                    "the broker serves llama.cpp models"
                )
            backends[name] = LlamaCppBackend(manifest, store, settings.llama_cpp, log=log_line)
    for entry in settings.openai:
        from .backends.openai import OpenAIBackend

        backends[entry.name] = OpenAIBackend(entry)
    return backends


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None


class BrokerServer:
    def __init__(self, settings: BrokerSettings, *, log_line: Callable[[str], None]) -> None:
        settings.check_transport()
        self.settings = settings
        self._log = log_line
        self.backends = build_backends(settings, log_line)
        if not self.backends:
            raise ConfigError("nothing to serve: models.serve is empty and no [[openai]] backend")
        self.metrics = BrokerMetrics(lambda: self.backends.values())
        self.tokens: TokenStore | None = None
        if settings.auth.enabled:
            self.tokens = TokenStore(settings.auth.tokens_file)
            if not len(self.tokens):
                log_line(
                    f"warning: no device tokens in {settings.auth.tokens_file}; every call "
                    "will be refused (cloud-broker tokens add DEVICE)"
                )
        self.server: grpc.aio.Server | None = None
        self.service: BrokerService | None = None
        self.health: Any = None
        self.port = 0
        self.metrics_port: int | None = None
        self._metrics_server: Any = None
        self._advertisement: Any = None

    async def start(self) -> None:
        settings = self.settings
        try:
            from grpc_health.v1 import health_pb2
        except ImportError:
            raise MissingDependencyError.for_module("grpcio-health-checking", "broker") from None
        for backend in self.backends.values():
            await backend.start()
        server = grpc.aio.server(
            interceptors=_interceptors(self.tokens, self.metrics),
            options=transport.server_options(
                max_message_bytes=settings.server.max_message_bytes,
                keepalive_s=settings.server.keepalive_s,
                keepalive_timeout_s=settings.server.keepalive_timeout_s,
                min_ping_interval_s=settings.server.min_ping_interval_s,
            ),
        )
        self._add_services(server)
        self.port = _bind(server, settings)
        await server.start()
        self.server = server
        for name in (SERVICE_NAME, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if settings.metrics.listen:
            self._serve_metrics(settings.metrics.listen)
        if settings.discovery.enabled:
            await self._advertise()

    def _add_services(self, server: grpc.aio.Server) -> None:
        """The broker, health and (when enabled) reflection services."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        from grpc_health.v1._async import HealthServicer

        from .service import add_to_server

        settings = self.settings
        self.service = service = BrokerService(
            self.backends,
            settings.models.default,
            settings.limits,
            self.metrics,
            auth=self.tokens is not None,
        )
        add_to_server(service, server)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        if settings.server.reflection:
            try:
                from grpc_reflection.v1alpha import reflection
            except ImportError:
                raise MissingDependencyError.for_module("grpcio-reflection", "broker") from None
            names.append(reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)

    def _serve_metrics(self, listen: str) -> None:
        host, port = split_host_port(listen)
        try:
            self._metrics_server, self.metrics_port = self.metrics.serve(host, port)
        except OSError as exc:
            raise ConfigError(f"metrics.listen {listen}: {exc.strerror or exc}") from None

    async def _advertise(self) -> None:
        from .discovery import advertise, certificate_fingerprint

        host, _ = split_host_port(self.settings.server.listen)
        fingerprint = None
        if self.settings.tls.cert_file is not None:
            fingerprint = certificate_fingerprint(_read(self.settings.tls.cert_file, "tls"))
        if host in ("0.0.0.0", "::", ""):
            addresses, interfaces = _host_addresses(), None
        else:
            addresses, interfaces = [host], [host]
        self._advertisement = await asyncio.to_thread(
            advertise,
            instance=self.settings.discovery.instance or f"ridgeline-{socket.gethostname()}",
            port=self.port,
            addresses=addresses,
            models=sorted(self.backends),
            tls_fingerprint=fingerprint,
            interfaces=interfaces,
        )
        self._log(f"advertised {self._advertisement.name} over mDNS")

    @property
    def address(self) -> str:
        host, _ = split_host_port(self.settings.server.listen)
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.port}"

    async def stop(self, grace_s: float | None = None) -> None:
        grace = self.settings.server.grace_s if grace_s is None else grace_s
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self.service is not None:
            self.service.drain()  # new calls are refused from here on
        if self._advertisement is not None:
            await asyncio.to_thread(self._advertisement.close)
            self._advertisement = None
        if self.server is not None:
            # Refuse new calls ourselves (UNAVAILABLE with a reason) and keep connections
            # open, so running streams finish; what is still running after the grace
            # period is cancelled by stopping the server.
            assert self.service is not None
            if not await self.service.wait_idle(grace):
                self._log(f"grace of {grace:g} s over: cancelling {self.service.active} stream(s)")
            await self.server.stop(0)
        for backend in self.backends.values():
            await backend.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None


def _interceptors(
    tokens: TokenStore | None, metrics: BrokerMetrics
) -> list[grpc.aio.ServerInterceptor]:
    """Authentication first (with device tokens), then errors to status codes."""
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if tokens is not None:

        def refused(error: RidgelineError) -> None:
            metrics.child(metrics.errors, status_of(error).name, error.kind).inc()

        interceptors.append(AuthInterceptor(tokens, refused))
    interceptors.append(ErrorInterceptor())
    return interceptors


def _bind(server: grpc.aio.Server, settings: BrokerSettings) -> int:
    """The port ``server.listen`` bound, with TLS (and client certificates) when enabled."""
    listen, tls = settings.server.listen, settings.tls
    try:
        if not tls.enabled:
            port: int = server.add_insecure_port(listen)
            return port
        assert tls.cert_file is not None and tls.key_file is not None
        ca = tls.client_ca_file
        credentials = grpc.ssl_server_credentials(
            [(_read(tls.key_file, "tls.key_file"), _read(tls.cert_file, "tls.cert_file"))],
            root_certificates=_read(ca, "tls.client_ca_file") if ca else None,
            require_client_auth=ca is not None,
        )
        port = server.add_secure_port(listen, credentials)
        return port
    except RuntimeError as exc:
        raise ConfigError(f"server.listen {listen}: cannot bind ({exc})") from None


def _host_addresses() -> list[str]:
    """The IPv4 addresses of this host's interfaces, loopback excluded."""
    import ifaddr

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return found or ["127.0.0.1"]


async def _serve(settings: BrokerSettings, mode: str) -> None:
    def log_line(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    server = BrokerServer(settings, log_line=log_line)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await server.start()
        tls = (
            "mutual TLS"
            if settings.tls.client_ca_file
            else "TLS"
            if settings.tls.enabled
            else ("plaintext")
        )
        auth = "device tokens" if server.tokens is not None else "no auth"
        print(f"listening on {server.address} ({mode}, {tls}, {auth})", flush=True)
        if server.metrics_port is not None:
            host, _ = split_host_port(settings.metrics.listen)
            print(f"metrics on http://{host}:{server.metrics_port}/metrics", flush=True)
        print(f"serving {', '.join(sorted(server.backends))}", flush=True)
        await stopping.wait()
        log_line(f"shutting down: NOT_SERVING, {settings.server.grace_s:g} s grace for streams")
    finally:
        await server.stop()
    log_line("stopped")


def run(settings: BrokerSettings, *, mode: str = "production") -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_serve(settings, mode))
