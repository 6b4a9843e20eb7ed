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
import sys
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from ridgeline_core.errors import ConfigError

from .auth import TokenTable
from .backends import Backend
from .metrics import BrokerMetrics
from .ratelimit import Rate
from .service import BrokerService
from .settings import BrokerSettings, split_host_port
from .startup import Announcements, open_tokens, serve_grpc
from .strategies import Catalog

__all__ = [
    "BrokerServer",
    "build_backend",
    "build_backends",
    "run",
    "security",
    "served_names",
]

log = logging.getLogger("ridgeline.broker")


def served_names(settings: BrokerSettings) -> list[str]:
    """The models the broker serves: the store's (llama.cpp), then the ``[[openai]]`` ones."""
    return [*settings.models.serve, *(entry.name for entry in settings.openai)]


def build_backend(settings: BrokerSettings, name: str, log_line: Callable[[str], None]) -> Backend:
    """The backend of one served model (not started)."""
    for entry in settings.openai:
        if entry.name == name:
            from .backends.openai import OpenAIBackend

            return OpenAIBackend(entry)
    if name not in settings.models.serve:
        raise ConfigError(f"model {name!r} is not served")
    from .backends.llama_cpp import LlamaCppBackend

    manifest = settings.models.catalog().get(name)
    if manifest.runtime != "llama.cpp":
        raise ConfigError(
            f"models.serve: {name!r} needs runtime {manifest.runtime!r}; "
            "the broker serves llama.cpp models"
        )
    return LlamaCppBackend(manifest, settings.models.store(), settings.llama_cpp, log=log_line)


def build_backends(settings: BrokerSettings, log_line: Callable[[str], None]) -> dict[str, Backend]:
    return {name: build_backend(settings, name, log_line) for name in served_names(settings)}


class BrokerServer:
    """The gRPC front and its backends and limits (a front on Ray passes its own in)."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        log_line: Callable[[str], None],
        backends: dict[str, Backend] | None = None,
        limits: tuple[TokenTable | None, Rate] | None = None,
        share_port: bool = False,
    ) -> None:
        settings.check_transport()
        self.settings = settings
        self._log = log_line
        self._share_port = share_port  # fronts on one Ray node share server.listen's port
        self.backends = build_backends(settings, log_line) if backends is None else backends
        if not self.backends:
            raise ConfigError("nothing to serve: models.serve is empty and no [[openai]] backend")
        self.metrics = BrokerMetrics(lambda: self.backends.values())
        self.catalog = _catalog(settings, self.backends)
        self.tokens: TokenTable | None
        self.rate: Rate | None
        self.tokens, self.rate = limits if limits else (open_tokens(settings, log_line), None)
        self.server: grpc.aio.Server | None = None
        self.service: BrokerService | None = None
        self.health: Any = None
        self.port = 0
        self.announcements = Announcements(settings, log_line)

    async def start(self) -> None:
        for backend in self.backends.values():
            await backend.start()
        await asyncio.to_thread(self.catalog.load)  # a learned router loads its encoder
        self.server, self.service, self.health, self.port = await serve_grpc(
            self.settings, self.catalog, self.metrics, (self.tokens, self.rate), self._share_port
        )
        await self.announcements.start(self.metrics, self.port, self.backends)

    @property
    def metrics_port(self) -> int | None:
        return self.announcements.metrics_port

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
        await self.announcements.withdraw()
        if self.server is not None:
            # Refuse new calls ourselves (UNAVAILABLE with a reason) and keep connections
            # open, so running streams finish; what is still running after the grace
            # period is cancelled by stopping the server.
            assert self.service is not None
            if not await self.service.calls.wait_idle(grace):
                self._log(
                    f"grace of {grace:g} s over: cancelling {self.service.calls.active} stream(s)"
                )
            await self.server.stop(0)
        for backend in self.backends.values():
            await backend.close()
        self.catalog.close()
        self.announcements.close()


def security(settings: BrokerSettings) -> str:
    """How calls are protected, as the "listening on" line says it."""
    tls = settings.tls
    transport = "mutual TLS" if tls.client_ca_file else "TLS" if tls.enabled else "plaintext"
    return f"{transport}, {'device tokens' if settings.auth.enabled else 'no auth'}"


def _catalog(settings: BrokerSettings, backends: dict[str, Backend]) -> Catalog:
    """The served models, prices and named strategies (built at start)."""

    def open_encoder(name: str) -> tuple[Any, str]:
        from .router.opener import store_encoders  # numpy and the ONNX runtime: when used

        return store_encoders(settings.models)(name)

    return Catalog(
        backends,
        settings.models.default,
        settings.strategies,
        settings.prices,
        open_encoder=open_encoder,
    )


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
        print(f"listening on {server.address} ({mode}, {security(settings)})", flush=True)
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
