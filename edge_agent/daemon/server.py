"""``edge-agent serve``: the daemon's lifetime.

Start: refuse a non-loopback bind without an API key, bind HTTP and gRPC, print where
it listens, tell systemd READY=1. While running: unload models idle for
``daemon.idle_unload_s``; on SIGHUP reload the settings (a bad file is logged and the old
settings kept; loaded models are kept when the model settings did not change). SIGTERM
or SIGINT: health turns 503/NOT_SERVING, new requests get 503/UNAVAILABLE, running ones
may finish for ``daemon.drain_s``, then the rest are cancelled and the process exits 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ridgeline_core.errors import ConfigError, MissingDependencyError
from ridgeline_core.files import SharedDirectoryError, private_dir
from ridgeline_core.runtime import RuntimePool
from ridgeline_core.transport import is_loopback, split_host_port

from ..agent import Answer, EdgeAgent
from ..settings import EdgeSettings, grpc_target
from .dispatch import Admission, Dispatcher
from .grpc_api import SERVICE_NAME, EdgeService, KeyInterceptor
from .http_api import build_app
from .metrics import DaemonMetrics

__all__ = ["Daemon", "run"]

log = logging.getLogger(__name__)


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about a state change; nothing without $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        s.sendall(state.encode())


def check_binds(settings: EdgeSettings) -> str | None:
    """The API key, read once; ConfigError when a public bind has none."""
    d = settings.daemon
    key = d.read_api_key()
    public = d.public_binds()
    if public and key is None:
        raise ConfigError(
            f"{' and '.join(public)} is reachable from other machines: set daemon.api_key "
            "or daemon.api_key_file (clients then send 'Authorization: Bearer KEY'), "
            "or bind a loopback address such as 127.0.0.1"
        )
    return key


def _prepare_socket(path: Path) -> None:
    """A private directory for the socket, and no stale socket file in the way.

    The directory must be ours and not writable by others: whoever can write there could
    replace the socket and receive the requests (and API keys) meant for the daemon."""
    try:
        private_dir(path.parent, exclusive=True)
    except SharedDirectoryError:
        raise ConfigError(
            f"daemon.grpc: {path.parent} must belong to this user and not be writable by "
            "group or others (chmod 700 it, or choose another socket path)"
        ) from None
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_socket():
        raise ConfigError(f"daemon.grpc: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # left by a daemon that did not exit cleanly
    else:
        raise ConfigError(f"daemon.grpc: another daemon is serving unix:{path}")
    finally:
        probe.close()


class Daemon:
    def __init__(
        self,
        settings: EdgeSettings,
        *,
        reload: Callable[[], EdgeSettings] | None = None,
        out: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self._reload = reload
        self._out = out
        self._key = check_binds(settings)
        d = settings.daemon
        self.pool = self._make_pool(settings)
        self.agent = EdgeAgent(settings, pool=self.pool)
        self._retired: list[EdgeAgent | RuntimePool] = []
        self.admission = Admission(d.slots, d.queue)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=64, thread_name_prefix="ridgeline-request"
        )
        self.metrics = DaemonMetrics(lambda: self.agent, self.admission)
        self.dispatcher = Dispatcher(
            lambda: self.agent,
            self.admission,
            self._executor,
            self._record,
            lambda: self.metrics.record_error("cancelled"),
        )
        self.http_url: str | None = None
        self.grpc_target: str | None = None
        self._runner: Any = None
        self._grpc: Any = None
        self._health: Any = None
        self._socket: Path | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def _make_pool(settings: EdgeSettings) -> RuntimePool:
        slots = settings.daemon.slots
        return RuntimePool(
            settings.models.catalog(),
            settings.models.store(),
            settings.runtime.load_options(slots),
            instances=slots,
        )

    def _record(self, answer: Answer, seconds: float) -> None:
        self.metrics.record(answer, seconds)

    # -- start -------------------------------------------------------------------------

    async def start(self) -> None:
        d = self.settings.daemon
        if d.http:
            await self._start_http(d.http)
        if d.grpc:
            await self._start_grpc(d.grpc)
        if not d.http and not d.grpc:
            raise ConfigError("daemon.http and daemon.grpc are both empty: nothing to serve")
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        self._spawn(self._unload_idle())
        sd_notify("READY=1")
        self._out("ready")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _start_http(self, address: str) -> None:
        try:
            from aiohttp import web
        except ImportError:
            raise MissingDependencyError.for_module("aiohttp", "edge") from None
        app = build_app(
            lambda: self.agent,
            self.dispatcher,
            self.metrics,
            lambda: self._key,
            self.settings.daemon.max_request_bytes,
            loopback=is_loopback(split_host_port(address)[0]),
        )
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        host, port = split_host_port(address)
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"daemon.http {address}: {exc.strerror or exc}") from exc
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        shown = f"[{host}]" if ":" in host else host
        self.http_url = f"http://{shown}:{bound[1]}"
        self._out(f"http listening on {self.http_url}")

    async def _start_grpc(self, address: str) -> None:
        import grpc

        try:
            from grpc_health.v1 import health_pb2, health_pb2_grpc
            from grpc_health.v1._async import HealthServicer
        except ImportError:
            raise MissingDependencyError.for_module("grpcio-health-checking", "edge") from None
        from ridgeline.v1 import edge_pb2_grpc

        target, path = grpc_target(address)
        if path is not None:
            _prepare_socket(path)
        interceptors = [KeyInterceptor(lambda: self._key)]
        server = grpc.aio.server(interceptors=interceptors)
        edge_pb2_grpc.add_EdgeServicer_to_server(
            EdgeService(lambda: self.agent, self.dispatcher, self.metrics.record_error), server
        )
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            port = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise ConfigError(f"daemon.grpc {address}: cannot bind ({exc})") from exc
        await server.start()
        self._grpc = server
        if path is not None:
            path.chmod(0o600)  # only this user may call through the socket
            self._socket = path
            self.grpc_target = target
        else:
            host, _ = split_host_port(address)
            self.grpc_target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._out(f"grpc listening on {self.grpc_target}")

    # -- running -----------------------------------------------------------------------

    async def _unload_idle(self) -> None:
        while True:
            idle_s = self.settings.daemon.idle_unload_s
            await asyncio.sleep(min(30.0, max(0.2, idle_s / 4)) if idle_s else 30.0)
            try:
                if idle_s:
                    for name in await asyncio.to_thread(self.pool.unload_idle, idle_s):
                        log.info("unloaded %s after %.0f s unused", name, idle_s)
                await self._close_retired()
            except Exception:  # keep unloading later; one failure is no reason to stop
                log.exception("unloading idle models failed")

    async def reload(self) -> None:
        """Read the settings again (SIGHUP). Everything new is built before anything is
        swapped, so a bad file, or settings that fail to build, keep the running ones."""
        if self._reload is None:
            return
        sd_notify("RELOADING=1")
        old = self.settings
        pool: RuntimePool | None = None
        try:
            new = await asyncio.to_thread(self._reload)
            key = check_binds(new)
            same_models = (
                new.models == old.models
                and new.runtime == old.runtime
                and new.daemon.slots == old.daemon.slots
            )
            pool = self.pool if same_models else self._make_pool(new)
            agent = await asyncio.to_thread(EdgeAgent, new, pool=pool)
        except Exception as exc:
            if pool is not None and pool is not self.pool:
                pool.close()
            log.error("reload failed, keeping the current settings: %s", exc)
            self._out(f"reload failed, keeping the current settings: {exc}")
            sd_notify("READY=1")
            return
        for name in ("http", "grpc", "max_request_bytes"):
            if getattr(new.daemon, name) != getattr(old.daemon, name):
                log.warning("daemon.%s changed: restart the daemon to apply it", name)
        self._retired.append(self.agent)
        if pool is not self.pool:
            self._retired.append(self.pool)
        self.pool, self.agent, self.settings, self._key = pool, agent, new, key
        self.admission.resize(new.daemon.slots, new.daemon.queue)
        await self._close_retired()
        sd_notify("READY=1")
        self._out("reloaded")

    async def _close_retired(self) -> None:
        """Close replaced agents once their own requests have ended, and replaced pools
        once no agent that uses them is left."""
        serving = self.dispatcher.serving
        done_agents = [a for a in self._retired if isinstance(a, EdgeAgent) and not serving[a]]
        agents_left = [a for a in self._retired if isinstance(a, EdgeAgent) and serving[a]]
        pools_in_use = {id(a.pool) for a in agents_left} | {id(self.pool)}
        done_pools = [
            p for p in self._retired if isinstance(p, RuntimePool) and id(p) not in pools_in_use
        ]
        closing: list[EdgeAgent | RuntimePool] = [*done_agents, *done_pools]
        if not closing:
            return
        self._retired = [thing for thing in self._retired if thing not in closing]
        for thing in closing:
            await asyncio.to_thread(thing.close)

    # -- stop --------------------------------------------------------------------------

    async def wait(self) -> None:
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        sd_notify("STOPPING=1")
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        in_flight = self.admission.in_flight
        if in_flight:
            self._out(f"draining {in_flight} request(s), up to {self.settings.daemon.drain_s} s")
        drained = await self.dispatcher.drain(self.settings.daemon.drain_s)
        if not drained:
            self._out("drain time is up: cancelling the rest")
            self.dispatcher.cancel_all("the daemon is shutting down")
            if not await self.dispatcher.drain(10.0):
                log.warning("requests still running at exit (a model load or broker call)")
        for task in list(self._tasks):
            task.cancel()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.unlink()
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.agent.close)
        for thing in self._retired:
            await asyncio.to_thread(thing.close)
        await asyncio.to_thread(self.pool.close)
        self._out("stopped")


def run(settings: EdgeSettings, reload: Callable[[], EdgeSettings] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""

    async def main() -> None:
        daemon = Daemon(settings, reload=reload, out=lambda line: print(line, flush=True))
        try:
            await daemon.start()
            await daemon.wait()
        finally:
            await daemon.shutdown()

    asyncio.run(main())
