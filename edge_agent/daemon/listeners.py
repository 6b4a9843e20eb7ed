"""The daemon's two doors: the HTTP API (aiohttp) and the gRPC edge service (a TCP port or
a private unix socket), each started on its address and stopped again."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ridgeline_core.errors import ConfigError, MissingDependencyError
from ridgeline_core.transport import is_loopback, split_host_port

from ..agent import EdgeAgent
from ..settings import grpc_target
from .dispatch import Dispatcher
from .generations import Generations
from .grpc_api import SERVICE_NAME, EdgeService, KeyInterceptor
from .http_api import build_app
from .metrics import DaemonMetrics
from .sockets import prepare_socket

__all__ = ["GrpcListener", "HttpListener"]


class HttpListener:
    def __init__(self) -> None:
        self._runner: Any = None
        self.url: str | None = None

    async def start(
        self,
        address: str,
        agent: Callable[[], EdgeAgent],
        dispatcher: Dispatcher,
        metrics: DaemonMetrics,
        key: Callable[[], str | None],
        max_request_bytes: int,
        *,
        write_stall_s: float = 30.0,
    ) -> str:
        try:
            from aiohttp import web
        except ImportError:
            raise MissingDependencyError.for_module("aiohttp", "edge") from None
        host, port = split_host_port(address)
        app = build_app(
            agent,
            dispatcher,
            metrics,
            key,
            max_request_bytes,
            loopback=is_loopback(host),
            write_stall_s=write_stall_s,
        )
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"daemon.http {address}: {exc.strerror or exc}") from exc
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class GrpcListener:
    def __init__(self) -> None:
        self._server: Any = None
        self._health: Any = None
        self._socket: Path | None = None
        self.target: str | None = None

    async def start(
        self,
        address: str,
        service: EdgeService,
        key: Callable[[], str | None],
    ) -> str:
        import grpc

        try:
            from grpc_health.v1 import health_pb2, health_pb2_grpc
            from grpc_health.v1._async import HealthServicer
        except ImportError:
            raise MissingDependencyError.for_module("grpcio-health-checking", "edge") from None
        from ridgeline.v1 import edge_pb2_grpc

        target, path = grpc_target(address)
        if path is not None:
            prepare_socket(path)
        server = grpc.aio.server(interceptors=[KeyInterceptor(key)])
        edge_pb2_grpc.add_EdgeServicer_to_server(service, server)
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            port = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise ConfigError(f"daemon.grpc {address}: cannot bind ({exc})") from exc
        await server.start()
        self._server = server
        self.target = self._bound(address, target, path, port)
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.target

    def _bound(self, address: str, target: str, path: Path | None, port: int) -> str:
        if path is not None:
            path.chmod(0o600)  # only this user may call through the socket
            self._socket = path
            return target
        host, _ = split_host_port(address)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def leave_rotation(self) -> None:
        """Health says NOT_SERVING: load balancers stop sending, running calls go on."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.unlink()


class Doors:
    """Both listeners the settings ask for, opened and closed together."""

    def __init__(self) -> None:
        self.http, self.grpc = HttpListener(), GrpcListener()

    async def open(
        self,
        generations: Generations,
        dispatcher: Dispatcher,
        metrics: DaemonMetrics,
        out: Callable[[str], None],
    ) -> None:
        """Bind HTTP and gRPC as ``generations.settings`` say; ``out`` says where each
        listens. The agent and the API key are read per call: a reload changes them."""
        daemon = generations.settings.daemon
        agent = lambda: generations.agent  # noqa: E731
        key = lambda: generations.key  # noqa: E731
        if not daemon.http and not daemon.grpc:
            raise ConfigError("daemon.http and daemon.grpc are both empty: nothing to serve")
        if daemon.http:
            url = await self.http.start(
                daemon.http,
                agent,
                dispatcher,
                metrics,
                key,
                daemon.max_request_bytes,
                write_stall_s=daemon.write_stall_s,
            )
            out(f"http listening on {url}")
        if daemon.grpc:
            service = EdgeService(agent, dispatcher, metrics.record_error, daemon.write_stall_s)
            out(f"grpc listening on {await self.grpc.start(daemon.grpc, service, key)}")

    async def close(self) -> None:
        await self.grpc.stop()
        await self.http.stop()
